// gradcore._core: the Python face of libgradcore. Runtime switches and facts here; the
// kernels' bindings in their own files.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "gradcore/runtime.hpp"

namespace gradcore::python {

namespace py = pybind11;

void bind_norms(py::module_& m);
void bind_dense(py::module_& m);
void bind_rnn(py::module_& m);
void bind_optim(py::module_& m);
void bind_cuda(py::module_& m);

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
    m.def("_memory_probe", [](py::array_t<float, py::array::c_style> a, const std::string& mode) {
        if (mode == "read") {
            const float* p = a.data();
            py::gil_scoped_release release;
            return memory_probe_read(p, a.size());
        }
        if (mode == "update") {
            float* p = a.mutable_data();
            py::gil_scoped_release release;
            memory_probe_update(p, a.size());
            return 0.0;
        }
        throw py::value_error("mode must be 'read' or 'update'");
    }, py::arg("array"), py::arg("mode"));
    m.def("_fma_probe", [](const std::string& dtype, std::int64_t iterations) {
        if (dtype != "float32" && dtype != "float64") throw py::value_error("dtype must be 'float32' or 'float64'");
        const DType dt = dtype == "float32" ? DType::float32 : DType::float64;
        py::gil_scoped_release release;
        return fma_probe(dt, iterations);
    }, py::arg("dtype"), py::arg("iterations"));

    python::bind_norms(m);
    python::bind_dense(m);
    python::bind_rnn(m);
    python::bind_optim(m);
    python::bind_cuda(m);
}
