// Bindings of the recurrent layer: dtype and shape checks, allocation of the outputs
// and of the cache the backward reads, then the C++ API with the GIL released.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include "parse_args.hpp"
#include "gradcore/rnn.hpp"
#include "ndarray_util.hpp"

namespace gradcore::python {
namespace py = pybind11;
namespace {


// Checks dtype (same as `like`) and shape, returns a C-contiguous aligned array (a copy if needed).
py::array checked(py::array a, const char* name, const py::array& like, std::vector<py::ssize_t> shape) {
    const int num = a.dtype().num();
    if (num != kNpyFloat && num != kNpyDouble) {
        throw py::type_error(std::string(name) + ": dtype " + std::string(py::str(a.dtype())) +
                             " is not supported (expected float32 or float64)");
    }
    if (num != like.dtype().num()) {
        throw py::type_error(std::string(name) + " has dtype " + std::string(py::str(a.dtype())) + " but x has " +
                             std::string(py::str(like.dtype())));
    }
    bool ok = a.ndim() == static_cast<py::ssize_t>(shape.size());
    for (std::size_t i = 0; ok && i < shape.size(); ++i) ok = a.shape(i) == shape[i];
    if (!ok) throw py::value_error(std::string(name) + " has shape " + shape_of(a) + ", expected " + shape_str(shape));
    return contiguous_input(a);
}

py::array empty_like(const py::array& like, std::vector<py::ssize_t> shape) {
    return py::array(native_dtype(like), shape);
}

template <class T>
const T* ptr(const std::optional<py::array>& a) {
    return a ? static_cast<const T*>(a->data()) : nullptr;
}
template <class T>
T* mut(const std::optional<py::array>& a) {
    return a ? static_cast<T*>(const_cast<void*>(a->data())) : nullptr;
}

}  // namespace

void bind_rnn(py::module_& m) {
    // Returns dict(y, h_n, c_n, and the cache: x, weight_ih, weight_hh, bias_ih, bias_hh, hs, cs, gates, gh_n).
    m.def("rnn_forward", [](py::array x, std::optional<py::array> h0, py::array weight_ih, py::array weight_hh,
                            std::optional<py::array> bias_ih, std::optional<py::array> bias_hh,
                            const std::string& cell_name, std::optional<py::array> c0) {
        const Cell cell = parse_cell(cell_name);
        const py::ssize_t G = gate_count(cell);
        if (x.dtype().num() != kNpyFloat && x.dtype().num() != kNpyDouble) {
            throw py::type_error("x: dtype " + std::string(py::str(x.dtype())) +
                                 " is not supported (expected float32 or float64)");
        }
        if (x.ndim() != 3) throw py::value_error("x must be 3-D (T, B, input_size), got shape " + shape_of(x));
        if (weight_hh.ndim() != 2) throw py::value_error("weight_hh must be 2-D, got shape " + shape_of(weight_hh));
        const py::ssize_t Tn = x.shape(0), B = x.shape(1), I = x.shape(2), H = weight_hh.shape(1);
        if (weight_hh.shape(0) != G * H) {
            throw py::value_error("weight_hh has shape " + shape_of(weight_hh) + ", expected " +
                                  shape_str({G * H, H}) + " for cell '" + cell_name + "' (" + std::to_string(G) +
                                  " gates)");
        }
        x = checked(x, "x", x, {Tn, B, I});
        weight_ih = checked(weight_ih, "weight_ih", x, {G * H, I});
        weight_hh = checked(weight_hh, "weight_hh", x, {G * H, H});
        if (bias_ih) bias_ih = checked(*bias_ih, "bias_ih", x, {G * H});
        if (bias_hh) bias_hh = checked(*bias_hh, "bias_hh", x, {G * H});
        if (c0 && cell != Cell::lstm) throw py::value_error("c0 is only for cell='lstm'");
        // The forward writes every step of the cache; only the initial state is set here.
        py::array hs = empty_like(x, {Tn + 1, B, H});
        std::optional<py::array> cs, gates, gh_n;
        if (cell == Cell::lstm) cs = empty_like(x, {Tn + 1, B, H});
        if (cell == Cell::lstm || cell == Cell::gru) gates = empty_like(x, {Tn, B, G * H});
        if (cell == Cell::gru) gh_n = empty_like(x, {Tn, B, H});
        const std::size_t state_bytes = static_cast<std::size_t>(B * H) * x.itemsize();
        auto set_initial = [&](py::array& states, const std::optional<py::array>& init, const char* name) {
            char* first = static_cast<char*>(states.mutable_data());
            if (init) {
                std::memcpy(first, checked(*init, name, x, {B, H}).data(), state_bytes);
            } else {
                std::fill_n(first, state_bytes, 0);
            }
        };
        set_initial(hs, h0, "h0");
        if (cs) set_initial(*cs, c0, "c0");
        with_float(x, [&](auto tag) {
            using T = decltype(tag);
            RnnForward<T> f{cell, Tn, B, I, H, static_cast<const T*>(x.data()),
                            static_cast<const T*>(weight_ih.data()), static_cast<const T*>(weight_hh.data()),
                            ptr<T>(bias_ih), ptr<T>(bias_hh), static_cast<T*>(hs.mutable_data()), mut<T>(cs),
                            mut<T>(gates), mut<T>(gh_n)};
            py::gil_scoped_release release;
            rnn_forward(f);
            return 0;
        });
        py::dict out;
        py::object slice_from_1 = py::reinterpret_steal<py::object>(PySlice_New(py::int_(1).ptr(), nullptr, nullptr));
        out["y"] = py::array::ensure(hs[slice_from_1].attr("copy")());
        out["h_n"] = hs[py::int_(Tn)].attr("copy")();
        out["c_n"] = cs ? py::object(cs.value()[py::int_(Tn)].attr("copy")()) : py::none();
        out["cell"] = cell_name;
        out["x"] = x, out["weight_ih"] = weight_ih, out["weight_hh"] = weight_hh;
        out["bias_ih"] = bias_ih ? py::object(*bias_ih) : py::none();
        out["bias_hh"] = bias_hh ? py::object(*bias_hh) : py::none();
        out["hs"] = hs;
        out["cs"] = cs ? py::object(*cs) : py::none();
        out["gates"] = gates ? py::object(*gates) : py::none();
        out["gh_n"] = gh_n ? py::object(*gh_n) : py::none();
        return out;
    }, py::arg("x"), py::arg("h0"), py::arg("weight_ih"), py::arg("weight_hh"), py::arg("bias_ih"),
       py::arg("bias_hh"), py::arg("cell"), py::arg("c0"));

    // cache: the dict from rnn_forward. Returns (grad_x, grad_h0, grad_c0, grad_weight_ih,
    // grad_weight_hh, grad_bias_ih, grad_bias_hh, hidden_grad_norms).
    m.def("rnn_backward", [](py::dict cache, py::array grad_y, std::optional<py::array> grad_h_n,
                             std::optional<py::array> grad_c_n, double clip_hidden) {
        const std::string cell_name = cache["cell"].cast<std::string>();
        const Cell cell = parse_cell(cell_name);
        const py::array x = cache["x"].cast<py::array>(), wih = cache["weight_ih"].cast<py::array>();
        const py::array whh = cache["weight_hh"].cast<py::array>(), hs = cache["hs"].cast<py::array>();
        auto opt = [&](const char* key) {
            return cache[key].is_none() ? std::optional<py::array>() : std::optional<py::array>(cache[key].cast<py::array>());
        };
        const std::optional<py::array> bih = opt("bias_ih"), bhh = opt("bias_hh"), cs = opt("cs"),
                                        gates = opt("gates"), gh_n = opt("gh_n");
        const py::ssize_t Tn = x.shape(0), B = x.shape(1), I = x.shape(2), H = whh.shape(1);
        const py::ssize_t G = gate_count(cell);
        grad_y = checked(grad_y, "grad_y", x, {Tn, B, H});
        if (grad_h_n) grad_h_n = checked(*grad_h_n, "grad_h_n", x, {B, H});
        if (grad_c_n && cell != Cell::lstm) throw py::value_error("grad_c_n is only for cell='lstm'");
        if (grad_c_n) grad_c_n = checked(*grad_c_n, "grad_c_n", x, {B, H});
        if (!(clip_hidden >= 0.0)) throw py::value_error("clip_hidden must be >= 0");
        py::array gx(x.dtype(), std::vector<py::ssize_t>{Tn, B, I}), gh0(x.dtype(), std::vector<py::ssize_t>{B, H});
        py::array gwih(x.dtype(), std::vector<py::ssize_t>{G * H, I}), gwhh(x.dtype(), std::vector<py::ssize_t>{G * H, H});
        std::optional<py::array> gc0, gbih, gbhh;
        if (cell == Cell::lstm) gc0 = py::array(x.dtype(), std::vector<py::ssize_t>{B, H});
        if (bih) gbih = py::array(x.dtype(), std::vector<py::ssize_t>{G * H});
        if (bhh) gbhh = py::array(x.dtype(), std::vector<py::ssize_t>{G * H});
        py::array_t<double> norms(Tn);
        with_float(x, [&](auto tag) {
            using T = decltype(tag);
            RnnForward<T> f{cell, Tn, B, I, H, static_cast<const T*>(x.data()), static_cast<const T*>(wih.data()),
                            static_cast<const T*>(whh.data()), ptr<T>(bih), ptr<T>(bhh),
                            static_cast<T*>(const_cast<void*>(hs.data())), mut<T>(cs), mut<T>(gates), mut<T>(gh_n)};
            RnnBackward<T> b{f, static_cast<const T*>(grad_y.data()), ptr<T>(grad_h_n), ptr<T>(grad_c_n),
                             clip_hidden, static_cast<T*>(gx.mutable_data()), static_cast<T*>(gh0.mutable_data()),
                             mut<T>(gc0), static_cast<T*>(gwih.mutable_data()), static_cast<T*>(gwhh.mutable_data()),
                             mut<T>(gbih), mut<T>(gbhh), norms.mutable_data()};
            py::gil_scoped_release release;
            rnn_backward(b);
            return 0;
        });
        auto obj = [](const std::optional<py::array>& a) { return a ? py::object(*a) : py::none(); };
        return py::make_tuple(gx, gh0, obj(gc0), gwih, gwhh, obj(gbih), obj(gbhh), norms);
    }, py::arg("cache"), py::arg("grad_y"), py::arg("grad_h_n"), py::arg("grad_c_n"), py::arg("clip_hidden"));
}

}  // namespace gradcore::python
