// The arguments of one binding call, read once: every array argument through Call (one
// device for all of them, the messages the Python API documents), outputs allocated on
// that device, and run(), which releases the GIL around the CPU library or the CUDA
// backend.
//
// A Call owns what the arguments need while the kernels run: NumPy copies of inputs that
// were not contiguous, and the DLPack tensors it took (capsules renamed "used_..." once
// every argument has passed, their deleters run when the Call goes away, after the C++
// call has returned).
#pragma once

#include <pybind11/pybind11.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "array_arg.hpp"
#include "gradcore/cuda.hpp"

namespace gradcore::python {

// A list argument as read: what in-place functions return (the caller's list or tree),
// the table of views the C++ API takes, the arrays' descriptors when asked for
// (Keep::arrays), and, for a tree, its flattening (a gradcore._pytree.Flat).
enum class Keep { views, arrays };
struct ArrayList {
    const char* name;
    py::object sequence;
    std::vector<ArrayArg> arrays;
    std::vector<TensorView> views;
    py::object tree;
    std::size_t size() const { return views.size(); }
};

class Call {
public:
    // What a call takes besides the defaults: cpu_only refuses CUDA device arrays (the
    // operation has no GPU version); flat_lists reads list arguments without the tree
    // rules (lists paired by position with state the caller keeps: the optimisers').
    enum Option : unsigned { cpu_only = 1, flat_lists = 2 };
    // `function` names the operation in messages ("global_norm").
    explicit Call(const char* function, unsigned options = 0)
        : function_(function), cpu_only_(options & cpu_only), trees_(!(options & flat_lists)) {}
    Call(const Call&) = delete;
    Call& operator=(const Call&) = delete;
    ~Call();

    // A list argument: a list or tuple as is, one array as a list of one, any other
    // iterable materialised. A tree (a dict, or a sequence holding None, a dict or a
    // sequence) is read as its leaves, in gradcore._pytree's order; with `like`, a tree
    // is flattened along like's structure (params along grads: None there skips a leaf).
    ArrayList list(py::handle arg, const char* name, Access access, DTypes dtypes, Keep keep = Keep::views,
                   const ArrayList* like = nullptr);
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
    ArrayArg read(py::handle obj, const Label& label, Access access, DTypes dtypes);
    ArrayArg read_on_device(py::handle obj, const Found& found, const Label& label, Access access, DTypes dtypes);
    void note_device(Device d, const std::string& label, py::handle obj, bool convertible);
    void* cuda_stream();

    const char* function_;
    bool cpu_only_, trees_;
    Device device_;
    py::object lead_;                    // the first array argument
    std::string lead_label_;
    std::string device_label_;           // the first argument that named its CUDA device
    std::optional<void*> stream_;        // the CUDA stream, once known
    std::vector<py::object> pending_;    // capsules to take once every argument passed
    std::vector<py::object> taken_;      // capsules taken: their deleters run in ~Call
    std::vector<py::object> keep_;       // converted copies, alive while the kernels run
    std::vector<std::uintptr_t> waits_;  // producers' streams (__cuda_array_interface__)
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

// gradcore._types.<name>, the result and exception types, and
// gradcore._device_memory.<name>, allocation, streams and copies in the caller's array
// library (torch or CuPy): the Python the bindings hand their results to.
py::object result_type(const char* name);
py::object device_memory(const char* name);

}  // namespace gradcore::python
