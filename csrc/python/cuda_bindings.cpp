// The CUDA backend's facts and stream control for gradcore.cuda. Its operations have no
// bindings of their own: every operation's one binding routes device arrays to it.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <string>

#include "parse_args.hpp"
#include "gradcore/cuda.hpp"

namespace gradcore::python {
namespace py = pybind11;

void bind_cuda(py::module_& m) {
    using Release = py::gil_scoped_release;
    m.def("_cuda_built", &cuda_built);
    m.def("_cuda_device_count", [] {
        Release release;
        return cuda_device_count();
    });
    m.def("_cuda_self_test", [] {
        Release release;
        return cuda_self_test();
    });
    m.def("cuda_device_name", [](py::handle device) {
        const int d = static_cast<int>(integer(device, "device", 0, INT32_MAX));
        Release release;
        return cuda::device_name(d);
    }, py::arg("device"));
    // stream: a cudaStream_t as an int (0: the legacy default stream).
    m.def("cuda_synchronize", [](py::handle device, py::handle stream) {
        const int d = static_cast<int>(integer(device, "device", 0, INT32_MAX));
        if (!PyLong_Check(stream.ptr()) || PyBool_Check(stream.ptr())) {
            throw py::type_error("stream must be an int (a cudaStream_t handle; 0 is the legacy default stream), "
                                 "got " + type_name_of(stream));
        }
        const unsigned long long handle = PyLong_AsUnsignedLongLong(stream.ptr());
        if (PyErr_Occurred()) {
            PyErr_Clear();
            throw py::value_error("stream must be a non-negative int (a cudaStream_t handle)");
        }
        const cuda::Stream s{d, reinterpret_cast<void*>(static_cast<std::uintptr_t>(handle))};
        Release release;
        cuda::synchronize(s);
    }, py::arg("device"), py::arg("stream"));
    m.def("cuda_cublas_status", [] {
        Release release;
        return cuda::cublas_status();
    });
}

}  // namespace gradcore::python
