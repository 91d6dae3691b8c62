// Bindings of dropout (CPU): p, the counters and the output checked here once, the C++
// API run with the GIL released; and the generator's raw words for the tests.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <climits>
#include <string>

#include "call.hpp"
#include "parse_args.hpp"
#include "gradcore/dropout.hpp"

namespace gradcore::python {
namespace {

py::object dropout_binding(py::handle x_arg, py::handle p_arg, py::handle seed_arg, py::handle offset_arg,
                           py::handle out_arg) {
    const double p = real(p_arg, "p", rules::probability);  // the C++ API's rule
    const std::uint64_t seed = counter(seed_arg, "seed"), offset = counter(offset_arg, "offset");
    Call call("dropout", Call::cpu_only);
    const ArrayArg x = call.array(x_arg, "x", Access::read, kLayerFloats);
    ArrayArg y = out_arg.is_none() ? call.new_array(x.shape, x.dtype, "out")
                                   : call.array(out_arg, "out", Access::write, kLayerFloats);
    same_dtype(x, "x", y, "out");
    require_shape(y, "out", x.shape);
    // In place (out is x) is fine, element by element; any other overlap is not.
    const auto bytes = static_cast<std::size_t>(x.numel * itemsize(x.dtype));
    const char *xb = static_cast<const char*>(x.data), *yb = static_cast<const char*>(y.data);
    if (xb != yb && bytes && xb < yb + bytes && yb < xb + bytes) {
        throw py::value_error("out overlaps x without being x; pass x itself (in place) or a separate buffer");
    }
    with_float(x.dtype, [&](auto tag) {
        using T = decltype(tag);
        const Dropout<T> d{static_cast<const T*>(x.data), y.as<T>(), x.numel, p, seed, offset};
        py::gil_scoped_release release;
        dropout(d);
    });
    return y.object;
}

}  // namespace

void bind_dropout(py::module_& m) {
    m.def("dropout", &dropout_binding, py::arg("x"), py::arg("p"), py::arg("seed"), py::arg("offset"),
          py::arg("out") = py::none());
    m.def("_dropout_bits", [](std::int64_t n, py::handle seed, py::handle offset) {
        if (n < 0) throw py::value_error("n must be >= 0");
        const std::uint64_t s = counter(seed, "seed"), o = counter(offset, "offset");
        py::array_t<std::uint32_t> out(n);
        std::uint32_t* words = out.mutable_data();
        py::gil_scoped_release release;
        dropout_bits(words, n, s, o);
        return out;
    }, py::arg("n"), py::arg("seed"), py::arg("offset"));
}

}  // namespace gradcore::python
