// The dispatch table: one instance per ISA target, filled by csrc/targets/<isa>.cpp and
// chosen at run time by csrc/runtime/dispatch.cpp. Only plain function pointers and
// data cross from a target into the runtime.
//
// Each family's table says next to its fields how a target fills it (`of<K>()`, K the
// family's kernels instantiated for one SIMD struct), so that a new kernel is one field
// and one entry here. Every entry is set by name: two entries of one signature (l1 and
// l2) cannot trade places when the fields are reordered (the initialisers must follow
// the declaration order, or the build fails), and one left out is an error, not a null
// pointer at run time.
#pragma once

#include <cstdint>

#include "table_types.hpp"

#pragma GCC diagnostic push
#pragma GCC diagnostic error "-Wmissing-field-initializers"

namespace gradcore::kernels {

template <class T>
struct NormTable {
    ScaledSum (*l1)(const T*, std::int64_t);
    ScaledSum (*l2)(const T*, std::int64_t);
    double (*max_abs)(const T*, std::int64_t);
    double (*lp_sum)(const T*, std::int64_t, double p, double max_abs);
    ChunkStats (*stats)(const T*, std::int64_t);

    template <class K>
    static constexpr NormTable of() {
        return {.l1 = &K::l1, .l2 = &K::l2, .max_abs = &K::max_abs, .lp_sum = &K::lp_sum, .stats = &K::stats};
    }
};

// The norms of |z| over complex data given as interleaved components of C (float for
// complex64, double for complex128); n counts complex elements. L2 and scaling are the
// real tables' over the 2n components.
template <class C>
struct ComplexNormTable {
    ScaledSum (*l1)(const C*, std::int64_t n);
    double (*max_abs)(const C*, std::int64_t n);
    double (*lp_sum)(const C*, std::int64_t n, double p, double max_abs);

    template <class K>
    static constexpr ComplexNormTable of() {
        return {.l1 = &K::l1, .max_abs = &K::max_abs, .lp_sum = &K::lp_sum};
    }
};

// Bound: the type clamp's bounds are given in (T itself, or double for the 16-bit
// floats, whose kernels compute in float64).
template <class T, class Bound = T>
struct ClipTable {
    using bound_type = Bound;
    void (*scale)(T*, std::int64_t, double factor);
    void (*clamp)(T*, std::int64_t, Bound lo, Bound hi);
    std::int64_t (*zero_nonfinite)(T*, std::int64_t);

    template <class K>
    static constexpr ClipTable of() {
        return {.scale = &K::scale, .clamp = &K::clamp, .zero_nonfinite = &K::zero_nonfinite};
    }
};

// GEMM pieces (see gemm_kernels.hpp) and the element-wise passes of the dense layer.
template <class T>
struct GemmTable {
    int mr, nr;
    GemmBlocking blocking;
    void (*pack_a)(const T*, std::int64_t rs, std::int64_t cs, std::int64_t mc, std::int64_t kc, T*);
    void (*pack_b)(const T*, std::int64_t rs, std::int64_t cs, std::int64_t kc, std::int64_t nc, T*);
    void (*micro)(std::int64_t kc, const T* a, std::int64_t lda, const T* b, std::int64_t ldb, T* c, std::int64_t ldc,
                  T alpha, T beta, const Epilogue<T>*, T* b_copy, int rows);
    // The transposed-store micro-kernel (GemmKernels::micro_tc); null where the target
    // has no register transposes for it (the runtime then packs the transposed B).
    void (*micro_tc)(std::int64_t kc, const T* a, std::int64_t lda, const T* b, T* c, std::int64_t ldc,
                     T alpha, const Epilogue<T>*, int rows, int cols);
    // grad_z[r, j] = grad_y[r, j] * act'(y[r, j]) for rows [0, rows), columns [0, cols);
    // grad_bias[j] (+)= sum_r grad_z[r, j] when grad_bias is not null.
    void (*grad_z)(const T* gy, std::int64_t ld_gy, const T* y, std::int64_t ld_y, T* gz,
                   std::int64_t ld_gz, std::int64_t rows, std::int64_t cols, Activation, T slope,
                   T* grad_bias, bool accumulate_bias);
    // sums[j] (+)= sum_r x[r * ld + j] for rows [0, rows), columns [0, cols): the bias
    // reduction of grad_z alone, summed in the same order.
    void (*column_sums)(const T* x, std::int64_t ld, std::int64_t rows, std::int64_t cols, T* sums,
                        bool accumulate);
    // y = act(z) for the needs_saved activations (rows x cols; y may be z), and saved =
    // act'(z) (z for prelu) unless null.
    void (*activate)(const T* z, std::int64_t ld_z, T* y, std::int64_t ld_y, T* saved, std::int64_t ld_s,
                     std::int64_t rows, std::int64_t cols, const ActivationArgs<T>& args);
    // grad_z = act'(z) grad_y for them from saved, with the bias's column sums and prelu's
    // sum_r grad_y z [z <= 0] per column (null: not kept).
    void (*grad_z_from_saved)(const T* gy, std::int64_t ld_gy, const T* saved, std::int64_t ld_s, T* gz,
                              std::int64_t ld_gz, std::int64_t rows, std::int64_t cols, const ActivationArgs<T>& args,
                              T* grad_bias, T* grad_slope, bool accumulate);
    void (*vector_math)(T* x, std::int64_t n, int fn);  // 0 exp, 1 tanh, 2 sigmoid, 3 expm1, 4 normal tail

    // K: the GEMM kernels, D: the dense layer's passes.
    template <class K, class D>
    static constexpr GemmTable of(const GemmBlocking& blocking) {
        static_assert(K::MR <= kMaxMR && K::NR <= kMaxNR, "the runtime's scratch tile is too small for this tile");
        return {.mr = K::MR,
                .nr = K::NR,
                .blocking = blocking,
                .pack_a = &K::pack_a,
                .pack_b = &K::pack_b,
                .micro = &K::micro,
                .micro_tc = K::kHasTransposedStore ? &K::micro_tc : nullptr,
                .grad_z = &D::grad_z,
                .column_sums = &D::column_sums,
                .activate = &D::activate,
                .grad_z_from_saved = &D::grad_z_from_saved,
                .vector_math = &D::vector_math};
    }
};

// The fused per-step cell kernels of the recurrent layers (see rnn_kernels.hpp).
template <class T>
struct RnnTable {
    void (*lstm_forward)(std::int64_t batch, std::int64_t hidden, T* gates, const T* c_prev, T* c, T* h);
    void (*lstm_backward)(std::int64_t batch, std::int64_t hidden, const T* gates, const T* c_prev,
                          const T* c, const T* dh, T* dc, T* dg);
    void (*gru_forward)(std::int64_t batch, std::int64_t hidden, T* gates, const T* gh, const T* h_prev,
                        T* gh_n, T* h);
    void (*gru_backward)(std::int64_t batch, std::int64_t hidden, const T* gates, const T* gh_n,
                         const T* h_prev, const T* dh, T* dgx, T* dgh, T* dh_prev_direct);
    // The plain (Elman) RNN cell's step back: dg = dh * act'(h), tanh or relu.
    void (*elman_backward)(std::int64_t count, const T* h, const T* dh, T* dg, bool relu);
    double (*gather_hidden_grad)(std::int64_t count, const T* gy, T* dh, T clip);

    template <class K>
    static constexpr RnnTable of() {
        return {.lstm_forward = &K::lstm_forward,
                .lstm_backward = &K::lstm_backward,
                .gru_forward = &K::gru_forward,
                .gru_backward = &K::gru_backward,
                .elman_backward = &K::elman_backward,
                .gather_hidden_grad = &K::gather_hidden_grad};
    }
};

// Fused optimiser steps (see optim_kernels.hpp).
template <class T>
struct OptimTable {
    void (*sgd)(T* p, const T* g, T* buf, std::int64_t n, const SgdParams&);
    void (*adam)(T* p, const T* g, T* m, T* v, std::int64_t n, const AdamParams&);

    template <class K>
    static constexpr OptimTable of() {
        return {.sgd = &K::sgd, .adam = &K::adam};
    }
};

// The same for 16-bit parameters N and gradients, computed in float32: master (the
// float32 master weights, updated and rounded to p) may be null, the state is float32.
template <class N>
struct NarrowOptimTable {
    void (*sgd)(float* master, N* p, const N* g, float* buf, std::int64_t n, const SgdParams&);
    void (*adam)(float* master, N* p, const N* g, float* m, float* v, std::int64_t n, const AdamParams&);

    template <class K>
    static constexpr NarrowOptimTable of() {
        return {.sgd = &K::sgd, .adam = &K::adam};
    }
};

// Dropout's mask applied from the counter-based generator (dropout_kernels.hpp), over
// runs of n elements starting at element `first` of the call.
template <class T>
struct DropoutTable {
    void (*apply)(const T* x, T* y, std::int64_t n, std::int64_t first, std::uint64_t seed, std::uint64_t offset,
                  std::uint32_t threshold, T scale);

    template <class K>
    static constexpr DropoutTable of() {
        return {.apply = &K::apply};
    }
};

// The normalisation layers (see normalization_kernels.hpp), over blocks the runtime
// cuts: rows x cols blocks of C-contiguous rows, or runs of n elements; statistics and
// accumulators in float64.
template <class T>
struct NormalizationTable {
    Moments (*moments)(const T* x, std::int64_t n);
    void (*column_moments)(const T* x, std::int64_t rows, std::int64_t cols, double* mean, double* m2);
    void (*column_grad_sums)(const T* dy, const T* x, std::int64_t rows, std::int64_t cols, const double* mean,
                             double* sum_dy, double* sum_dy_xc);
    GradSums (*run_grad_sums)(const T* dy, const T* x, std::int64_t n, double mean);
    // out = cu u + cx (x - m) + c0 (u may be null), scalars for a run, per column for rows.
    void (*affine_run)(const T* u, const T* x, std::int64_t n, double m, double cu, double cx, double c0, T* out);
    void (*affine_rows)(const T* u, const T* x, std::int64_t rows, std::int64_t cols, const double* m,
                        const double* cu, const double* cx, const double* c0, T* out);
    void (*layer_norm_rows)(const T* x, std::int64_t rows, std::int64_t cols, const T* gamma, const T* beta,
                            double eps, T* y, double* mean, double* rstd);
    void (*layer_norm_backward_rows)(const T* dy, const T* x, std::int64_t rows, std::int64_t cols, const T* gamma,
                                     const double* mean, const double* rstd, T* dx, double* dgamma, double* dbeta);

    template <class K>
    static constexpr NormalizationTable of() {
        return {.moments = &K::moments,
                .column_moments = &K::column_moments,
                .column_grad_sums = &K::column_grad_sums,
                .run_grad_sums = &K::run_grad_sums,
                .affine_run = &K::affine_run,
                .affine_rows = &K::affine_rows,
                .layer_norm_rows = &K::layer_norm_rows,
                .layer_norm_backward_rows = &K::layer_norm_backward_rows};
    }
};

// What a target chooses besides its kernels, handed to make_table.
struct TargetConfig {
    GemmBlocking gemm_f32, gemm_f64;
};

struct KernelTable {
    const char* name;
    NormTable<Float16> norm_f16;
    NormTable<BFloat16> norm_bf16;
    NormTable<float> norm_f32;
    NormTable<double> norm_f64;
    ComplexNormTable<float> complex_norm_c64;
    ComplexNormTable<double> complex_norm_c128;
    ClipTable<Float16, double> clip_f16;
    ClipTable<BFloat16, double> clip_bf16;
    ClipTable<float> clip_f32;
    ClipTable<double> clip_f64;
    GemmTable<float> gemm_f32;
    GemmTable<double> gemm_f64;
    RnnTable<float> rnn_f32;
    RnnTable<double> rnn_f64;
    OptimTable<float> optim_f32;
    OptimTable<double> optim_f64;
    NarrowOptimTable<Float16> optim_f16;
    NarrowOptimTable<BFloat16> optim_bf16;
    NormalizationTable<float> normalization_f32;
    NormalizationTable<double> normalization_f64;
    DropoutTable<float> dropout_f32;
    DropoutTable<double> dropout_f64;
    // The dropout generator's raw words (tests).
    void (*philox_bits)(std::uint32_t* out, std::int64_t n, std::int64_t first, std::uint64_t seed,
                        std::uint64_t offset);
    // A plain multi-pass probe of the memory system, the yardstick of the benchmarks:
    // read-only sum of float32 (no widening), and an in-place read-modify-write.
    float (*probe_read)(const float*, std::int64_t);
    void (*probe_update)(float*, std::int64_t, float factor);
    // The FMA peak's yardstick: iterations of register-resident FMA chains on one
    // thread; returns the flops done, a value derived from the chains in the sink.
    std::int64_t (*probe_fma_f32)(std::int64_t iterations, float* sink);
    std::int64_t (*probe_fma_f64)(std::int64_t iterations, double* sink);
};

// Defined once per target translation unit.
const KernelTable& scalar_table();
const KernelTable& avx2_table();
const KernelTable& avx512_table();
const KernelTable& neon_table();

}  // namespace gradcore::kernels

#pragma GCC diagnostic pop
