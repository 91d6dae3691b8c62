// Symbol visibility for libgradcore: everything is hidden unless marked GRADCORE_API,
// so the shared library exports exactly the public C++ API.
#pragma once

#if defined(_WIN32)
#  if defined(GRADCORE_BUILDING_LIBRARY)
#    define GRADCORE_API __declspec(dllexport)
#  else
#    define GRADCORE_API __declspec(dllimport)
#  endif
#else
#  define GRADCORE_API __attribute__((visibility("default")))
#endif
