// runtime::gemm: the plan picks a strategy, the strategy runs (the pieces are in
// csrc/runtime/gemm/, parts.hpp says which does what).
#include "runtime/gemm.hpp"

#include "runtime/gemm/parts.hpp"

namespace gradcore::runtime {

template <class T>
void gemm(MatrixRef<const T> a, MatrixRef<const T> b, MatrixRef<T> c, T alpha, T beta,
          const T* bias, Activation act, T slope, const PackedB<T>* packed) {
    using namespace gemm_parts;
    const GemmCall<T> call{a, b, c, alpha, beta, bias, act, slope, packed};
    const GemmPlan<T> plan = make_plan(call);
    switch (plan.strategy) {
        case Strategy::nothing: return;
        case Strategy::transposed_store: return transposed_store(call, plan);
        case Strategy::column_split: return column_split(call, plan);
        case Strategy::row_blocks: return row_blocks(call, plan);
    }
}

template void gemm<float>(MatrixRef<const float>, MatrixRef<const float>, MatrixRef<float>, float, float,
                          const float*, Activation, float, const PackedB<float>*);
template void gemm<double>(MatrixRef<const double>, MatrixRef<const double>, MatrixRef<double>, double,
                           double, const double*, Activation, double, const PackedB<double>*);

}  // namespace gradcore::runtime

namespace gradcore {

void gemm(MatrixRef<const float> a, MatrixRef<const float> b, MatrixRef<float> c, float alpha, float beta) {
    runtime::gemm<float>(a, b, c, alpha, beta, nullptr, Activation::identity, 0.0f);
}
void gemm(MatrixRef<const double> a, MatrixRef<const double> b, MatrixRef<double> c, double alpha,
          double beta) {
    runtime::gemm<double>(a, b, c, alpha, beta, nullptr, Activation::identity, 0.0);
}

}  // namespace gradcore
