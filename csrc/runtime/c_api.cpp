// The C ABI: translate, call the C++ API, turn every exception into a status code and a
// per-thread message (an exception must never unwind into C or another language).
#include "gradcore/c_api.h"

#include <exception>
#include <stdexcept>
#include <string>
#include <vector>

#include "gradcore/norms.hpp"
#include "gradcore/runtime.hpp"

namespace {

thread_local std::string t_last_error;

std::vector<gradcore::TensorView> views(const gc_tensor* arrays, size_t count) {
    if (count && !arrays) throw std::invalid_argument("arrays is NULL");
    std::vector<gradcore::TensorView> v(count);
    for (size_t i = 0; i < count; ++i) {
        if (arrays[i].dtype < GC_FLOAT16 || arrays[i].dtype > GC_FLOAT64) {
            throw std::invalid_argument("arrays[" + std::to_string(i) + "]: unknown dtype " +
                                        std::to_string(arrays[i].dtype));
        }
        if (arrays[i].numel < 0 || (arrays[i].numel > 0 && !arrays[i].data)) {
            throw std::invalid_argument("arrays[" + std::to_string(i) + "]: bad data or numel");
        }
        v[i] = {arrays[i].data, arrays[i].numel, static_cast<gradcore::DType>(arrays[i].dtype)};
    }
    return v;
}

template <class F>
gc_status guarded(F&& f) {
    try {
        f();
        t_last_error.clear();
        return GC_OK;
    } catch (const std::invalid_argument& e) {
        t_last_error = e.what();
        return GC_INVALID_ARGUMENT;
    } catch (const std::exception& e) {
        t_last_error = e.what();
        return GC_INTERNAL_ERROR;
    } catch (...) {
        t_last_error = "unknown error";
        return GC_INTERNAL_ERROR;
    }
}

thread_local std::string t_string;  // storage for the strings returned below

}  // namespace

extern "C" {

const char* gc_last_error(void) { return t_last_error.c_str(); }

const char* gc_version(void) {
    t_string = gradcore::version();
    return t_string.c_str();
}

const char* gc_isa(void) {
    gc_status s = guarded([] { t_string = gradcore::isa_active(); });
    return s == GC_OK ? t_string.c_str() : "";
}

gc_status gc_global_norm(const gc_tensor* arrays, size_t count, double ord, double* out) {
    return guarded([&] {
        if (!out) throw std::invalid_argument("out is NULL");
        const auto v = views(arrays, count);
        *out = gradcore::global_norm(v.data(), v.size(), ord);
    });
}

gc_status gc_norms(const gc_tensor* arrays, size_t count, double ord, double* out) {
    return guarded([&] {
        if (count && !out) throw std::invalid_argument("out is NULL");
        const auto v = views(arrays, count);
        gradcore::norms(v.data(), v.size(), ord, out);
    });
}

gc_status gc_clip_by_value(const gc_tensor* arrays, size_t count, double lo, double hi) {
    return guarded([&] {
        const auto v = views(arrays, count);
        gradcore::clip_by_value_(v.data(), v.size(), lo, hi);
    });
}

gc_status gc_clip_by_global_norm(const gc_tensor* arrays, size_t count, double max_norm, double ord, double eps,
                                 int nonfinite, double total_norm, double* total_out, int* clipped) {
    bool refused = false;
    const gc_status s = guarded([&] {
        if (nonfinite < GC_PROPAGATE || nonfinite > GC_ZERO) throw std::invalid_argument("unknown nonfinite policy");
        const auto v = views(arrays, count);
        const auto r = gradcore::clip_by_global_norm_(v.data(), v.size(), max_norm, ord, eps,
                                                      static_cast<gradcore::NonFinitePolicy>(nonfinite),
                                                      total_norm >= 0.0, total_norm >= 0.0 ? total_norm : 0.0);
        if (total_out) *total_out = r.total_norm;
        if (clipped) *clipped = r.clipped ? 1 : 0;
        refused = r.nonfinite && nonfinite == GC_ERROR;
    });
    if (s == GC_OK && refused) {
        t_last_error = "the total norm is not finite; the arrays were not modified";
        return GC_NONFINITE;
    }
    return s;
}

}  // extern "C"
