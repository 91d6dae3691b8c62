// Argument decoding shared by the CPU and CUDA bindings: the string names of the enums
// and the unit layout of adaptive clipping, with the messages the Python API documents.
#pragma once

#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>
#include <vector>

#include "gradcore/dense.hpp"
#include "gradcore/norms.hpp"
#include "gradcore/rnn.hpp"

namespace gradcore::python {

inline NonFinitePolicy parse_policy(const std::string& s) {
    if (s == "propagate") return NonFinitePolicy::propagate;
    if (s == "error") return NonFinitePolicy::error;
    if (s == "skip") return NonFinitePolicy::skip;
    if (s == "zero") return NonFinitePolicy::zero;
    throw pybind11::value_error("nonfinite must be one of 'propagate', 'error', 'skip', 'zero'; got '" + s + "'");
}

inline Activation parse_activation(const std::string& s) {
    if (s == "identity") return Activation::identity;
    if (s == "relu") return Activation::relu;
    if (s == "leaky_relu") return Activation::leaky_relu;
    if (s == "tanh") return Activation::tanh;
    if (s == "sigmoid") return Activation::sigmoid;
    throw pybind11::value_error(
        "activation must be one of 'identity', 'relu', 'leaky_relu', 'tanh', 'sigmoid'; got '" + s + "'");
}

inline Cell parse_cell(const std::string& s) {
    if (s == "rnn_tanh") return Cell::rnn_tanh;
    if (s == "rnn_relu") return Cell::rnn_relu;
    if (s == "lstm") return Cell::lstm;
    if (s == "gru") return Cell::gru;
    throw pybind11::value_error("cell must be one of 'rnn_tanh', 'rnn_relu', 'lstm', 'gru'; got '" + s + "'");
}

// Unit layout of adaptive clipping for grads[i] of this shape: units along `axis` when
// ndim >= 2, the whole array otherwise.
inline UnitLayout unit_layout(const std::vector<std::int64_t>& shape, int axis, std::size_t i) {
    const int nd = static_cast<int>(shape.size());
    std::int64_t numel = 1;
    for (std::int64_t d : shape) numel *= d;
    if (nd < 2) return {1, 1, numel};
    const int ax = axis < 0 ? axis + nd : axis;
    if (ax < 0 || ax >= nd) {
        throw pybind11::value_error("unit_axis " + std::to_string(axis) + " is out of range for grads[" +
                                    std::to_string(i) + "] with " + std::to_string(nd) + " dimensions");
    }
    UnitLayout l{1, shape[static_cast<std::size_t>(ax)], 1};
    for (int d = 0; d < ax; ++d) l.outer *= shape[static_cast<std::size_t>(d)];
    for (int d = ax + 1; d < nd; ++d) l.inner *= shape[static_cast<std::size_t>(d)];
    return l;
}

}  // namespace gradcore::python
