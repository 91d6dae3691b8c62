#include "runtime/dispatch.hpp"

#include <atomic>
#include <cstdlib>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

#include "gradcore/runtime.hpp"

namespace gradcore::runtime {
namespace {

struct Target {
    const char* name;
    const kernels::KernelTable& (*table)();
    bool (*cpu_supports)();
};

bool always() { return true; }

#if defined(GRADCORE_HAVE_AVX2)
bool cpu_has_avx2() {
    // libgcc's checks include the OS side (XCR0 state enabled via XGETBV).
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
           __builtin_cpu_supports("f16c");
}
#endif
#if defined(GRADCORE_HAVE_AVX512)
bool cpu_has_avx512() {
    return cpu_has_avx2() && __builtin_cpu_supports("avx512f") &&
           __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq") &&
           __builtin_cpu_supports("avx512vl");
}
#endif

// Worst to best: the runtime picks the last one the CPU supports.
constexpr Target kTargets[] = {
    {"scalar", &kernels::scalar_table, &always},
#if defined(GRADCORE_HAVE_AVX2)
    {"avx2", &kernels::avx2_table, &cpu_has_avx2},
#endif
#if defined(GRADCORE_HAVE_AVX512)
    {"avx512", &kernels::avx512_table, &cpu_has_avx512},
#endif
#if defined(GRADCORE_HAVE_NEON)
    {"neon", &kernels::neon_table, &always},
#endif
};

std::atomic<const kernels::KernelTable*> g_active{nullptr};
std::mutex g_init_mutex;

const kernels::KernelTable* find(const std::string& name) {
    std::string known;
    for (const Target& t : kTargets) {
        if (name == t.name) {
            if (!t.cpu_supports()) {
                throw std::invalid_argument("ISA target '" + name +
                                            "' is compiled in but this CPU does not support it");
            }
            return &t.table();
        }
        known += known.empty() ? "" : ", ";
        known += t.name;
    }
    throw std::invalid_argument("unknown ISA target '" + name + "' (this build has: " + known + ")");
}

const kernels::KernelTable* best() {
    const kernels::KernelTable* chosen = nullptr;
    for (const Target& t : kTargets) {
        if (t.cpu_supports()) chosen = &t.table();
    }
    return chosen;
}

}  // namespace

const kernels::KernelTable& active_table() {
    const kernels::KernelTable* t = g_active.load(std::memory_order_acquire);
    if (t) return *t;
    std::lock_guard<std::mutex> lock(g_init_mutex);
    t = g_active.load(std::memory_order_relaxed);
    if (!t) {
        const char* env = std::getenv("GRADCORE_ISA");
        t = (env && *env) ? find(env) : best();
        g_active.store(t, std::memory_order_release);
    }
    return *t;
}

}  // namespace gradcore::runtime

namespace gradcore {

std::vector<std::string> isa_available() {
    std::vector<std::string> names;
    for (const auto& t : runtime::kTargets) {
        if (t.cpu_supports()) names.emplace_back(t.name);
    }
    return names;
}

std::string isa_active() { return runtime::active_table().name; }

void set_isa(const std::string& name) {
    const kernels::KernelTable* t = runtime::find(name);
    std::lock_guard<std::mutex> lock(runtime::g_init_mutex);
    runtime::g_active.store(t, std::memory_order_release);
}

}  // namespace gradcore
