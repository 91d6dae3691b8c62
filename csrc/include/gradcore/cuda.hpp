// The optional CUDA backend's entry points. Always declared; without a CUDA build they
// report that no device is usable.
#pragma once

#include <string>

#include "gradcore/export.hpp"

namespace gradcore {

// Whether this library was compiled with the CUDA backend.
GRADCORE_API bool cuda_built();

// Usable CUDA devices (0 without a CUDA build, a driver or a GPU).
GRADCORE_API int cuda_device_count();

// Runs a small kernel on device 0 and checks its result against the host; returns an
// empty string on success, else what went wrong.
GRADCORE_API std::string cuda_self_test();

}  // namespace gradcore
