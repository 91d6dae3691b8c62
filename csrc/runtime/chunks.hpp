// Splits a list of arrays into fixed-size chunks, the unit of parallel work (in the
// spirit of Apex's multi_tensor_apply): thousands of small arrays and a few huge ones
// both spread over all threads. The split depends only on the sizes, never on the
// thread count, so per-chunk partial results combined in order are reproducible.
#pragma once

#include <cstdint>
#include <vector>

#include "gradcore/tensor.hpp"
#include "runtime/checks.hpp"
#include "runtime/thread_pool.hpp"

namespace gradcore::runtime {

// Elements per chunk: 128 KiB of float32, small enough that a chunk re-read for a rare
// rescaled sum is still in L2, large enough that per-chunk overhead is noise.
constexpr std::int64_t kChunkElements = 1 << 15;

struct Chunk {
    std::uint32_t array;
    std::int64_t begin;
    std::int64_t size;
};

struct ChunkList {
    std::vector<Chunk> chunks;
    std::int64_t total_elements = 0;
};

// Chunks count elements, so a complex element (two components) is never split.
inline ChunkList make_chunks(const TensorView* arrays, std::size_t count, Complex complex = Complex::refused) {
    check_views(arrays, count, "arrays", complex);
    ChunkList out;
    std::size_t n = 0;
    for (std::size_t a = 0; a < count; ++a) {
        n += static_cast<std::size_t>((arrays[a].numel + kChunkElements - 1) / kChunkElements);
    }
    out.chunks.reserve(n);
    for (std::size_t a = 0; a < count; ++a) {
        const std::int64_t numel = arrays[a].numel;
        for (std::int64_t b = 0; b < numel; b += kChunkElements) {
            const std::int64_t size = numel - b < kChunkElements ? numel - b : kChunkElements;
            out.chunks.push_back({static_cast<std::uint32_t>(a), b, size});
        }
        out.total_elements += numel;
    }
    return out;
}

// Runs fn(chunk_index) for every chunk, in parallel when the list is big enough.
// Consecutive small chunks (many small arrays) are grouped into tasks of about
// kChunkElements elements, so that a list of thousands of tiny arrays costs a few dozen
// task hand-offs rather than thousands. Each chunk still writes its own result slot.
template <class F>
void for_each_chunk(const ChunkList& list, F&& fn) {
    const std::vector<Chunk>& chunks = list.chunks;
    std::vector<std::size_t> group_begin;
    group_begin.reserve(chunks.size() + 1);
    std::int64_t in_group = kChunkElements;
    for (std::size_t i = 0; i < chunks.size(); ++i) {
        if (in_group >= kChunkElements) {
            group_begin.push_back(i);
            in_group = 0;
        }
        in_group += chunks[i].size + 64;  // + a nominal per-chunk cost
    }
    group_begin.push_back(chunks.size());
    auto task = [&](std::size_t g) {
        for (std::size_t i = group_begin[g]; i < group_begin[g + 1]; ++i) fn(i);
    };
    parallel_for(group_begin.size() - 1, list.total_elements, TaskFn(task));
}

}  // namespace gradcore::runtime
