// Element-wise activations of the dense layer and their derivatives taken from the
// forward output y (what torch's autograd saves), over one SIMD struct S.
#pragma once

#include <cmath>
#include <cstdint>

#include "gradcore/dense.hpp"
#include "target.hpp"
#include "vector_math.hpp"

namespace gradcore::kernels::GRADCORE_TARGET {

using gradcore::Activation;

template <class S, class T>
struct Activations {
    using V = typename S::template V<T>;
    static constexpr std::int64_t kLanes = S::template kLanes<T>;

    static V forward(V z, Activation act, V slope) {
        switch (act) {
            // Selected on -z > 0 (z < 0) so that NaN, for which every ordered compare
            // is false, passes through unchanged as in torch.
            case Activation::relu:
                return S::where_positive(S::sub(S::set1(T(0)), z), S::set1(T(0)), z);
            case Activation::leaky_relu:
                return S::where_positive(S::sub(S::set1(T(0)), z), S::mul(z, slope), z);
            case Activation::tanh:
                return VectorMath<S, T>::tanh(z);
            case Activation::sigmoid:
                return VectorMath<S, T>::sigmoid(z);
            case Activation::identity:
                break;
        }
        return z;
    }

    // dL/dz from dL/dy and y = act(z).
    static V backward(V g, V y, Activation act, V slope) {
        const V one = S::set1(T(1));
        switch (act) {
            case Activation::relu:
                return S::where_positive(y, g, S::set1(T(0)));
            case Activation::leaky_relu:
                return S::where_positive(y, g, S::mul(g, slope));
            case Activation::tanh:
                return S::mul(g, S::sub(one, S::mul(y, y)));
            case Activation::sigmoid:
                return S::mul(g, S::mul(y, S::sub(one, y)));
            case Activation::identity:
                break;
        }
        return g;
    }
};

}  // namespace gradcore::kernels::GRADCORE_TARGET
