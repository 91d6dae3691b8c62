"""A plain-Python reference of gradcore.dropout's generator and mask, written from the
contract (docs/api.md, "Dropout") and the Philox4x32-10 definition (Salmon et al., SC
2011); nothing here imports gradcore."""

import math

import numpy as np

M0, M1 = 0xD2511F53, 0xCD9E8D57
W0, W1 = 0x9E3779B9, 0xBB67AE85
MASK = 0xFFFFFFFF


def philox4x32_10(counter, key):
    """Four 32-bit words of Philox4x32 with 10 rounds for a counter of four words and a
    key of two."""
    c0, c1, c2, c3 = counter
    k0, k1 = key
    for _ in range(10):
        p0, p1 = M0 * c0, M1 * c2
        c0, c1, c2, c3 = ((p1 >> 32) ^ c1 ^ k0) & MASK, p1 & MASK, ((p0 >> 32) ^ c3 ^ k1) & MASK, p0 & MASK
        k0, k1 = (k0 + W0) & MASK, (k1 + W1) & MASK
    return c0, c1, c2, c3


def words(n, seed, offset):
    """Element i's word: word i % 4 of counter (lo(i // 4), hi(i // 4), lo(offset), hi(offset))
    under key (lo(seed), hi(seed))."""
    out = []
    for block in range((n + 3) // 4):
        out.extend(philox4x32_10((block & MASK, block >> 32, offset & MASK, offset >> 32),
                                 (seed & MASK, seed >> 32)))
    return np.array(out[:n], dtype=np.uint64)


def dropout(x, p, seed, offset):
    """Dropout of x (C order) in x's dtype: kept elements times 1 / (1 - p) rounded to that
    dtype (one product, as torch computes it)."""
    x = np.asarray(x)
    keep = (words(x.size, seed, offset) >> 8) >= math.ceil(p * 2 ** 24)
    scale = x.dtype.type(1.0 / (1.0 - p) if p < 1 else 0.0)
    return np.where(keep.reshape(x.shape), x * scale, x.dtype.type(0))
