// The compiled reader for the Python side (gradcore's NumPy models, optimisers and
// functional forms): host arrays of its arguments, and the rule of what one array is.
#include <pybind11/pybind11.h>

#include "call.hpp"

namespace gradcore::python {

void bind_arrays(py::module_& m) {
    // Host arrays for the Python side to keep: NumPy views of the caller's memory, or
    // converted copies for reading; any dtype (the caller states its own rule).
    constexpr DTypes kAnyOnHost{~0u, 0};
    m.def("host_arrays", [](py::handle arrays, const char* name, bool writeable) {
        Call call("host_arrays", Call::cpu_only | Call::flat_lists);
        const Access access = writeable ? Access::write : Access::read;
        const ArrayList list = call.list(arrays, name, access, kAnyOnHost, Keep::arrays);
        py::list out;
        for (const ArrayArg& a : list.arrays) out.append(a.memory);
        return out;
    }, py::arg("arrays"), py::arg("name"), py::arg("writeable"));
    m.def("host_array", [](py::handle array, const char* label, bool writeable) {
        Call call("host_array", Call::cpu_only);
        return call.array(array, label, writeable ? Access::write : Access::read, kAnyOnHost).memory;
    }, py::arg("array"), py::arg("label"), py::arg("writeable"));

    m.def("is_one_array", [](py::handle obj) { return is_one_array(obj); }, py::arg("obj"));
}

}  // namespace gradcore::python
