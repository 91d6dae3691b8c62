// Bindings of matmul and the dense layer: dtype, shape and buffer checks, then the C++
// API with the GIL released. Inputs may have any strides (the GEMM packs them);
// outputs must be writeable and C-contiguous.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <optional>
#include <string>

#include "parse_args.hpp"
#include "gradcore/dense.hpp"
#include "ndarray_util.hpp"

namespace gradcore::python {
namespace py = pybind11;
namespace {

int float_num(const py::array& a, const char* name) {
    const int num = a.dtype().num();
    if (num != kNpyFloat && num != kNpyDouble) {
        throw py::type_error(std::string(name) + ": dtype " + std::string(py::str(a.dtype())) +
                             " is not supported (expected float32 or float64)");
    }
    return num;
}

void same_dtype(const py::array& a, const char* an, const py::array& b, const char* bn) {
    if (float_num(b, bn) != float_num(a, an)) {
        throw py::type_error(std::string(an) + " and " + bn + " must have the same dtype, got " +
                             std::string(py::str(a.dtype())) + " and " + std::string(py::str(b.dtype())));
    }
}

void require_ndim(const py::array& a, const char* name, py::ssize_t ndim) {
    if (a.ndim() != ndim) {
        throw py::value_error(std::string(name) + " must be " + std::to_string(ndim) + "-D, got shape " + shape_of(a));
    }
}

// Strides in elements; arrays that are misaligned (data or byte strides not whole
// elements) or in the other byte order are copied.
template <class T>
MatrixRef<const T> input_matrix(py::array& a, bool transpose) {
    const auto item = static_cast<py::ssize_t>(sizeof(T));
    if (!is_aligned(a) || !is_native_byte_order(a)) a = contiguous_input(a);
    // A stride along a dimension of extent <= 1 is never used, and NumPy may give it any
    // value (it still calls such arrays contiguous): normalise it.
    MatrixRef<const T> m{static_cast<const T*>(a.data()), a.shape(0), a.shape(1),
                         a.shape(0) > 1 ? a.strides(0) / item : a.shape(1),
                         a.shape(1) > 1 ? a.strides(1) / item : 1};
    if (transpose) m = {m.data, m.cols, m.rows, m.cs, m.rs};
    return m;
}

template <class T>
MatrixRef<T> output_matrix(py::array& a) {
    return {static_cast<T*>(a.mutable_data()), a.shape(0), a.shape(1), a.ndim() == 2 ? a.shape(1) : 1, 1};
}

// A caller-provided output: right dtype, shape, writeable, C-contiguous.
py::array checked_output(py::handle obj, const char* name, const py::array& like,
                         std::initializer_list<py::ssize_t> shape) {
    if (!py::isinstance<py::array>(obj)) {
        throw py::type_error(std::string(name) + " must be a numpy.ndarray, got " +
                             std::string(py::str(py::type::handle_of(obj).attr("__name__"))));
    }
    py::array a = py::reinterpret_borrow<py::array>(obj);
    same_dtype(like, "the inputs", a, name);
    const std::vector<py::ssize_t> want(shape);
    bool ok = a.ndim() == static_cast<py::ssize_t>(want.size());
    for (std::size_t i = 0; ok && i < want.size(); ++i) ok = a.shape(i) == want[i];
    if (!ok) throw py::value_error(std::string(name) + " has shape " + shape_of(a) + ", expected " + shape_str(want));
    if (!a.writeable()) throw py::value_error(std::string(name) + " is read-only");
    if (!(a.flags() & py::array::c_style)) throw py::value_error(std::string(name) + " must be C-contiguous");
    if (!is_aligned(a)) throw py::value_error(std::string(name) + " is not aligned to its item size");
    if (!is_native_byte_order(a)) throw py::type_error(std::string(name) + " is not in native byte order");
    return a;
}

// A new array of like's dtype, in native byte order (what the kernels write).
py::array new_like(const py::array& like, std::initializer_list<py::ssize_t> shape) {
    return py::array(native_dtype(like), std::vector<py::ssize_t>(shape));
}


}  // namespace

void bind_dense(py::module_& m) {
    m.def("matmul", [](py::array a, py::array b, bool trans_a, bool trans_b, double alpha, double beta,
                       py::object out) {
        same_dtype(a, "a", b, "b");
        require_ndim(a, "a", 2);
        require_ndim(b, "b", 2);
        const py::ssize_t M = trans_a ? a.shape(1) : a.shape(0), K = trans_a ? a.shape(0) : a.shape(1);
        const py::ssize_t Kb = trans_b ? b.shape(1) : b.shape(0), N = trans_b ? b.shape(0) : b.shape(1);
        if (K != Kb) {
            throw py::value_error("matmul: a has shape " + shape_of(a) + (trans_a ? " (transposed)" : "") +
                                  " and b has shape " + shape_of(b) + (trans_b ? " (transposed)" : "") +
                                  ": inner dimensions " + std::to_string(K) + " and " + std::to_string(Kb) +
                                  " differ");
        }
        py::array c;
        if (out.is_none()) {
            if (beta != 0.0) throw py::value_error("beta != 0 needs out= (the matrix to scale and add to)");
            c = new_like(a, {M, N});
        } else {
            c = checked_output(out, "out", a, {M, N});
        }
        with_float(a, [&](auto tag) {
            using T = decltype(tag);
            const MatrixRef<const T> am = input_matrix<T>(a, trans_a), bm = input_matrix<T>(b, trans_b);
            const MatrixRef<T> cm = output_matrix<T>(c);
            py::gil_scoped_release release;
            gemm(am, bm, cm, static_cast<T>(alpha), static_cast<T>(beta));
            return 0;
        });
        return c;
    }, py::arg("a"), py::arg("b"), py::arg("trans_a"), py::arg("trans_b"), py::arg("alpha"), py::arg("beta"),
       py::arg("out"));

    m.def("dense_forward", [](py::array x, py::array weight, std::optional<py::array> bias,
                              const std::string& activation, double negative_slope, py::object out) {
        same_dtype(x, "x", weight, "weight");
        require_ndim(x, "x", 2);
        require_ndim(weight, "weight", 2);
        if (x.shape(1) != weight.shape(1)) {
            throw py::value_error("x has shape " + shape_of(x) + " but weight has shape " + shape_of(weight) +
                                  " (expected (out_features, " + std::to_string(x.shape(1)) + "))");
        }
        const Activation act = parse_activation(activation);
        const py::ssize_t batch = x.shape(0), n_out = weight.shape(0);
        if (bias) {
            same_dtype(x, "x", *bias, "bias");
            if (bias->ndim() != 1 || bias->shape(0) != n_out) {
                throw py::value_error("bias has shape " + shape_of(*bias) + ", expected (" + std::to_string(n_out) + ",)");
            }
            *bias = py::array::ensure(*bias, py::array::c_style);
        }
        py::array y = out.is_none() ? new_like(x, {batch, n_out}) : checked_output(out, "out", x, {batch, n_out});
        with_float(x, [&](auto tag) {
            using T = decltype(tag);
            DenseForward<T> f{input_matrix<T>(x, false), input_matrix<T>(weight, false),
                              bias ? static_cast<const T*>(bias->data()) : nullptr, output_matrix<T>(y), act,
                              negative_slope};
            py::gil_scoped_release release;
            dense_forward(f);
            return 0;
        });
        return y;
    }, py::arg("x"), py::arg("weight"), py::arg("bias"), py::arg("activation"), py::arg("negative_slope"),
       py::arg("out"));

    m.def("dense_backward", [](py::array grad_y, py::array x, py::array weight, py::array y,
                               const std::string& activation, double negative_slope, bool has_bias,
                               bool need_grad_x, bool accumulate, py::object grad_x_out,
                               py::object grad_weight_out, py::object grad_bias_out) {
        same_dtype(x, "x", weight, "weight");
        same_dtype(x, "x", grad_y, "grad_y");
        same_dtype(x, "x", y, "y");
        for (auto [arr, name] : {std::pair<py::array*, const char*>{&grad_y, "grad_y"}, {&x, "x"},
                                 {&weight, "weight"}, {&y, "y"}}) {
            require_ndim(*arr, name, 2);
        }
        const Activation act = parse_activation(activation);
        const py::ssize_t batch = x.shape(0), n_in = x.shape(1), n_out = weight.shape(0);
        if (weight.shape(1) != n_in) {
            throw py::value_error("x has shape " + shape_of(x) + " but weight has shape " + shape_of(weight) +
                                  " (expected (out_features, " + std::to_string(n_in) + "))");
        }
        for (auto [arr, name] : {std::pair<py::array*, const char*>{&grad_y, "grad_y"}, {&y, "y"}}) {
            if (arr->shape(0) != batch || arr->shape(1) != n_out) {
                throw py::value_error(std::string(name) + " has shape " + shape_of(*arr) + ", expected (" +
                                      std::to_string(batch) + ", " + std::to_string(n_out) + ")");
            }
            *arr = py::array::ensure(*arr, py::array::c_style);
        }
        auto output = [&](py::object given, const char* name, std::initializer_list<py::ssize_t> shape) {
            if (!given.is_none()) return checked_output(given, name, x, shape);
            if (accumulate) throw py::value_error(std::string("accumulate=True needs ") + name + "= to add into");
            return new_like(x, shape);
        };
        py::object gx = py::none(), gb = py::none();
        if (need_grad_x) gx = output(grad_x_out, "grad_x", {batch, n_in});
        py::array gw = output(grad_weight_out, "grad_weight", {n_out, n_in});
        if (has_bias) gb = output(grad_bias_out, "grad_bias", {n_out});
        with_float(x, [&](auto tag) {
            using T = decltype(tag);
            DenseBackward<T> b{input_matrix<T>(grad_y, false), input_matrix<T>(x, false),
                               input_matrix<T>(weight, false), input_matrix<T>(y, false), act, negative_slope,
                               MatrixRef<T>{nullptr, batch, n_in, n_in, 1}, output_matrix<T>(gw), nullptr,
                               accumulate};
            if (need_grad_x) {
                py::array gxa = py::reinterpret_borrow<py::array>(gx);
                b.grad_x = output_matrix<T>(gxa);
            }
            if (has_bias) b.grad_bias = static_cast<T*>(py::reinterpret_borrow<py::array>(gb).mutable_data());
            py::gil_scoped_release release;
            dense_backward(b);
            return 0;
        });
        return py::make_tuple(gx, gw, gb);
    }, py::arg("grad_y"), py::arg("x"), py::arg("weight"), py::arg("y"), py::arg("activation"),
       py::arg("negative_slope"), py::arg("has_bias"), py::arg("need_grad_x"), py::arg("accumulate"),
       py::arg("grad_x"), py::arg("grad_weight"), py::arg("grad_bias"));
}

}  // namespace gradcore::python
