// Bindings of the norms and clipping, one per operation: each reads its arguments once
// (call.hpp for the arrays, parse_args.hpp for the scalars), routes on the device the
// arrays live on to the CPU library or the CUDA backend, and releases the GIL around the
// call. CUDA results stay on the device, as arrays of the caller's library; nothing here
// waits for the GPU except nonfinite="error", which must read the total to raise.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cmath>
#include <string>
#include <vector>

#include "call.hpp"
#include "parse_args.hpp"
#include "gradcore/cuda.hpp"
#include "gradcore/norms.hpp"

namespace gradcore::python {
namespace {

using Release = py::gil_scoped_release;

[[noreturn]] void raise_nonfinite(py::object total) {
    const py::object cls = result_type("NonFiniteGradientError");
    const py::object exc = cls(total);
    PyErr_SetObject(cls.ptr(), exc.ptr());
    throw py::error_already_set();
}

// The unit layout of every array of a list read with Keep::arrays.
std::vector<UnitLayout> unit_layouts(const ArrayList& list, int unit_axis) {
    std::vector<UnitLayout> layouts;
    layouts.reserve(list.size());
    for (std::size_t i = 0; i < list.size(); ++i) {
        layouts.push_back(unit_layout(list.arrays[i].shape, unit_axis, list.name, i));
    }
    return layouts;
}

// The scalar results (global_norm, zero_nonfinite_) are Python numbers on the CPU and
// 0-d device arrays on a GPU, written there without a host wait.
py::object global_norm_binding(py::handle arrays, py::handle ord_arg) {
    const double ord = norm_order(ord_arg);
    Call call("global_norm");
    const ArrayList list = call.list(arrays, "arrays", Access::read, kNormInputsOrComplex);
    double total = 0.0;
    std::optional<ArrayArg> on_device;
    if (call.on_cuda()) on_device = call.device_array({}, DType::float64, "total");
    run(call, [&] { total = global_norm(list.views.data(), list.size(), ord); },
        [&](cuda::Stream s) { cuda::global_norm(list.views.data(), list.size(), ord, on_device->as<double>(), s); });
    return on_device ? on_device->object : py::float_(total);
}

py::object norms_binding(py::handle arrays, py::handle ord_arg) {
    const double ord = norm_order(ord_arg);
    Call call("norms");
    const ArrayList list = call.list(arrays, "arrays", Access::read, kNormInputsOrComplex);
    const ArrayArg out = call.new_array({static_cast<std::int64_t>(list.size())}, DType::float64, "out");
    run(call, [&] { norms(list.views.data(), list.size(), ord, out.as<double>()); },
        [&](cuda::Stream s) { cuda::norms(list.views.data(), list.size(), ord, out.as<double>(), s); });
    return out.object;
}

py::object grad_stats_binding(py::handle arrays) {
    Call call("grad_stats");
    const ArrayList list = call.list(arrays, "arrays", Access::read, kNormInputs);
    const auto n = static_cast<std::int64_t>(list.size());
    const ArrayArg l2 = call.new_array({n}, DType::float64, "l2_norm");
    const ArrayArg max_abs = call.new_array({n}, DType::float64, "max_abs");
    const ArrayArg nonfinite = call.new_array({n}, DType::int64, "nonfinite");
    const TensorView* views = list.views.data();
    double *l2s = l2.as<double>(), *maxs = max_abs.as<double>();
    std::int64_t* counts = nonfinite.as<std::int64_t>();
    run(call, [&] { grad_stats(views, list.size(), l2s, maxs, counts); },
        [&](cuda::Stream s) { cuda::grad_stats(views, list.size(), l2s, maxs, counts, s); });
    return result_type("GradStats")(l2.object, max_abs.object, nonfinite.object);
}

py::object clip_by_value_binding(py::handle arrays, py::handle clip_value, py::handle min, py::handle max) {
    double lo, hi;
    if (!clip_value.is_none()) {
        if (!min.is_none() || !max.is_none()) {
            throw py::type_error("clip_by_value_: give either clip_value or min/max, not both");
        }
        const double bound = real(clip_value, "clip_value", rules::nonnegative);
        lo = -bound;
        hi = bound;
    } else {
        if (min.is_none() && max.is_none()) throw py::type_error("clip_by_value_: give clip_value, or min and/or max");
        lo = min.is_none() ? -INFINITY : real(min, "min");
        hi = max.is_none() ? INFINITY : real(max, "max");
        rules::clip_bounds(lo, hi);
    }
    Call call("clip_by_value_");
    const ArrayList list = call.list(arrays, "arrays", Access::write, kInPlaceFloats);
    run(call, [&] { clip_by_value_(list.views.data(), list.size(), lo, hi); },
        [&](cuda::Stream s) { cuda::clip_by_value_(list.views.data(), list.size(), lo, hi, s); });
    return list.sequence;
}

py::object scale_binding(py::handle arrays, py::handle factor_arg) {
    const double factor = real(factor_arg, "factor");
    Call call("scale_");
    const ArrayList list = call.list(arrays, "arrays", Access::write, kInPlaceFloats);
    run(call, [&] { scale_(list.views.data(), list.size(), factor); },
        [&](cuda::Stream s) { cuda::scale_(list.views.data(), list.size(), factor, s); });
    return list.sequence;
}

py::object zero_nonfinite_binding(py::handle arrays) {
    Call call("zero_nonfinite_");
    const ArrayList list = call.list(arrays, "arrays", Access::write, kInPlaceFloats);
    std::int64_t found = 0;
    std::optional<ArrayArg> on_device;
    if (call.on_cuda()) on_device = call.device_array({}, DType::int64, "count", /*zeroed=*/true);
    run(call, [&] { found = zero_nonfinite_(list.views.data(), list.size()); }, [&](cuda::Stream s) {
        cuda::zero_nonfinite_(list.views.data(), list.size(), on_device->as<std::int64_t>(), s);
    });
    return on_device ? on_device->object : py::int_(found);
}

py::object clip_by_norm_binding(py::handle arrays, py::handle max_norm_arg, py::handle ord_arg, py::handle eps_arg) {
    const double max_norm = real(max_norm_arg, "max_norm", rules::nonnegative);
    const double ord = norm_order(ord_arg);
    const double eps = real(eps_arg, "eps", rules::finite_nonnegative);
    Call call("clip_by_norm_");
    const ArrayList list = call.list(arrays, "arrays", Access::write, kInPlaceFloatsOrComplex);
    const ArrayArg out = call.new_array({static_cast<std::int64_t>(list.size())}, DType::float64, "norms");
    const TensorView* views = list.views.data();
    run(call, [&] { clip_by_norm_(views, list.size(), max_norm, ord, eps, out.as<double>()); },
        [&](cuda::Stream s) { cuda::clip_by_norm_(views, list.size(), max_norm, ord, eps, out.as<double>(), s); });
    return out.object;
}

py::object clip_by_global_norm_binding(py::handle arrays, py::handle max_norm_arg, py::handle ord_arg,
                                       py::handle eps_arg, py::handle nonfinite, py::handle total_norm) {
    const NonFinitePolicy policy = parse_policy(nonfinite);
    const double max_norm = real(max_norm_arg, "max_norm", rules::nonnegative);
    const double ord = norm_order(ord_arg);
    const double eps = real(eps_arg, "eps", rules::finite_nonnegative);
    const bool given_on_host = !total_norm.is_none() && is_real_number(total_norm);
    double given = 0.0;
    if (given_on_host) {
        given = real(total_norm, "total_norm");
        rules::given_total(given);
    }
    Call call("clip_by_global_norm_");
    const ArrayList list = call.list(arrays, "arrays", Access::write, kInPlaceFloatsOrComplex);
    if (call.on_cuda()) {
        // A total given on the device is used there as it is: no host read.
        std::optional<ArrayArg> given_total;
        if (given_on_host) {
            given_total = call.device_scalar(given, "total_norm");
        } else if (!total_norm.is_none()) {
            given_total = call.device_float64(total_norm, "total_norm");
        }
        const ArrayArg total = call.device_array({}, DType::float64, "total_norm");
        const ArrayArg factor = call.device_array({}, DType::float64, "factor");
        const cuda::Stream stream = call.stream();
        {
            Release release;
            cuda::clip_by_global_norm_(list.views.data(), list.size(), max_norm, ord, eps, policy,
                                       data_or_null<const double>(given_total),
                                       total.as<double>(), factor.as<double>(), stream);
        }
        if (policy == NonFinitePolicy::error) {
            const py::object value = result_type("host_float")(total.object);  // waits for the stream
            if (!std::isfinite(value.cast<double>())) raise_nonfinite(value);
        }
        return result_type("DeviceClipResult")(total.object, factor.object);
    }
    if (!total_norm.is_none() && !given_on_host) {
        throw py::type_error("total_norm must be a real number, got " + type_name_of(total_norm));
    }
    GlobalClipResult r;
    {
        Release release;
        r = clip_by_global_norm_(list.views.data(), list.size(), max_norm, ord, eps, policy, given_on_host, given);
    }
    if (r.nonfinite && policy == NonFinitePolicy::error) raise_nonfinite(py::float_(r.total_norm));
    return py::float_(r.total_norm);
}

py::object adaptive_clip_binding(py::handle grads, py::handle params, py::handle clipping_arg, py::handle eps_arg,
                                 py::handle unit_axis_arg) {
    const double clipping = real(clipping_arg, "clipping", rules::finite_nonnegative);
    const double eps = real(eps_arg, "eps", rules::finite_nonnegative);
    const int unit_axis = axis(unit_axis_arg, "unit_axis");
    Call call("adaptive_clip_");
    const ArrayList g = call.list(grads, "grads", Access::write, kInPlaceFloats, Keep::arrays);
    const ArrayList p = call.list(params, "params", Access::read, kNormInputs, Keep::arrays, &g);
    same_shapes(g.arrays, "grads", p.arrays, "params");
    const std::vector<UnitLayout> layouts = unit_layouts(g, unit_axis);
    run(call, [&] { adaptive_clip_(g.views.data(), p.views.data(), layouts.data(), layouts.size(), clipping, eps); },
        [&](cuda::Stream s) {
            cuda::adaptive_clip_(g.views.data(), p.views.data(), layouts.data(), layouts.size(), clipping, eps, s);
        });
    return g.sequence;
}

py::object unit_norms_binding(py::handle grads, py::handle unit_axis_arg) {
    const int unit_axis = axis(unit_axis_arg, "unit_axis");
    Call call("unit_norms", Call::cpu_only);
    const ArrayList list = call.list(grads, "grads", Access::read, kNormInputs, Keep::arrays);
    const std::vector<UnitLayout> layouts = unit_layouts(list, unit_axis);
    std::int64_t total = 0;
    for (const UnitLayout& l : layouts) total += l.units;
    const ArrayArg out = call.new_array({total}, DType::float64, "out");
    run(call, [&] { unit_norms(list.views.data(), layouts.data(), layouts.size(), out.as<double>()); },
        [](cuda::Stream) {});
    // One array per input: consecutive views of the one output.
    py::list per_array;
    std::int64_t at = 0;
    for (const UnitLayout& l : layouts) {
        per_array.append(out.object[py::slice(at, at + l.units, 1)]);
        at += l.units;
    }
    return std::move(per_array);
}

}  // namespace

void bind_norms(py::module_& m) {
    const auto none = py::none();
    m.def("norm_order", &norm_order, py::arg("ord"), "ord as the norms take it: a float p > 0 or inf.");
    m.def("global_norm", &global_norm_binding, py::arg("arrays"), py::arg("ord") = 2.0);
    m.def("norms", &norms_binding, py::arg("arrays"), py::arg("ord") = 2.0);
    m.def("grad_stats", &grad_stats_binding, py::arg("arrays"));
    m.def("clip_by_value_", &clip_by_value_binding, py::arg("arrays"), py::arg("clip_value") = none,
          py::arg("min") = none, py::arg("max") = none);
    m.def("scale_", &scale_binding, py::arg("arrays"), py::arg("factor"));
    m.def("zero_nonfinite_", &zero_nonfinite_binding, py::arg("arrays"));
    m.def("clip_by_norm_", &clip_by_norm_binding, py::arg("arrays"), py::arg("max_norm"), py::arg("ord") = 2.0,
          py::arg("eps") = 1e-6);
    m.def("clip_by_global_norm_", &clip_by_global_norm_binding, py::arg("arrays"), py::arg("max_norm"),
          py::arg("ord") = 2.0, py::arg("eps") = 1e-6, py::arg("nonfinite") = "propagate",
          py::arg("total_norm") = none);
    m.def("unit_norms", &unit_norms_binding, py::arg("grads"), py::arg("unit_axis") = 0);
    m.def("adaptive_clip_", &adaptive_clip_binding, py::arg("grads"), py::arg("params"), py::arg("clipping") = 0.01,
          py::arg("eps") = 1e-3, py::arg("unit_axis") = 0);
}

}  // namespace gradcore::python
