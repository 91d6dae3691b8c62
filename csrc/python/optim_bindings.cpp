// Bindings of the fused optimiser steps: the lists are validated (sizes, dtypes,
// writeability) before anything is written, then one C++ call with the GIL released.
#include <pybind11/pybind11.h>

#include <algorithm>

#include "array_list.hpp"
#include "ndarray_util.hpp"
#include "gradcore/optim.hpp"

namespace gradcore::python {
namespace {

// Same number of arrays, and each of b has the shape of the matching param.
void same_length(const ArrayList& a, const ArrayList& b, const char* name) {
    if (a.views.size() != b.views.size()) {
        throw py::value_error(std::string(name) + " has " + std::to_string(b.views.size()) + " arrays, params has " +
                              std::to_string(a.views.size()));
    }
    for (std::size_t i = 0; i < a.arrays.size(); ++i) {
        const py::array& x = a.arrays[i];
        const py::array& y = b.arrays[i];
        if (x.ndim() != y.ndim() || !std::equal(x.shape(), x.shape() + x.ndim(), y.shape())) {
            throw py::value_error(std::string(name) + "[" + std::to_string(i) + "] has shape " + shape_of(y) +
                                  " but params[" + std::to_string(i) + "] has shape " + shape_of(x));
        }
    }
}

}  // namespace

void bind_optim(py::module_& m) {
    m.def("sgd_step", [](py::handle params, py::handle grads, py::handle buffers, double lr, double momentum,
                         double dampening, bool nesterov, double weight_decay, double grad_scale, bool first_step) {
        ArrayList p = to_array_list(params, "params", Access::write);
        ArrayList g = to_array_list(grads, "grads", Access::read);
        same_length(p, g, "grads");
        ArrayList b;
        if (momentum != 0.0) {
            b = to_array_list(buffers, "buffers", Access::write);
            same_length(p, b, "buffers");
        }
        SgdOptions o;
        o.lr = lr, o.momentum = momentum, o.dampening = dampening, o.weight_decay = weight_decay;
        o.grad_scale = grad_scale, o.nesterov = nesterov, o.first_step = first_step;
        py::gil_scoped_release release;
        sgd_step(p.views.data(), g.views.data(), momentum != 0.0 ? b.views.data() : nullptr, p.views.size(), o);
    }, py::arg("params"), py::arg("grads"), py::arg("buffers"), py::arg("lr"), py::arg("momentum"),
       py::arg("dampening"), py::arg("nesterov"), py::arg("weight_decay"), py::arg("grad_scale"),
       py::arg("first_step"));

    m.def("adam_step", [](py::handle params, py::handle grads, py::handle exp_avg, py::handle exp_avg_sq,
                          double lr, double beta1, double beta2, double eps, double weight_decay, bool decoupled,
                          double grad_scale, long long step) {
        ArrayList p = to_array_list(params, "params", Access::write);
        ArrayList g = to_array_list(grads, "grads", Access::read);
        ArrayList m1 = to_array_list(exp_avg, "exp_avg", Access::write);
        ArrayList m2 = to_array_list(exp_avg_sq, "exp_avg_sq", Access::write);
        same_length(p, g, "grads");
        same_length(p, m1, "exp_avg");
        same_length(p, m2, "exp_avg_sq");
        AdamOptions o;
        o.lr = lr, o.beta1 = beta1, o.beta2 = beta2, o.eps = eps, o.weight_decay = weight_decay;
        o.decoupled = decoupled, o.grad_scale = grad_scale, o.step = step;
        py::gil_scoped_release release;
        adam_step(p.views.data(), g.views.data(), m1.views.data(), m2.views.data(), p.views.size(), o);
    }, py::arg("params"), py::arg("grads"), py::arg("exp_avg"), py::arg("exp_avg_sq"), py::arg("lr"),
       py::arg("beta1"), py::arg("beta2"), py::arg("eps"), py::arg("weight_decay"), py::arg("decoupled"),
       py::arg("grad_scale"), py::arg("step"));
}

}  // namespace gradcore::python
