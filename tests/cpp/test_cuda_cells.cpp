// Host test of the CUDA backend's per-element math (csrc/cuda/activations.cuh and
// rnn_cells.cuh, both __host__ __device__): every backward formula against central
// finite differences of the forward, in double, plus the float32 versions against the
// float64 ones and a few exact cases (NaN, saturation, clamping). Needs no GPU:
//
//   nvcc -x cu -std=c++17 tests/cpp/test_cuda_cells.cpp -I csrc -I csrc/include -o /tmp/t && /tmp/t
//
// Returns nonzero when a check fails (each failure is printed).
#include <cmath>
#include <cstdio>
#include <limits>
#include <random>

#include "cuda/rnn_cells.cuh"

namespace {

namespace elem = gradcore::cuda::elem;
using gradcore::Activation;

int checks = 0;
int failures = 0;

void expect_close(double got, double want, double tol, const char* what, int trial) {
    ++checks;
    const double err = std::fabs(got - want);
    if (!(err <= tol * std::fmax(1.0, std::fabs(want)))) {
        ++failures;
        if (failures <= 50) std::printf("FAIL %s (trial %d): got %.17g, want %.17g\n", what, trial, got, want);
    }
}

void expect_true(bool ok, const char* what) {
    ++checks;
    if (!ok) {
        ++failures;
        std::printf("FAIL %s\n", what);
    }
}

// Central difference of f along one input.
template <class F>
double fd(F f, double x, double h = 1e-6) {
    return (f(x + h) - f(x - h)) / (2 * h);
}

constexpr double kFdTol = 1e-6;   // finite differences in double
constexpr double kF32Tol = 2e-6;  // float32 against float64 (a few float32 ulp)

void test_activations(std::mt19937_64& rng) {
    std::uniform_real_distribution<double> u(-4.0, 4.0);
    const Activation acts[] = {Activation::identity, Activation::relu, Activation::leaky_relu, Activation::tanh,
                               Activation::sigmoid};
    const char* names[] = {"identity", "relu", "leaky_relu", "tanh", "sigmoid"};
    const double slope = 0.07;
    for (int trial = 0; trial < 2000; ++trial) {
        double z = u(rng);
        if (std::fabs(z) < 1e-3) z = 0.5;  // away from relu's kink
        const double g = u(rng);
        for (int a = 0; a < 5; ++a) {
            const Activation act = acts[a];
            const double y = elem::activation_forward(z, act, slope);
            const double want = g * fd([&](double v) { return elem::activation_forward(v, act, slope); }, z);
            char what[64];
            std::snprintf(what, sizeof what, "activation_backward %s", names[a]);
            expect_close(elem::activation_backward(g, y, act, slope), want, kFdTol, what, trial);
            std::snprintf(what, sizeof what, "activation_forward float %s", names[a]);
            expect_close(elem::activation_forward(static_cast<float>(z), act, static_cast<float>(slope)),
                         elem::activation_forward(static_cast<double>(static_cast<float>(z)), act,
                                                  static_cast<double>(static_cast<float>(slope))),
                         kF32Tol, what, trial);
        }
        // sigmoid against its definition
        expect_close(elem::sigmoid(z), 1.0 / (1.0 + std::exp(-z)), 1e-15, "sigmoid double", trial);
    }
    const double nan = std::numeric_limits<double>::quiet_NaN();
    expect_true(std::isnan(elem::sigmoid(nan)), "sigmoid(NaN) is NaN");
    expect_true(std::isnan(elem::activation_forward(nan, Activation::relu, 0.0)), "relu(NaN) is NaN");
    expect_true(std::isnan(elem::activation_forward(nan, Activation::leaky_relu, 0.01)), "leaky_relu(NaN) is NaN");
    expect_true(std::isnan(elem::activation_forward(std::numeric_limits<float>::quiet_NaN(), Activation::tanh, 0.0f)),
                "tanh(NaN) is NaN (float)");
    expect_true(elem::sigmoid(-800.0) == 0.0 && elem::sigmoid(800.0) == 1.0, "sigmoid saturates");
    expect_true(elem::sigmoid(-100.0f) > 0.0f && elem::sigmoid(-100.0f) < 1e-40f, "sigmoid(-100f) is subnormal, not 0");
    expect_close(elem::sigmoid(-30.0), std::exp(-30.0) / (1.0 + std::exp(-30.0)), 1e-15, "sigmoid(-30) relative",
                 0);
    expect_true(elem::sigmoid(-30.0) / (std::exp(-30.0) / (1.0 + std::exp(-30.0))) - 1.0 < 1e-14,
                "sigmoid(-30) keeps its relative precision");
    expect_true(elem::activation_backward(2.0, 0.0, Activation::relu, 0.1) == 0.0, "relu'(y = 0) = 0");
    expect_true(elem::activation_backward(2.0, 0.0, Activation::leaky_relu, 0.1) == 2.0 * 0.1,
                "leaky_relu'(y = 0) = slope");
    expect_true(std::signbit(elem::activation_forward(-0.0, Activation::relu, 0.0)), "relu(-0) = -0 (as the CPU)");
}

void test_lstm(std::mt19937_64& rng) {
    std::uniform_real_distribution<double> u(-3.0, 3.0);
    for (int trial = 0; trial < 2000; ++trial) {
        double in[5];  // a_i, a_f, a_g, a_o, c_prev
        for (double& v : in) v = u(rng);
        const double wh = u(rng), wc = u(rng);  // dL/dh_t, dL/dc_t (from step t+1)
        auto loss = [&](const double* x) {
            const elem::LstmForward<double> s = elem::lstm_forward(x[0], x[1], x[2], x[3], x[4]);
            return wh * s.h + wc * s.c;
        };
        const elem::LstmForward<double> s = elem::lstm_forward(in[0], in[1], in[2], in[3], in[4]);
        const elem::LstmBackward<double> d = elem::lstm_backward(s.i, s.f, s.g, s.o, in[4], s.c, wh, wc);
        const double got[5] = {d.di, d.df, d.dg, d.do_, d.dc_prev};
        const char* names[5] = {"lstm d a_i", "lstm d a_f", "lstm d a_g", "lstm d a_o", "lstm d c_prev"};
        for (int k = 0; k < 5; ++k) {
            const double want = fd(
                [&](double v) {
                    double x[5] = {in[0], in[1], in[2], in[3], in[4]};
                    x[k] = v;
                    return loss(x);
                },
                in[k]);
            expect_close(got[k], want, kFdTol, names[k], trial);
        }
        // the cached state: c = f c_prev + i g, h = o tanh(c)
        expect_close(s.c, s.f * in[4] + s.i * s.g, 1e-14, "lstm c", trial);
        expect_close(s.h, s.o * std::tanh(s.c), 1e-14, "lstm h", trial);
        // float32 forward against float64
        const elem::LstmForward<float> sf = elem::lstm_forward(
            static_cast<float>(in[0]), static_cast<float>(in[1]), static_cast<float>(in[2]),
            static_cast<float>(in[3]), static_cast<float>(in[4]));
        const elem::LstmForward<double> sd = elem::lstm_forward(
            double(float(in[0])), double(float(in[1])), double(float(in[2])), double(float(in[3])),
            double(float(in[4])));
        expect_close(sf.c, sd.c, 4 * kF32Tol, "lstm c float", trial);
        expect_close(sf.h, sd.h, 4 * kF32Tol, "lstm h float", trial);
    }
}

void test_gru(std::mt19937_64& rng) {
    std::uniform_real_distribution<double> u(-3.0, 3.0);
    for (int trial = 0; trial < 2000; ++trial) {
        double in[7];  // x_r, x_z, x_n, q_r, q_z, q_n, h_prev
        for (double& v : in) v = u(rng);
        const double wh = u(rng);
        auto loss = [&](const double* x) {
            return wh * elem::gru_forward(x[0], x[1], x[2], x[3], x[4], x[5], x[6]).h;
        };
        const elem::GruForward<double> s = elem::gru_forward(in[0], in[1], in[2], in[3], in[4], in[5], in[6]);
        const elem::GruBackward<double> d = elem::gru_backward(s.r, s.z, s.n, in[5], in[6], wh);
        // dgx = (dr, dz, dn) = dL/dx_*; dgh = (dr, dz, dqn) = dL/dq_*; direct = dL/dh_prev
        // with q held fixed (the path through W_hh is the GEMM's).
        const double got[7] = {d.dr, d.dz, d.dn, d.dr, d.dz, d.dqn, d.dh_prev_direct};
        const char* names[7] = {"gru d x_r", "gru d x_z", "gru d x_n", "gru d q_r",
                                "gru d q_z", "gru d q_n", "gru d h_prev (direct)"};
        for (int k = 0; k < 7; ++k) {
            const double want = fd(
                [&](double v) {
                    double x[7] = {in[0], in[1], in[2], in[3], in[4], in[5], in[6]};
                    x[k] = v;
                    return loss(x);
                },
                in[k]);
            expect_close(got[k], want, kFdTol, names[k], trial);
        }
        expect_close(s.h, (1 - s.z) * s.n + s.z * in[6], 1e-14, "gru h", trial);
        expect_close(s.n, std::tanh(in[2] + s.r * in[5]), 1e-14, "gru n", trial);
        const elem::GruForward<float> sf = elem::gru_forward(
            float(in[0]), float(in[1]), float(in[2]), float(in[3]), float(in[4]), float(in[5]), float(in[6]));
        const elem::GruForward<double> sd =
            elem::gru_forward(double(float(in[0])), double(float(in[1])), double(float(in[2])), double(float(in[3])),
                              double(float(in[4])), double(float(in[5])), double(float(in[6])));
        expect_close(sf.h, sd.h, 4 * kF32Tol, "gru h float", trial);
    }
}

void test_rnn(std::mt19937_64& rng) {
    std::uniform_real_distribution<double> u(-3.0, 3.0);
    for (int trial = 0; trial < 2000; ++trial) {
        double a = u(rng);
        if (std::fabs(a) < 1e-3) a = -0.25;
        const double wh = u(rng);
        for (int relu = 0; relu < 2; ++relu) {
            const double h = elem::rnn_forward(a, relu != 0);
            const double want = wh * fd([&](double v) { return elem::rnn_forward(v, relu != 0); }, a);
            expect_close(elem::rnn_backward(h, wh, relu != 0), want, kFdTol, relu ? "rnn_relu da" : "rnn_tanh da",
                         trial);
        }
    }
}

void test_clamp() {
    const double nan = std::numeric_limits<double>::quiet_NaN();
    expect_true(elem::clamp_hidden(5.0, 1.5) == 1.5, "clamp above");
    expect_true(elem::clamp_hidden(-5.0, 1.5) == -1.5, "clamp below");
    expect_true(elem::clamp_hidden(0.25, 1.5) == 0.25, "clamp inside");
    expect_true(elem::clamp_hidden(5.0, 0.0) == 5.0, "clip 0: no clamp");
    expect_true(std::isnan(elem::clamp_hidden(nan, 1.0)), "clamp keeps NaN");
    expect_true(elem::clamp_hidden(-INFINITY, 2.0f) == -2.0f, "clamp -inf (float)");
}

}  // namespace

int main() {
    std::mt19937_64 rng(20240611);
    test_activations(rng);
    test_lstm(rng);
    test_gru(rng);
    test_rnn(rng);
    test_clamp();
    std::printf("test_cuda_cells: %d checks, %d failures\n", checks, failures);
    return failures == 0 ? 0 : 1;
}
