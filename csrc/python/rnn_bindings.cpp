// Bindings of the recurrent layer: the forward pass and backpropagation through time, on
// the CPU or on a CUDA device (where the arrays are). The shape and dtype rules are written
// here once for both; the cache the forward leaves for the backward is one typed object,
// RNNCache, holding the arrays it refers to.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <optional>
#include <string>
#include <vector>

#include "call.hpp"
#include "parse_args.hpp"
#include "gradcore/cuda.hpp"
#include "gradcore/rnn.hpp"

namespace gradcore::python {
namespace {

// An array of x's dtype and the given shape.
void check_like(const ArrayArg& a, const char* name, const ArrayArg& x, const std::vector<std::int64_t>& shape) {
    if (a.dtype != x.dtype) {
        throw py::type_error(std::string(name) + " has dtype " + dtype_name(a.dtype) + " but x has " +
                             dtype_name(x.dtype));
    }
    require_shape(a, name, shape);
}

}  // namespace

// What rnn_backward needs from the forward pass: the inputs it read (their `memory`, the
// caller's arrays or the contiguous copies the forward made, is kept) and the states it
// wrote (see gradcore/rnn.hpp for the layout), on the device the forward ran on.
struct RnnCache {
    Cell cell;
    std::int64_t steps, batch, input, hidden;
    DType dtype;
    bool on_cuda;
    ArrayArg x, weight_ih, weight_hh;
    std::optional<ArrayArg> bias_ih, bias_hh;
    ArrayArg hs;
    std::optional<ArrayArg> cs, gates, gh_n;

    // The forward's view: it writes the states (and the outputs the forward binding adds).
    template <class T>
    RnnForward<T> forward() const {
        return {cell, steps, batch, input, hidden, x.as<const T>(), weight_ih.as<const T>(), weight_hh.as<const T>(),
                data_or_null<const T>(bias_ih), data_or_null<const T>(bias_hh), hs.as<T>(), data_or_null<T>(cs),
                data_or_null<T>(gates), data_or_null<T>(gh_n), nullptr, nullptr, nullptr, nullptr, nullptr};
    }

    // The memory the cache owns (the states; x and the weights are the caller's).
    std::int64_t nbytes() const {
        std::int64_t n = hs.numel;
        for (const auto* a : {&cs, &gates, &gh_n}) n += *a ? (*a)->numel : 0;
        return n * itemsize(dtype);
    }
};

namespace {

py::object rnn_forward_binding(py::handle x_arg, py::handle h0_arg, py::handle wih_arg, py::handle whh_arg,
                               py::handle bih_arg, py::handle bhh_arg, py::handle cell_arg, py::handle c0_arg) {
    const Cell cell = parse_cell(cell_arg);
    const std::int64_t G = gate_count(cell);
    Call call("rnn_forward");
    const ArrayArg x = call.array(x_arg, "x", Access::read, kLayerFloats);
    const std::optional<ArrayArg> h0 = call.optional(h0_arg, "h0", Access::read, kLayerFloats);
    const ArrayArg wih = call.array(wih_arg, "weight_ih", Access::read, kLayerFloats);
    const ArrayArg whh = call.array(whh_arg, "weight_hh", Access::read, kLayerFloats);
    const std::optional<ArrayArg> bih = call.optional(bih_arg, "bias_ih", Access::read, kLayerFloats);
    const std::optional<ArrayArg> bhh = call.optional(bhh_arg, "bias_hh", Access::read, kLayerFloats);
    const std::optional<ArrayArg> c0 = call.optional(c0_arg, "c0", Access::read, kLayerFloats);
    if (x.shape.size() != 3) throw py::value_error("x must be 3-D (T, B, input_size), got shape " + shape_str(x.shape));
    if (whh.shape.size() != 2) throw py::value_error("weight_hh must be 2-D, got shape " + shape_str(whh.shape));
    const std::int64_t T = x.shape[0], B = x.shape[1], I = x.shape[2], H = whh.shape[1];
    if (whh.shape[0] != G * H) {
        throw py::value_error("weight_hh has shape " + shape_str(whh.shape) + ", expected " + shape_str({G * H, H}) +
                              " for cell '" + cell_name(cell) + "' (" + std::to_string(G) + " gates)");
    }
    check_like(wih, "weight_ih", x, {G * H, I});
    check_like(whh, "weight_hh", x, {G * H, H});
    if (bih) check_like(*bih, "bias_ih", x, {G * H});
    if (bhh) check_like(*bhh, "bias_hh", x, {G * H});
    if (c0 && cell != Cell::lstm) throw py::value_error("c0 is only for cell='lstm'");
    if (h0) check_like(*h0, "h0", x, {B, H});
    if (c0) check_like(*c0, "c0", x, {B, H});

    RnnCache cache{cell, T, B, I, H, x.dtype, call.on_cuda(), x, wih, whh, bih, bhh};
    cache.hs = call.new_array({T + 1, B, H}, x.dtype, "hs");
    if (cell == Cell::lstm) cache.cs = call.new_array({T + 1, B, H}, x.dtype, "cs");
    if (cell == Cell::lstm || cell == Cell::gru) cache.gates = call.new_array({T, B, G * H}, x.dtype, "gates");
    if (cell == Cell::gru) cache.gh_n = call.new_array({T, B, H}, x.dtype, "gh_n");
    // y, h_n and c_n are copies: a caller writing into them must not change the cache.
    const ArrayArg y = call.new_array({T, B, H}, x.dtype, "y"), h_n = call.new_array({B, H}, x.dtype, "h_n");
    std::optional<ArrayArg> c_n;
    if (cell == Cell::lstm) c_n = call.new_array({B, H}, x.dtype, "c_n");
    with_float(x.dtype, [&](auto tag) {
        using TT = decltype(tag);
        RnnForward<TT> f = cache.forward<TT>();
        f.h0 = data_or_null<const TT>(h0), f.c0 = data_or_null<const TT>(c0);
        f.y = y.as<TT>(), f.h_n = h_n.as<TT>(), f.c_n = data_or_null<TT>(c_n);
        run(call, [&] { rnn_forward(f); }, [&](cuda::Stream s) { cuda::rnn_forward(f, s); });
    });
    return result_type("RNNForward")(y.object, h_n.object, object_or_none(c_n), py::cast(std::move(cache)));
}

py::object rnn_backward_binding(py::handle cache_arg, py::handle grad_y_arg, py::handle grad_h_n_arg,
                                py::handle grad_c_n_arg, py::handle clip_hidden) {
    if (!py::isinstance<RnnCache>(cache_arg)) {
        throw py::type_error("cache must be the RNNCache returned by rnn_forward, got " + type_name_of(cache_arg));
    }
    const RnnCache& c = cache_arg.cast<const RnnCache&>();
    double clip = 0.0;
    if (!clip_hidden.is_none()) {
        clip = real(clip_hidden, "clip_hidden");
        if (!(clip > 0.0)) {
            throw py::value_error("clip_hidden must be > 0 (or None for no clipping), got " + rules::number(clip));
        }
    }
    const std::int64_t T = c.steps, B = c.batch, I = c.input, H = c.hidden, G = gate_count(c.cell);
    const bool lstm = c.cell == Cell::lstm;
    Call call("rnn_backward");
    // The cache's arrays lead: the gradients must be on the device the forward ran on.
    call.array(c.x.memory, "cache", Access::read, kLayerFloats);
    const ArrayArg gy = call.array(grad_y_arg, "grad_y", Access::read, kLayerFloats);
    check_like(gy, "grad_y", c.x, {T, B, H});
    const std::optional<ArrayArg> ghn = call.optional(grad_h_n_arg, "grad_h_n", Access::read, kLayerFloats);
    if (ghn) check_like(*ghn, "grad_h_n", c.x, {B, H});
    if (!grad_c_n_arg.is_none() && !lstm) throw py::value_error("grad_c_n is only for cell='lstm'");
    const std::optional<ArrayArg> gcn = call.optional(grad_c_n_arg, "grad_c_n", Access::read, kLayerFloats);
    if (gcn) check_like(*gcn, "grad_c_n", c.x, {B, H});

    const ArrayArg gx = call.new_array({T, B, I}, c.dtype, "grad_x");
    const ArrayArg gh0 = call.new_array({B, H}, c.dtype, "grad_h0");
    std::optional<ArrayArg> gc0, gbih, gbhh;
    if (lstm) gc0 = call.new_array({B, H}, c.dtype, "grad_c0");
    const ArrayArg gwih = call.new_array({G * H, I}, c.dtype, "grad_weight_ih");
    const ArrayArg gwhh = call.new_array({G * H, H}, c.dtype, "grad_weight_hh");
    if (c.bias_ih) gbih = call.new_array({G * H}, c.dtype, "grad_bias_ih");
    if (c.bias_hh) gbhh = call.new_array({G * H}, c.dtype, "grad_bias_hh");
    const ArrayArg norms = call.new_array({T}, DType::float64, "hidden_grad_norms");
    with_float(c.dtype, [&](auto tag) {
        using TT = decltype(tag);
        const RnnBackward<TT> b{states_of(c.forward<TT>()), gy.as<const TT>(), data_or_null<const TT>(ghn),
                                data_or_null<const TT>(gcn), clip, gx.as<TT>(), gh0.as<TT>(), data_or_null<TT>(gc0),
                                gwih.as<TT>(), gwhh.as<TT>(), data_or_null<TT>(gbih), data_or_null<TT>(gbhh),
                                norms.as<double>()};
        run(call, [&] { rnn_backward(b); }, [&](cuda::Stream s) { cuda::rnn_backward(b, s); });
    });
    return result_type("RNNGrads")(gx.object, gh0.object, object_or_none(gc0), gwih.object, gwhh.object,
                                   object_or_none(gbih), object_or_none(gbhh), norms.object);
}

}  // namespace

void bind_rnn(py::module_& m) {
    py::class_<RnnCache>(m, "RNNCache", R"(What ``rnn_backward`` needs from the forward pass (opaque to callers).

Memory, per time step, in elements of the dtype (B batch, H hidden): ``B*H`` for the
hidden states (all cells), plus ``B*H`` cell states and ``4*B*H`` activated gates for
LSTM (6 B H in all), or ``3*B*H`` gates and ``B*H`` of ``W_hn h + b_hn`` for GRU (5 B H).
The cache also refers to (does not copy) the contiguous inputs x and the weights:
modifying them before the backward changes it. ``nbytes`` is the memory the cache itself
owns. A cache of a forward pass on a GPU holds device arrays.)")
        .def_property_readonly("cell", [](const RnnCache& c) { return cell_name(c.cell); })
        .def_property_readonly("steps", [](const RnnCache& c) { return c.steps; })
        .def_property_readonly("batch", [](const RnnCache& c) { return c.batch; })
        .def_property_readonly("dtype", [](const RnnCache& c) { return dtype_name(c.dtype); })
        .def_property_readonly("nbytes", &RnnCache::nbytes)
        .def("__repr__", [](const RnnCache& c) {
            return std::string("RNNCache(cell='") + cell_name(c.cell) + "', steps=" + std::to_string(c.steps) +
                   ", batch=" + std::to_string(c.batch) + ", dtype=" + dtype_name(c.dtype) +
                   ", nbytes=" + std::to_string(c.nbytes()) + ")";
        });
    const auto none = py::none();
    m.def("rnn_forward", &rnn_forward_binding, py::arg("x"), py::arg("h0"), py::arg("weight_ih"),
          py::arg("weight_hh"), py::arg("bias_ih") = none, py::arg("bias_hh") = none, py::arg("cell") = "lstm",
          py::arg("c0") = none);
    m.def("rnn_backward", &rnn_backward_binding, py::arg("cache"), py::arg("grad_y"), py::arg("grad_h_n") = none,
          py::arg("grad_c_n") = none, py::arg("clip_hidden") = none);
}

}  // namespace gradcore::python
