// gradcore._core: the Python face of libgradcore. The runtime's switches and facts, and
// the CUDA backend's (for gradcore.cuda), here; the operations' bindings in their own
// files. Every operation's one binding routes device arrays to the CUDA backend.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>

#include "gradcore/cuda.hpp"
#include "gradcore/runtime.hpp"
#include "parse_args.hpp"

namespace gradcore::python {

namespace py = pybind11;

void bind_arrays(py::module_& m);
void bind_norms(py::module_& m);
void bind_dense(py::module_& m);
void bind_rnn(py::module_& m);
void bind_optim(py::module_& m);
void bind_normalization(py::module_& m);
void bind_dropout(py::module_& m);
void bind_test_hooks(py::module_& m);

}  // namespace gradcore::python

PYBIND11_MODULE(_core, m) {
    namespace py = pybind11;
    using namespace gradcore;
    m.doc() = "gradcore's compiled core; use the gradcore package, not this module.";

    // Fails the import with a clear message when GRADCORE_ISA names a bad target.
    try {
        isa_active();
    } catch (const std::invalid_argument& e) {
        throw py::import_error(std::string("gradcore: GRADCORE_ISA: ") + e.what());
    }

    m.def("_isa_available", &isa_available);
    m.def("_isa_active", &isa_active);
    m.def("_set_isa", &set_isa, py::arg("name"));
    m.def("set_num_threads", &set_num_threads, py::arg("n"));
    m.def("get_num_threads", &get_num_threads);
    m.def("_version", &version);
    m.def("_compiler", &compiler);
    python::bind_arrays(m);
    python::bind_norms(m);
    python::bind_dense(m);
    python::bind_rnn(m);
    python::bind_optim(m);
    python::bind_normalization(m);
    python::bind_dropout(m);

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
        const int d = static_cast<int>(python::integer(device, "device", 0, INT32_MAX));
        Release release;
        return cuda::device_name(d);
    }, py::arg("device"));
    // stream: a cudaStream_t as an int (0: the legacy default stream).
    m.def("cuda_synchronize", [](py::handle device, py::handle stream) {
        const int d = static_cast<int>(python::integer(device, "device", 0, INT32_MAX));
        const auto handle = static_cast<std::uintptr_t>(python::integer(stream, "stream", 0, INT64_MAX));
        Release release;
        cuda::synchronize({d, reinterpret_cast<void*>(handle)});
    }, py::arg("device"), py::arg("stream"));
    m.def("cuda_cublas_status", [] {
        Release release;
        return cuda::cublas_status();
    });
    python::bind_test_hooks(m);
}
