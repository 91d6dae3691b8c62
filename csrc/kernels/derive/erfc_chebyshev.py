"""Derives the Chebyshev coefficients of VectorMath::erfc (csrc/kernels/vector_math.hpp).

erfc(t) = exp(-t^2) g(w) / (1 + t) for t >= 0, with w = (t - K) / (t + K) mapping
[0, inf) onto [-1, 1) and g(w) = (1 + t) erfc(t) exp(t^2) smooth on it, between 1 (t = 0)
and 1/sqrt(pi) (t -> inf): a sum with no cancellation, so Clenshaw's recurrence keeps the
relative accuracy at every t. g is interpolated at N Chebyshev points of the first kind. Prints, for each
precision, the coefficients (c_0 first) and the largest relative error of the
interpolant on t in [0, 30] (against mpmath at 40 digits).

Run once, by hand, with mpmath (pip install mpmath): python erfc_chebyshev.py
"""

import mpmath as mp

mp.mp.dps = 40
K = mp.mpf(4)


def g(w):
    t = K * (1 + w) / (1 - w)
    return (1 + t) * mp.erfc(t) * mp.exp(t * t)


def coefficients(n):
    nodes = [mp.cos(mp.pi * (k + mp.mpf(0.5)) / n) for k in range(n)]
    values = [g(x) for x in nodes]
    c = [2 * mp.fsum(values[k] * mp.cos(mp.pi * j * (k + mp.mpf(0.5)) / n) for k in range(n)) / n
         for j in range(n)]
    c[0] /= 2
    return c


def clenshaw(c, w):
    b1 = b2 = mp.mpf(0)
    for cj in reversed(c[1:]):
        b1, b2 = 2 * w * b1 - b2 + cj, b1
    return w * b1 - b2 + c[0]


for name, n in (("float", 13), ("double", 26)):
    c = coefficients(n)
    worst = max(abs(clenshaw(c, (t - K) / (t + K)) / g((t - K) / (t + K)) - 1)
                for t in (mp.mpf(i) / 400 * 30 for i in range(12001)))
    print(f"// {name}: {n} terms, largest relative error {mp.nstr(worst, 3)} on [0, 30]")
    print(",\n".join(f"    {mp.nstr(x, 20, strip_zeros=False)}" for x in c))
