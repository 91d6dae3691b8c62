// Built instead of csrc/cuda/ when GRADCORE_CUDA is off.
#include "gradcore/cuda.hpp"

namespace gradcore {

bool cuda_built() { return false; }
int cuda_device_count() { return 0; }
std::string cuda_self_test() { return "gradcore was built without CUDA"; }

}  // namespace gradcore
