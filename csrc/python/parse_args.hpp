// Decoding of the bindings' scalar arguments, with the messages the Python API documents:
// Python numbers to doubles and ints (TypeError for what is not one), the string names of
// the enums, and the unit layout of adaptive clipping. The rules the values obey are the
// C++ API's (runtime/argument_rules.hpp); where a binding must know before it allocates,
// it calls them here.
#pragma once

#include <pybind11/pybind11.h>

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "gradcore/dense.hpp"
#include "gradcore/norms.hpp"
#include "gradcore/rnn.hpp"
#include "runtime/argument_rules.hpp"

namespace gradcore::python {

inline std::string type_name_of(pybind11::handle v) {
    return pybind11::str(pybind11::type::handle_of(v).attr("__name__")).cast<std::string>();
}

inline bool is_real_number(pybind11::handle v) {
    if (PyFloat_Check(v.ptr()) || PyLong_Check(v.ptr())) return !PyBool_Check(v.ptr());
    // numbers.Real covers NumPy's floating and integer scalars. Leaked on purpose: a
    // static py::object would be destroyed after the interpreter.
    static pybind11::object* real = new pybind11::object(pybind11::module_::import("numbers").attr("Real"));
    return PyObject_IsInstance(v.ptr(), real->ptr()) == 1;
}

// A real number (not bool) as double, else TypeError naming the argument.
inline double real(pybind11::handle v, const char* name) {
    if (PyFloat_CheckExact(v.ptr())) return PyFloat_AS_DOUBLE(v.ptr());
    if (!is_real_number(v)) {
        throw pybind11::type_error(std::string(name) + " must be a real number, got " + type_name_of(v));
    }
    const double d = PyFloat_AsDouble(v.ptr());
    if (d == -1.0 && PyErr_Occurred()) {
        if (!PyErr_ExceptionMatches(PyExc_OverflowError)) throw pybind11::error_already_set();
        PyErr_Clear();
        throw pybind11::value_error(std::string(name) + " is out of the float64 range: " +
                                    pybind11::str(v).cast<std::string>());
    }
    return d;
}

// A real number that obeys one of the C++ API's rules (rules::nonnegative, ...).
inline double real(pybind11::handle v, const char* name, void (*rule)(double, const char*)) {
    const double d = real(v, name);
    rule(d, name);
    return d;
}

// The order of a norm: any real p > 0 or inf (also the string 'inf', as torch accepts).
inline double norm_order(pybind11::handle ord) {
    if (PyUnicode_Check(ord.ptr())) {
        std::string s = pybind11::str(ord).cast<std::string>();
        const auto b = s.find_first_not_of(" \t\n\r"), e = s.find_last_not_of(" \t\n\r");
        s = b == std::string::npos ? "" : s.substr(b, e - b + 1);
        for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
        if (s == "inf" || s == "+inf") return INFINITY;
    }
    if (!is_real_number(ord)) throw rules::bad_norm_order(pybind11::repr(ord).cast<std::string>());
    const double p = real(ord, "ord");
    rules::norm_order(p);
    return p;
}

// An int (not bool) in [lo, hi], else TypeError / ValueError naming the argument.
inline long long integer(pybind11::handle v, const char* name, long long lo, long long hi) {
    const bool is_int = (PyLong_Check(v.ptr()) && !PyBool_Check(v.ptr())) ||
                        (!PyBool_Check(v.ptr()) && PyIndex_Check(v.ptr()) && !PyFloat_Check(v.ptr()));
    if (!is_int) throw pybind11::type_error(std::string(name) + " must be an int, got " + type_name_of(v));
    const pybind11::int_ i = pybind11::reinterpret_steal<pybind11::int_>(PyNumber_Index(v.ptr()));
    int overflow = 0;
    const long long x = PyLong_AsLongLongAndOverflow(i.ptr(), &overflow);
    if (overflow != 0 || x < lo || x > hi) {
        throw pybind11::value_error(std::string(name) + " must be in [" + std::to_string(lo) + ", " +
                                    std::to_string(hi) + "], got " + pybind11::str(v).cast<std::string>());
    }
    return x;
}

// An axis of an array (NumPy arrays have at most 64).
// A Python integer in [0, 2^64): the generator's seed and offset.
inline std::uint64_t counter(pybind11::handle v, const char* name) {
    if (PyBool_Check(v.ptr()) || !PyIndex_Check(v.ptr())) {
        throw pybind11::type_error(std::string(name) + " must be an int, got " + type_name_of(v));
    }
    const pybind11::int_ i = pybind11::reinterpret_steal<pybind11::int_>(PyNumber_Index(v.ptr()));
    const unsigned long long u = PyLong_AsUnsignedLongLong(i.ptr());
    if (u == static_cast<unsigned long long>(-1) && PyErr_Occurred()) {
        PyErr_Clear();
        throw pybind11::value_error(std::string(name) + " must be in [0, 2**64), got " + std::string(pybind11::str(v)));
    }
    return u;
}

inline int axis(pybind11::handle v, const char* name) { return static_cast<int>(integer(v, name, -64, 63)); }

// The names of the enums the API takes as strings, each written once: for parsing, for
// the messages that list them, and for printing a value.
template <class E>
struct Named {
    const char* name;
    E value;
};
inline constexpr Named<NonFinitePolicy> kPolicies[] = {{"propagate", NonFinitePolicy::propagate},
                                                       {"error", NonFinitePolicy::error},
                                                       {"skip", NonFinitePolicy::skip},
                                                       {"zero", NonFinitePolicy::zero}};
inline constexpr Named<Activation> kActivations[] = {{"identity", Activation::identity},
                                                     {"relu", Activation::relu},
                                                     {"leaky_relu", Activation::leaky_relu},
                                                     {"tanh", Activation::tanh},
                                                     {"sigmoid", Activation::sigmoid},
                                                     {"elu", Activation::elu},
                                                     {"silu", Activation::silu},
                                                     {"gelu", Activation::gelu},
                                                     {"gelu_tanh", Activation::gelu_tanh},
                                                     {"prelu", Activation::prelu}};
inline constexpr Named<Cell> kCells[] = {
    {"rnn_tanh", Cell::rnn_tanh}, {"rnn_relu", Cell::rnn_relu}, {"lstm", Cell::lstm}, {"gru", Cell::gru}};

// "'a', 'b', 'c'".
template <class E, std::size_t N>
std::string quoted_names(const Named<E> (&names)[N]) {
    std::string s;
    for (std::size_t i = 0; i < N; ++i) s += (i ? ", '" : "'") + std::string(names[i].name) + "'";
    return s;
}

// The value the string `v` names, else ValueError "<arg> must be one of ...; got <repr>".
template <class E, std::size_t N>
E by_name(pybind11::handle v, const char* arg, const Named<E> (&names)[N]) {
    if (PyUnicode_Check(v.ptr())) {
        const std::string s = pybind11::str(v).cast<std::string>();
        for (const Named<E>& n : names) {
            if (s == n.name) return n.value;
        }
    }
    throw pybind11::value_error(std::string(arg) + " must be one of " + quoted_names(names) + "; got " +
                                pybind11::repr(v).cast<std::string>());
}

template <class E, std::size_t N>
const char* name_of(E value, const Named<E> (&names)[N]) {
    for (const Named<E>& n : names) {
        if (n.value == value) return n.name;
    }
    return "?";
}

inline NonFinitePolicy parse_policy(pybind11::handle v) { return by_name(v, "nonfinite", kPolicies); }

inline Activation parse_activation(pybind11::handle v) {
    if (!PyUnicode_Check(v.ptr())) {
        throw pybind11::type_error("activation must be a string, one of " + quoted_names(kActivations) + "; got " +
                                   type_name_of(v));
    }
    return by_name(v, "activation", kActivations);
}

inline Cell parse_cell(pybind11::handle v) { return by_name(v, "cell", kCells); }

inline const char* cell_name(Cell c) { return name_of(c, kCells); }

// Python's truth of an object (flags such as has_bias= accept what `if` accepts).
inline bool truth(pybind11::handle v) {
    const int r = PyObject_IsTrue(v.ptr());
    if (r < 0) throw pybind11::error_already_set();
    return r != 0;
}

// Unit layout of adaptive clipping for <name>[i] of this shape: units along `axis` when
// ndim >= 2, the whole array otherwise.
inline UnitLayout unit_layout(const std::vector<std::int64_t>& shape, int axis, const char* name, std::size_t i) {
    const int nd = static_cast<int>(shape.size());
    std::int64_t numel = 1;
    for (std::int64_t d : shape) numel *= d;
    if (nd < 2) return {1, 1, numel};
    const int ax = axis < 0 ? axis + nd : axis;
    if (ax < 0 || ax >= nd) {
        throw pybind11::value_error("unit_axis " + std::to_string(axis) + " is out of range for " + name + "[" +
                                    std::to_string(i) + "] with " + std::to_string(nd) + " dimensions");
    }
    UnitLayout l{1, shape[static_cast<std::size_t>(ax)], 1};
    for (int d = 0; d < ax; ++d) l.outer *= shape[static_cast<std::size_t>(d)];
    for (int d = ax + 1; d < nd; ++d) l.inner *= shape[static_cast<std::size_t>(d)];
    return l;
}

}  // namespace gradcore::python
