// Runtime facts and switches: which instruction-set target runs the kernels, and how
// many threads they may use.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "gradcore/export.hpp"

namespace gradcore {

// Names of the targets compiled into this build and supported by this CPU, best last
// ("scalar" is always first).
GRADCORE_API std::vector<std::string> isa_available();

// The target kernels run on now.
GRADCORE_API std::string isa_active();

// Selects a target by name; throws std::invalid_argument for an unknown name or one
// this CPU cannot run. Not meant to be called while kernels run on other threads.
GRADCORE_API void set_isa(const std::string& name);

// Threads the kernels may use (the calling thread counts as one). n >= 1.
GRADCORE_API void set_num_threads(int n);  // 1 <= n <= 1024, else std::invalid_argument
GRADCORE_API int get_num_threads();

GRADCORE_API const char* version();
// The compiler and version that built the library.
GRADCORE_API const char* compiler();

}  // namespace gradcore
