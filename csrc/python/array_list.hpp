// Turns a Python sequence of arrays into the TensorView table the C++ API takes,
// validating every element before anything runs: a bad element anywhere means nothing
// in the list is touched.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <vector>

#include "gradcore/tensor.hpp"

namespace gradcore::python {

namespace py = pybind11;

enum class Access {
    read,   // any array-like; non-contiguous input is copied
    write,  // writeable, C-contiguous memory of float32/float64, used in place
};

struct ArrayList {
    std::vector<TensorView> views;
    std::vector<py::array> arrays;  // keeps converted arrays alive while the GIL is released
};

// `name` is the argument's name, used in messages ("arrays[3]: ...").
ArrayList to_array_list(py::handle sequence, const char* name, Access access);

}  // namespace gradcore::python
