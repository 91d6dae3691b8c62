#include "gradcore/runtime.hpp"

#ifndef GRADCORE_VERSION
#define GRADCORE_VERSION "0.0.0+unknown"
#endif

namespace gradcore {

const char* version() { return GRADCORE_VERSION; }

const char* compiler() {
#if defined(__clang__)
    return "clang " __clang_version__;
#elif defined(__GNUC__)
    return "gcc " __VERSION__;
#elif defined(_MSC_VER)
    return "msvc";
#else
    return "unknown";
#endif
}

}  // namespace gradcore
