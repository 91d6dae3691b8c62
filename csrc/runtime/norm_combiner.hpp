// Folds per-chunk partial sums of an L1, L2 or L-inf norm into one norm, in a fixed
// order, without overflow or underflow: the running sum is kept as sum * 2^(p * exp)
// with sum renormalised into [2^-512, 2^512] whenever it drifts out. (Other p take
// another route: see norms.cpp.)
#pragma once

#include <cmath>
#include <limits>

#include "kernels/table_types.hpp"

namespace gradcore::runtime {

enum class OrderKind { l1, l2, linf, lp };  // lp: any other p

struct NormOrder {
    OrderKind kind;
    double p;
};

class NormCombiner {
   public:
    explicit NormCombiner(NormOrder order) : order_(order) {}

    void add(kernels::ScaledSum s) {
        if (s.sum != s.sum) {
            nan_ = true;
        } else if (s.sum == std::numeric_limits<double>::infinity()) {
            inf_ = true;
        } else if (order_.kind == OrderKind::linf) {
            max_ = s.sum > max_ ? s.sum : max_;
        } else if (s.sum != 0.0) {
            merge(s.sum, s.exp);
        }
    }

    double result() const {
        if (nan_) return std::numeric_limits<double>::quiet_NaN();
        if (inf_) return std::numeric_limits<double>::infinity();
        switch (order_.kind) {
            case OrderKind::linf: return max_;
            case OrderKind::l1: return std::ldexp(sum_, exp_);
            case OrderKind::l2: return std::ldexp(std::sqrt(sum_), exp_);
            case OrderKind::lp: break;
        }
        return std::numeric_limits<double>::quiet_NaN();  // not combined here
    }

   private:
    // 2^(p * e), exact.
    double pow2p(long e) const {
        return std::ldexp(1.0, static_cast<int>(order_.kind == OrderKind::l2 ? 2 * e : e));
    }

    void merge(double sum, int exp) {
        if (!have_) {
            sum_ = sum, exp_ = exp, have_ = true;
        } else if (exp > exp_) {
            sum_ = sum_ * pow2p(static_cast<long>(exp_) - exp) + sum;
            exp_ = exp;
        } else {
            sum_ += sum * pow2p(static_cast<long>(exp) - exp_);
        }
        renormalise();
    }

    void renormalise() {
        const int k = order_.kind == OrderKind::l2 ? 128 : 256;  // shift sum by 2^256
        while (sum_ > 0x1p+512) sum_ *= pow2p(-k), exp_ += k;
        while (sum_ > 0.0 && sum_ < 0x1p-512) sum_ *= pow2p(k), exp_ -= k;
    }

    NormOrder order_;
    double sum_ = 0.0;
    double max_ = 0.0;
    int exp_ = 0;
    bool have_ = false;
    bool nan_ = false;
    bool inf_ = false;
};

}  // namespace gradcore::runtime
