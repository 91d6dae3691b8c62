// Dropout with a counter-based generator: element i of a call keeps its value (scaled by
// 1 / (1 - p)) or becomes 0 by a random number that is a pure function of (seed, offset,
// i), so the backward regenerates the forward's mask instead of storing it, and the
// result is the same on every thread count and instruction set.
//
// The generator is Philox4x32-10 (Salmon, Moraes, Dror and Shaw, "Parallel random numbers:
// as easy as 1, 2, 3", SC 2011): block b of four 32-bit outputs is the counter
// (lo(b), hi(b), lo(offset), hi(offset)) under the key (lo(seed), hi(seed)); element i
// takes word i % 4 of block i / 4. Its top 24 bits u are uniform on [0, 2^24): the element
// is kept when u >= threshold (threshold = ceil(p 2^24)).
//
// Plain integer loops over a batch of blocks held as separate arrays (structure of
// arrays): each target's compiler turns them into its vector multiplies
// (32 x 32 -> 64-bit), so the code is written once without integer lanes in the SIMD
// abstraction.
#pragma once

#include <cstdint>

#include "target.hpp"

namespace gradcore::kernels::GRADCORE_TARGET {

struct Philox {
    static constexpr std::uint32_t kM0 = 0xD2511F53u, kM1 = 0xCD9E8D57u;  // multipliers
    static constexpr std::uint32_t kW0 = 0x9E3779B9u, kW1 = 0xBB67AE85u;  // key increments
    static constexpr int kBatch = 16;                                      // blocks per batch

    // out[4 j + w] = word w of block first_block + j, for j < kBatch.
    static void batch(std::uint64_t first_block, std::uint64_t seed, std::uint64_t offset, std::uint32_t* out) {
        std::uint32_t c0[kBatch], c1[kBatch], c2[kBatch], c3[kBatch];
        for (int j = 0; j < kBatch; ++j) {
            const std::uint64_t b = first_block + static_cast<std::uint64_t>(j);
            c0[j] = static_cast<std::uint32_t>(b);
            c1[j] = static_cast<std::uint32_t>(b >> 32);
            c2[j] = static_cast<std::uint32_t>(offset);
            c3[j] = static_cast<std::uint32_t>(offset >> 32);
        }
        std::uint32_t k0 = static_cast<std::uint32_t>(seed), k1 = static_cast<std::uint32_t>(seed >> 32);
        for (int round = 0; round < 10; ++round) {
            for (int j = 0; j < kBatch; ++j) {
                const std::uint64_t p0 = std::uint64_t(kM0) * c0[j];
                const std::uint64_t p1 = std::uint64_t(kM1) * c2[j];
                const std::uint32_t n0 = static_cast<std::uint32_t>(p1 >> 32) ^ c1[j] ^ k0;
                const std::uint32_t n2 = static_cast<std::uint32_t>(p0 >> 32) ^ c3[j] ^ k1;
                c1[j] = static_cast<std::uint32_t>(p1);
                c3[j] = static_cast<std::uint32_t>(p0);
                c0[j] = n0;
                c2[j] = n2;
            }
            k0 += kW0;
            k1 += kW1;
        }
        for (int j = 0; j < kBatch; ++j) {
            out[4 * j] = c0[j], out[4 * j + 1] = c1[j], out[4 * j + 2] = c2[j], out[4 * j + 3] = c3[j];
        }
    }
};

template <class T>
struct DropoutKernels {
    static constexpr std::int64_t kBatchElements = 4 * Philox::kBatch;

    // The generator's words for elements first .. first + n - 1 (the test hook).
    static void bits(std::uint32_t* out, std::int64_t n, std::int64_t first, std::uint64_t seed,
                     std::uint64_t offset) {
        for_batches(n, first, seed, offset, [&](std::int64_t i, const std::uint32_t* r, std::int64_t k) {
            for (std::int64_t e = 0; e < k; ++e) out[i + e] = r[e];
        });
    }

    // y[i] = x[i] * scale where the word of element first + i has its top 24 bits >=
    // threshold, else 0. y may be x.
    static void apply(const T* x, T* y, std::int64_t n, std::int64_t first, std::uint64_t seed,
                      std::uint64_t offset, std::uint32_t threshold, T scale) {
        for_batches(n, first, seed, offset, [&](std::int64_t i, const std::uint32_t* r, std::int64_t k) {
            for (std::int64_t e = 0; e < k; ++e) y[i + e] = (r[e] >> 8) >= threshold ? x[i + e] * scale : T(0);
        });
    }

    // f(i, words, k): the k (<= kBatchElements) words of elements first + i .. first + i + k - 1.
    template <class F>
    static void for_batches(std::int64_t n, std::int64_t first, std::uint64_t seed, std::uint64_t offset, F&& f) {
        alignas(64) std::uint32_t words[kBatchElements];
        std::int64_t i = 0;
        while (i < n) {
            const std::int64_t element = first + i;
            const std::int64_t start = element / 4 * 4;  // the batch starts on a block
            Philox::batch(static_cast<std::uint64_t>(element / 4), seed, offset, words);
            const std::int64_t skip = element - start;
            const std::int64_t k = n - i < kBatchElements - skip ? n - i : kBatchElements - skip;
            f(i, words + skip, k);
            i += k;
        }
    }
};

}  // namespace gradcore::kernels::GRADCORE_TARGET
