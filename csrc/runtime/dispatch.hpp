// Picks the kernel table once (best target the CPU runs, or GRADCORE_ISA), and lets
// tests switch it.
#pragma once

#include "kernels/kernel_table.hpp"

namespace gradcore::runtime {

// The table kernels run on. First use reads GRADCORE_ISA; an unknown or unsupported
// name there throws std::invalid_argument (the Python module turns it into ImportError).
const kernels::KernelTable& active_table();

}  // namespace gradcore::runtime
