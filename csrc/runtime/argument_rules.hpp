// The rules the scalar arguments of the norm and clipping API obey, written once: the CPU
// runtime and the CUDA backend check them on entry (every failure std::invalid_argument,
// before anything is written or enqueued), and the Python bindings call the same functions
// before they allocate device outputs. The messages are the ones Python users see, with
// numbers printed as Python prints floats.
#pragma once

#include <charconv>
#include <cmath>
#include <stdexcept>
#include <string>

namespace gradcore::rules {

// repr(float(v)) in Python: the shortest digits that round-trip, in fixed notation for
// decimal exponents in [-4, 16), scientific otherwise; "1.0", "1e-05", "inf", "nan".
inline std::string number(double v) {
    if (std::isnan(v)) return "nan";
    if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
    char buf[64];
    const auto sci = std::to_chars(buf, buf + sizeof buf, v, std::chars_format::scientific);
    const std::string s(buf, sci.ptr);
    const int exponent = std::stoi(s.substr(s.find('e') + 1));
    if (exponent < -4 || exponent >= 16) return s;
    const auto fixed = std::to_chars(buf, buf + sizeof buf, v, std::chars_format::fixed);
    std::string f(buf, fixed.ptr);
    if (f.find('.') == std::string::npos) f += ".0";
    return f;
}

inline std::invalid_argument bad_norm_order(const std::string& got) {
    return std::invalid_argument("ord must be a real number p > 0 or inf, got " + got);
}

// Any real p > 0, or +inf.
inline void norm_order(double ord) {
    if (!(ord > 0.0)) throw bad_norm_order(number(ord));
}

// >= 0; inf allowed, NaN not (max_norm, clip_value).
inline void nonnegative(double v, const char* name) {
    if (!(v >= 0.0)) throw std::invalid_argument(std::string(name) + " must be >= 0, got " + number(v));
}

// A finite number >= 0 (eps, clipping).
inline void finite_nonnegative(double v, const char* name) {
    if (!(v >= 0.0) || std::isinf(v)) {
        throw std::invalid_argument(std::string(name) + " must be a finite number >= 0, got " + number(v));
    }
}

// A dropout probability: in [0, 1] (gradcore::dropout; 1 zeroes everything).
inline void probability(double p, const char* name) {
    if (!(p >= 0.0 && p <= 1.0)) throw std::invalid_argument(std::string(name) + " must be in [0, 1], got " + number(p));
}

// In [0, 1): the dense layer's dropout, whose backward scales by 1 / (1 - p).
inline void probability_below_one(double p, const char* name) {
    if (!(p >= 0.0 && p < 1.0)) throw std::invalid_argument(std::string(name) + " must be in [0, 1), got " + number(p));
}

// clip_by_value_'s bounds: lo <= hi, neither NaN (either may be infinite).
inline void clip_bounds(double lo, double hi) {
    if (std::isnan(lo) || std::isnan(hi)) {
        throw std::invalid_argument("min and max must not be NaN, got min=" + number(lo) + ", max=" + number(hi));
    }
    if (lo > hi) throw std::invalid_argument("min must be <= max, got min=" + number(lo) + ", max=" + number(hi));
}

// A total norm computed earlier: NaN and inf are totals too (the policies handle them).
inline void given_total(double total) {
    if (total < 0.0) throw std::invalid_argument("total_norm must be >= 0, got " + number(total));
}

}  // namespace gradcore::rules
