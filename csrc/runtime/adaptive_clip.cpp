// Adaptive gradient clipping (Brock, De, Smith, Simonyan 2021): each unit of a gradient
// is clipped relative to the norm of the same unit of its parameter.
#include <cmath>
#include <stdexcept>
#include <string>
#include <vector>

#include "gradcore/norms.hpp"
#include "runtime/argument_rules.hpp"
#include "runtime/dispatch.hpp"
#include "runtime/norm_combiner.hpp"
#include "runtime/thread_pool.hpp"
#include "runtime/typed_kernels.hpp"

namespace gradcore {
namespace {

struct UnitTask {
    std::size_t pair;
    std::int64_t unit;
};

// The L2 norm of one unit: its `outer` runs of `inner` contiguous elements.
double unit_norm(const kernels::KernelTable& k, const TensorView& t, const UnitLayout& l,
                 std::int64_t u) {
    runtime::NormCombiner norm({runtime::OrderKind::l2, 2.0});
    runtime::with_norm_kernels(k, t, [&](const auto& tab, const auto* x) {
        for (std::int64_t o = 0; o < l.outer; ++o) {
            norm.add(tab.l2(x + (o * l.units + u) * l.inner, l.inner));
        }
    });
    return norm.result();
}

void scale_unit(const kernels::KernelTable& k, const TensorView& t, const UnitLayout& l,
                std::int64_t u, double factor) {
    runtime::with_clip_kernels(k, t, [&](const auto& tab, auto* x) {
        for (std::int64_t o = 0; o < l.outer; ++o) {
            tab.scale(x + (o * l.units + u) * l.inner, l.inner, factor);
        }
    });
}

// One task per unit of every array, in list order, with the elements they read; each
// layout checked against its array.
std::vector<UnitTask> unit_tasks(const TensorView* arrays, const UnitLayout* layouts, std::size_t count,
                                 const char* name, std::int64_t& work) {
    if (count && !layouts) throw std::invalid_argument("layouts is null");
    std::vector<UnitTask> tasks;
    for (std::size_t i = 0; i < count; ++i) {
        const UnitLayout& l = layouts[i];
        if (l.outer < 0 || l.units < 0 || l.inner < 0) {
            throw std::invalid_argument("layouts[" + std::to_string(i) + "]: sizes must be >= 0");
        }
        if (l.outer * l.units * l.inner != arrays[i].numel) {
            throw std::invalid_argument(std::string(name) + "[" + std::to_string(i) +
                                        "] does not match its unit layout");
        }
        for (std::int64_t u = 0; u < l.units; ++u) tasks.push_back({i, u});
        work += arrays[i].numel;
    }
    return tasks;
}

}  // namespace

void adaptive_clip_(const TensorView* grads, const TensorView* params, const UnitLayout* layouts,
                    std::size_t count, double clipping, double eps) {
    rules::finite_nonnegative(clipping, "clipping");
    rules::finite_nonnegative(eps, "eps");
    runtime::check_views(grads, count, "grads");
    runtime::check_views(params, count, "params");
    for (std::size_t i = 0; i < count; ++i) {
        if (grads[i].numel != params[i].numel) {
            throw std::invalid_argument("grads[" + std::to_string(i) + "] and params[" + std::to_string(i) +
                                        "] have different sizes");
        }
    }
    std::int64_t work = 0;
    const std::vector<UnitTask> tasks = unit_tasks(grads, layouts, count, "grads", work);
    work *= 2;  // the params' units are read too
    const kernels::KernelTable& k = runtime::active_table();
    auto task = [&](std::size_t t) {
        const auto [i, u] = tasks[t];
        const double g = unit_norm(k, grads[i], layouts[i], u);
        const double p = unit_norm(k, params[i], layouts[i], u);
        if (std::isnan(p)) return;  // no limit exists: the unit is left as it is, like a NaN g
        const double limit = clipping * (p > eps ? p : eps);
        if (g > limit) scale_unit(k, grads[i], layouts[i], u, limit / g);
    };
    runtime::parallel_for(tasks.size(), work, runtime::TaskFn(task));
}

void unit_norms(const TensorView* arrays, const UnitLayout* layouts, std::size_t count, double* out) {
    runtime::check_views(arrays, count, "arrays");
    std::int64_t work = 0;
    const std::vector<UnitTask> tasks = unit_tasks(arrays, layouts, count, "arrays", work);
    if (!tasks.empty() && !out) throw std::invalid_argument("out is null");
    const kernels::KernelTable& k = runtime::active_table();
    auto task = [&](std::size_t t) {
        const auto [i, u] = tasks[t];
        out[t] = unit_norm(k, arrays[i], layouts[i], u);
    };
    runtime::parallel_for(tasks.size(), work, runtime::TaskFn(task));
}

}  // namespace gradcore
