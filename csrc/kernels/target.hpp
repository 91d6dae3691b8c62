// Every header under csrc/kernels that holds code (the kernels, make_table.hpp, the
// SIMD structs) includes this one and puts what it defines in
// gradcore::kernels::GRADCORE_TARGET. Each csrc/targets/<isa>.cpp defines
// GRADCORE_TARGET to its own name before including them, so the inline functions it
// compiles with its -m flags have names of their own: the linker can never merge an
// AVX-512 copy of a helper into the scalar target. The runtime defines no target and
// so cannot include kernel bodies; it sees kernel_table.hpp and table_types.hpp only.
#pragma once

#ifndef GRADCORE_TARGET
#error "kernel bodies belong to a target: include them from csrc/targets/<isa>.cpp after #define GRADCORE_TARGET <isa>; the runtime includes kernels/kernel_table.hpp only"
#endif
