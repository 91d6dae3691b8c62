// Dropout's mask over the rows of a matrix, for the dense layer: element (r, j) is element
// r * cols + j of the call (the C order of a (rows, cols) array), so the result is
// gradcore::dropout's on the same values, whatever the row strides. y may be x.
#pragma once

#include <cstdint>

namespace gradcore::runtime {

template <class T>
void dropout_rows(const T* x, std::int64_t ld_x, T* y, std::int64_t ld_y, std::int64_t rows, std::int64_t cols,
                  double p, std::uint64_t seed, std::uint64_t offset);

}  // namespace gradcore::runtime
