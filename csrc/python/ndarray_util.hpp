// Small helpers the bindings share: NumPy dtype numbers, shapes in messages, and the
// float32/float64 switch that picks a kernel's T.
#pragma once

#include <pybind11/numpy.h>

#include <string>
#include <vector>

namespace gradcore::python {

namespace py = pybind11;

// NumPy's type numbers (stable across NumPy 1.x and 2.x).
constexpr int kNpyHalf = 23;
constexpr int kNpyFloat = 11;
constexpr int kNpyDouble = 12;

// "(2, 3)", "(4,)" as NumPy prints shapes.
inline std::string shape_str(const std::vector<py::ssize_t>& shape) {
    std::string s = "(";
    for (std::size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
    return s + (shape.size() == 1 ? ",)" : ")");
}
inline std::string shape_of(const py::array& a) {
    return shape_str(std::vector<py::ssize_t>(a.shape(), a.shape() + a.ndim()));
}

// NumPy's ALIGNED flag: the data pointer and strides are multiples of the item's
// alignment. The kernels read elements as T, which misaligned addresses do not allow.
constexpr int kNpyAligned = 0x0100;
inline bool is_aligned(const py::array& a) { return a.size() == 0 || (a.flags() & kNpyAligned) != 0; }

inline bool is_native_byte_order(const py::array& a) {
    const char order = a.dtype().byteorder();
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    return order != '<';
#else
    return order != '>';
#endif
}

inline py::dtype native_dtype(const py::array& a) {
    return is_native_byte_order(a) ? a.dtype() : py::dtype(a.dtype().attr("newbyteorder")("="));
}

// An input as a C-contiguous, aligned array in native byte order: itself when it is
// one, else a converted copy (the kernels read the bytes as native numbers).
inline py::array contiguous_input(const py::array& a) {
    if ((a.flags() & py::array::c_style) && is_aligned(a) && is_native_byte_order(a)) return a;
    return a.attr("astype")(native_dtype(a), py::arg("order") = "C");
}

// f(float{}) or f(double{}) by the array's dtype (checked to be one of them before).
template <class F>
auto with_float(const py::array& a, F&& f) {
    if (a.dtype().num() == kNpyFloat) return f(float{});
    return f(double{});
}

}  // namespace gradcore::python
