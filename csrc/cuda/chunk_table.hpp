// The host side of the multi-tensor kernels, as pure functions of the caller's list (no
// CUDA here, so tests/cpp/test_cuda_norm_math.cpp checks them on any machine):
//
// - make_chunk_table: every array split into chunks of kChunkElements (the last one
//   shorter), listed in list order, plus each array's range of chunks. The norm and
//   clipping kernels run one block per chunk over this table; per-chunk partial results
//   are combined in chunk order, so the split, and with it every result, depends only
//   on the array sizes (never on the grid, the device or the timing).
// - make_unit_tiles: the same idea for adaptive clipping, whose reductions are per unit
//   (UnitLayout): one entry per (grad, param) pair, with the pair's tiling into warp-sized
//   tiles; the device decodes a tile number into its slice itself, so the table stays
//   one entry per pair however many units an array has.
#pragma once

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "gradcore/cuda.hpp"

// The tile geometry below is shared by the host (tables, tests) and the kernels.
#if defined(__CUDACC__)
#define GC_TABLE_HD __host__ __device__
#else
#define GC_TABLE_HD
#endif

namespace gradcore::cuda::detail {

// Elements per chunk: the CPU's chunk (runtime/chunks.hpp), so chunk boundaries are the
// same on both sides. 32768 elements are 128 elements per thread of a 256-thread block
// (64 KiB of float16 to 256 KiB of float64 per block) and about 24 bytes of table per
// 32768 elements (0.7 KiB per million elements); a list of a billion elements is 30k
// chunks, enough to fill any GPU, while a single array of a million still makes 31 blocks.
constexpr std::int64_t kChunkElements = std::int64_t{1} << 15;

inline std::size_t element_size(DType t) { return static_cast<std::size_t>(itemsize(t)); }

// One chunk: a contiguous run of 1..kChunkElements elements of one array. 24 bytes.
struct ChunkDesc {
    const void* ptr;       // device address of the chunk's first element
    std::uint32_t len;     // elements in the chunk
    std::uint32_t tensor;  // index of its array in the caller's list
    std::uint8_t dtype;    // DType of the array
    std::uint8_t pad[7];
};
static_assert(sizeof(ChunkDesc) == 24, "ChunkDesc is 24 bytes");

struct ChunkTable {
    std::vector<ChunkDesc> chunks;
    // Array a owns chunks [first_chunk[a], first_chunk[a + 1]); count + 1 entries.
    std::vector<std::uint32_t> first_chunk;
};

// The arrays must already be validated (numel >= 0, data set when numel > 0, count
// below 2^32). Throws std::invalid_argument when the table would exceed 2^31 - 1 chunks.
inline ChunkTable make_chunk_table(const TensorView* arrays, std::size_t count,
                                   std::int64_t chunk = kChunkElements) {
    ChunkTable t;
    std::int64_t total = 0;
    for (std::size_t a = 0; a < count; ++a) total += (arrays[a].numel + chunk - 1) / chunk;
    if (total > 0x7fffffff) {
        throw std::invalid_argument("gradcore CUDA: too many elements in one list (" +
                                    std::to_string(total) + " chunks)");
    }
    t.chunks.reserve(static_cast<std::size_t>(total));
    t.first_chunk.reserve(count + 1);
    for (std::size_t a = 0; a < count; ++a) {
        t.first_chunk.push_back(static_cast<std::uint32_t>(t.chunks.size()));
        const std::int64_t n = arrays[a].numel;
        const std::size_t bytes = element_size(arrays[a].dtype);
        for (std::int64_t begin = 0; begin < n; begin += chunk) {
            ChunkDesc d{};
            d.ptr = static_cast<const char*>(arrays[a].data) + static_cast<std::size_t>(begin) * bytes;
            d.len = static_cast<std::uint32_t>(n - begin < chunk ? n - begin : chunk);
            d.tensor = static_cast<std::uint32_t>(a);
            d.dtype = static_cast<std::uint8_t>(arrays[a].dtype);
            t.chunks.push_back(d);
        }
    }
    t.first_chunk.push_back(static_cast<std::uint32_t>(t.chunks.size()));
    return t;
}

// ---- adaptive clipping ---------------------------------------------------------------
// A (grad, param) pair is the block (outer, units, inner) of UnitLayout; unit u is the
// `outer` runs of `inner` contiguous elements at offsets (o * units + u) * inner. One warp
// handles one tile:
// - rows mode (inner < 32): a tile is `g` whole units side by side (g * inner <= 32
//   columns, one per lane) over up to `r` consecutive outer indices;
// - runs mode (inner >= 32): a tile is one unit's columns [k0, k0 + k) (k <= kTileElements)
//   over up to `r` outer indices, the lanes striding along the columns.
// A tile holds at most about kTileElements elements. Tiles are numbered column block
// fastest, then unit group, then row block. A unit whose elements fit one tile
// (partials == 1) is "fused": its warp computes both norms, the factor and the scaling
// in one go. The other units go through partials: per (unit, row block, column block)
// one pair of sums, combined per unit in that order.
constexpr std::int64_t kTileElements = 8192;

struct UnitEntry {
    const void* grad;
    const void* param;
    std::int64_t outer, units, inner;
    std::int64_t k;             // columns per tile (== inner in rows mode)
    std::int64_t g;             // units per tile (1 in runs mode)
    std::int64_t r;             // outer indices (rows) per tile
    std::int64_t nk, nu, no;    // tiles along columns, units, rows
    std::int64_t first_tile;    // tiles before this entry (in its table)
    std::int64_t first_unit;    // units before this entry (split table: factor index)
    std::int64_t first_partial; // partials before this entry (split table)
    std::uint8_t grad_dtype, param_dtype;
    std::uint8_t pad[6];

    GC_TABLE_HD std::int64_t tiles() const { return nk * nu * no; }
    GC_TABLE_HD std::int64_t partials_per_unit() const { return nk * no; }
};

// One tile of an entry, decoded from its number within the entry. The warp's lane L
// handles, for every row r in [0, rows), the columns col = L (rows mode, when L < width)
// or col = L, L + 32, ... < width (runs mode); see tile_element and tile_unit.
struct Tile {
    std::int64_t row0, rows;  // outer indices [row0, row0 + rows)
    std::int64_t row_stride;  // elements between consecutive outer indices: units * inner
    std::int64_t col0;        // first element of the tile within a row: u0 * inner + k0
    std::int64_t u0;          // first unit of the tile
    std::int64_t ob, kb;      // its row block and column block
    int width;                // columns: g * inner (rows mode, <= 32) or the run's length
    int seg;                  // lanes per unit: inner (rows mode) or 32
    bool rows_mode;
};

GC_TABLE_HD inline Tile decode_tile(const UnitEntry& e, std::int64_t local) {
    Tile t{};
    t.kb = local % e.nk;
    const std::int64_t rest = local / e.nk;
    const std::int64_t ub = rest % e.nu;
    t.ob = rest / e.nu;
    t.u0 = ub * e.g;
    t.row0 = t.ob * e.r;
    t.rows = e.outer - t.row0 < e.r ? e.outer - t.row0 : e.r;
    t.row_stride = e.units * e.inner;
    const std::int64_t k0 = t.kb * e.k;
    t.col0 = t.u0 * e.inner + k0;
    t.rows_mode = e.inner < 32;
    if (t.rows_mode) {
        const std::int64_t g = e.units - t.u0 < e.g ? e.units - t.u0 : e.g;
        t.width = static_cast<int>(g * e.inner);
        t.seg = static_cast<int>(e.inner);
    } else {
        t.width = static_cast<int>(e.inner - k0 < e.k ? e.inner - k0 : e.k);
        t.seg = 32;
    }
    return t;
}

// Flat index (in the array) of column `col` of row `r` of a tile, and its unit.
GC_TABLE_HD inline std::int64_t tile_element(const Tile& t, std::int64_t r, std::int64_t col) {
    return (t.row0 + r) * t.row_stride + t.col0 + col;
}
GC_TABLE_HD inline std::int64_t tile_unit(const Tile& t, int col) {
    return t.u0 + (t.rows_mode ? col / t.seg : 0);
}

// Where the reduce kernel stores the partial of a tile's unit u (split entries): a
// unit's partials are contiguous, in (row block, column block) order.
GC_TABLE_HD inline std::int64_t partial_index(const UnitEntry& e, const Tile& t, std::int64_t u) {
    return e.first_partial + u * e.partials_per_unit() + t.ob * e.nk + t.kb;
}

struct UnitTables {
    std::vector<UnitEntry> fused;  // units that fit one tile: one pass does everything
    std::vector<UnitEntry> split;  // the others: reduce, combine, scale
    std::int64_t fused_tiles = 0, split_tiles = 0, split_units = 0, split_partials = 0;
};

// Geometry of one pair (pure; validated layout with outer * units * inner > 0).
inline UnitEntry make_unit_entry(const TensorView& grad, const TensorView& param,
                                 const UnitLayout& l) {
    UnitEntry e{};
    e.grad = grad.data;
    e.param = param.data;
    e.grad_dtype = static_cast<std::uint8_t>(grad.dtype);
    e.param_dtype = static_cast<std::uint8_t>(param.dtype);
    e.outer = l.outer, e.units = l.units, e.inner = l.inner;
    if (l.inner < 32) {
        e.k = l.inner;
        e.g = 32 / l.inner < l.units ? 32 / l.inner : l.units;
        const std::int64_t rows = kTileElements / 32;
        e.r = rows < l.outer ? rows : l.outer;
    } else {
        e.k = l.inner < kTileElements ? l.inner : kTileElements;
        e.g = 1;
        const std::int64_t rows = kTileElements / e.k;
        e.r = rows < l.outer ? rows : l.outer;
    }
    e.nk = (l.inner + e.k - 1) / e.k;
    e.nu = (l.units + e.g - 1) / e.g;
    e.no = (l.outer + e.r - 1) / e.r;
    return e;
}

// Validated lists of `count` pairs; pairs with no elements are left out.
inline UnitTables make_unit_tables(const TensorView* grads, const TensorView* params,
                                   const UnitLayout* layouts, std::size_t count) {
    UnitTables t;
    for (std::size_t i = 0; i < count; ++i) {
        if (grads[i].numel == 0) continue;
        UnitEntry e = make_unit_entry(grads[i], params[i], layouts[i]);
        if (e.partials_per_unit() == 1) {
            e.first_tile = t.fused_tiles;
            t.fused_tiles += e.tiles();
            t.fused.push_back(e);
        } else {
            e.first_tile = t.split_tiles;
            e.first_unit = t.split_units;
            e.first_partial = t.split_partials;
            t.split_tiles += e.tiles();
            t.split_units += e.units;
            t.split_partials += e.units * e.partials_per_unit();
            t.split.push_back(e);
        }
    }
    return t;
}

}  // namespace gradcore::cuda::detail
