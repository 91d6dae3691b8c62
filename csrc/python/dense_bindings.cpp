// Bindings of matmul and the dense layer, one per operation: the shape, dtype, buffer and
// accumulate rules are written here once for both devices; then the CPU library or the
// CUDA backend runs with the GIL released. On the CPU inputs may have any strides (the
// GEMM packs them); outputs are C-contiguous, given or allocated on the call's device.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstring>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "call.hpp"
#include "parse_args.hpp"
#include "gradcore/cuda.hpp"
#include "gradcore/dense.hpp"

namespace gradcore::python {
namespace {

using Release = py::gil_scoped_release;

using Named = std::pair<const ArrayArg*, const char*>;

// An output must not share memory with an input (the kernels read one while writing the
// other), nor with another output.
void refuse_overlaps(std::initializer_list<Named> outputs, std::initializer_list<Named> inputs) {
    std::vector<Named> before(inputs);
    for (const Named& o : outputs) {
        if (!o.first) continue;
        for (const Named& b : before) {
            if (b.first && o.first->overlaps(*b.first)) {
                throw py::value_error(std::string(o.second) + " overlaps " + b.second + "; pass a separate output buffer");
            }
        }
        before.push_back(o);
    }
}

// A 2-D (or 1-D: one column) array as a matrix, strides in elements. A stride along an
// extent <= 1 is never used, and NumPy may give it any value: normalised.
template <class T>
MatrixRef<T> matrix(const ArrayArg& a, bool transpose = false) {
    const std::int64_t rows = a.shape[0], cols = a.shape.size() > 1 ? a.shape[1] : 1;
    std::int64_t rs = cols, cs = 1;
    if (!a.strides.empty()) {
        rs = rows > 1 ? a.strides[0] : cols;
        cs = a.shape.size() > 1 && cols > 1 ? a.strides[1] : 1;
    }
    MatrixRef<T> m{static_cast<T*>(a.data), rows, cols, rs, cs};
    if (transpose) m = {m.data, m.cols, m.rows, m.cs, m.rs};
    return m;
}

// The layer's weight, (out_features, in_features), against its input (batch, in_features).
void require_weight_for(const ArrayArg& x, const ArrayArg& w) {
    if (w.shape[1] != x.shape[1]) {
        throw py::value_error("x has shape " + shape_str(x.shape) + " but weight has shape " + shape_str(w.shape) +
                              " (expected (out_features, " + std::to_string(x.shape[1]) + "))");
    }
}

// A given output (the dtype of `like` and the result's shape) or a new one on the call's
// device.
ArrayArg output(Call& call, py::handle given, const char* name, const ArrayArg& like, const char* like_name,
                const std::vector<std::int64_t>& shape) {
    if (given.is_none()) return call.new_array(shape, like.dtype, name);
    ArrayArg a = call.array(given, name, Access::write, kLayerFloats);
    same_dtype(like, like_name, a, name);
    require_shape(a, name, shape);
    return a;
}

py::object matmul_binding(py::handle a_arg, py::handle b_arg, bool trans_a, bool trans_b, py::handle alpha_arg,
                          py::handle beta_arg, py::handle out) {
    const double alpha = real(alpha_arg, "alpha"), beta = real(beta_arg, "beta");
    Call call("matmul", Call::cpu_only);
    const ArrayArg a = call.array(a_arg, "a", Access::read_strided, kLayerFloats);
    const ArrayArg b = call.array(b_arg, "b", Access::read_strided, kLayerFloats);
    same_dtype(a, "a", b, "b");
    require_ndim(a, "a", 2);
    require_ndim(b, "b", 2);
    const std::int64_t M = trans_a ? a.shape[1] : a.shape[0], K = trans_a ? a.shape[0] : a.shape[1];
    const std::int64_t Kb = trans_b ? b.shape[1] : b.shape[0], N = trans_b ? b.shape[0] : b.shape[1];
    if (K != Kb) {
        throw py::value_error("matmul: a has shape " + shape_str(a.shape) + (trans_a ? " (transposed)" : "") +
                              " and b has shape " + shape_str(b.shape) + (trans_b ? " (transposed)" : "") +
                              ": inner dimensions " + std::to_string(K) + " and " + std::to_string(Kb) + " differ");
    }
    if (out.is_none() && beta != 0.0) throw py::value_error("beta != 0 needs out= (the matrix to scale and add to)");
    const ArrayArg c = output(call, out, "out", a, "a", {M, N});
    // The GEMM reads a and b while it writes c: an out that overlaps them is computed in
    // a copy (which beta reads) and copied back.
    ArrayArg target = c;
    if (c.overlaps(a) || c.overlaps(b)) {
        target = call.new_array({M, N}, a.dtype, "out");
        std::memcpy(target.data, c.data, static_cast<std::size_t>(c.numel * itemsize(c.dtype)));
    }
    with_float(a.dtype, [&](auto tag) {
        using T = decltype(tag);
        const MatrixRef<const T> am = matrix<const T>(a, trans_a), bm = matrix<const T>(b, trans_b);
        const MatrixRef<T> cm = matrix<T>(target);
        Release release;
        gemm(am, bm, cm, static_cast<T>(alpha), static_cast<T>(beta));
    });
    if (target.data != c.data) std::memcpy(c.data, target.data, static_cast<std::size_t>(c.numel * itemsize(c.dtype)));
    return c.object;
}

// prelu's slopes: 1 (shared) or out_features values of x's dtype; elu's alpha >= 0.
struct ActivationParams {
    Activation act;
    double negative_slope, alpha;
    std::optional<ArrayArg> prelu_weight;

    DenseDropout dropout;

    // The scalars, checked before any array.
    ActivationParams(py::handle activation, py::handle negative_slope_arg, py::handle alpha_arg,
                     py::handle dropout_arg, py::handle seed_arg, py::handle offset_arg)
        : act(parse_activation(activation)),
          negative_slope(real(negative_slope_arg, "negative_slope")),
          alpha(real(alpha_arg, "alpha")) {
        if (act == Activation::elu) rules::finite_nonnegative(alpha, "alpha");  // (the C++ API's rules)
        dropout.p = real(dropout_arg, "dropout", rules::probability_below_one);
        if (dropout.p > 0.0) {
            if (seed_arg.is_none()) throw py::value_error("dropout > 0 needs seed= (and offset=, the call's stream)");
            dropout.seed = counter(seed_arg, "seed");
            dropout.offset = counter(offset_arg, "offset");
        }
    }

    bool saves() const { return needs_saved(act, dropout.p); }

    // prelu's weight and the device, once x and the output size are known.
    void read_arrays(Call& call, py::handle prelu_weight_arg, const ArrayArg& x, std::int64_t n_out) {
        if (act == Activation::prelu) {
            if (prelu_weight_arg.is_none()) throw py::value_error("activation 'prelu' needs prelu_weight=");
            prelu_weight = call.array(prelu_weight_arg, "prelu_weight", Access::read, kLayerFloats);
            same_dtype(x, "x", *prelu_weight, "prelu_weight");
            require_ndim(*prelu_weight, "prelu_weight", 1);
            if (prelu_weight->numel != 1 && prelu_weight->numel != n_out) {
                throw py::value_error("prelu_weight has " + std::to_string(prelu_weight->numel) +
                                      " values, expected 1 (shared) or out_features = " + std::to_string(n_out));
            }
        } else if (!prelu_weight_arg.is_none()) {
            throw py::value_error("prelu_weight is only for activation 'prelu'");
        }
        if (needs_saved(act) && call.on_cuda()) {
            throw py::value_error(std::string("activation '") + name_of(act, kActivations) +
                                  "' runs on the CPU only (the CUDA backend has identity, relu, leaky_relu, tanh, "
                                  "sigmoid)");
        }
        if (dropout.p > 0.0 && call.on_cuda()) throw py::value_error("dropout runs on the CPU only");
    }

    // Into a DenseForward<T> or DenseBackward<T>.
    template <class Args>
    void apply(Args& args) const {
        using T = std::remove_cv_t<std::remove_pointer_t<decltype(args.prelu_weight)>>;
        args.alpha = alpha;
        args.dropout = dropout;
        if (prelu_weight) {
            args.prelu_weight = static_cast<const T*>(prelu_weight->data);
            args.prelu_weight_count = prelu_weight->numel;
        }
    }
};

py::object dense_forward_binding(py::handle x_arg, py::handle weight_arg, py::handle bias_arg, py::handle activation,
                                 py::handle negative_slope, py::handle alpha, py::handle prelu_weight,
                                 py::handle return_saved, py::handle dropout, py::handle seed, py::handle offset,
                                 py::handle out) {
    ActivationParams a(activation, negative_slope, alpha, dropout, seed, offset);
    Call call("dense_forward");
    const ArrayArg x = call.array(x_arg, "x", Access::read_strided, kLayerFloats);
    const ArrayArg w = call.array(weight_arg, "weight", Access::read_strided, kLayerFloats);
    const std::optional<ArrayArg> bias = call.optional(bias_arg, "bias", Access::read, kLayerFloats);
    same_dtype(x, "x", w, "weight");
    require_ndim(x, "x", 2);
    require_ndim(w, "weight", 2);
    require_weight_for(x, w);
    const std::int64_t batch = x.shape[0], n_out = w.shape[0];
    if (bias) {
        same_dtype(x, "x", *bias, "bias");
        require_shape(*bias, "bias", {n_out});
    }
    a.read_arrays(call, prelu_weight, x, n_out);
    const bool keep = truth(return_saved);
    if (keep && !a.saves()) {
        throw py::value_error("return_saved is for the activations whose backward needs z (elu, silu, gelu, "
                              "gelu_tanh, prelu; with dropout also tanh, sigmoid); the others' backward reads y");
    }
    const ArrayArg y = output(call, out, "out", x, "x", {batch, n_out});
    refuse_overlaps({{&y, "out"}}, {{&x, "x"}, {&w, "weight"}, {bias ? &*bias : nullptr, "bias"},
                                    {a.prelu_weight ? &*a.prelu_weight : nullptr, "prelu_weight"}});
    std::optional<ArrayArg> saved;
    if (keep) saved = call.new_array({batch, n_out}, x.dtype, "saved");
    with_float(x.dtype, [&](auto tag) {
        using T = decltype(tag);
        DenseForward<T> f{matrix<const T>(x), matrix<const T>(w), data_or_null<const T>(bias), matrix<T>(y), a.act,
                          a.negative_slope};
        a.apply(f);
        if (saved) f.saved = matrix<T>(*saved);
        run(call, [&] { dense_forward(f); }, [&](cuda::Stream s) { cuda::dense_forward(f, s); });
    });
    if (!keep) return y.object;
    return py::make_tuple(y.object, saved->object);
}

py::object dense_backward_binding(py::handle grad_y_arg, py::handle x_arg, py::handle weight_arg, py::handle y_arg,
                                  py::handle activation, py::handle negative_slope, py::handle alpha,
                                  py::handle prelu_weight, py::handle saved_arg, py::handle has_bias_arg,
                                  py::handle need_grad_x_arg, py::handle accumulate_arg,
                                  py::handle accumulate_grad_x_arg, py::handle grad_x_arg,
                                  py::handle grad_weight_arg, py::handle grad_bias_arg,
                                  py::handle grad_prelu_weight_arg, py::handle dropout, py::handle seed,
                                  py::handle offset) {
    ActivationParams a(activation, negative_slope, alpha, dropout, seed, offset);
    const bool has_bias = truth(has_bias_arg), need_grad_x = truth(need_grad_x_arg);
    const bool accumulate = truth(accumulate_arg), accumulate_grad_x = truth(accumulate_grad_x_arg);
    // The derivative's source: y, or what the forward saved for the activations that need z.
    const bool from_saved = a.saves();
    const char* source_name = from_saved ? "saved" : "y";
    py::handle source_arg = from_saved ? saved_arg : y_arg;
    if (source_arg.is_none()) {
        throw py::value_error(std::string("activation '") + name_of(a.act, kActivations) + "' needs " + source_name +
                              "= (" + (from_saved ? "from dense_forward(..., return_saved=True)" : "the forward's output") +
                              ")");
    }
    Call call("dense_backward");
    const ArrayArg gy = call.array(grad_y_arg, "grad_y", Access::read, kLayerFloats);
    const ArrayArg x = call.array(x_arg, "x", Access::read_strided, kLayerFloats);
    const ArrayArg w = call.array(weight_arg, "weight", Access::read_strided, kLayerFloats);
    const ArrayArg source = call.array(source_arg, source_name, Access::read, kLayerFloats);
    same_dtype(x, "x", w, "weight");
    same_dtype(x, "x", gy, "grad_y");
    same_dtype(x, "x", source, source_name);
    for (auto [arr, name] : {Named{&gy, "grad_y"}, {&x, "x"}, {&w, "weight"}, {&source, source_name}}) {
        require_ndim(*arr, name, 2);
    }
    const std::int64_t batch = x.shape[0], n_in = x.shape[1], n_out = w.shape[0];
    require_weight_for(x, w);
    require_shape(gy, "grad_y", {batch, n_out});
    require_shape(source, source_name, {batch, n_out});
    a.read_arrays(call, prelu_weight, x, n_out);
    const auto grad = [&](py::handle given, const char* name, const std::vector<std::int64_t>& shape,
                          bool adds) {
        if (given.is_none() && adds) {
            throw py::value_error(std::string(accumulate ? "accumulate" : "accumulate_grad_x") + "=True needs " +
                                  name + "= to add into");
        }
        return output(call, given, name, x, "x", shape);
    };
    if (accumulate_grad_x && !need_grad_x) {
        throw py::value_error("accumulate_grad_x=True needs need_grad_x=True");
    }
    std::optional<ArrayArg> gx, gb, ga;
    if (need_grad_x) gx = grad(grad_x_arg, "grad_x", {batch, n_in}, accumulate || accumulate_grad_x);
    const ArrayArg gw = grad(grad_weight_arg, "grad_weight", {n_out, n_in}, accumulate);
    if (has_bias) gb = grad(grad_bias_arg, "grad_bias", {n_out}, accumulate);
    if (a.prelu_weight) ga = grad(grad_prelu_weight_arg, "grad_prelu_weight", {a.prelu_weight->numel}, accumulate);
    refuse_overlaps({{gx ? &*gx : nullptr, "grad_x"}, {&gw, "grad_weight"}, {gb ? &*gb : nullptr, "grad_bias"},
                     {ga ? &*ga : nullptr, "grad_prelu_weight"}},
                    {{&gy, "grad_y"}, {&x, "x"}, {&w, "weight"}, {&source, source_name},
                     {a.prelu_weight ? &*a.prelu_weight : nullptr, "prelu_weight"}});
    with_float(x.dtype, [&](auto tag) {
        using T = decltype(tag);
        const MatrixRef<const T> src = matrix<const T>(source);
        DenseBackward<T> b{matrix<const T>(gy), matrix<const T>(x), matrix<const T>(w),
                           from_saved ? MatrixRef<const T>{nullptr, batch, n_out, n_out, 1} : src, a.act,
                           a.negative_slope, MatrixRef<T>{nullptr, batch, n_in, n_in, 1}, matrix<T>(gw),
                           data_or_null<T>(gb), accumulate, accumulate_grad_x};
        a.apply(b);
        if (from_saved) b.saved = src;
        if (ga) b.grad_prelu_weight = ga->as<T>();
        if (gx) b.grad_x = matrix<T>(*gx);
        run(call, [&] { dense_backward(b); }, [&](cuda::Stream s) { cuda::dense_backward(b, s); });
    });
    if (ga) return py::make_tuple(object_or_none(gx), gw.object, object_or_none(gb), ga->object);
    return py::make_tuple(object_or_none(gx), gw.object, object_or_none(gb));
}

}  // namespace

void bind_dense(py::module_& m) {
    const auto none = py::none();
    m.def("matmul", &matmul_binding, py::arg("a"), py::arg("b"), py::arg("trans_a") = false,
          py::arg("trans_b") = false, py::arg("alpha") = 1.0, py::arg("beta") = 0.0, py::arg("out") = none);
    m.def("dense_forward", &dense_forward_binding, py::arg("x"), py::arg("weight"), py::arg("bias") = none,
          py::arg("activation") = "identity", py::arg("negative_slope") = 0.01, py::arg("alpha") = 1.0,
          py::arg("prelu_weight") = none, py::arg("return_saved") = false, py::arg("dropout") = 0.0,
          py::arg("seed") = none, py::arg("offset") = 0, py::arg("out") = none);
    m.def("dense_backward", &dense_backward_binding, py::arg("grad_y"), py::arg("x"), py::arg("weight"),
          py::arg("y"), py::arg("activation") = "identity", py::arg("negative_slope") = 0.01,
          py::arg("alpha") = 1.0, py::arg("prelu_weight") = none, py::arg("saved") = none,
          py::arg("has_bias") = true, py::arg("need_grad_x") = true, py::arg("accumulate") = false,
          py::arg("accumulate_grad_x") = false, py::arg("grad_x") = none, py::arg("grad_weight") = none,
          py::arg("grad_bias") = none, py::arg("grad_prelu_weight") = none, py::arg("dropout") = 0.0,
          py::arg("seed") = none, py::arg("offset") = 0);
}

}  // namespace gradcore::python
