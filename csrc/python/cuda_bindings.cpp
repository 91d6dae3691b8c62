// Bindings of the CUDA backend (gradcore/cuda.hpp). Device arrays arrive as DLPack
// capsules ("dltensor" / "dltensor_versioned") or as tuples
//     (ptr, shape, strides, dtype, device, readonly)
// that gradcore/_device.py builds from torch tensors, CuPy arrays and
// __cuda_array_interface__ (strides in bytes or None for C-contiguous; dtype a name such
// as "float32"; device the CUDA ordinal or -1 when the producer did not say). Everything
// is validated here before the C++ API is called, with the GIL released: a bad argument
// raises TypeError/ValueError naming it and never reaches a kernel. Nothing here reads
// or writes device memory; outputs are device arrays the Python side allocated.
//
// DLPack capsules are consumed (renamed to "used_...") once every argument of the call
// has been checked, and their deleters run after the C++ call has returned: kernels are
// stream-ordered on the caller's stream, and the caller's own object keeps the memory
// alive, as with any torch or CuPy operation.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "parse_args.hpp"
#include "dlpack.hpp"
#include "gradcore/cuda.hpp"

namespace gradcore::python {
namespace py = pybind11;
namespace {

namespace dl = dlpack;
using Release = py::gil_scoped_release;

// Element types of device arrays. int64 only for the counts grad_stats writes.
enum Kind : int { kF16 = 0, kF32 = 1, kF64 = 2, kBF16 = 3, kI64 = 4, kUnknown = -1 };

// Sets of kinds an argument may have.
constexpr unsigned bit(Kind k) { return 1u << static_cast<unsigned>(k); }
constexpr unsigned kFloats = bit(kF16) | bit(kBF16) | bit(kF32) | bit(kF64);  // norms, clipping
constexpr unsigned kDense = bit(kF32) | bit(kF64);                           // dense, rnn
constexpr unsigned kDouble = bit(kF64);
constexpr unsigned kInt64 = bit(kI64);

const char* expected_text(unsigned set) {
    if (set == kFloats) return "float16, bfloat16, float32 or float64";
    if (set == kDense) return "float32 or float64";
    if (set == kDouble) return "float64";
    if (set == kInt64) return "int64";
    return "another dtype";
}

std::int64_t itemsize(int kind) {
    switch (kind) {
        case kF16:
        case kBF16: return 2;
        case kF32: return 4;
        default: return 8;
    }
}

cuda::DType api_dtype(int kind) {
    switch (kind) {
        case kF16: return cuda::DType::float16;
        case kBF16: return cuda::DType::bfloat16;
        case kF32: return cuda::DType::float32;
        default: return cuda::DType::float64;
    }
}

int kind_of_name(const std::string& s) {
    if (s == "float32") return kF32;
    if (s == "float64") return kF64;
    if (s == "float16") return kF16;
    if (s == "bfloat16") return kBF16;
    if (s == "int64") return kI64;
    return kUnknown;
}

// NumPy-style name of a DLPack dtype ("float32", "int8", "complex64", "bool", ...).
std::string dlpack_dtype_name(const dl::DLDataType& t) {
    std::string base;
    switch (t.code) {
        case dl::kDLInt: base = "int"; break;
        case dl::kDLUInt: base = "uint"; break;
        case dl::kDLFloat: base = "float"; break;
        case dl::kDLBfloat: base = "bfloat"; break;
        case dl::kDLComplex: base = "complex"; break;
        case dl::kDLBool: base = "bool"; break;
        case dl::kDLOpaqueHandle: base = "opaque_handle"; break;
        default: base = "dlpack_type_code_" + std::to_string(t.code) + "_"; break;
    }
    std::string name = (t.code == dl::kDLBool && t.bits == 8) ? base : base + std::to_string(t.bits);
    if (t.lanes != 1) name += "x" + std::to_string(t.lanes);
    return name;
}

int dlpack_kind(const dl::DLDataType& t) {
    if (t.lanes != 1) return kUnknown;
    if (t.code == dl::kDLFloat) {
        if (t.bits == 16) return kF16;
        if (t.bits == 32) return kF32;
        if (t.bits == 64) return kF64;
    }
    if (t.code == dl::kDLBfloat && t.bits == 16) return kBF16;
    if (t.code == dl::kDLInt && t.bits == 64) return kI64;
    return kUnknown;
}

std::string type_name(py::handle obj) {
    return py::str(py::type::handle_of(obj).attr("__name__")).cast<std::string>();
}

std::string tuple_str(const std::vector<std::int64_t>& v) {
    std::string s = "(";
    for (std::size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + std::to_string(v[i]);
    return s + (v.size() == 1 ? ",)" : ")");
}

// An argument's name in messages: "arrays[3]", "x".
struct Label {
    const char* name;
    long index;  // -1: not a list element
    std::string str() const {
        return index < 0 ? std::string(name) : std::string(name) + "[" + std::to_string(index) + "]";
    }
};

// One device array, validated.
struct Array {
    void* data = nullptr;
    std::int64_t numel = 0;
    int kind = kUnknown;
    std::vector<std::int64_t> shape;
    int device = -1;              // -1: the producer did not say (adopts the call's device)
    PyObject* capsule = nullptr;  // borrowed: the DLPack capsule it came from, if any
    std::int64_t nbytes() const { return numel * itemsize(kind); }
};

std::int64_t checked_numel(const std::vector<std::int64_t>& shape, const Label& label) {
    std::int64_t n = 1;
    bool overflow = false;
    for (std::int64_t d : shape) {
        if (d < 0) throw py::value_error(label.str() + ": negative extent in shape " + tuple_str(shape));
        if (d == 0) return 0;
        if (n > std::numeric_limits<std::int64_t>::max() / 8 / d) overflow = true;
        n *= overflow ? 1 : d;
    }
    if (overflow) throw py::value_error(label.str() + ": shape " + tuple_str(shape) + " is too large");
    return n;
}

// Row-major check: strides (in units of `unit`) match the shape; extents of 1 are
// ignored (any stride is fine there), and empty arrays are contiguous.
bool c_contiguous(const std::vector<std::int64_t>& shape, const std::vector<std::int64_t>& strides,
                  std::int64_t unit, std::int64_t numel) {
    if (numel == 0) return true;
    std::int64_t expected = unit;
    for (std::size_t d = shape.size(); d-- > 0;) {
        if (shape[d] != 1 && strides[d] != expected) return false;
        expected *= shape[d];
    }
    return true;
}

// The checks common to both forms, once dtype, shape, strides and data are known.
void finish(Array& a, const std::string& dtype_name, const std::vector<std::int64_t>* strides,
            std::int64_t stride_unit_bytes, bool readonly, const Label& label, unsigned set,
            bool write) {
    if (a.kind == kUnknown || !(set & bit(static_cast<Kind>(a.kind)))) {
        throw py::type_error(label.str() + ": dtype " + dtype_name + " is not supported (expected " +
                             expected_text(set) + ")");
    }
    a.numel = checked_numel(a.shape, label);
    if (strides) {
        if (strides->size() != a.shape.size()) {
            throw py::value_error(label.str() + ": " + std::to_string(strides->size()) +
                                  " strides for shape " + tuple_str(a.shape));
        }
        const std::int64_t unit = stride_unit_bytes ? itemsize(a.kind) : 1;
        if (!c_contiguous(a.shape, *strides, unit, a.numel)) {
            throw py::value_error(label.str() + " must be C-contiguous (shape " + tuple_str(a.shape) +
                                  ", strides " + tuple_str(*strides) +
                                  (stride_unit_bytes ? " bytes" : " elements") +
                                  "); gradcore's device functions read and write C-contiguous memory");
        }
    }
    if (a.numel > 0) {
        if (a.data == nullptr) throw py::value_error(label.str() + ": null data pointer");
        if (reinterpret_cast<std::uintptr_t>(a.data) % static_cast<std::uintptr_t>(itemsize(a.kind)) != 0) {
            throw py::value_error(label.str() + ": data pointer is not aligned to its item size (" +
                                  std::to_string(itemsize(a.kind)) + " bytes)");
        }
    }
    if (write && readonly) {
        throw py::value_error(label.str() + " is read-only; in-place operations need writeable arrays");
    }
}

Array parse_capsule(PyObject* cap, const Label& label, unsigned set, bool write) {
    const char* name = PyCapsule_GetName(cap);
    if (name == nullptr) {
        PyErr_Clear();
        throw py::type_error(label.str() + ": a PyCapsule without a name is not a DLPack tensor");
    }
    const dl::DLTensor* t = nullptr;
    bool readonly = false;
    if (std::strcmp(name, dl::kCapsuleName) == 0) {
        auto* m = static_cast<dl::DLManagedTensor*>(PyCapsule_GetPointer(cap, name));
        if (m == nullptr) {
            PyErr_Clear();
            throw py::value_error(label.str() + ": DLPack capsule holds a null pointer");
        }
        t = &m->dl_tensor;
    } else if (std::strcmp(name, dl::kVersionedCapsuleName) == 0) {
        auto* v = static_cast<dl::DLManagedTensorVersioned*>(PyCapsule_GetPointer(cap, name));
        if (v == nullptr) {
            PyErr_Clear();
            throw py::value_error(label.str() + ": DLPack capsule holds a null pointer");
        }
        if (v->version.major != dl::kMajorVersion) {
            throw py::value_error(label.str() + ": DLPack ABI version " + std::to_string(v->version.major) +
                                  "." + std::to_string(v->version.minor) +
                                  " is not supported (gradcore reads 1.x)");
        }
        readonly = (v->flags & dl::kFlagReadOnly) != 0;
        t = &v->dl_tensor;
    } else if (std::strcmp(name, dl::kUsedCapsuleName) == 0 ||
               std::strcmp(name, dl::kUsedVersionedCapsuleName) == 0) {
        throw py::value_error(label.str() + ": this DLPack capsule was already consumed");
    } else {
        throw py::type_error(label.str() + ": PyCapsule '" + name +
                             "' is not a DLPack tensor (expected 'dltensor' or 'dltensor_versioned')");
    }
    Array a;
    a.capsule = cap;
    const std::int32_t type = t->device.device_type;
    if (type != dl::kDLCUDA && type != dl::kDLCUDAManaged) {
        throw py::value_error(label.str() + ": on " + dl::device_type_name(type) +
                              ", expected a CUDA device array");
    }
    if (t->device.device_id < 0) {
        throw py::value_error(label.str() + ": invalid device id " + std::to_string(t->device.device_id));
    }
    a.device = t->device.device_id;
    if (t->ndim < 0) throw py::value_error(label.str() + ": negative ndim " + std::to_string(t->ndim));
    if (t->ndim > 0 && t->shape == nullptr) throw py::value_error(label.str() + ": DLPack tensor without a shape");
    a.shape.assign(t->shape, t->shape + t->ndim);
    a.kind = dlpack_kind(t->dtype);
    std::vector<std::int64_t> strides;
    if (t->strides != nullptr) strides.assign(t->strides, t->strides + t->ndim);
    a.data = t->data == nullptr ? nullptr : static_cast<char*>(t->data) + t->byte_offset;
    finish(a, dlpack_dtype_name(t->dtype), t->strides ? &strides : nullptr, 0, readonly, label, set, write);
    return a;
}

std::int64_t to_int64(PyObject* o, const Label& label, const char* what) {
    if (!PyLong_Check(o)) {
        throw py::type_error(label.str() + ": " + what + " must be an int, got " + type_name(o));
    }
    const long long v = PyLong_AsLongLong(o);
    if (v == -1 && PyErr_Occurred()) {
        PyErr_Clear();
        throw py::value_error(label.str() + ": " + what + " is out of range");
    }
    return v;
}

std::vector<std::int64_t> int_sequence(PyObject* o, const Label& label, const char* what) {
    PyObject* fast = PySequence_Fast(o, "");
    if (fast == nullptr) {
        PyErr_Clear();
        throw py::type_error(label.str() + ": " + what + " must be a sequence of ints, got " + type_name(o));
    }
    const py::object hold = py::reinterpret_steal<py::object>(fast);
    const Py_ssize_t n = PySequence_Fast_GET_SIZE(fast);
    std::vector<std::int64_t> out(static_cast<std::size_t>(n));
    PyObject** items = PySequence_Fast_ITEMS(fast);
    for (Py_ssize_t i = 0; i < n; ++i) out[static_cast<std::size_t>(i)] = to_int64(items[i], label, what);
    return out;
}

Array parse_tuple(PyObject* tup, const Label& label, unsigned set, bool write) {
    PyObject* ptr = PyTuple_GET_ITEM(tup, 0);
    PyObject* shape = PyTuple_GET_ITEM(tup, 1);
    PyObject* strides = PyTuple_GET_ITEM(tup, 2);
    PyObject* dtype = PyTuple_GET_ITEM(tup, 3);
    PyObject* device = PyTuple_GET_ITEM(tup, 4);
    PyObject* readonly = PyTuple_GET_ITEM(tup, 5);
    Array a;
    if (!PyLong_Check(ptr)) throw py::type_error(label.str() + ": the data pointer must be an int, got " + type_name(ptr));
    const unsigned long long p = PyLong_AsUnsignedLongLong(ptr);
    if (PyErr_Occurred()) {
        PyErr_Clear();
        throw py::value_error(label.str() + ": the data pointer is not a valid address");
    }
    a.data = reinterpret_cast<void*>(static_cast<std::uintptr_t>(p));
    a.shape = int_sequence(shape, label, "shape");
    if (!PyUnicode_Check(dtype)) throw py::type_error(label.str() + ": dtype must be a str, got " + type_name(dtype));
    const std::string dtype_name = py::reinterpret_borrow<py::str>(dtype).cast<std::string>();
    a.kind = kind_of_name(dtype_name);
    const std::int64_t dev = to_int64(device, label, "device");
    if (dev < -1 || dev > std::numeric_limits<int>::max()) {
        throw py::value_error(label.str() + ": invalid device id " + std::to_string(dev));
    }
    a.device = static_cast<int>(dev);
    const int ro = PyObject_IsTrue(readonly);
    if (ro < 0) {
        PyErr_Clear();
        throw py::type_error(label.str() + ": readonly must be a bool");
    }
    std::vector<std::int64_t> st;
    if (strides != Py_None) st = int_sequence(strides, label, "strides");
    finish(a, dtype_name, strides != Py_None ? &st : nullptr, 1, ro != 0, label, set, write);
    return a;
}

Array parse(py::handle obj, const Label& label, unsigned set, bool write) {
    PyObject* o = obj.ptr();
    if (PyCapsule_CheckExact(o)) return parse_capsule(o, label, set, write);
    if (PyTuple_Check(o) && PyTuple_GET_SIZE(o) == 6) return parse_tuple(o, label, set, write);
    throw py::type_error(label.str() + ": expected a CUDA device array as a DLPack capsule or a "
                         "(ptr, shape, strides, dtype, device, readonly) tuple, got " + type_name(obj));
}

// DLPack tensors taken over (capsules renamed "used_..."); their deleters run when this
// goes away.
class Owned {
public:
    Owned() = default;
    Owned(const Owned&) = delete;
    Owned& operator=(const Owned&) = delete;
    ~Owned() { release(); }

    void take(PyObject* capsule) {
        const char* name = PyCapsule_GetName(capsule);
        if (name == nullptr) {
            PyErr_Clear();
            return;
        }
        if (std::strcmp(name, dl::kCapsuleName) == 0) {
            auto* m = static_cast<dl::DLManagedTensor*>(PyCapsule_GetPointer(capsule, name));
            if (m == nullptr || PyCapsule_SetName(capsule, dl::kUsedCapsuleName) != 0) {
                PyErr_Clear();
                return;
            }
            plain_.push_back(m);
        } else if (std::strcmp(name, dl::kVersionedCapsuleName) == 0) {
            auto* v = static_cast<dl::DLManagedTensorVersioned*>(PyCapsule_GetPointer(capsule, name));
            if (v == nullptr || PyCapsule_SetName(capsule, dl::kUsedVersionedCapsuleName) != 0) {
                PyErr_Clear();
                return;
            }
            versioned_.push_back(v);
        }
        // Otherwise already renamed: the same capsule twice in one call, taken once.
    }

    void release() noexcept {
        for (auto* m : plain_) {
            if (m->deleter) m->deleter(m);
        }
        for (auto* v : versioned_) {
            if (v->deleter) v->deleter(v);
        }
        plain_.clear();
        versioned_.clear();
    }

private:
    std::vector<dl::DLManagedTensor*> plain_;
    std::vector<dl::DLManagedTensorVersioned*> versioned_;
};

// A validated list of device arrays: the table the C++ API takes. Prepared once by
// cuda_arrays() (a capsule "gradcore.cuda_arrays" holds it) or built for one call.
struct Table {
    std::string name;
    std::vector<cuda::DeviceTensor> tensors;
    std::vector<std::vector<std::int64_t>> shapes;
    int device = -1;         // -1: no array said
    long device_index = -1;  // the first element that said
    bool write = false;
    unsigned set = 0;
    Owned owned;
};

constexpr const char* kTableCapsule = "gradcore.cuda_arrays";

std::unique_ptr<Table> parse_table(py::handle seq, const char* name, bool write, unsigned set) {
    PyObject* s = seq.ptr();
    if (!PySequence_Check(s) || PyUnicode_Check(s) || PyBytes_Check(s)) {
        throw py::type_error(std::string(name) + " must be a sequence of device arrays, got " + type_name(seq));
    }
    const Py_ssize_t n = PySequence_Size(s);
    if (n < 0) throw py::error_already_set();
    auto table = std::make_unique<Table>();
    table->name = name;
    table->write = write;
    table->set = set;
    table->tensors.reserve(static_cast<std::size_t>(n));
    table->shapes.reserve(static_cast<std::size_t>(n));
    std::vector<py::object> keep;  // items stay alive until their capsules are taken
    keep.reserve(static_cast<std::size_t>(n));
    for (Py_ssize_t i = 0; i < n; ++i) {
        PyObject* raw = PySequence_GetItem(s, i);
        if (raw == nullptr) throw py::error_already_set();
        keep.push_back(py::reinterpret_steal<py::object>(raw));
        const Label label{name, static_cast<long>(i)};
        Array a = parse(raw, label, set, write);
        if (a.device >= 0) {
            if (table->device < 0) {
                table->device = a.device;
                table->device_index = static_cast<long>(i);
            } else if (a.device != table->device) {
                throw py::value_error(label.str() + " is on cuda:" + std::to_string(a.device) + " but " +
                                      Label{name, table->device_index}.str() + " is on cuda:" +
                                      std::to_string(table->device));
            }
        }
        table->tensors.push_back({a.data, a.numel, api_dtype(a.kind)});
        table->shapes.push_back(std::move(a.shape));
    }
    // Every element passed: take the capsules (none is taken when one is refused).
    for (const py::object& item : keep) {
        if (PyCapsule_CheckExact(item.ptr())) table->owned.take(item.ptr());
    }
    return table;
}

void destroy_table(PyObject* capsule) {
    auto* t = static_cast<Table*>(PyCapsule_GetPointer(capsule, kTableCapsule));
    if (t == nullptr) {
        PyErr_Clear();
        return;
    }
    delete t;
}

bool is_table(py::handle obj) {
    return PyCapsule_CheckExact(obj.ptr()) && PyCapsule_IsValid(obj.ptr(), kTableCapsule);
}

std::string dtype_set_name(unsigned set) {
    if (set == kFloats) return "float";
    if (set == kDense) return "dense";
    return "?";
}

unsigned parse_dtype_set(const std::string& s) {
    if (s == "float") return kFloats;
    if (s == "dense") return kDense;
    throw py::value_error("dtypes must be 'float' (float16, bfloat16, float32, float64) or 'dense' "
                          "(float32, float64); got '" + s + "'");
}

void* stream_handle(py::handle stream) {
    if (!PyLong_Check(stream.ptr())) {
        throw py::type_error("stream must be an int (a cudaStream_t handle; 0 is the legacy default stream), got " +
                             type_name(stream));
    }
    const unsigned long long v = PyLong_AsUnsignedLongLong(stream.ptr());
    if (PyErr_Occurred()) {
        PyErr_Clear();
        throw py::value_error("stream must be a non-negative int (a cudaStream_t handle)");
    }
    return reinterpret_cast<void*>(static_cast<std::uintptr_t>(v));
}

int device_ordinal(int device) {
    if (device < 0) throw py::value_error("device must be >= 0, got " + std::to_string(device));
    return device;
}

// Everything one entry point gathers: its arrays, the one device they are on, and the
// DLPack tensors it took (released when the call object goes away, after the C++ call).
class Call {
public:
    // A list argument: a prepared table (cuda_arrays) or a sequence validated now.
    Table& table(py::handle arg, const char* name, bool write, unsigned set) {
        Table* t = nullptr;
        if (is_table(arg)) {
            t = static_cast<Table*>(PyCapsule_GetPointer(arg.ptr(), kTableCapsule));
            if (write && !t->write) {
                throw py::value_error(std::string(name) + " was prepared for reading (write=False); "
                                      "in-place functions need writeable arrays");
            }
            if ((t->set & ~set) != 0) {
                throw py::type_error(std::string(name) + " was prepared for dtypes '" + dtype_set_name(t->set) +
                                     "' (expected " + expected_text(set) + ")");
            }
        } else {
            fresh_.push_back(parse_table(arg, name, write, set));
            t = fresh_.back().get();
        }
        if (t->device >= 0) note_device(t->device, Label{t->name.c_str(), t->device_index}.str());
        return *t;
    }

    Array single(py::handle obj, const char* name, unsigned set, bool write) {
        const Label label{name, -1};
        Array a = parse(obj, label, set, write);
        if (a.device >= 0) note_device(a.device, label.str());
        if (a.capsule) pending_.push_back(py::reinterpret_borrow<py::object>(obj));
        return a;
    }

    std::optional<Array> optional(py::handle obj, const char* name, unsigned set, bool write) {
        if (obj.is_none()) return std::nullopt;
        return single(obj, name, set, write);
    }

    // Every argument passed: take the single capsules, and name the stream.
    cuda::Stream stream(py::handle s) {
        void* handle = stream_handle(s);
        for (const py::object& cap : pending_) owned_.take(cap.ptr());
        pending_.clear();
        return {device_ < 0 ? 0 : device_, handle};
    }

private:
    void note_device(int device, const std::string& label) {
        if (device_ < 0) {
            device_ = device;
            device_label_ = label;
        } else if (device != device_) {
            throw py::value_error(label + " is on cuda:" + std::to_string(device) + " but " + device_label_ +
                                  " is on cuda:" + std::to_string(device_));
        }
    }

    int device_ = -1;
    std::string device_label_;
    std::vector<std::unique_ptr<Table>> fresh_;
    std::vector<py::object> pending_;
    Owned owned_;
};

void require_numel(const Array& a, const char* name, std::int64_t numel) {
    if (a.numel != numel) {
        throw py::value_error(std::string(name) + " has " + std::to_string(a.numel) + " elements, expected " +
                              std::to_string(numel));
    }
}

void require_shape(const Array& a, const char* name, const std::vector<std::int64_t>& shape) {
    if (a.shape != shape) {
        throw py::value_error(std::string(name) + " has shape " + tuple_str(a.shape) + ", expected " +
                              tuple_str(shape));
    }
}

void require_ndim(const Array& a, const char* name, std::size_t ndim) {
    if (a.shape.size() != ndim) {
        throw py::value_error(std::string(name) + " must be " + std::to_string(ndim) + "-D, got shape " +
                              tuple_str(a.shape));
    }
}

void same_kind(const Array& a, const char* an, const Array& b, const char* bn) {
    if (a.kind != b.kind) {
        const char* names[] = {"float16", "float32", "float64", "bfloat16", "int64"};
        throw py::type_error(std::string(an) + " and " + bn + " must have the same dtype, got " + names[a.kind] +
                             " and " + names[b.kind]);
    }
}

// An output must not share memory with an input (the kernels read one while writing
// the other).
void refuse_overlap(const Array& out, const char* oname, const Array& in, const char* iname) {
    if (out.numel == 0 || in.numel == 0) return;
    const auto o = reinterpret_cast<std::uintptr_t>(out.data), i = reinterpret_cast<std::uintptr_t>(in.data);
    if (o < i + static_cast<std::uintptr_t>(in.nbytes()) && i < o + static_cast<std::uintptr_t>(out.nbytes())) {
        throw py::value_error(std::string(oname) + " overlaps " + iname + "; pass a separate output buffer");
    }
}

template <class T>
MatrixRef<T> matrix(const Array& a) {
    const std::int64_t rows = a.shape[0], cols = a.shape.size() > 1 ? a.shape[1] : 1;
    return {static_cast<T*>(a.data), rows, cols, cols, 1};
}

template <class F>
void with_dense(int kind, F&& f) {
    if (kind == kF32) {
        f(float{});
    } else {
        f(double{});
    }
}

template <class T>
T* ptr(const std::optional<Array>& a) {
    return a ? static_cast<T*>(a->data) : nullptr;
}

// The forward state of a recurrent layer, shared by the forward (which writes the
// states) and the backward (which reads them):
// (cell, x, weight_ih, weight_hh, bias_ih, bias_hh, hs, cs, gates, gh_n).
struct RnnState {
    Cell cell;
    std::int64_t T, B, I, H;
    Array x, wih, whh, hs;
    std::optional<Array> bih, bhh, cs, gates, gh_n;

    template <class T>
    RnnForward<T> forward() const {
        return {cell, this->T, B, I, H, static_cast<const T*>(x.data), static_cast<const T*>(wih.data),
                static_cast<const T*>(whh.data), ptr<T>(bih), ptr<T>(bhh), static_cast<T*>(hs.data),
                ptr<T>(cs), ptr<T>(gates), ptr<T>(gh_n)};
    }
};

RnnState parse_rnn_state(py::handle state, Call& call, bool write_states) {
    if (!PyTuple_Check(state.ptr()) || PyTuple_GET_SIZE(state.ptr()) != 10) {
        throw py::type_error("state must be a tuple (cell, x, weight_ih, weight_hh, bias_ih, bias_hh, hs, cs, "
                             "gates, gh_n)");
    }
    const py::tuple t = py::reinterpret_borrow<py::tuple>(state);
    RnnState s;
    s.cell = parse_cell(t[0].cast<std::string>());
    const std::int64_t G = gate_count(s.cell);
    s.x = call.single(t[1], "x", kDense, false);
    s.wih = call.single(t[2], "weight_ih", kDense, false);
    s.whh = call.single(t[3], "weight_hh", kDense, false);
    s.bih = call.optional(t[4], "bias_ih", kDense, false);
    s.bhh = call.optional(t[5], "bias_hh", kDense, false);
    s.hs = call.single(t[6], "hs", kDense, write_states);
    s.cs = call.optional(t[7], "cs", kDense, write_states);
    s.gates = call.optional(t[8], "gates", kDense, write_states);
    s.gh_n = call.optional(t[9], "gh_n", kDense, write_states);
    require_ndim(s.x, "x", 3);
    require_ndim(s.whh, "weight_hh", 2);
    s.T = s.x.shape[0], s.B = s.x.shape[1], s.I = s.x.shape[2], s.H = s.whh.shape[1];
    const std::int64_t T = s.T, B = s.B, I = s.I, H = s.H;
    require_shape(s.wih, "weight_ih", {G * H, I});
    require_shape(s.whh, "weight_hh", {G * H, H});
    same_kind(s.x, "x", s.wih, "weight_ih");
    same_kind(s.x, "x", s.whh, "weight_hh");
    for (auto [a, name] : {std::pair<const std::optional<Array>*, const char*>{&s.bih, "bias_ih"}, {&s.bhh, "bias_hh"}}) {
        if (*a) {
            require_shape(**a, name, {G * H});
            same_kind(s.x, "x", **a, name);
        }
    }
    require_shape(s.hs, "hs", {T + 1, B, H});
    same_kind(s.x, "x", s.hs, "hs");
    const bool lstm = s.cell == Cell::lstm, gru = s.cell == Cell::gru;
    auto state_array = [&](const std::optional<Array>& a, const char* name, bool needed,
                           std::vector<std::int64_t> shape) {
        if (needed != a.has_value()) {
            throw py::value_error(std::string(name) + (needed ? " is required" : " must be None") + " for cell '" +
                                  t[0].cast<std::string>() + "'");
        }
        if (a) {
            require_shape(*a, name, shape);
            same_kind(s.x, "x", *a, name);
        }
    };
    state_array(s.cs, "cs", lstm, {T + 1, B, H});
    state_array(s.gates, "gates", lstm || gru, {T, B, G * H});
    state_array(s.gh_n, "gh_n", gru, {T, B, H});
    return s;
}

}  // namespace

void bind_cuda(py::module_& m) {
    m.def("cuda_arrays", [](py::handle arrays, const std::string& name, bool write, const std::string& dtypes) {
        std::unique_ptr<Table> table = parse_table(arrays, name.c_str(), write, parse_dtype_set(dtypes));
        const int device = table->device;
        PyObject* cap = PyCapsule_New(table.get(), kTableCapsule, destroy_table);
        if (cap == nullptr) throw py::error_already_set();
        table.release();
        return py::make_tuple(py::reinterpret_steal<py::object>(cap), device);
    }, py::arg("arrays"), py::arg("name"), py::arg("write"), py::arg("dtypes"),
       "Validates a list of device arrays once: (handle, device) where the handle holds the table the\n"
       "C++ API takes (and the DLPack tensors it consumed) and device is -1 when no array said.");

    m.def("cuda_stream_wait", [](int device, py::handle stream, py::handle producer) {
        const cuda::Stream s{device_ordinal(device), stream_handle(stream)};
        void* p = stream_handle(producer);
        Release release;
        cuda::stream_wait(s, p);
    }, py::arg("device"), py::arg("stream"), py::arg("producer"));

    m.def("cuda_synchronize", [](int device, py::handle stream) {
        const cuda::Stream s{device_ordinal(device), stream_handle(stream)};
        Release release;
        cuda::synchronize(s);
    }, py::arg("device"), py::arg("stream"));

    m.def("cuda_device_name", [](int device) {
        device_ordinal(device);
        Release release;
        return cuda::device_name(device);
    }, py::arg("device"));

    m.def("cuda_cublas_status", [] {
        Release release;
        return cuda::cublas_status();
    });

    // ---- norms and clipping ------------------------------------------------------------

    m.def("cuda_global_norm", [](py::handle arrays, double ord, py::handle out, py::handle stream) {
        check_norm_order(ord);
        Call call;
        Table& t = call.table(arrays, "arrays", false, kFloats);
        const Array o = call.single(out, "out", kDouble, true);
        require_numel(o, "out", 1);
        const cuda::Stream s = call.stream(stream);
        Release release;
        cuda::global_norm(t.tensors.data(), t.tensors.size(), ord, static_cast<double*>(o.data), s);
    }, py::arg("arrays"), py::arg("ord"), py::arg("out"), py::arg("stream"));

    m.def("cuda_norms", [](py::handle arrays, double ord, py::handle out, py::handle stream) {
        check_norm_order(ord);
        Call call;
        Table& t = call.table(arrays, "arrays", false, kFloats);
        const Array o = call.single(out, "out", kDouble, true);
        require_numel(o, "out", static_cast<std::int64_t>(t.tensors.size()));
        const cuda::Stream s = call.stream(stream);
        Release release;
        cuda::norms(t.tensors.data(), t.tensors.size(), ord, static_cast<double*>(o.data), s);
    }, py::arg("arrays"), py::arg("ord"), py::arg("out"), py::arg("stream"));

    m.def("cuda_grad_stats", [](py::handle arrays, py::handle l2_out, py::handle max_abs_out,
                                py::handle nonfinite_out, py::handle stream) {
        Call call;
        Table& t = call.table(arrays, "arrays", false, kFloats);
        const auto n = static_cast<std::int64_t>(t.tensors.size());
        const Array l2 = call.single(l2_out, "l2_out", kDouble, true);
        const Array amax = call.single(max_abs_out, "max_abs_out", kDouble, true);
        const Array bad = call.single(nonfinite_out, "nonfinite_out", kInt64, true);
        require_numel(l2, "l2_out", n);
        require_numel(amax, "max_abs_out", n);
        require_numel(bad, "nonfinite_out", n);
        const cuda::Stream s = call.stream(stream);
        Release release;
        cuda::grad_stats(t.tensors.data(), t.tensors.size(), static_cast<double*>(l2.data),
                         static_cast<double*>(amax.data), static_cast<std::int64_t*>(bad.data), s);
    }, py::arg("arrays"), py::arg("l2_out"), py::arg("max_abs_out"), py::arg("nonfinite_out"), py::arg("stream"));

    m.def("cuda_scale_", [](py::handle arrays, double factor, py::handle stream) {
        Call call;
        Table& t = call.table(arrays, "arrays", true, kFloats);
        const cuda::Stream s = call.stream(stream);
        Release release;
        cuda::scale_(t.tensors.data(), t.tensors.size(), factor, s);
    }, py::arg("arrays"), py::arg("factor"), py::arg("stream"));

    m.def("cuda_clip_by_value_", [](py::handle arrays, double lo, double hi, py::handle stream) {
        Call call;
        Table& t = call.table(arrays, "arrays", true, kFloats);
        const cuda::Stream s = call.stream(stream);
        Release release;
        cuda::clip_by_value_(t.tensors.data(), t.tensors.size(), lo, hi, s);
    }, py::arg("arrays"), py::arg("min"), py::arg("max"), py::arg("stream"));

    m.def("cuda_zero_nonfinite_", [](py::handle arrays, py::handle count_out, py::handle stream) {
        Call call;
        Table& t = call.table(arrays, "arrays", true, kFloats);
        const std::optional<Array> c = call.optional(count_out, "count_out", kInt64, true);
        if (c) require_numel(*c, "count_out", 1);
        const cuda::Stream s = call.stream(stream);
        Release release;
        cuda::zero_nonfinite_(t.tensors.data(), t.tensors.size(), c ? static_cast<std::int64_t*>(c->data) : nullptr,
                              s);
    }, py::arg("arrays"), py::arg("count_out"), py::arg("stream"));

    m.def("cuda_clip_by_norm_", [](py::handle arrays, double max_norm, double ord, double eps, py::handle norms_out,
                                   py::handle stream) {
        check_norm_order(ord);
        Call call;
        Table& t = call.table(arrays, "arrays", true, kFloats);
        const Array o = call.single(norms_out, "norms_out", kDouble, true);
        require_numel(o, "norms_out", static_cast<std::int64_t>(t.tensors.size()));
        const cuda::Stream s = call.stream(stream);
        Release release;
        cuda::clip_by_norm_(t.tensors.data(), t.tensors.size(), max_norm, ord, eps, static_cast<double*>(o.data),
                            s);
    }, py::arg("arrays"), py::arg("max_norm"), py::arg("ord"), py::arg("eps"), py::arg("norms_out"),
       py::arg("stream"));

    m.def("cuda_clip_by_global_norm_", [](py::handle arrays, double max_norm, double ord, double eps,
                                          const std::string& nonfinite, py::handle total_norm, py::handle total_out,
                                          py::handle factor_out, py::handle stream) {
        check_norm_order(ord);
        const NonFinitePolicy policy = parse_policy(nonfinite);
        Call call;
        Table& t = call.table(arrays, "arrays", true, kFloats);
        const std::optional<Array> given = call.optional(total_norm, "total_norm", kDouble, false);
        if (given) require_numel(*given, "total_norm", 1);
        const Array total = call.single(total_out, "total_out", kDouble, true);
        require_numel(total, "total_out", 1);
        const std::optional<Array> factor = call.optional(factor_out, "factor_out", kDouble, true);
        if (factor) require_numel(*factor, "factor_out", 1);
        const cuda::Stream s = call.stream(stream);
        Release release;
        cuda::clip_by_global_norm_(t.tensors.data(), t.tensors.size(), max_norm, ord, eps, policy,
                                   given ? static_cast<const double*>(given->data) : nullptr,
                                   static_cast<double*>(total.data), ptr<double>(factor), s);
    }, py::arg("arrays"), py::arg("max_norm"), py::arg("ord"), py::arg("eps"), py::arg("nonfinite"),
       py::arg("total_norm"), py::arg("total_out"), py::arg("factor_out"), py::arg("stream"));

    m.def("cuda_adaptive_clip_", [](py::handle grads, py::handle params, double clipping, double eps, int unit_axis,
                                    py::handle stream) {
        Call call;
        Table& g = call.table(grads, "grads", true, kFloats);
        Table& p = call.table(params, "params", false, kFloats);
        if (g.tensors.size() != p.tensors.size()) {
            throw py::value_error("grads and params must have the same length, got " +
                                  std::to_string(g.tensors.size()) + " and " + std::to_string(p.tensors.size()));
        }
        std::vector<UnitLayout> layouts;
        layouts.reserve(g.tensors.size());
        for (std::size_t i = 0; i < g.tensors.size(); ++i) {
            if (g.shapes[i] != p.shapes[i]) {
                throw py::value_error("grads[" + std::to_string(i) + "] has shape " + tuple_str(g.shapes[i]) +
                                      " but params[" + std::to_string(i) + "] has shape " + tuple_str(p.shapes[i]));
            }
            layouts.push_back(unit_layout(g.shapes[i], unit_axis, i));
        }
        const cuda::Stream s = call.stream(stream);
        Release release;
        cuda::adaptive_clip_(g.tensors.data(), p.tensors.data(), layouts.data(), layouts.size(), clipping, eps, s);
    }, py::arg("grads"), py::arg("params"), py::arg("clipping"), py::arg("eps"), py::arg("unit_axis"),
       py::arg("stream"));

    // ---- dense layer -----------------------------------------------------------------------

    m.def("cuda_dense_forward", [](py::handle x, py::handle weight, py::handle bias, py::handle out,
                                   const std::string& activation, double negative_slope, py::handle stream) {
        const Activation act = parse_activation(activation);
        Call call;
        const Array xa = call.single(x, "x", kDense, false), wa = call.single(weight, "weight", kDense, false);
        const std::optional<Array> ba = call.optional(bias, "bias", kDense, false);
        const Array ya = call.single(out, "out", kDense, true);
        same_kind(xa, "x", wa, "weight");
        require_ndim(xa, "x", 2);
        require_ndim(wa, "weight", 2);
        if (xa.shape[1] != wa.shape[1]) {
            throw py::value_error("x has shape " + tuple_str(xa.shape) + " but weight has shape " + tuple_str(wa.shape) +
                                  " (expected (out_features, " + std::to_string(xa.shape[1]) + "))");
        }
        const std::int64_t batch = xa.shape[0], n_out = wa.shape[0];
        if (ba) {
            same_kind(xa, "x", *ba, "bias");
            require_shape(*ba, "bias", {n_out});
        }
        same_kind(xa, "x", ya, "out");
        require_shape(ya, "out", {batch, n_out});
        refuse_overlap(ya, "out", xa, "x");
        refuse_overlap(ya, "out", wa, "weight");
        if (ba) refuse_overlap(ya, "out", *ba, "bias");
        const cuda::Stream s = call.stream(stream);
        with_dense(xa.kind, [&](auto tag) {
            using T = decltype(tag);
            const DenseForward<T> f{matrix<const T>(xa), matrix<const T>(wa), ptr<const T>(ba), matrix<T>(ya), act,
                                    negative_slope};
            Release release;
            cuda::dense_forward(f, s);
        });
    }, py::arg("x"), py::arg("weight"), py::arg("bias"), py::arg("out"), py::arg("activation"),
       py::arg("negative_slope"), py::arg("stream"));

    m.def("cuda_dense_backward", [](py::handle grad_y, py::handle x, py::handle weight, py::handle y,
                                    const std::string& activation, double negative_slope, bool accumulate,
                                    py::handle grad_x, py::handle grad_weight, py::handle grad_bias,
                                    py::handle stream) {
        const Activation act = parse_activation(activation);
        Call call;
        const Array gya = call.single(grad_y, "grad_y", kDense, false), xa = call.single(x, "x", kDense, false);
        const Array wa = call.single(weight, "weight", kDense, false), ya = call.single(y, "y", kDense, false);
        const std::optional<Array> gxa = call.optional(grad_x, "grad_x", kDense, true);
        const Array gwa = call.single(grad_weight, "grad_weight", kDense, true);
        const std::optional<Array> gba = call.optional(grad_bias, "grad_bias", kDense, true);
        same_kind(xa, "x", wa, "weight");
        same_kind(xa, "x", gya, "grad_y");
        same_kind(xa, "x", ya, "y");
        require_ndim(gya, "grad_y", 2);
        require_ndim(xa, "x", 2);
        require_ndim(wa, "weight", 2);
        require_ndim(ya, "y", 2);
        const std::int64_t batch = xa.shape[0], n_in = xa.shape[1], n_out = wa.shape[0];
        if (wa.shape[1] != n_in) {
            throw py::value_error("x has shape " + tuple_str(xa.shape) + " but weight has shape " + tuple_str(wa.shape) +
                                  " (expected (out_features, " + std::to_string(n_in) + "))");
        }
        require_shape(gya, "grad_y", {batch, n_out});
        require_shape(ya, "y", {batch, n_out});
        if (gxa) {
            same_kind(xa, "x", *gxa, "grad_x");
            require_shape(*gxa, "grad_x", {batch, n_in});
        }
        same_kind(xa, "x", gwa, "grad_weight");
        require_shape(gwa, "grad_weight", {n_out, n_in});
        if (gba) {
            same_kind(xa, "x", *gba, "grad_bias");
            require_shape(*gba, "grad_bias", {n_out});
        }
        for (auto [o, oname] : {std::pair<const Array*, const char*>{gxa ? &*gxa : nullptr, "grad_x"},
                                {&gwa, "grad_weight"}, {gba ? &*gba : nullptr, "grad_bias"}}) {
            if (!o) continue;
            for (auto [i, iname] : {std::pair<const Array*, const char*>{&gya, "grad_y"}, {&xa, "x"},
                                    {&wa, "weight"}, {&ya, "y"}}) {
                refuse_overlap(*o, oname, *i, iname);
            }
        }
        if (gxa) refuse_overlap(*gxa, "grad_x", gwa, "grad_weight");
        if (gxa && gba) refuse_overlap(*gxa, "grad_x", *gba, "grad_bias");
        if (gba) refuse_overlap(gwa, "grad_weight", *gba, "grad_bias");
        const cuda::Stream s = call.stream(stream);
        with_dense(xa.kind, [&](auto tag) {
            using T = decltype(tag);
            DenseBackward<T> b{matrix<const T>(gya), matrix<const T>(xa), matrix<const T>(wa), matrix<const T>(ya),
                               act, negative_slope, MatrixRef<T>{nullptr, batch, n_in, n_in, 1}, matrix<T>(gwa),
                               ptr<T>(gba), accumulate};
            if (gxa) b.grad_x = matrix<T>(*gxa);
            Release release;
            cuda::dense_backward(b, s);
        });
    }, py::arg("grad_y"), py::arg("x"), py::arg("weight"), py::arg("y"), py::arg("activation"),
       py::arg("negative_slope"), py::arg("accumulate"), py::arg("grad_x"), py::arg("grad_weight"),
       py::arg("grad_bias"), py::arg("stream"));

    // ---- recurrent layers ----------------------------------------------------------------
    // state: (cell, x, weight_ih, weight_hh, bias_ih, bias_hh, hs, cs, gates, gh_n), the
    // forward's inputs and the cache it writes (hs[0] / cs[0] hold h0 / c0 on entry).

    m.def("cuda_rnn_forward", [](py::handle state, py::handle stream) {
        Call call;
        const RnnState st = parse_rnn_state(state, call, true);
        const cuda::Stream s = call.stream(stream);
        with_dense(st.x.kind, [&](auto tag) {
            using T = decltype(tag);
            const RnnForward<T> f = st.forward<T>();
            Release release;
            cuda::rnn_forward(f, s);
        });
    }, py::arg("state"), py::arg("stream"));

    // grads: (grad_x, grad_h0, grad_c0, grad_weight_ih, grad_weight_hh, grad_bias_ih,
    // grad_bias_hh, hidden_grad_norms), the outputs, written.
    m.def("cuda_rnn_backward", [](py::handle state, py::handle grad_y, py::handle grad_h_n, py::handle grad_c_n,
                                  double clip_hidden, py::handle grads, py::handle stream) {
        Call call;
        const RnnState st = parse_rnn_state(state, call, false);
        const std::int64_t T = st.T, B = st.B, I = st.I, H = st.H, G = gate_count(st.cell);
        const bool lstm = st.cell == Cell::lstm;
        const Array gy = call.single(grad_y, "grad_y", kDense, false);
        require_shape(gy, "grad_y", {T, B, H});
        same_kind(st.x, "x", gy, "grad_y");
        const std::optional<Array> ghn = call.optional(grad_h_n, "grad_h_n", kDense, false);
        if (ghn) {
            require_shape(*ghn, "grad_h_n", {B, H});
            same_kind(st.x, "x", *ghn, "grad_h_n");
        }
        if (!grad_c_n.is_none() && !lstm) throw py::value_error("grad_c_n is only for cell='lstm'");
        const std::optional<Array> gcn = call.optional(grad_c_n, "grad_c_n", kDense, false);
        if (gcn) {
            require_shape(*gcn, "grad_c_n", {B, H});
            same_kind(st.x, "x", *gcn, "grad_c_n");
        }
        if (!(clip_hidden >= 0.0)) throw py::value_error("clip_hidden must be >= 0");
        if (!PyTuple_Check(grads.ptr()) || PyTuple_GET_SIZE(grads.ptr()) != 8) {
            throw py::type_error("grads must be a tuple (grad_x, grad_h0, grad_c0, grad_weight_ih, grad_weight_hh, "
                                 "grad_bias_ih, grad_bias_hh, hidden_grad_norms)");
        }
        const py::tuple g = py::reinterpret_borrow<py::tuple>(grads);
        const Array gx = call.single(g[0], "grad_x", kDense, true), gh0 = call.single(g[1], "grad_h0", kDense, true);
        const std::optional<Array> gc0 = call.optional(g[2], "grad_c0", kDense, true);
        const Array gwih = call.single(g[3], "grad_weight_ih", kDense, true);
        const Array gwhh = call.single(g[4], "grad_weight_hh", kDense, true);
        const std::optional<Array> gbih = call.optional(g[5], "grad_bias_ih", kDense, true);
        const std::optional<Array> gbhh = call.optional(g[6], "grad_bias_hh", kDense, true);
        const Array norms = call.single(g[7], "hidden_grad_norms", kDouble, true);
        require_shape(gx, "grad_x", {T, B, I});
        require_shape(gh0, "grad_h0", {B, H});
        require_shape(gwih, "grad_weight_ih", {G * H, I});
        require_shape(gwhh, "grad_weight_hh", {G * H, H});
        require_numel(norms, "hidden_grad_norms", T);
        for (auto [a, name] : {std::pair<const Array*, const char*>{&gx, "grad_x"}, {&gh0, "grad_h0"},
                               {&gwih, "grad_weight_ih"}, {&gwhh, "grad_weight_hh"}}) {
            same_kind(st.x, "x", *a, name);
        }
        if (lstm != gc0.has_value()) {
            throw py::value_error(std::string("grad_c0 ") + (lstm ? "is required" : "must be None") +
                                  " for this cell");
        }
        if (gc0) {
            require_shape(*gc0, "grad_c0", {B, H});
            same_kind(st.x, "x", *gc0, "grad_c0");
        }
        for (auto [a, name] : {std::pair<const std::optional<Array>*, const char*>{&gbih, "grad_bias_ih"},
                               {&gbhh, "grad_bias_hh"}}) {
            if (*a) {
                require_shape(**a, name, {G * H});
                same_kind(st.x, "x", **a, name);
            }
        }
        const cuda::Stream s = call.stream(stream);
        with_dense(st.x.kind, [&](auto tag) {
            using TT = decltype(tag);
            const RnnBackward<TT> b{st.forward<TT>(), static_cast<const TT*>(gy.data), ptr<const TT>(ghn),
                                    ptr<const TT>(gcn), clip_hidden, static_cast<TT*>(gx.data),
                                    static_cast<TT*>(gh0.data), ptr<TT>(gc0), static_cast<TT*>(gwih.data),
                                    static_cast<TT*>(gwhh.data), ptr<TT>(gbih), ptr<TT>(gbhh),
                                    static_cast<double*>(norms.data)};
            Release release;
            cuda::rnn_backward(b, s);
        });
    }, py::arg("state"), py::arg("grad_y"), py::arg("grad_h_n"), py::arg("grad_c_n"), py::arg("clip_hidden"),
       py::arg("grads"), py::arg("stream"));
}

}  // namespace gradcore::python
