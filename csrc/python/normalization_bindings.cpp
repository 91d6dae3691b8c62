// Bindings of layer and batch normalisation (CPU): shapes, dtypes and the in-place
// running statistics checked here once, outputs allocated, the C++ API run with the GIL
// released. The forward returns (y, mean, rstd); gradcore/_normalization.py keeps them
// with the inputs as the cache the backward takes.
#include <pybind11/pybind11.h>

#include <algorithm>
#include <optional>
#include <string>
#include <vector>

#include "call.hpp"
#include "parse_args.hpp"
#include "gradcore/normalization.hpp"

namespace gradcore::python {
namespace {

using Release = py::gil_scoped_release;

std::int64_t product(const std::vector<std::int64_t>& shape, std::size_t begin, std::size_t end) {
    std::int64_t p = 1;
    for (std::size_t i = begin; i < end; ++i) p *= shape[i];
    return p;
}

// normalized_shape as a list of sizes (an int is a shape of one dimension).
std::vector<std::int64_t> shape_arg(py::handle v) {
    std::vector<std::int64_t> shape;
    if (PyLong_Check(v.ptr()) || (PyIndex_Check(v.ptr()) && !PySequence_Check(v.ptr()))) {
        shape.push_back(integer(v, "normalized_shape", 0, INT64_MAX));
        return shape;
    }
    if (!PySequence_Check(v.ptr()) || PyUnicode_Check(v.ptr())) {
        throw py::type_error("normalized_shape must be an int or a sequence of ints, got " + type_name_of(v));
    }
    for (py::handle d : py::reinterpret_borrow<py::sequence>(v)) {
        shape.push_back(integer(d, "normalized_shape", 0, INT64_MAX));
    }
    return shape;
}

// An optional per-feature parameter (gamma, beta, running statistics) of x's dtype.
std::optional<ArrayArg> parameter(Call& call, py::handle obj, const char* name, Access access, const ArrayArg& x,
                                  const std::vector<std::int64_t>& shape) {
    std::optional<ArrayArg> a = call.optional(obj, name, access, kLayerFloats);
    if (a) {
        same_dtype(x, "x", *a, name);
        require_shape(*a, name, shape);
    }
    return a;
}

ArrayArg float64_input(Call& call, py::handle obj, const char* name, const std::vector<std::int64_t>& shape) {
    ArrayArg a = call.array(obj, name, Access::read, {bit(DType::float64), 0});
    require_shape(a, name, shape);
    return a;
}

// The backward's outputs: grad_x unless not needed, the parameters' where the forward had
// them (param_shape each), returned as (grad_x, grad_gamma, grad_beta).
struct Grads {
    std::optional<ArrayArg> x, gamma, beta;
    Grads(Call& call, const ArrayArg& like, bool need_x, bool has_gamma, bool has_beta,
          const std::vector<std::int64_t>& param_shape) {
        if (need_x) x = call.new_array(like.shape, like.dtype, "grad_x");
        if (has_gamma) gamma = call.new_array(param_shape, like.dtype, "grad_gamma");
        if (has_beta) beta = call.new_array(param_shape, like.dtype, "grad_beta");
    }
    py::tuple result() const { return py::make_tuple(object_or_none(x), object_or_none(gamma), object_or_none(beta)); }
};

py::tuple layer_norm_forward_binding(py::handle x_arg, py::handle normalized_shape, py::handle gamma_arg,
                                     py::handle beta_arg, py::handle eps_arg) {
    const std::vector<std::int64_t> norm_shape = shape_arg(normalized_shape);
    const double eps = real(eps_arg, "eps");  // its rule: the C++ API's, checked before any write
    Call call("layer_norm_forward", Call::cpu_only);
    const ArrayArg x = call.array(x_arg, "x", Access::read, kLayerFloats);
    const std::size_t k = norm_shape.size(), nd = x.shape.size();
    const bool trailing = k <= nd && std::equal(norm_shape.begin(), norm_shape.end(), x.shape.end() - k);
    if (k == 0 || !trailing) {
        throw py::value_error("normalized_shape " + shape_str(norm_shape) + " must be the trailing dimensions of x, "
                              "which has shape " + shape_str(x.shape));
    }
    const std::optional<ArrayArg> gamma = parameter(call, gamma_arg, "gamma", Access::read, x, norm_shape);
    const std::optional<ArrayArg> beta = parameter(call, beta_arg, "beta", Access::read, x, norm_shape);
    const std::vector<std::int64_t> lead(x.shape.begin(), x.shape.end() - k);
    const ArrayArg y = call.new_array(x.shape, x.dtype, "y");
    const ArrayArg mean = call.new_array(lead, DType::float64, "mean");
    const ArrayArg rstd = call.new_array(lead, DType::float64, "rstd");
    with_float(x.dtype, [&](auto tag) {
        using T = decltype(tag);
        const LayerNormForward<T> f{x.as<const T>(), product(x.shape, 0, nd - k), product(x.shape, nd - k, nd),
                                    data_or_null<const T>(gamma), data_or_null<const T>(beta), eps, y.as<T>(),
                                    mean.as<double>(), rstd.as<double>()};
        Release release;
        layer_norm_forward(f);
    });
    return py::make_tuple(y.object, mean.object, rstd.object);
}

py::tuple layer_norm_backward_binding(py::handle grad_y_arg, py::handle x_arg, py::handle gamma_arg,
                                      py::handle mean_arg, py::handle rstd_arg, py::handle normalized_shape,
                                      py::handle need_grad_x_arg, py::handle has_beta_arg) {
    const std::vector<std::int64_t> norm_shape = shape_arg(normalized_shape);
    const bool need_grad_x = truth(need_grad_x_arg), has_beta = truth(has_beta_arg);
    Call call("layer_norm_backward", Call::cpu_only);
    const ArrayArg gy = call.array(grad_y_arg, "grad_y", Access::read, kLayerFloats);
    const ArrayArg x = call.array(x_arg, "x", Access::read, kLayerFloats);
    same_dtype(x, "x", gy, "grad_y");
    require_shape(gy, "grad_y", x.shape);
    const std::size_t k = norm_shape.size(), nd = x.shape.size();
    if (k == 0 || k > nd || !std::equal(norm_shape.begin(), norm_shape.end(), x.shape.end() - k)) {
        throw py::value_error("cache: normalized_shape " + shape_str(norm_shape) + " does not fit x of shape " +
                              shape_str(x.shape));
    }
    const std::optional<ArrayArg> gamma = parameter(call, gamma_arg, "gamma", Access::read, x, norm_shape);
    const std::vector<std::int64_t> lead(x.shape.begin(), x.shape.end() - k);
    const ArrayArg mean = float64_input(call, mean_arg, "mean", lead);
    const ArrayArg rstd = float64_input(call, rstd_arg, "rstd", lead);
    const Grads grads(call, x, need_grad_x, gamma.has_value(), has_beta, norm_shape);
    with_float(x.dtype, [&](auto tag) {
        using T = decltype(tag);
        const LayerNormBackward<T> b{gy.as<const T>(), x.as<const T>(), product(x.shape, 0, nd - k),
                                     product(x.shape, nd - k, nd), data_or_null<const T>(gamma),
                                     mean.as<const double>(), rstd.as<const double>(), data_or_null<T>(grads.x),
                                     data_or_null<T>(grads.gamma), data_or_null<T>(grads.beta)};
        Release release;
        layer_norm_backward(b);
    });
    return grads.result();
}

// x (N, C, *): batch, channels and the length of the trailing dimensions.
struct BatchShape {
    std::int64_t batch, channels, length;
};
BatchShape batch_shape(const ArrayArg& x) {
    if (x.shape.size() < 2) {
        throw py::value_error("x must have at least 2 dimensions (N, C) or (N, C, L), got shape " + shape_str(x.shape));
    }
    return {x.shape[0], x.shape[1], product(x.shape, 2, x.shape.size())};
}

py::tuple batch_norm_forward_binding(py::handle x_arg, py::handle gamma_arg, py::handle beta_arg,
                                     py::handle running_mean_arg, py::handle running_var_arg, py::handle training_arg,
                                     py::handle momentum_arg, py::handle eps_arg) {
    const bool training = truth(training_arg);
    const double momentum = real(momentum_arg, "momentum");
    const double eps = real(eps_arg, "eps");  // its rule: the C++ API's, checked before any write
    Call call("batch_norm_forward", Call::cpu_only);
    const ArrayArg x = call.array(x_arg, "x", Access::read, kLayerFloats);
    const BatchShape s = batch_shape(x);
    const std::vector<std::int64_t> per_channel{s.channels};
    const std::optional<ArrayArg> gamma = parameter(call, gamma_arg, "gamma", Access::read, x, per_channel);
    const std::optional<ArrayArg> beta = parameter(call, beta_arg, "beta", Access::read, x, per_channel);
    const std::optional<ArrayArg> rm = parameter(call, running_mean_arg, "running_mean", Access::write, x, per_channel);
    const std::optional<ArrayArg> rv = parameter(call, running_var_arg, "running_var", Access::write, x, per_channel);
    if (rm.has_value() != rv.has_value()) {
        throw py::value_error("running_mean and running_var must be given together (or both None)");
    }
    if (rm && (rm->overlaps(*rv) || rm->overlaps(x) || rv->overlaps(x))) {
        throw py::value_error("running_mean, running_var and x must not share memory");
    }
    const ArrayArg y = call.new_array(x.shape, x.dtype, "y");
    const ArrayArg mean = call.new_array(per_channel, DType::float64, "mean");
    const ArrayArg rstd = call.new_array(per_channel, DType::float64, "rstd");
    with_float(x.dtype, [&](auto tag) {
        using T = decltype(tag);
        const BatchNormForward<T> f{x.as<const T>(), s.batch, s.channels, s.length, data_or_null<const T>(gamma),
                                    data_or_null<const T>(beta), data_or_null<T>(rm), data_or_null<T>(rv), training,
                                    momentum, eps, y.as<T>(), mean.as<double>(), rstd.as<double>()};
        Release release;
        batch_norm_forward(f);
    });
    return py::make_tuple(y.object, mean.object, rstd.object);
}

py::tuple batch_norm_backward_binding(py::handle grad_y_arg, py::handle x_arg, py::handle gamma_arg,
                                      py::handle mean_arg, py::handle rstd_arg, py::handle batch_stats_arg,
                                      py::handle need_grad_x_arg, py::handle has_beta_arg) {
    const bool batch_stats = truth(batch_stats_arg), need_grad_x = truth(need_grad_x_arg);
    const bool has_beta = truth(has_beta_arg);
    Call call("batch_norm_backward", Call::cpu_only);
    const ArrayArg gy = call.array(grad_y_arg, "grad_y", Access::read, kLayerFloats);
    const ArrayArg x = call.array(x_arg, "x", Access::read, kLayerFloats);
    same_dtype(x, "x", gy, "grad_y");
    require_shape(gy, "grad_y", x.shape);
    const BatchShape s = batch_shape(x);
    const std::vector<std::int64_t> per_channel{s.channels};
    const std::optional<ArrayArg> gamma = parameter(call, gamma_arg, "gamma", Access::read, x, per_channel);
    const ArrayArg mean = float64_input(call, mean_arg, "mean", per_channel);
    const ArrayArg rstd = float64_input(call, rstd_arg, "rstd", per_channel);
    const Grads grads(call, x, need_grad_x, gamma.has_value(), has_beta, per_channel);
    with_float(x.dtype, [&](auto tag) {
        using T = decltype(tag);
        const BatchNormBackward<T> b{gy.as<const T>(), x.as<const T>(), s.batch, s.channels, s.length,
                                     data_or_null<const T>(gamma), mean.as<const double>(), rstd.as<const double>(),
                                     batch_stats, data_or_null<T>(grads.x), data_or_null<T>(grads.gamma),
                                     data_or_null<T>(grads.beta)};
        Release release;
        batch_norm_backward(b);
    });
    return grads.result();
}

}  // namespace

void bind_normalization(py::module_& m) {
    const auto none = py::none();
    m.def("layer_norm_forward", &layer_norm_forward_binding, py::arg("x"), py::arg("normalized_shape"),
          py::arg("gamma") = none, py::arg("beta") = none, py::arg("eps") = 1e-5);
    m.def("layer_norm_backward", &layer_norm_backward_binding, py::arg("grad_y"), py::arg("x"), py::arg("gamma"),
          py::arg("mean"), py::arg("rstd"), py::arg("normalized_shape"), py::arg("need_grad_x") = true,
          py::arg("has_beta") = true);
    m.def("batch_norm_forward", &batch_norm_forward_binding, py::arg("x"), py::arg("gamma"), py::arg("beta"),
          py::arg("running_mean"), py::arg("running_var"), py::arg("training"), py::arg("momentum") = 0.1,
          py::arg("eps") = 1e-5);
    m.def("batch_norm_backward", &batch_norm_backward_binding, py::arg("grad_y"), py::arg("x"), py::arg("gamma"),
          py::arg("mean"), py::arg("rstd"), py::arg("batch_stats"), py::arg("need_grad_x") = true,
          py::arg("has_beta") = true);
}

}  // namespace gradcore::python
