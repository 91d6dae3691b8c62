// Bindings of the norm and clipping API: convert, validate, release the GIL, call.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <optional>
#include <string>
#include <vector>

#include "parse_args.hpp"
#include "ndarray_util.hpp"
#include "array_list.hpp"
#include "gradcore/norms.hpp"

namespace gradcore::python {
namespace {

using Release = py::gil_scoped_release;

py::array_t<double> new_vector(std::size_t n) { return py::array_t<double>(static_cast<py::ssize_t>(n)); }

}  // namespace

void bind_norms(py::module_& m) {
    m.def("global_norm", [](py::handle arrays, double ord) {
        check_norm_order(ord);
        ArrayList list = to_array_list(arrays, "arrays", Access::read);
        Release release;
        return global_norm(list.views.data(), list.views.size(), ord);
    }, py::arg("arrays"), py::arg("ord"));

    m.def("norms", [](py::handle arrays, double ord) {
        check_norm_order(ord);
        ArrayList list = to_array_list(arrays, "arrays", Access::read);
        py::array_t<double> out = new_vector(list.views.size());
        double* dst = out.mutable_data();
        Release release;
        norms(list.views.data(), list.views.size(), ord, dst);
        return out;
    }, py::arg("arrays"), py::arg("ord"));

    m.def("grad_stats", [](py::handle arrays) {
        ArrayList list = to_array_list(arrays, "arrays", Access::read);
        const std::size_t n = list.views.size();
        std::vector<ArrayStats> stats(n);
        {
            Release release;
            grad_stats(list.views.data(), n, stats.data());
        }
        py::array_t<double> l2 = new_vector(n), amax = new_vector(n);
        py::array_t<std::int64_t> nonfinite(static_cast<py::ssize_t>(n));
        for (std::size_t i = 0; i < n; ++i) {
            l2.mutable_data()[i] = stats[i].l2_norm;
            amax.mutable_data()[i] = stats[i].max_abs;
            nonfinite.mutable_data()[i] = stats[i].nonfinite;
        }
        return py::make_tuple(l2, amax, nonfinite);
    }, py::arg("arrays"));

    m.def("scale_", [](py::handle arrays, double factor) {
        ArrayList list = to_array_list(arrays, "arrays", Access::write);
        Release release;
        scale_(list.views.data(), list.views.size(), factor);
    }, py::arg("arrays"), py::arg("factor"));

    m.def("clip_by_value_", [](py::handle arrays, double lo, double hi) {
        ArrayList list = to_array_list(arrays, "arrays", Access::write);
        Release release;
        clip_by_value_(list.views.data(), list.views.size(), lo, hi);
    }, py::arg("arrays"), py::arg("min"), py::arg("max"));

    m.def("zero_nonfinite_", [](py::handle arrays) {
        ArrayList list = to_array_list(arrays, "arrays", Access::write);
        Release release;
        return zero_nonfinite_(list.views.data(), list.views.size());
    }, py::arg("arrays"));

    m.def("clip_by_norm_", [](py::handle arrays, double max_norm, double ord, double eps) {
        check_norm_order(ord);
        ArrayList list = to_array_list(arrays, "arrays", Access::write);
        py::array_t<double> out = new_vector(list.views.size());
        double* dst = out.mutable_data();
        Release release;
        clip_by_norm_(list.views.data(), list.views.size(), max_norm, ord, eps, dst);
        return out;
    }, py::arg("arrays"), py::arg("max_norm"), py::arg("ord"), py::arg("eps"));

    m.def("clip_by_global_norm_", [](py::handle arrays, double max_norm, double ord, double eps,
                                     const std::string& nonfinite, std::optional<double> total_norm) {
        check_norm_order(ord);
        const NonFinitePolicy policy = parse_policy(nonfinite);
        ArrayList list = to_array_list(arrays, "arrays", Access::write);
        GlobalClipResult r;
        {
            Release release;
            r = clip_by_global_norm_(list.views.data(), list.views.size(), max_norm, ord, eps,
                                     policy, total_norm.has_value(), total_norm.value_or(0.0));
        }
        return py::make_tuple(r.total_norm, r.factor, r.clipped, r.nonfinite);
    }, py::arg("arrays"), py::arg("max_norm"), py::arg("ord"), py::arg("eps"),
       py::arg("nonfinite"), py::arg("total_norm"));

    m.def("adaptive_clip_", [](py::handle grads, py::handle params, double clipping, double eps,
                               int unit_axis) {
        ArrayList g = to_array_list(grads, "grads", Access::write);
        ArrayList p = to_array_list(params, "params", Access::read);
        if (g.views.size() != p.views.size()) {
            throw py::value_error("grads and params must have the same length, got " +
                                  std::to_string(g.views.size()) + " and " + std::to_string(p.views.size()));
        }
        std::vector<UnitLayout> layouts;
        for (std::size_t i = 0; i < g.views.size(); ++i) {
            const py::array& ga = g.arrays[i];
            const py::array& pa = p.arrays[i];
            const bool same = ga.ndim() == pa.ndim() &&
                              std::equal(ga.shape(), ga.shape() + ga.ndim(), pa.shape());
            if (!same) {
                throw py::value_error("grads[" + std::to_string(i) + "] has shape " + shape_of(ga) +
                                      " but params[" + std::to_string(i) + "] has shape " + shape_of(pa));
            }
            layouts.push_back(unit_layout(std::vector<std::int64_t>(ga.shape(), ga.shape() + ga.ndim()), unit_axis, i));
        }
        Release release;
        adaptive_clip_(g.views.data(), p.views.data(), layouts.data(), layouts.size(), clipping, eps);
    }, py::arg("grads"), py::arg("params"), py::arg("clipping"), py::arg("eps"), py::arg("unit_axis"));
}

}  // namespace gradcore::python
