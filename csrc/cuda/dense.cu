// The dense layer on the device: GEMMs through cuBLAS (cublas_loader.hpp), the
// element-wise work in our own fused kernels.
//   forward:  y = x W^T (cuBLAS, beta 0), then one epilogue kernel y = act(y + bias).
//   backward: one pass grad_z = grad_y * act'(y) into stream-ordered scratch fused with
//             the bias column sums (identity: no grad_z, grad_y is used directly), then
//             grad_x = grad_z W and grad_W = grad_z^T x (beta = accumulate ? 1 : 0).
// Semantics as csrc/runtime/dense.cpp; arguments are validated before anything is enqueued.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "activations.cuh"
#include "common.cuh"
#include "cublas_loader.hpp"
#include "gradcore/cuda.hpp"
#include "gradcore/dense.hpp"
#include "runtime/checks.hpp"

namespace gradcore::cuda {
namespace detail {
namespace {

constexpr int kThreads = 256;

// Blocks for a grid-stride loop over n elements.
unsigned flat_blocks(std::int64_t n) {
    const std::int64_t blocks = (n + kThreads - 1) / kThreads;
    return static_cast<unsigned>(std::max<std::int64_t>(1, std::min<std::int64_t>(blocks, 4096)));
}

// y[r, c] = act(y[r, c] + bias[c]) in place (bias may be null).
template <class T>
__global__ void __launch_bounds__(kThreads)
    bias_activation_kernel(T* __restrict__ y, std::int64_t ld, std::int64_t rows, std::int64_t cols,
                           const T* __restrict__ bias, Activation act, T slope) {
    const std::int64_t n = rows * cols;
    for (std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
         i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
        const std::int64_t r = i / cols, c = i - r * cols;
        T* p = y + r * ld + c;
        T v = *p;
        if (bias) v += bias[c];
        *p = elem::activation_forward(v, act, slope);
    }
}

// The fused backward pass. Block (kColTile, kRowThreads) threads owns kColTile columns
// and one chunk of rows_per_chunk rows (blockIdx.y); thread (tx, ty) walks the rows
// ty, ty + kRowThreads, ... of the chunk in order, then the kRowThreads sums of a column
// are added in order of ty. One chunk: the result goes to grad_bias; several: to
// partial[chunk][col], added in chunk order by bias_finish_kernel.
constexpr int kColTile = 32;
constexpr int kRowThreads = 8;
constexpr std::int64_t kMinRowsPerChunk = 64;
constexpr std::int64_t kMaxRowChunks = 256;
constexpr std::int64_t kTargetBlocks = 2048;

template <class T>
__global__ void __launch_bounds__(kColTile* kRowThreads)
    grad_z_bias_kernel(const T* __restrict__ gy, std::int64_t ld_gy, const T* __restrict__ y, std::int64_t ld_y,
                       Activation act, T slope, T* __restrict__ gz, std::int64_t ld_gz, std::int64_t rows,
                       std::int64_t cols, std::int64_t rows_per_chunk, T* __restrict__ partial,
                       T* __restrict__ grad_bias, bool accumulate) {
    __shared__ T sums[kRowThreads][kColTile + 1];
    const int tx = static_cast<int>(threadIdx.x), ty = static_cast<int>(threadIdx.y);
    const std::int64_t col = static_cast<std::int64_t>(blockIdx.x) * kColTile + tx;
    const std::int64_t r0 = static_cast<std::int64_t>(blockIdx.y) * rows_per_chunk;
    const std::int64_t r1 = rows - r0 < rows_per_chunk ? rows : r0 + rows_per_chunk;
    const bool identity = act == Activation::identity;
    T sum = T(0);
    if (col < cols) {
        for (std::int64_t r = r0 + ty; r < r1; r += kRowThreads) {
            const T g = gy[r * ld_gy + col];
            const T d = identity ? g : elem::activation_backward(g, y[r * ld_y + col], act, slope);
            if (gz) gz[r * ld_gz + col] = d;
            sum += d;
        }
    }
    if (!partial && !grad_bias) return;  // the same for the whole block
    sums[ty][tx] = sum;
    __syncthreads();
    if (ty == 0 && col < cols) {
        T s = sums[0][tx];
        for (int k = 1; k < kRowThreads; ++k) s += sums[k][tx];
        if (partial) {
            partial[static_cast<std::int64_t>(blockIdx.y) * cols + col] = s;
        } else {
            grad_bias[col] = accumulate ? grad_bias[col] + s : s;
        }
    }
}

template <class T>
__global__ void __launch_bounds__(kThreads)
    bias_finish_kernel(const T* __restrict__ partial, std::int64_t chunks, std::int64_t cols,
                       T* __restrict__ grad_bias, bool accumulate) {
    for (std::int64_t col = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; col < cols;
         col += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
        T s = partial[col];
        for (std::int64_t c = 1; c < chunks; ++c) s += partial[c * cols + col];
        grad_bias[col] = accumulate ? grad_bias[col] + s : s;
    }
}

std::string shape(std::int64_t r, std::int64_t c) {
    return "(" + std::to_string(r) + ", " + std::to_string(c) + ")";
}

void check_activation(Activation act) {
    switch (act) {
        case Activation::identity:
        case Activation::relu:
        case Activation::leaky_relu:
        case Activation::tanh:
        case Activation::sigmoid: return;
        case Activation::elu:
        case Activation::silu:
        case Activation::gelu:
        case Activation::gelu_tanh:
        case Activation::prelu:
            throw std::invalid_argument("activations that need the pre-activation (elu, silu, gelu, gelu_tanh, "
                                        "prelu) run on the CPU only");
    }
    throw std::invalid_argument("unknown activation " + std::to_string(static_cast<int>(act)));
}

// Sizes >= 0 and within cuBLAS's int.
template <class T>
void check_dims(const MatrixRef<T>& m, const char* name) {
    runtime::require_size(m.rows, (std::string(name) + ".rows").c_str());
    runtime::require_size(m.cols, (std::string(name) + ".cols").c_str());
    if (m.rows > kMaxBlasDim || m.cols > kMaxBlasDim) {
        throw std::invalid_argument(std::string(name) + " has shape " + shape(m.rows, m.cols) +
                                    ": each dimension must be < 2^31 on the device");
    }
}

// For a matrix that is read or written: check_dims, and when non-empty data, unit column
// stride and a row stride >= cols (a single row may have any row stride). Returns the
// leading dimension to hand to cuBLAS.
template <class T>
std::int64_t leading_dim(const MatrixRef<T>& m, const char* name) {
    check_dims(m, name);
    if (m.rows == 0 || m.cols == 0) return std::max<std::int64_t>(m.cols, 1);
    if (!m.data) throw std::invalid_argument(std::string(name) + ": data is null");
    if (m.cs != 1) {
        throw std::invalid_argument(std::string(name) + " must be row-major with unit column stride on the device "
                                    "(cs == 1), got cs = " + std::to_string(m.cs));
    }
    if (m.rows == 1) return m.cols;
    if (m.rs < m.cols || m.rs > kMaxBlasDim) {
        throw std::invalid_argument(std::string(name) + " has row stride rs = " + std::to_string(m.rs) +
                                    "; the device needs cols (" + std::to_string(m.cols) + ") <= rs < 2^31");
    }
    return m.rs;
}

template <class T>
void forward(const DenseForward<T>& f, Stream stream) {
    check_activation(f.act);
    const std::int64_t ld_x = leading_dim(f.x, "x");
    const std::int64_t ld_w = leading_dim(f.weight, "weight");
    const std::int64_t ld_y = leading_dim(f.y, "y");
    const std::int64_t batch = f.x.rows, in = f.x.cols, out = f.weight.rows;
    if (f.weight.cols != in) {
        throw std::invalid_argument("x has shape " + shape(batch, in) + " but weight has shape " +
                                    shape(out, f.weight.cols) + " (expected (out, " + std::to_string(in) + "))");
    }
    if (f.y.rows != batch || f.y.cols != out) {
        throw std::invalid_argument("y has shape " + shape(f.y.rows, f.y.cols) + ", expected " + shape(batch, out));
    }
    if (batch == 0 || out == 0) return;
    DeviceGuard guard(stream.device);
    const cudaStream_t s = native(stream);
    const Blas blas = blas_on(s);
    // in == 0: the GEMM writes zeros, the epilogue then gives act(bias).
    gemm_row_major(blas, false, true, batch, out, in, T(1), f.x.data, ld_x, f.weight.data, ld_w, T(0), f.y.data,
                   ld_y);
    if (f.bias || f.act != Activation::identity) {
        bias_activation_kernel<T><<<flat_blocks(batch * out), kThreads, 0, s>>>(
            f.y.data, ld_y, batch, out, f.bias, f.act, static_cast<T>(f.negative_slope));
        check_launch("dense bias_activation_kernel");
    }
}

template <class T>
void backward(const DenseBackward<T>& b, Stream stream) {
    check_activation(b.act);
    check_dims(b.x, "x");
    check_dims(b.weight, "weight");
    const std::int64_t batch = b.x.rows, in = b.x.cols, out = b.weight.rows;
    auto expect = [](const char* name, std::int64_t r, std::int64_t c, std::int64_t er, std::int64_t ec) {
        if (r != er || c != ec) {
            throw std::invalid_argument(std::string(name) + " has shape " + shape(r, c) + ", expected " +
                                        shape(er, ec));
        }
    };
    expect("weight", b.weight.rows, b.weight.cols, out, in);
    expect("grad_y", b.grad_y.rows, b.grad_y.cols, batch, out);
    expect("y", b.y.rows, b.y.cols, batch, out);
    const bool need_grad_x = b.grad_x.data != nullptr, need_grad_w = b.grad_weight.data != nullptr;
    if (need_grad_x) expect("grad_x", b.grad_x.rows, b.grad_x.cols, batch, in);
    if (need_grad_w) expect("grad_weight", b.grad_weight.rows, b.grad_weight.cols, out, in);

    // grad_z is materialised only when a GEMM reads it and it differs from grad_y.
    const bool identity = b.act == Activation::identity;
    const bool need_grad_z = !identity && (need_grad_x || need_grad_w);
    const bool reads_y = !identity && (need_grad_z || b.grad_bias);
    // Strides and data are checked for the matrices that are read or written.
    const std::int64_t ld_gy = leading_dim(b.grad_y, "grad_y");
    const std::int64_t ld_y = reads_y ? leading_dim(b.y, "y") : 1;
    const std::int64_t ld_x = need_grad_w ? leading_dim(b.x, "x") : 1;
    const std::int64_t ld_w = need_grad_x ? leading_dim(b.weight, "weight") : 1;
    const std::int64_t ld_gx = need_grad_x ? leading_dim(b.grad_x, "grad_x") : 1;
    const std::int64_t ld_gw = need_grad_w ? leading_dim(b.grad_weight, "grad_weight") : 1;
    if (out == 0 && (batch == 0 || !need_grad_x)) return;  // nothing to write

    DeviceGuard guard(stream.device);
    const cudaStream_t s = native(stream);
    const Blas blas = blas_on(s);
    Scratch gz_buffer(need_grad_z ? static_cast<std::size_t>(batch * out) * sizeof(T) : 0, s);
    const T* gz = need_grad_z ? gz_buffer.as<T>() : b.grad_y.data;
    const std::int64_t ld_gz = need_grad_z ? std::max<std::int64_t>(out, 1) : ld_gy;
    if (need_grad_z || b.grad_bias) {
        grad_z_and_bias<T>(b.grad_y.data, ld_gy, b.y.data, ld_y, b.act, static_cast<T>(b.negative_slope),
                           need_grad_z ? gz_buffer.as<T>() : nullptr, ld_gz, b.grad_bias, b.accumulate, batch, out,
                           s);
    }
    const T beta = b.accumulate ? T(1) : T(0);
    if (need_grad_x) {  // (batch, in) = grad_z (batch, out) W (out, in)
        gemm_row_major(blas, false, false, batch, in, out, T(1), gz, ld_gz, b.weight.data, ld_w,
                       b.accumulate_grad_x ? T(1) : beta, b.grad_x.data, ld_gx);
    }
    if (need_grad_w) {  // (out, in) = grad_z^T (out, batch) x (batch, in)
        gemm_row_major(blas, true, false, out, in, batch, T(1), gz, ld_gz, b.x.data, ld_x, beta,
                       b.grad_weight.data, ld_gw);
    }
}

}  // namespace

template <class T>
void grad_z_and_bias(const T* grad_y, std::int64_t ld_grad_y, const T* y, std::int64_t ld_y, Activation act, T slope,
                     T* gz, std::int64_t ld_gz, T* grad_bias, bool accumulate, std::int64_t rows, std::int64_t cols,
                     cudaStream_t stream) {
    if (cols <= 0 || (!gz && !grad_bias) || (rows <= 0 && !grad_bias)) return;
    const std::int64_t col_blocks = (cols + kColTile - 1) / kColTile;
    std::int64_t chunks = std::min((rows + kMinRowsPerChunk - 1) / kMinRowsPerChunk,
                                   (kTargetBlocks + col_blocks - 1) / col_blocks);
    chunks = std::max<std::int64_t>(1, std::min(chunks, kMaxRowChunks));
    const std::int64_t rows_per_chunk = (rows + chunks - 1) / chunks;
    chunks = rows_per_chunk > 0 ? (rows + rows_per_chunk - 1) / rows_per_chunk : 1;
    const bool split = grad_bias && chunks > 1;
    Scratch partial(split ? static_cast<std::size_t>(chunks * cols) * sizeof(T) : 0, stream);
    const dim3 grid(static_cast<unsigned>(col_blocks), static_cast<unsigned>(chunks));
    const dim3 block(kColTile, kRowThreads);
    grad_z_bias_kernel<T><<<grid, block, 0, stream>>>(grad_y, ld_grad_y, y, ld_y, act, slope, gz, ld_gz, rows, cols,
                                                      rows_per_chunk, split ? partial.as<T>() : nullptr,
                                                      split ? nullptr : grad_bias, accumulate);
    check_launch("grad_z_bias_kernel");
    if (split) {
        bias_finish_kernel<T><<<flat_blocks(cols), kThreads, 0, stream>>>(partial.as<T>(), chunks, cols, grad_bias,
                                                                          accumulate);
        check_launch("bias_finish_kernel");
    }
}

template void grad_z_and_bias<float>(const float*, std::int64_t, const float*, std::int64_t, Activation, float,
                                     float*, std::int64_t, float*, bool, std::int64_t, std::int64_t, cudaStream_t);
template void grad_z_and_bias<double>(const double*, std::int64_t, const double*, std::int64_t, Activation, double,
                                      double*, std::int64_t, double*, bool, std::int64_t, std::int64_t, cudaStream_t);

}  // namespace detail

void dense_forward(const DenseForward<float>& args, Stream stream) { detail::forward(args, stream); }
void dense_forward(const DenseForward<double>& args, Stream stream) { detail::forward(args, stream); }
void dense_backward(const DenseBackward<float>& args, Stream stream) { detail::backward(args, stream); }
void dense_backward(const DenseBackward<double>& args, Stream stream) { detail::backward(args, stream); }

}  // namespace gradcore::cuda
