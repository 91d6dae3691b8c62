// Built instead of csrc/cuda/ when GRADCORE_CUDA is off: the probes say so, and every
// device entry point throws, so embedders link the same symbols either way.
#include <stdexcept>

#include "gradcore/cuda.hpp"

namespace gradcore {

bool cuda_built() { return false; }
int cuda_device_count() { return 0; }
std::string cuda_self_test() { return "gradcore was built without CUDA"; }

namespace cuda {
namespace {

[[noreturn]] void not_built() {
    throw std::runtime_error(
        "gradcore was built without CUDA (rebuild with -C cmake.define.GRADCORE_CUDA=ON)");
}

}  // namespace

std::string device_name(int) { not_built(); }
void stream_wait(Stream, void*) { not_built(); }
void synchronize(Stream) { not_built(); }
void global_norm(const TensorView*, std::size_t, double, double*, Stream) { not_built(); }
void norms(const TensorView*, std::size_t, double, double*, Stream) { not_built(); }
void grad_stats(const TensorView*, std::size_t, double*, double*, std::int64_t*, Stream) {
    not_built();
}
void scale_(const TensorView*, std::size_t, double, Stream) { not_built(); }
void clip_by_value_(const TensorView*, std::size_t, double, double, Stream) { not_built(); }
void zero_nonfinite_(const TensorView*, std::size_t, std::int64_t*, Stream) { not_built(); }
void clip_by_norm_(const TensorView*, std::size_t, double, double, double, double*, Stream) {
    not_built();
}
void clip_by_global_norm_(const TensorView*, std::size_t, double, double, double,
                          NonFinitePolicy, const double*, double*, double*, Stream) {
    not_built();
}
void adaptive_clip_(const TensorView*, const TensorView*, const UnitLayout*, std::size_t,
                    double, double, Stream) {
    not_built();
}
void dense_forward(const DenseForward<float>&, Stream) { not_built(); }
void dense_forward(const DenseForward<double>&, Stream) { not_built(); }
void dense_backward(const DenseBackward<float>&, Stream) { not_built(); }
void dense_backward(const DenseBackward<double>&, Stream) { not_built(); }
void rnn_forward(const RnnForward<float>&, Stream) { not_built(); }
void rnn_forward(const RnnForward<double>&, Stream) { not_built(); }
void rnn_backward(const RnnBackward<float>&, Stream) { not_built(); }
void rnn_backward(const RnnBackward<double>&, Stream) { not_built(); }
std::string cublas_status() { return "gradcore was built without CUDA"; }

}  // namespace cuda
}  // namespace gradcore
