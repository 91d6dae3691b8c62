// Bindings of the test and benchmark hooks (csrc/runtime/test_hooks.hpp): what the
// tests and gradcore.bench call, kept apart from the user-facing bindings.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <string>
#include <vector>

#include "array_arg.hpp"
#include "runtime/test_hooks.hpp"

namespace gradcore::python {
namespace py = pybind11;

void bind_test_hooks(py::module_& m) {
    // f(x) elementwise with the kernels' vector math, on a C-contiguous copy.
    m.def("_vector_math", [](py::array x, const std::string& name) {
        const bool single = x.dtype().equal(py::dtype::of<float>());
        if (!single && !x.dtype().equal(py::dtype::of<double>())) {
            throw py::type_error("x: dtype " + std::string(py::str(x.dtype())) +
                                 " is not supported (expected float32 or float64)");
        }
        MathFunction fn;
        if (name == "exp") {
            fn = MathFunction::exp;
        } else if (name == "tanh") {
            fn = MathFunction::tanh;
        } else if (name == "sigmoid") {
            fn = MathFunction::sigmoid;
        } else {
            throw py::value_error("name must be 'exp', 'tanh' or 'sigmoid', got '" + name + "'");
        }
        py::array out = py::array::ensure(x, py::array::c_style | py::array::forcecast);
        out = py::array(out.dtype(), std::vector<py::ssize_t>(out.shape(), out.shape() + out.ndim()),
                        out.data());  // a fresh copy we may write
        with_float(single ? DType::float32 : DType::float64, [&](auto tag) {
            using T = decltype(tag);
            T* p = static_cast<T*>(out.mutable_data());
            const std::int64_t n = out.size();
            py::gil_scoped_release release;
            vector_math(p, n, fn);
        });
        return out;
    }, py::arg("x"), py::arg("name"));

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
}

}  // namespace gradcore::python
