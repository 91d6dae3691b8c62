// Every array argument of every binding is read here, in one place: NumPy arrays, DLPack
// (objects with __dlpack__ and bare capsules, in host or CUDA memory),
// __cuda_array_interface__, the buffer protocol and anything NumPy converts. Each becomes
// one device-neutral descriptor (an ArrayArg: DLPack's DLTensor is the model), checked
// against the call's rules (access, dtypes, one device for all arguments) with the
// messages the Python API documents, before anything runs.
//
// A Call gathers the arguments of one binding call. It owns what they need while the
// kernels run: NumPy copies of inputs that were not contiguous, and the DLPack tensors it
// took (capsules renamed "used_..." once every argument has passed, their deleters run
// when the Call goes away, after the C++ call has returned).
#pragma once

#include <pybind11/pybind11.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "gradcore/cuda.hpp"
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
constexpr DTypes kNormInputs{kFloat32or64 | bit(DType::float16), kFloat32or64 | kHalfFloats};
constexpr DTypes kInPlaceFloats{kFloat32or64, kFloat32or64 | kHalfFloats};
constexpr DTypes kLayerFloats{kFloat32or64, kFloat32or64};

struct Device {
    enum Kind : std::uint8_t { cpu, cuda } kind = cpu;
    int index = -1;  // the CUDA ordinal; -1 where the producer did not say
    bool is_cuda() const { return kind == cuda; }
};

// An argument's name in messages: "arrays[3]", "x".
struct Label {
    const char* name;
    long index = -1;  // -1: not a list element
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
    // Whether the memory of the two may overlap (their address ranges do).
    bool overlaps(const ArrayArg& other) const;
};

// A list argument as read: the sequence (returned by in-place functions), the table of
// views the C++ API takes, and the arrays' descriptors when asked for (Keep::arrays).
enum class Keep { views, arrays };
struct ArrayList {
    py::object sequence;
    std::vector<ArrayArg> arrays;
    std::vector<TensorView> views;
    std::size_t size() const { return views.size(); }
};

class Call {
public:
    // `function` names the operation in messages ("global_norm").
    explicit Call(const char* function, bool cpu_only = false);
    Call(const Call&) = delete;
    Call& operator=(const Call&) = delete;
    ~Call();

    // A list argument: a list or tuple as is, one array as a list of one, any other
    // iterable materialised.
    ArrayList list(py::handle arg, const char* name, Access access, DTypes dtypes, Keep keep = Keep::views);

    ArrayArg array(py::handle obj, const char* name, Access access, DTypes dtypes);
    std::optional<ArrayArg> optional(py::handle obj, const char* name, Access access, DTypes dtypes);

    // The device of the call: the first array argument's.
    bool on_cuda() const { return device_.is_cuda(); }
    int cuda_device() const { return device_.index < 0 ? 0 : device_.index; }

    // A new C-contiguous array on the call's device: a NumPy array, or on a CUDA device
    // one of the caller's library (see device_array).
    ArrayArg new_array(const std::vector<std::int64_t>& shape, DType dtype, const char* name);

    // A new array on the call's CUDA device, allocated by the caller's array library
    // (torch or CuPy; uninitialised unless `zeroed`), read back as an output argument.
    ArrayArg device_array(const std::vector<std::int64_t>& shape, DType dtype, const char* name,
                          bool zeroed = false);
    // A float64 device scalar holding `value` (a fill kernel, no host wait).
    ArrayArg device_scalar(double value, const char* name);
    // A one-element device array as a float64 device scalar (converted on the device
    // when it has another dtype).
    ArrayArg device_float64(py::handle obj, const char* name);

    // Every argument passed: takes the DLPack tensors, orders the producers' streams
    // before ours, and returns where the CUDA work goes (the caller's current stream).
    cuda::Stream stream();

private:
    struct Impl;
    ArrayArg read(py::handle obj, const Label& label, Access access, DTypes dtypes);
    void note_device(Device d, const std::string& label, py::handle obj, bool convertible);

    std::unique_ptr<Impl> impl_;
    Device device_;
};

// cpu() or, for arrays on a CUDA device, cuda(stream) once every argument has been taken,
// with the GIL released.
template <class Cpu, class Cuda>
void run(Call& call, Cpu&& cpu, Cuda&& cuda) {
    if (call.on_cuda()) {
        const cuda::Stream stream = call.stream();
        py::gil_scoped_release release;
        cuda(stream);
    } else {
        py::gil_scoped_release release;
        cpu();
    }
}

// f(float{}) or f(double{}) by a float32/float64 dtype.
template <class F>
decltype(auto) with_float(DType t, F&& f) {
    if (t == DType::float32) return f(float{});
    return f(double{});
}

// gradcore._types.<name>, the result and exception types, and
// gradcore._device_memory.<name>, allocation, streams and copies in the caller's array
// library (torch or CuPy): the Python the bindings hand their results to.
py::object result_type(const char* name);
py::object device_memory(const char* name);

// "(2, 3)", "(4,)" as NumPy prints shapes.
std::string shape_str(const std::vector<std::int64_t>& shape);

}  // namespace gradcore::python
