// Layer and batch normalisation, forward and backward, with torch.nn.LayerNorm's and
// torch.nn.BatchNorm1d's semantics, for float32 and float64 C-contiguous arrays.
//
// Statistics, normalised values and gradients are computed in float64 and rounded once
// to T. The forward keeps, per row (layer norm) or channel (batch norm), the mean and
// rstd = 1 / sqrt(var + eps) in float64 for the backward. Results are the same for every
// thread count. Bad shapes or arguments: std::invalid_argument, before anything is written.
#pragma once

#include <cstdint>

#include "gradcore/export.hpp"

namespace gradcore {

// x is rows x cols; each row is normalised over its cols elements (the trailing
// normalized_shape, flattened).
template <class T>
struct LayerNormForward {
    const T* x;
    std::int64_t rows, cols;
    const T* gamma;  // cols, or null (no scale)
    const T* beta;   // cols, or null (no shift)
    double eps;      // > 0 or 0, finite
    T* y;            // rows x cols
    double* mean;    // rows
    double* rstd;    // rows; var is the biased variance
};

template <class T>
struct LayerNormBackward {
    const T* grad_y;
    const T* x;
    std::int64_t rows, cols;
    const T* gamma;  // the forward's, or null
    const double* mean;
    const double* rstd;
    T* grad_x;      // rows x cols, or null (not computed)
    T* grad_gamma;  // cols, or null
    T* grad_beta;   // cols, or null
};

GRADCORE_API void layer_norm_forward(const LayerNormForward<float>& args);
GRADCORE_API void layer_norm_forward(const LayerNormForward<double>& args);
GRADCORE_API void layer_norm_backward(const LayerNormBackward<float>& args);
GRADCORE_API void layer_norm_backward(const LayerNormBackward<double>& args);

// x is batch x channels x length: BatchNorm1d's (N, C, L), or (N, C) with length 1.
// Training, or no running statistics (torch's track_running_stats=False), normalises with
// the batch's statistics over the batch * length values of each channel; training with
// running_mean/running_var given also updates them in place,
// r = (1 - momentum) r + momentum s, with the unbiased variance. Evaluation with running
// statistics normalises with them and leaves them as they are.
template <class T>
struct BatchNormForward {
    const T* x;
    std::int64_t batch, channels, length;
    const T* gamma;      // channels, or null (no scale)
    const T* beta;       // channels, or null (no shift)
    T* running_mean;     // channels, or null (not tracked)
    T* running_var;      // channels, or null; given together with running_mean
    bool training;
    double momentum;     // finite
    double eps;          // >= 0, finite
    T* y;                // batch x channels x length
    double* mean;        // channels: the statistics y was normalised with
    double* rstd;        // channels
};

template <class T>
struct BatchNormBackward {
    const T* grad_y;
    const T* x;
    std::int64_t batch, channels, length;
    const T* gamma;       // the forward's, or null
    const double* mean;   // the forward's statistics
    const double* rstd;
    bool batch_stats;     // the forward normalised with the batch's statistics
    T* grad_x;            // batch x channels x length, or null
    T* grad_gamma;        // channels, or null
    T* grad_beta;         // channels, or null
};

GRADCORE_API void batch_norm_forward(const BatchNormForward<float>& args);
GRADCORE_API void batch_norm_forward(const BatchNormForward<double>& args);
GRADCORE_API void batch_norm_backward(const BatchNormBackward<float>& args);
GRADCORE_API void batch_norm_backward(const BatchNormBackward<double>& args);

}  // namespace gradcore
