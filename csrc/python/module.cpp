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
    python::bind_norms(m);
    python::bind_dense(m);
    python::bind_rnn(m);
    python::bind_optim(m);
    python::bind_cuda(m);
    python::bind_test_hooks(m);
}
