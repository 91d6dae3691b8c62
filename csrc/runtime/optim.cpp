// Optimiser steps over whole parameter lists, split into the same fixed chunks as the
// norms so that thousands of small tensors and a few huge ones keep every thread busy.
#include <cmath>
#include <stdexcept>
#include <string>

#include "gradcore/optim.hpp"
#include "runtime/chunks.hpp"
#include "runtime/dispatch.hpp"

namespace gradcore {
namespace {

template <class T>
const kernels::OptimTable<T>& table(const kernels::KernelTable& k) {
    if constexpr (sizeof(T) == 4) {
        return k.optim_f32;
    } else {
        return k.optim_f64;
    }
}

void check_list(const TensorView* params, const TensorView* other, std::size_t count, const char* name) {
    runtime::check_views(params, count, "params");
    runtime::check_views(other, count, name);
    for (std::size_t i = 0; i < count; ++i) {
        if (other[i].numel != params[i].numel || other[i].dtype != params[i].dtype) {
            throw std::invalid_argument(std::string(name) + "[" + std::to_string(i) +
                                        "] does not match params[" + std::to_string(i) + "] in size or dtype");
        }
        if (params[i].dtype != DType::float32 && params[i].dtype != DType::float64) {
            throw std::invalid_argument("params[" + std::to_string(i) + "]: optimisers support float32 and float64");
        }
    }
}

// fn(table, param, grad, state0, state1, begin, size) per chunk, typed.
template <class F>
void for_each_param_chunk(const TensorView* params, std::size_t count, F&& fn) {
    const kernels::KernelTable& k = runtime::active_table();
    const runtime::ChunkList list = runtime::make_chunks(params, count);
    runtime::for_each_chunk(list, [&](std::size_t i) {
        const runtime::Chunk& c = list.chunks[i];
        if (params[c.array].dtype == DType::float32) {
            fn(table<float>(k), float{}, c);
        } else {
            fn(table<double>(k), double{}, c);
        }
    });
}

template <class T>
T* at(const TensorView* views, std::size_t i, std::int64_t begin) {
    return views ? static_cast<T*>(views[i].data) + begin : nullptr;
}

}  // namespace

void sgd_step(const TensorView* params, const TensorView* grads, const TensorView* buffers, std::size_t count,
              const SgdOptions& o) {
    check_list(params, grads, count, "grads");
    if (o.momentum != 0.0) {
        if (!buffers && count) throw std::invalid_argument("momentum needs momentum buffers");
        check_list(params, buffers, count, "buffers");
    }
    const kernels::SgdParams a{o.lr, o.momentum, o.dampening, o.weight_decay, o.grad_scale, o.nesterov,
                               o.first_step};
    for_each_param_chunk(params, count, [&](const auto& tab, auto tag, const runtime::Chunk& c) {
        using T = decltype(tag);
        tab.sgd(at<T>(params, c.array, c.begin), at<T>(grads, c.array, c.begin),
                o.momentum != 0.0 ? at<T>(buffers, c.array, c.begin) : nullptr, c.size, a);
    });
}

void adam_step(const TensorView* params, const TensorView* grads, const TensorView* exp_avg,
               const TensorView* exp_avg_sq, std::size_t count, const AdamOptions& o) {
    check_list(params, grads, count, "grads");
    check_list(params, exp_avg, count, "exp_avg");
    check_list(params, exp_avg_sq, count, "exp_avg_sq");
    if (o.step < 1) throw std::invalid_argument("step must be >= 1");
    const double t = static_cast<double>(o.step);
    const kernels::AdamParams a{o.lr, o.beta1, o.beta2, o.eps, o.weight_decay, o.grad_scale,
                                1.0 - std::pow(o.beta1, t), 1.0 - std::pow(o.beta2, t), o.decoupled};
    for_each_param_chunk(params, count, [&](const auto& tab, auto tag, const runtime::Chunk& c) {
        using T = decltype(tag);
        tab.adam(at<T>(params, c.array, c.begin), at<T>(grads, c.array, c.begin), at<T>(exp_avg, c.array, c.begin),
                 at<T>(exp_avg_sq, c.array, c.begin), c.size, a);
    });
}

}  // namespace gradcore
