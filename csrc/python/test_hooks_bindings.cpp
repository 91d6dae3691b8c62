// Bindings of the test and benchmark hooks (csrc/runtime/test_hooks.hpp): what the
// tests and gradcore.bench call, kept apart from the user-facing bindings.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstring>
#include <string>

#include "call.hpp"
#include "parse_args.hpp"
#include "runtime/test_hooks.hpp"

namespace gradcore::python {
namespace py = pybind11;

void bind_test_hooks(py::module_& m) {
    // f(x) elementwise with the kernels' vector math, on a C-contiguous copy.
    m.def("_vector_math", [](py::handle x, py::handle name) {
        static constexpr Named<MathFunction> kFunctions[] = {
            {"exp", MathFunction::exp}, {"tanh", MathFunction::tanh}, {"sigmoid", MathFunction::sigmoid},
            {"expm1", MathFunction::expm1}, {"normal_tail", MathFunction::normal_tail}};
        const MathFunction fn = by_name(name, "name", kFunctions);
        Call call("_vector_math", Call::cpu_only);
        const ArrayArg in = call.array(x, "x", Access::read, {kFloat32or64, 0});
        ArrayArg out = call.new_array(in.shape, in.dtype, "out");
        std::memcpy(out.data, in.data, static_cast<std::size_t>(in.numel * itemsize(in.dtype)));
        with_float(in.dtype, [&](auto tag) {
            py::gil_scoped_release release;
            vector_math(out.as<decltype(tag)>(), out.numel, fn);
        });
        return out.object;
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
