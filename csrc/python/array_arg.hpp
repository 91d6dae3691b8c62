// An array argument as every binding sees it: one device-neutral descriptor (an ArrayArg;
// DLPack's DLTensor is the model), whatever the caller passed: a NumPy array, a DLPack
// object or bare capsule (host or CUDA memory), an object with __cuda_array_interface__,
// the buffer protocol, or anything NumPy converts. This header is the descriptor, the
// readers that make one from each kind of object (array_arg.cpp), and the shape rules
// the bindings state about them; call.hpp gathers the arguments of one call.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "dlpack.hpp"
#include "gradcore/tensor.hpp"

namespace gradcore::python {

namespace py = pybind11;

enum class Access {
    read,          // any array-like; non-contiguous input is copied
    read_strided,  // the same, but host arrays keep their strides (the GEMM packs them)
    write,         // writeable, C-contiguous memory, used in place
};

// The dtypes an argument may have, per device: bits of DType.
struct DTypes {
    unsigned cpu;
    unsigned cuda;
};
constexpr unsigned bit(DType t) { return 1u << static_cast<unsigned>(t); }
constexpr unsigned kFloat32or64 = bit(DType::float32) | bit(DType::float64);
constexpr unsigned kHalfFloats = bit(DType::float16) | bit(DType::bfloat16);
constexpr unsigned kRealFloats = kFloat32or64 | kHalfFloats;
constexpr DTypes kNormInputs{kRealFloats, kRealFloats};
constexpr DTypes kInPlaceFloats = kNormInputs;  // every dtype the norms read, on both devices
constexpr DTypes kLayerFloats{kFloat32or64, kFloat32or64};
// The norms and clip-by-norm also take complex arrays, on the CPU (|z| per element).
constexpr unsigned kComplex = bit(DType::complex64) | bit(DType::complex128);
constexpr DTypes kNormInputsOrComplex{kNormInputs.cpu | kComplex, kNormInputs.cuda};
constexpr DTypes kInPlaceFloatsOrComplex{kInPlaceFloats.cpu | kComplex, kInPlaceFloats.cuda};

struct Device {
    enum Kind : std::uint8_t { cpu, cuda } kind = cpu;
    int index = -1;  // the CUDA ordinal; -1 where the producer did not say
    bool is_cuda() const { return kind == cuda; }
};

// An argument's name in messages: "arrays[3]", "x", or a leaf's path in a tree
// ("grads['dense'].kernel").
struct Label {
    const char* name;
    long index = -1;            // -1: not a list element
    PyObject* path = nullptr;   // a str, borrowed from the tree's labels
    std::string str() const;
};

struct ArrayArg {
    void* data = nullptr;
    std::vector<std::int64_t> shape;
    std::vector<std::int64_t> strides;  // in elements; empty: C-contiguous
    std::int64_t numel = 0;
    DType dtype = DType::float32;
    Device device;
    py::object object;  // the caller's object (a new array for outputs the call made)
    py::object memory;  // what owns `data`: the object, or the contiguous copy made of it

    TensorView view() const { return {data, numel, dtype}; }
    template <class T>
    T* as() const {
        return static_cast<T*>(data);
    }
    // Whether the memory of the two may overlap (their address ranges do).
    bool overlaps(const ArrayArg& other) const;
};

template <class T>
T* data_or_null(const std::optional<ArrayArg>& a) {
    return a ? a->as<T>() : nullptr;
}
inline py::object object_or_none(const std::optional<ArrayArg>& a) { return a ? a->object : py::none(); }

// The NumPy dtype of a host dtype.
py::dtype numpy_dtype_of(DType t);

// ---- the readers, one per kind of object (Call::read picks one) ----------------------

// What an object is, found without converting it.
struct Found {
    enum Kind { numpy, capsule, dlpack, cuda_array_interface, other } kind = other;
    Device device;
};
Found find(py::handle obj);
// One array rather than a sequence of them.
bool is_one_array(py::handle obj);

// A NumPy array in host memory, checked; inputs that are misaligned, in the other byte
// order or (unless the use takes strides) not C-contiguous are copied, and the copy is
// appended to `keep`. numpy_view: the same checks, only the view the kernels take.
ArrayArg read_numpy(py::array arr, const Label& label, Access access, unsigned dtypes, std::vector<py::object>& keep);
TensorView numpy_view(py::array arr, const Label& label, Access access, unsigned dtypes, std::vector<py::object>& keep);

// Any object in host memory as a NumPy array sharing its memory (DLPack, the buffer
// protocol), or, for reading only, NumPy's conversion of it.
py::array host_array(py::handle obj, const Found& found, const Label& label, Access access, unsigned dtypes);

// A DLPack capsule's tensor (not taken), with where it lives and whether it is read-only.
struct CapsuleTensor {
    const dlpack::DLTensor* tensor;
    Device device;
    bool readonly;
};
CapsuleTensor capsule_tensor(py::handle capsule, const std::string& label);
// obj.__dlpack__(), on `stream` for device arrays; the capsule it returns.
py::object export_dlpack(py::handle obj, const std::string& label, std::optional<void*> stream);

// A device array's fields as its producer gave them, before they are checked.
struct DeviceFields {
    void* data = nullptr;
    std::vector<std::int64_t> shape;
    std::vector<std::int64_t> strides;  // empty: C-contiguous
    bool strides_in_bytes = false;      // __cuda_array_interface__'s unit
    std::optional<DType> dtype;
    std::string dtype_name;
    bool readonly = false;
    std::optional<std::uintptr_t> stream;  // where the producer's pending work is
    bool contiguous() const;
};
DeviceFields capsule_fields(const CapsuleTensor& t, const std::string& label);
DeviceFields cuda_array_interface_fields(py::handle obj, const std::string& label);
// The descriptor of C-contiguous device memory, checked (dtype, alignment, access); its
// device is the call's, set by the caller.
ArrayArg read_device(DeviceFields f, const std::string& label, Access access, unsigned dtypes);

// ---- the rules the bindings state about their arrays ---------------------------------

void require_ndim(const ArrayArg& a, const char* name, std::size_t ndim);
void require_shape(const ArrayArg& a, const char* name, const std::vector<std::int64_t>& shape);
// "<a> and <b> must have the same dtype".
void same_dtype(const ArrayArg& a, const char* a_name, const ArrayArg& b, const char* b_name);
// Lists of one length whose i-th arrays have one shape.
void same_shapes(const std::vector<ArrayArg>& a, const char* a_name, const std::vector<ArrayArg>& b,
                 const char* b_name);

// f(float{}) or f(double{}) by a float32/float64 dtype.
template <class F>
decltype(auto) with_float(DType t, F&& f) {
    if (t == DType::float32) return f(float{});
    return f(double{});
}

// "(2, 3)", "(4,)" as NumPy prints shapes.
std::string shape_str(const std::vector<std::int64_t>& shape);

}  // namespace gradcore::python
