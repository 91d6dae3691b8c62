// Bindings of the fused optimiser steps (CPU only): the lists are validated (sizes,
// dtypes, writeability) before anything is written, then one C++ call with the GIL
// released. Parameters and gradients may be 16-bit; state and master weights are
// float32/float64 (gradcore::sgd_step says which goes with which).
#include <pybind11/pybind11.h>

#include "call.hpp"
#include "gradcore/optim.hpp"

namespace gradcore::python {
namespace {

constexpr DTypes kHostParams{kRealFloats, 0};
constexpr DTypes kHostState{kFloat32or64, 0};

// The master weights, or none (None).
ArrayList master_list(Call& call, py::handle masters, const ArrayList& params) {
    ArrayList m;
    if (masters.is_none()) return m;
    m = call.list(masters, "masters", Access::write, kHostState, Keep::arrays);
    same_shapes(params.arrays, "params", m.arrays, "masters");
    return m;
}

}  // namespace

void bind_optim(py::module_& m) {
    m.def("sgd_step", [](py::handle params, py::handle grads, py::handle buffers, double lr, double momentum,
                         double dampening, bool nesterov, double weight_decay, double grad_scale, bool first_step,
                         double l1, bool proximal, py::handle masters) {
        Call call("sgd_step", Call::cpu_only | Call::flat_lists);
        const ArrayList p = call.list(params, "params", Access::write, kHostParams, Keep::arrays);
        const ArrayList g = call.list(grads, "grads", Access::read, kHostParams, Keep::arrays);
        same_shapes(p.arrays, "params", g.arrays, "grads");
        ArrayList b;
        if (momentum != 0.0) {
            b = call.list(buffers, "buffers", Access::write, kHostState, Keep::arrays);
            same_shapes(p.arrays, "params", b.arrays, "buffers");
        }
        const ArrayList w = master_list(call, masters, p);
        const SgdOptions o{.lr = lr, .momentum = momentum, .dampening = dampening, .weight_decay = weight_decay,
                           .grad_scale = grad_scale, .nesterov = nesterov, .first_step = first_step,
                           .l1 = l1, .proximal = proximal};
        py::gil_scoped_release release;
        sgd_step(p.views.data(), g.views.data(), momentum != 0.0 ? b.views.data() : nullptr, p.views.size(), o,
                 masters.is_none() ? nullptr : w.views.data());
    }, py::arg("params"), py::arg("grads"), py::arg("buffers"), py::arg("lr"), py::arg("momentum"),
       py::arg("dampening"), py::arg("nesterov"), py::arg("weight_decay"), py::arg("grad_scale"),
       py::arg("first_step"), py::arg("l1") = 0.0, py::arg("proximal") = false, py::arg("masters") = py::none());

    m.def("adam_step", [](py::handle params, py::handle grads, py::handle exp_avg, py::handle exp_avg_sq,
                          double lr, double beta1, double beta2, double eps, double weight_decay, bool decoupled,
                          double grad_scale, long long step, double l1, py::handle masters) {
        Call call("adam_step", Call::cpu_only | Call::flat_lists);
        const ArrayList p = call.list(params, "params", Access::write, kHostParams, Keep::arrays);
        const ArrayList g = call.list(grads, "grads", Access::read, kHostParams, Keep::arrays);
        const ArrayList m1 = call.list(exp_avg, "exp_avg", Access::write, kHostState, Keep::arrays);
        const ArrayList m2 = call.list(exp_avg_sq, "exp_avg_sq", Access::write, kHostState, Keep::arrays);
        same_shapes(p.arrays, "params", g.arrays, "grads");
        same_shapes(p.arrays, "params", m1.arrays, "exp_avg");
        same_shapes(p.arrays, "params", m2.arrays, "exp_avg_sq");
        const ArrayList w = master_list(call, masters, p);
        const AdamOptions o{.lr = lr, .beta1 = beta1, .beta2 = beta2, .eps = eps, .weight_decay = weight_decay,
                            .grad_scale = grad_scale, .step = step, .decoupled = decoupled, .l1 = l1};
        py::gil_scoped_release release;
        adam_step(p.views.data(), g.views.data(), m1.views.data(), m2.views.data(), p.views.size(), o,
                  masters.is_none() ? nullptr : w.views.data());
    }, py::arg("params"), py::arg("grads"), py::arg("exp_avg"), py::arg("exp_avg_sq"), py::arg("lr"),
       py::arg("beta1"), py::arg("beta2"), py::arg("eps"), py::arg("weight_decay"), py::arg("decoupled"),
       py::arg("grad_scale"), py::arg("step"), py::arg("l1") = 0.0, py::arg("masters") = py::none());
}

}  // namespace gradcore::python
