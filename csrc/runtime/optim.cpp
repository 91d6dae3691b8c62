// Optimiser steps over whole parameter lists, split into the same fixed chunks as the
// norms so that thousands of small tensors and a few huge ones keep every thread busy.
#include <cmath>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "gradcore/optim.hpp"
#include "runtime/chunks.hpp"
#include "runtime/dispatch.hpp"

namespace gradcore {
namespace {

bool is_narrow(DType t) { return t == DType::float16 || t == DType::bfloat16; }

// The dtype of a parameter's optimiser state and master weights: float32 for the
// 16-bit parameters (their compute type), the parameter's own otherwise.
DType compute_dtype(DType param) { return is_narrow(param) ? DType::float32 : param; }

std::string label(const char* name, std::size_t i) { return std::string(name) + "[" + std::to_string(i) + "]"; }

// grads share the parameters' dtype, state arrays have their compute dtype.
enum class Role { grads, state };

void check_list(const TensorView* params, const TensorView* other, std::size_t count, const char* name, Role role) {
    runtime::check_views(other, count, name);
    for (std::size_t i = 0; i < count; ++i) {
        const DType want = role == Role::grads ? params[i].dtype : compute_dtype(params[i].dtype);
        if (other[i].numel != params[i].numel || other[i].dtype != want) {
            throw std::invalid_argument(label(name, i) + " must have params[" + std::to_string(i) + "]'s size (" +
                                        std::to_string(params[i].numel) + ") and dtype " + dtype_name(want) +
                                        ", got " + std::to_string(other[i].numel) + " " +
                                        dtype_name(other[i].dtype));
        }
    }
}

// A 16-bit parameter's master is a float32 array of its size; a float32/float64
// parameter is its own master, so its entry is the parameter itself.
void check_masters(const TensorView* params, const TensorView* masters, std::size_t count) {
    if (!masters) return;
    check_list(params, masters, count, "masters", Role::state);
    for (std::size_t i = 0; i < count; ++i) {
        if (!is_narrow(params[i].dtype) && masters[i].data != params[i].data) {
            throw std::invalid_argument(label("masters", i) + " must be params[" + std::to_string(i) +
                                        "] itself: a " + dtype_name(params[i].dtype) +
                                        " parameter is its own master");
        }
    }
}

void check_params(const TensorView* params, const TensorView* grads, const TensorView* masters, std::size_t count) {
    runtime::check_views(params, count, "params");
    check_list(params, grads, count, "grads", Role::grads);
    check_masters(params, masters, count);
}

template <class T>
T* at(const TensorView* views, std::size_t i, std::int64_t begin) {
    return views ? static_cast<T*>(views[i].data) + begin : nullptr;
}

// f(table, P{}, C{}) with the parameter's element type P and its compute type C.
template <class F>
void with_optim_kernels(const kernels::KernelTable& k, DType t, F&& f) {
    switch (t) {
        case DType::float16: return f(k.optim_f16, kernels::Float16{}, float{});
        case DType::bfloat16: return f(k.optim_bf16, kernels::BFloat16{}, float{});
        case DType::float32: return f(k.optim_f32, float{}, float{});
        default: return f(k.optim_f64, double{}, double{});  // check_views refused the rest
    }
}

// fn(table, P{}, C{}, chunk) for every chunk of the parameter list.
template <class F>
void for_each_param_chunk(const TensorView* params, std::size_t count, F&& fn) {
    const kernels::KernelTable& k = runtime::active_table();
    const runtime::ChunkList list = runtime::make_chunks(params, count);
    runtime::for_each_chunk(list, [&](std::size_t i) {
        const runtime::Chunk& c = list.chunks[i];
        with_optim_kernels(k, params[c.array].dtype,
                           [&](const auto& tab, auto p, auto compute) { fn(tab, p, compute, c); });
    });
}

}  // namespace

void sgd_step(const TensorView* params, const TensorView* grads, const TensorView* buffers, std::size_t count,
              const SgdOptions& o, const TensorView* masters) {
    check_params(params, grads, masters, count);
    if (o.momentum != 0.0) {
        if (!buffers && count) throw std::invalid_argument("momentum needs momentum buffers");
        check_list(params, buffers, count, "buffers", Role::state);
    }
    const kernels::SgdParams a{o.lr, o.momentum, o.dampening, o.weight_decay, o.grad_scale, o.l1, o.nesterov,
                               o.first_step, o.proximal};
    const TensorView* bufs = o.momentum != 0.0 ? buffers : nullptr;
    for_each_param_chunk(params, count, [&](const auto& tab, auto ptag, auto ctag, const runtime::Chunk& c) {
        using P = decltype(ptag);
        using C = decltype(ctag);
        const std::size_t i = c.array;
        if constexpr (!std::is_same_v<P, C>) {  // a 16-bit parameter
            tab.sgd(at<float>(masters, i, c.begin), at<P>(params, i, c.begin), at<P>(grads, i, c.begin),
                    at<C>(bufs, i, c.begin), c.size, a);
        } else {
            tab.sgd(at<P>(params, i, c.begin), at<P>(grads, i, c.begin), at<C>(bufs, i, c.begin), c.size, a);
        }
    });
}

void adam_step(const TensorView* params, const TensorView* grads, const TensorView* exp_avg,
               const TensorView* exp_avg_sq, std::size_t count, const AdamOptions& o, const TensorView* masters) {
    check_params(params, grads, masters, count);
    check_list(params, exp_avg, count, "exp_avg", Role::state);
    check_list(params, exp_avg_sq, count, "exp_avg_sq", Role::state);
    if (o.step < 1) throw std::invalid_argument("step must be >= 1");
    const double t = static_cast<double>(o.step);
    const kernels::AdamParams a{o.lr, o.beta1, o.beta2, o.eps, o.weight_decay, o.grad_scale, o.l1,
                                1.0 - std::pow(o.beta1, t), 1.0 - std::pow(o.beta2, t), o.decoupled};
    for_each_param_chunk(params, count, [&](const auto& tab, auto ptag, auto ctag, const runtime::Chunk& c) {
        using P = decltype(ptag);
        using C = decltype(ctag);
        const std::size_t i = c.array;
        C* m = at<C>(exp_avg, i, c.begin);
        C* v = at<C>(exp_avg_sq, i, c.begin);
        if constexpr (!std::is_same_v<P, C>) {  // a 16-bit parameter
            tab.adam(at<float>(masters, i, c.begin), at<P>(params, i, c.begin), at<P>(grads, i, c.begin), m, v,
                     c.size, a);
        } else {
            tab.adam(at<P>(params, i, c.begin), at<P>(grads, i, c.begin), m, v, c.size, a);
        }
    });
}

}  // namespace gradcore
