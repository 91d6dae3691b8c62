// The DLPack ABI (https://dmlc.github.io/dlpack/latest/c_api.html), declared here from
// the specification so that the bindings need no third-party header. Only the layout
// matters: these structs are what producers (torch, CuPy, JAX, NumPy, ...) put behind
// the PyCapsules named "dltensor" (DLManagedTensor, the pre-1.0 ABI) and
// "dltensor_versioned" (DLManagedTensorVersioned, ABI 1.x).
//
// Capsule protocol: a consumer that takes a tensor renames its capsule to
// "used_dltensor" / "used_dltensor_versioned" (so that the capsule's destructor no
// longer frees it) and calls the tensor's `deleter` once it is done with the memory.
#pragma once

#include <cstdint>
#include <iterator>

namespace gradcore::python::dlpack {

// The ABI version a DLManagedTensorVersioned carries; consumers must refuse a major
// version they do not know (the layout may differ).
struct DLPackVersion {
    std::uint32_t major;
    std::uint32_t minor;
};
constexpr std::uint32_t kMajorVersion = 1;

// DLDeviceType: where the memory lives (an int in the ABI). The ones gradcore reads;
// device_type_name() names the others in messages.
enum DLDeviceType : std::int32_t {
    kDLCPU = 1,
    kDLCUDA = 2,          // CUDA device memory
    kDLCUDAHost = 3,      // pinned host memory (cudaMallocHost)
    kDLCUDAManaged = 13,  // CUDA managed (unified) memory
};

struct DLDevice {
    std::int32_t device_type;  // a DLDeviceType
    std::int32_t device_id;    // the ordinal (cuda:N)
};

// DLDataTypeCode.
enum DLDataTypeCode : std::uint8_t {
    kDLInt = 0,
    kDLUInt = 1,
    kDLFloat = 2,
    kDLOpaqueHandle = 3,
    kDLBfloat = 4,
    kDLComplex = 5,
    kDLBool = 6,
    // 7 and above: the float8/float6/float4 formats of DLPack 1.1
};

struct DLDataType {
    std::uint8_t code;    // a DLDataTypeCode
    std::uint8_t bits;    // bits of one lane
    std::uint16_t lanes;  // 1 for scalars (vector types have more)
};

// A view of memory: element (i0, i1, ...) lives at
// (char*)data + byte_offset + sizeof(element) * sum_k i_k * strides[k];
// strides == null means compact row-major (C-contiguous).
struct DLTensor {
    void* data;
    DLDevice device;
    std::int32_t ndim;
    DLDataType dtype;
    std::int64_t* shape;    // ndim entries
    std::int64_t* strides;  // ndim entries, in elements; may be null
    std::uint64_t byte_offset;
};

// "dltensor" capsules (DLPack before 1.0).
struct DLManagedTensor {
    DLTensor dl_tensor;
    void* manager_ctx;
    void (*deleter)(DLManagedTensor* self);  // may be null
};

// The bit of DLManagedTensorVersioned::flags gradcore reads (the others: copied,
// sub-byte padded).
constexpr std::uint64_t kFlagReadOnly = 1ULL << 0;  // the memory must not be written

// "dltensor_versioned" capsules (DLPack 1.x).
struct DLManagedTensorVersioned {
    DLPackVersion version;
    void* manager_ctx;
    void (*deleter)(DLManagedTensorVersioned* self);  // may be null
    std::uint64_t flags;
    DLTensor dl_tensor;
};

inline constexpr const char* kCapsuleName = "dltensor";
inline constexpr const char* kUsedCapsuleName = "used_dltensor";
inline constexpr const char* kVersionedCapsuleName = "dltensor_versioned";
inline constexpr const char* kUsedVersionedCapsuleName = "used_dltensor_versioned";

// Lower-case device name as PyTorch prints it ("cpu", "cuda", "rocm", ...), by the
// DLDeviceType numbers of the specification.
inline const char* device_type_name(std::int32_t type) {
    static constexpr const char* kNames[] = {
        nullptr,  "cpu",  "cuda",    "cuda_host", "opencl",       nullptr,  nullptr, "vulkan",  "metal",
        "vpi",    "rocm", "rocm_host", "ext_dev", "cuda_managed", "oneapi", "webgpu", "hexagon", "maia"};
    const bool known = type >= 0 && type < static_cast<std::int32_t>(std::size(kNames)) && kNames[type];
    return known ? kNames[type] : "an unknown device type";
}

}  // namespace gradcore::python::dlpack
