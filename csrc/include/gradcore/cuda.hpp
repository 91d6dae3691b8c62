// The optional CUDA backend. Always declared; without a CUDA build every entry point
// below the probes throws std::runtime_error("gradcore was built without CUDA").
//
// Conventions of every device entry point:
// - Pointers are device pointers (or managed memory) on `stream.device`; arrays are the
//   CPU API's TensorViews (C-contiguous runs of `numel` elements) over device memory.
//   Nothing is copied to or from the host except the small launch tables the kernels read, and nothing waits for the device: work
//   is enqueued on `stream.stream` (a cudaStream_t; null is the legacy default stream)
//   and the call returns. Results that are scalars (norms, factors, counts) are written
//   to device memory the caller passes, so a training loop never stalls on them.
// - Bad arguments throw std::invalid_argument before anything is enqueued; CUDA errors
//   throw std::runtime_error naming the call that failed.
// - Numerics follow the CPU library: float16/bfloat16/float32 are accumulated in
//   float64; float64 sums are kept overflow- and underflow-free; the non-finite
//   policies and PyTorch's clipping formula are the same.
// - Calls are re-entrant: no state is shared between calls except cached cuBLAS handles
//   (one per device and host thread) and the stream-ordered memory pool.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "gradcore/dense.hpp"
#include "gradcore/export.hpp"
#include "gradcore/norms.hpp"
#include "gradcore/rnn.hpp"

namespace gradcore {

// Whether this library was compiled with the CUDA backend.
GRADCORE_API bool cuda_built();

// Usable CUDA devices (0 without a CUDA build, a driver or a GPU).
GRADCORE_API int cuda_device_count();

// Runs a small kernel on device 0 and checks its result against the host; returns an
// empty string on success, else what went wrong.
GRADCORE_API std::string cuda_self_test();

namespace cuda {

// Where work runs: device ordinal and cudaStream_t (as void* so that this header needs
// no CUDA headers). The device is made current for the call and restored after it.
struct Stream {
    int device;
    void* stream;
};

// Name of the device (cudaDeviceProp::name), for reports.
GRADCORE_API std::string device_name(int device);

// Makes `waiter` wait for all work enqueued so far on `producer` (an event, no host
// wait): for arrays whose producer named its stream (__cuda_array_interface__ v3).
GRADCORE_API void stream_wait(Stream waiter, void* producer);

// Blocks the host until `stream` has finished (tests and benchmarks only).
GRADCORE_API void synchronize(Stream stream);

// ---- norms and clipping (multi-tensor: a few launches for the whole list) ----------

// *total_out (device, one double) = norm of all arrays together. ord as on the CPU
// (check_norm_order): p > 0 or +inf.
GRADCORE_API void global_norm(const TensorView* arrays, std::size_t count, double ord,
                              double* total_out, Stream stream);

// out[0..count) (device doubles) = one norm per array.
GRADCORE_API void norms(const TensorView* arrays, std::size_t count, double ord, double* out,
                        Stream stream);

// Per array: l2_out[i], max_abs_out[i] (NaN when the array holds a NaN) and
// nonfinite_out[i] (device arrays of count elements).
GRADCORE_API void grad_stats(const TensorView* arrays, std::size_t count, double* l2_out,
                             double* max_abs_out, std::int64_t* nonfinite_out, Stream stream);

// In place, float16/bfloat16/float32/float64: x *= factor; x = clamp(x, lo, hi) (NaN
// stays NaN); non-finite elements set to 0 with their number added to *count_out (a
// device int64 the caller zeroes, may be null).
GRADCORE_API void scale_(const TensorView* arrays, std::size_t count, double factor,
                         Stream stream);
GRADCORE_API void clip_by_value_(const TensorView* arrays, std::size_t count, double lo,
                                 double hi, Stream stream);
GRADCORE_API void zero_nonfinite_(const TensorView* arrays, std::size_t count,
                                  std::int64_t* count_out, Stream stream);

// Each array on its own: factor = min(1, max_norm / (norm + eps)); norms_out (device,
// count doubles) gets the norms before clipping.
GRADCORE_API void clip_by_norm_(const TensorView* arrays, std::size_t count, double max_norm,
                                double ord, double eps, double* norms_out, Stream stream);

// The whole of clip_by_global_norm_ on the device: the total (or *given_total, a device
// double, when not null), the factor min(1, max_norm / (total + eps)) and the scaling,
// with the CPU's NonFinitePolicy (propagate: scale by NaN/0 as PyTorch; error and skip:
// leave the arrays alone, the caller reads *total_out; zero: zero the non-finite
// elements, then clip by the norm of what remains). Writes the total before all this to
// *total_out and the factor applied (1 when nothing was written) to *factor_out (may be
// null). No host synchronisation.
GRADCORE_API void clip_by_global_norm_(const TensorView* arrays, std::size_t count,
                                       double max_norm, double ord, double eps,
                                       NonFinitePolicy policy, const double* given_total,
                                       double* total_out, double* factor_out, Stream stream);

// Adaptive gradient clipping with the CPU's UnitLayout per pair (grads[i], params[i]).
GRADCORE_API void adaptive_clip_(const TensorView* grads, const TensorView* params,
                                 const UnitLayout* layouts, std::size_t count, double clipping,
                                 double eps, Stream stream);

// ---- dense layer (GEMMs through cuBLAS, fused epilogues ours) -----------------------
// The CPU structs with device pointers. Matrices must be row-major with unit column
// stride (cs == 1) and rs >= cols. The backward's grad_z lives in stream-ordered
// scratch memory. Throws std::runtime_error when libcublas cannot be loaded.

GRADCORE_API void dense_forward(const DenseForward<float>& args, Stream stream);
GRADCORE_API void dense_forward(const DenseForward<double>& args, Stream stream);
GRADCORE_API void dense_backward(const DenseBackward<float>& args, Stream stream);
GRADCORE_API void dense_backward(const DenseBackward<double>& args, Stream stream);

// ---- recurrent layers ---------------------------------------------------------------
// The CPU structs and cache layout (gradcore/rnn.hpp) with device pointers;
// hidden_grad_norms is a device array of `steps` doubles.

GRADCORE_API void rnn_forward(const RnnForward<float>& f, Stream stream);
GRADCORE_API void rnn_forward(const RnnForward<double>& f, Stream stream);
GRADCORE_API void rnn_backward(const RnnBackward<float>& b, Stream stream);
GRADCORE_API void rnn_backward(const RnnBackward<double>& b, Stream stream);

// Where libcublas was loaded from, or why it could not be (cuBLAS is opened on first
// use, so a CUDA build imports and runs its norms without it).
GRADCORE_API std::string cublas_status();

}  // namespace cuda
}  // namespace gradcore
