// The GEMM's packing buffers: per thread, kept between calls (allocating a few MB per
// call would cost page faults on every GEMM). A is packed by each task; B by the calling
// thread's tasks into the caller's buffer, which the workers only read.
#pragma once

#include <cstdint>
#include <vector>

namespace gradcore::runtime::gemm_parts {

// buffer's data, grown to at least n values (never shrunk).
template <class T>
T* grow(std::vector<T>& buffer, std::int64_t n) {
    if (static_cast<std::int64_t>(buffer.size()) < n) buffer.resize(static_cast<std::size_t>(n));
    return buffer.data();
}

template <class T>
std::vector<T>& a_buffer() {
    thread_local std::vector<T> buffer;
    return buffer;
}
template <class T>
std::vector<T>& b_buffer() {
    thread_local std::vector<T> buffer;
    return buffer;
}
// One B micro-panel packed into L1 for the row panels of a small-M product.
template <class T>
std::vector<T>& b_panel_buffer() {
    thread_local std::vector<T> buffer;
    return buffer;
}

}  // namespace gradcore::runtime::gemm_parts
