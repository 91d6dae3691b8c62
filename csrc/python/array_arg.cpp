#include "array_arg.hpp"

#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include <cstring>
#include <limits>
#include <utility>

#include "dlpack.hpp"
#include "parse_args.hpp"

namespace gradcore::python {
namespace {

namespace dl = dlpack;

std::string type_name(py::handle obj) { return type_name_of(obj); }

// The message of the Python exception being handled, cleared.
std::string exception_text(const py::error_already_set& e) { return py::str(e.value()).cast<std::string>(); }

bool has_attr(py::handle obj, const char* name) {
    const int r = PyObject_HasAttrString(obj.ptr(), name);  // false also when the attribute raises
    return r == 1;
}

// ---- dtypes ---------------------------------------------------------------------------

// NumPy's type numbers (stable across NumPy 1.x and 2.x) and flags.
constexpr int kNpyHalf = 23, kNpyFloat = 11, kNpyDouble = 12;
constexpr int kNpyAligned = 0x0100;

std::optional<DType> numpy_float_dtype(int type_num) {
    switch (type_num) {
        case kNpyHalf: return DType::float16;
        case kNpyFloat: return DType::float32;
        case kNpyDouble: return DType::float64;
        default: return std::nullopt;
    }
}

std::optional<DType> numpy_dtype(const py::dtype& dt) {
    if (const std::optional<DType> t = numpy_float_dtype(dt.num())) return t;
    if (dt.kind() == 'i' && dt.itemsize() == 8) return DType::int64;
    return std::nullopt;
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

std::optional<DType> dlpack_dtype(const dl::DLDataType& t) {
    if (t.lanes != 1) return std::nullopt;
    if (t.code == dl::kDLFloat) {
        if (t.bits == 16) return DType::float16;
        if (t.bits == 32) return DType::float32;
        if (t.bits == 64) return DType::float64;
    }
    if (t.code == dl::kDLBfloat && t.bits == 16) return DType::bfloat16;
    if (t.code == dl::kDLInt && t.bits == 64) return DType::int64;
    return std::nullopt;
}

// A __cuda_array_interface__ typestr ("<f4"), read by NumPy; `name` is what messages call
// it ("int32", "<f8 (non-native byte order)").
std::optional<DType> typestr_dtype(const std::string& s, std::string& name) {
    name = s;
    py::dtype dt;
    try {
        dt = py::dtype(s);
    } catch (const py::error_already_set&) {
        return std::nullopt;
    }
    if (!dt.attr("isnative").cast<bool>()) {
        name = s + " (non-native byte order)";
        return std::nullopt;
    }
    name = dt.attr("name").cast<std::string>();
    return numpy_dtype(dt);
}

std::string expected_text(unsigned set) {
    static const DType order[] = {DType::float16, DType::bfloat16, DType::float32, DType::float64, DType::int64};
    std::vector<const char*> names;
    for (DType t : order) {
        if (set & bit(t)) names.push_back(dtype_name(t));
    }
    std::string s;
    for (std::size_t i = 0; i < names.size(); ++i) {
        s += (i == 0 ? "" : i + 1 == names.size() ? " or " : ", ");
        s += names[i];
    }
    return s;
}

// ---- shapes and memory ----------------------------------------------------------------

std::int64_t checked_numel(const std::vector<std::int64_t>& shape, const std::string& label) {
    std::int64_t n = 1;
    bool overflow = false;
    for (std::int64_t d : shape) {
        if (d < 0) throw py::value_error(label + ": negative extent in shape " + shape_str(shape));
        if (d == 0) return 0;
        if (n > std::numeric_limits<std::int64_t>::max() / 8 / d) overflow = true;
        n *= overflow ? 1 : d;
    }
    if (overflow) throw py::value_error(label + ": shape " + shape_str(shape) + " is too large");
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

py::dtype numpy_dtype_of(DType t) { return py::dtype(std::string(dtype_name(t))); }

bool aligned(const void* p, DType t) {
    return reinterpret_cast<std::uintptr_t>(p) % static_cast<std::uintptr_t>(itemsize(t)) == 0;
}

std::string device_text(Device d) {
    if (!d.is_cuda()) return "cpu";
    return d.index < 0 ? "cuda" : "cuda:" + std::to_string(d.index);
}

// ---- DLPack tensors taken over --------------------------------------------------------

// The capsules a call took (renamed "used_..."); their deleters run when it goes away.
class Owned {
public:
    Owned() = default;
    Owned(const Owned&) = delete;
    Owned& operator=(const Owned&) = delete;
    ~Owned() {
        for (const py::object& cap : taken_) {
            const char* name = PyCapsule_GetName(cap.ptr());
            void* p = PyCapsule_GetPointer(cap.ptr(), name);
            if (std::strcmp(name, dl::kUsedCapsuleName) == 0) {
                auto* m = static_cast<dl::DLManagedTensor*>(p);
                if (m->deleter) m->deleter(m);
            } else {
                auto* v = static_cast<dl::DLManagedTensorVersioned*>(p);
                if (v->deleter) v->deleter(v);
            }
        }
    }

    // The same capsule twice in one call is taken once (the second is renamed already).
    void take(const py::object& cap) {
        const char* name = PyCapsule_GetName(cap.ptr());
        const bool plain = name && std::strcmp(name, dl::kCapsuleName) == 0;
        if (plain || (name && std::strcmp(name, dl::kVersionedCapsuleName) == 0)) {
            if (PyCapsule_SetName(cap.ptr(), plain ? dl::kUsedCapsuleName : dl::kUsedVersionedCapsuleName) == 0) {
                taken_.push_back(cap);
            }
        }
        PyErr_Clear();
    }

private:
    std::vector<py::object> taken_;
};

// Where __dlpack_device__ says an object lives (the host when it cannot say).
Device dlpack_device(py::handle obj) {
    try {
        const py::tuple d = obj.attr("__dlpack_device__")();
        const int type = d[0].cast<int>();
        if (type == dl::kDLCUDA || type == dl::kDLCUDAManaged) return {Device::cuda, d[1].cast<int>()};
    } catch (const py::error_already_set&) {
    } catch (const py::cast_error&) {
    }
    return {};
}

// What an object is, found without converting it.
struct Found {
    enum Kind { numpy, capsule, dlpack, cuda_array_interface, other } kind = other;
    Device device;
};

Found find(py::handle obj) {
    if (py::isinstance<py::array>(obj)) return {Found::numpy, {}};
    if (PyCapsule_CheckExact(obj.ptr())) return {Found::capsule, {}};
    const bool says_device = has_attr(obj, "__dlpack_device__");
    if (says_device && has_attr(obj, "__dlpack__")) return {Found::dlpack, dlpack_device(obj)};
    if (has_attr(obj, "__cuda_array_interface__")) {
        const Device d = says_device ? dlpack_device(obj) : Device{};
        return {Found::cuda_array_interface, {Device::cuda, d.index}};
    }
    return {Found::other, {}};
}

bool is_one_array(py::handle obj) {
    return py::isinstance<py::array>(obj) || PyMemoryView_Check(obj.ptr()) || PyCapsule_CheckExact(obj.ptr()) ||
           has_attr(obj, "__dlpack__") || has_attr(obj, "__array__") || has_attr(obj, "__cuda_array_interface__");
}

}  // namespace

bool ArrayArg::overlaps(const ArrayArg& other) const {
    // The byte range each may touch: from its lowest to its highest element.
    const auto range = [](const ArrayArg& a) {
        auto lo = reinterpret_cast<std::uintptr_t>(a.data), hi = lo;
        const auto item = static_cast<std::uintptr_t>(itemsize(a.dtype));
        if (a.strides.empty()) {
            hi = lo + static_cast<std::uintptr_t>(a.numel) * item;
        } else {
            std::int64_t low = 0, high = 0;
            for (std::size_t d = 0; d < a.shape.size(); ++d) {
                const std::int64_t span = (a.shape[d] - 1) * a.strides[d] * static_cast<std::int64_t>(item);
                (span < 0 ? low : high) += span;
            }
            lo = static_cast<std::uintptr_t>(static_cast<std::intptr_t>(lo) + low);
            hi = static_cast<std::uintptr_t>(static_cast<std::intptr_t>(hi) + high) + item;
        }
        return std::pair{lo, hi};
    };
    if (numel == 0 || other.numel == 0 || device.is_cuda() != other.device.is_cuda()) return false;
    const auto [a0, a1] = range(*this);
    const auto [b0, b1] = range(other);
    return a0 < b1 && b0 < a1;
}

py::object result_type(const char* name) { return py::module_::import("gradcore._types").attr(name); }

py::object device_memory(const char* name) { return py::module_::import("gradcore._device_memory").attr(name); }

std::string Label::str() const {
    return index < 0 ? std::string(name) : std::string(name) + "[" + std::to_string(index) + "]";
}

std::string shape_str(const std::vector<std::int64_t>& shape) {
    std::string s = "(";
    for (std::size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
    return s + (shape.size() == 1 ? ",)" : ")");
}

// ---- the call -------------------------------------------------------------------------

struct Call::Impl {
    const char* function;
    bool cpu_only;
    bool have_lead = false;
    std::string lead_label;
    std::string device_label;        // the first argument that named its CUDA device
    py::object lead;                 // the first array argument
    std::optional<void*> stream;     // the CUDA stream, once known
    std::vector<py::object> pending;  // capsules to take once every argument passed
    std::vector<py::object> keep;     // converted copies, alive while the kernels run
    std::vector<std::uintptr_t> waits;  // producers' streams (__cuda_array_interface__)
    Owned owned;

    void* cuda_stream(py::handle obj, int index) {
        if (!stream) {
            const py::object s = device_memory("stream")(obj, index);
            stream = reinterpret_cast<void*>(static_cast<std::uintptr_t>(s.cast<unsigned long long>()));
        }
        return *stream;
    }
};

Call::Call(const char* function, bool cpu_only) : impl_(new Impl{function, cpu_only}) {}

Call::~Call() = default;

namespace {

// The checks every descriptor passes once its fields are known.
struct Raw {
    void* data = nullptr;
    std::vector<std::int64_t> shape;
    std::vector<std::int64_t> strides;  // empty: C-contiguous
    std::int64_t stride_unit = 1;       // 1: strides in elements; 0: in bytes
    std::optional<DType> dtype;
    std::string dtype_name;
    bool readonly = false;
};

void check_dtype(const Raw& r, const std::string& label, unsigned set) {
    if (!r.dtype || !(set & bit(*r.dtype))) {
        throw py::type_error(label + ": dtype " + r.dtype_name + " is not supported (expected " + expected_text(set) +
                             ")");
    }
}

}  // namespace

// One object, read and checked. `device` is where find() says it lives.
static ArrayArg read_device_raw(Raw r, const std::string& label, Access access, unsigned set, Device device) {
    check_dtype(r, label, set);
    ArrayArg a;
    a.dtype = *r.dtype;
    a.device = device;
    a.numel = checked_numel(r.shape, label);
    if (!r.strides.empty() || r.stride_unit == 0) {
        if (r.strides.size() != r.shape.size()) {
            throw py::value_error(label + ": " + std::to_string(r.strides.size()) + " strides for shape " +
                                  shape_str(r.shape));
        }
        const std::int64_t unit = r.stride_unit == 0 ? itemsize(a.dtype) : 1;
        if (!c_contiguous(r.shape, r.strides, unit, a.numel)) {
            throw py::value_error(label + " must be C-contiguous (shape " + shape_str(r.shape) + ", strides " +
                                  shape_str(r.strides) + (r.stride_unit == 0 ? " bytes" : " elements") +
                                  "); gradcore's device functions read and write C-contiguous memory");
        }
    }
    if (a.numel > 0) {
        if (r.data == nullptr) throw py::value_error(label + ": null data pointer");
        if (!aligned(r.data, a.dtype)) {
            throw py::value_error(label + ": data pointer is not aligned to its item size (" +
                                  std::to_string(itemsize(a.dtype)) + " bytes)");
        }
    }
    if (access == Access::write && r.readonly) {
        throw py::value_error(label + " is read-only; in-place operations need writeable arrays");
    }
    a.data = r.data;
    a.shape = std::move(r.shape);
    return a;
}

namespace {

// A NumPy array in host memory. Inputs that are misaligned or in the other byte order are
// copied (the kernels read the bytes as native numbers), and so are inputs that are not
// C-contiguous unless the use takes strides; in-place arguments must be all of that
// already.
// What read_numpy checked: the array to read (the caller's, or a copy kept alive) and
// its dtype.
struct CheckedNumpy {
    py::array array;
    DType dtype;
};

CheckedNumpy check_numpy(py::array arr, const Label& name, Access access, unsigned set,
                         std::vector<py::object>& keep) {
    // The array's fields read directly (this runs once per array of every list).
    const auto* proxy = py::detail::array_proxy(arr.ptr());
    const auto* descr = py::detail::array_descriptor_proxy(proxy->descr);
    std::optional<DType> t = numpy_float_dtype(descr->type_num);
    if (!t) t = numpy_dtype(arr.dtype());
    if (!t || !(set & bit(*t))) {
        throw py::type_error(name.str() + ": dtype " + std::string(py::str(arr.dtype())) +
                             " is not supported (expected " + expected_text(set) + ")");
    }
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    const bool native = descr->byteorder != '<';
#else
    const bool native = descr->byteorder != '>';
#endif
    const int flags = proxy->flags;
    const bool contiguous = (flags & py::detail::npy_api::NPY_ARRAY_C_CONTIGUOUS_) != 0;
    const bool is_aligned = (flags & kNpyAligned) != 0 || arr.size() == 0;
    if (access == Access::write) {
        if (!native) {
            throw py::type_error(name.str() + ": dtype " + std::string(py::str(arr.dtype())) +
                                 " is not in native byte order");
        }
        if (!contiguous) {
            throw py::value_error(name.str() + " must be C-contiguous to be modified in place (shape " +
                                  shape_str({arr.shape(), arr.shape() + arr.ndim()}) + ")");
        }
        if (!is_aligned) {
            throw py::value_error(name.str() +
                                  " is not aligned to its item size; in-place operations need aligned arrays");
        }
        if (!(flags & py::detail::npy_api::NPY_ARRAY_WRITEABLE_)) {
            throw py::value_error(name.str() + " is read-only; in-place operations need writeable arrays");
        }
    } else if (!native || !is_aligned || (!contiguous && access == Access::read)) {
        arr = arr.attr("astype")(numpy_dtype_of(*t), py::arg("order") = "C");
        keep.push_back(arr);
    }
    return {std::move(arr), *t};
}

// The view the kernels take of a checked array.
TensorView numpy_view(const CheckedNumpy& c) {
    const auto* proxy = py::detail::array_proxy(c.array.ptr());
    std::int64_t numel = 1;
    for (int d = 0; d < proxy->nd; ++d) numel *= proxy->dimensions[d];
    return {proxy->data, numel, c.dtype};
}

ArrayArg read_numpy(py::array arr, const Label& name, Access access, unsigned set,
                    std::vector<py::object>& keep) {
    CheckedNumpy c = check_numpy(std::move(arr), name, access, set, keep);
    const auto* proxy = py::detail::array_proxy(c.array.ptr());
    ArrayArg a;
    a.data = proxy->data;
    a.shape.assign(proxy->dimensions, proxy->dimensions + proxy->nd);
    a.numel = 1;
    for (std::int64_t d : a.shape) a.numel *= d;
    a.dtype = c.dtype;
    a.memory = c.array;
    if (!(proxy->flags & py::detail::npy_api::NPY_ARRAY_C_CONTIGUOUS_)) {
        const auto item = static_cast<std::int64_t>(itemsize(c.dtype));
        a.strides.assign(proxy->strides, proxy->strides + proxy->nd);
        for (std::int64_t& st : a.strides) st /= item;
    }
    return a;
}

// The DLTensor inside a DLPack capsule (not taken yet), with its read-only flag.
const dl::DLTensor* capsule_tensor(PyObject* cap, const std::string& label, bool& readonly) {
    const char* name = PyCapsule_GetName(cap);
    if (name == nullptr) {
        PyErr_Clear();
        throw py::type_error(label + ": a PyCapsule without a name is not a DLPack tensor");
    }
    readonly = false;
    if (std::strcmp(name, dl::kCapsuleName) == 0) {
        auto* m = static_cast<dl::DLManagedTensor*>(PyCapsule_GetPointer(cap, name));
        if (m == nullptr) {
            PyErr_Clear();
            throw py::value_error(label + ": DLPack capsule holds a null pointer");
        }
        return &m->dl_tensor;
    }
    if (std::strcmp(name, dl::kVersionedCapsuleName) == 0) {
        auto* v = static_cast<dl::DLManagedTensorVersioned*>(PyCapsule_GetPointer(cap, name));
        if (v == nullptr) {
            PyErr_Clear();
            throw py::value_error(label + ": DLPack capsule holds a null pointer");
        }
        if (v->version.major != dl::kMajorVersion) {
            throw py::value_error(label + ": DLPack ABI version " + std::to_string(v->version.major) + "." +
                                  std::to_string(v->version.minor) + " is not supported (gradcore reads 1.x)");
        }
        readonly = (v->flags & dl::kFlagReadOnly) != 0;
        return &v->dl_tensor;
    }
    if (std::strcmp(name, dl::kUsedCapsuleName) == 0 || std::strcmp(name, dl::kUsedVersionedCapsuleName) == 0) {
        throw py::value_error(label + ": this DLPack capsule was already consumed");
    }
    throw py::type_error(label + ": PyCapsule '" + name +
                         "' is not a DLPack tensor (expected 'dltensor' or 'dltensor_versioned')");
}

Device capsule_device(const dl::DLTensor& t, const std::string& label) {
    const std::int32_t type = t.device.device_type;
    if (type == dl::kDLCPU || type == dl::kDLCUDAHost) return {};
    if (type == dl::kDLCUDA || type == dl::kDLCUDAManaged) {
        if (t.device.device_id < 0) {
            throw py::value_error(label + ": invalid device id " + std::to_string(t.device.device_id));
        }
        return {Device::cuda, t.device.device_id};
    }
    throw py::value_error(label + ": on " + std::string(dl::device_type_name(type)) +
                          ", expected host memory or a CUDA device array");
}

Raw capsule_raw(const dl::DLTensor& t, bool readonly, const std::string& label) {
    if (t.ndim < 0) throw py::value_error(label + ": negative ndim " + std::to_string(t.ndim));
    if (t.ndim > 0 && t.shape == nullptr) throw py::value_error(label + ": DLPack tensor without a shape");
    Raw r;
    r.shape.assign(t.shape, t.shape + t.ndim);
    if (t.strides != nullptr) r.strides.assign(t.strides, t.strides + t.ndim);
    r.dtype = dlpack_dtype(t.dtype);
    r.dtype_name = dlpack_dtype_name(t.dtype);
    r.data = t.data == nullptr ? nullptr : static_cast<char*>(t.data) + t.byte_offset;
    r.readonly = readonly;
    return r;
}

std::int64_t to_int64(py::handle o, const std::string& label, const char* what) {
    if (!PyLong_Check(o.ptr())) throw py::type_error(label + ": " + what + " must be an int, got " + type_name(o));
    const long long v = PyLong_AsLongLong(o.ptr());
    if (v == -1 && PyErr_Occurred()) {
        PyErr_Clear();
        throw py::value_error(label + ": " + what + " is out of range");
    }
    return v;
}

std::vector<std::int64_t> int_tuple(py::handle o, const std::string& label, const char* what) {
    if (!PySequence_Check(o.ptr())) {
        throw py::type_error(label + ": " + what + " must be a sequence of ints, got " + type_name(o));
    }
    std::vector<std::int64_t> out;
    for (py::handle item : py::reinterpret_borrow<py::sequence>(o)) out.push_back(to_int64(item, label, what));
    return out;
}

// __cuda_array_interface__ (v2/v3): strides in bytes; a v3 producer may name the
// stream its pending work is on.
Raw cai_raw(py::handle obj, const std::string& label, std::optional<std::uintptr_t>& wait) {
    Raw r;
    py::dict d;
    py::object ptr;
    try {
        d = obj.attr("__cuda_array_interface__");
        r.shape = int_tuple(d["shape"], label, "shape");
        const py::tuple data = d["data"];
        ptr = data[0];
        r.readonly = py::bool_(data[1]);
        r.dtype = typestr_dtype(py::str(d["typestr"]).cast<std::string>(), r.dtype_name);
    } catch (const py::error_already_set& e) {
        throw py::type_error(label + ": unreadable __cuda_array_interface__ (" + exception_text(e) + ")");
    } catch (const py::cast_error& e) {
        throw py::type_error(label + ": unreadable __cuda_array_interface__ (" + std::string(e.what()) + ")");
    }
    if (d.contains("mask") && !d["mask"].is_none()) {
        throw py::value_error(label + ": masked arrays (__cuda_array_interface__ 'mask') are not supported");
    }
    r.data = ptr.is_none() ? nullptr : reinterpret_cast<void*>(static_cast<std::uintptr_t>(ptr.cast<unsigned long long>()));
    if (d.contains("strides") && !d["strides"].is_none()) {
        r.strides = int_tuple(d["strides"], label, "strides");
        r.stride_unit = 0;
    }
    const int version = d.contains("version") ? d["version"].cast<int>() : 0;
    if (version >= 3 && d.contains("stream") && !d["stream"].is_none()) {
        wait = static_cast<std::uintptr_t>(d["stream"].cast<unsigned long long>());
    }
    return r;
}

}  // namespace

namespace {

// A DLTensor in host memory as a NumPy view (its base keeps the capsule, and with it the
// producer's memory, alive), so that host arrays of every kind pass read_numpy's checks.
// The capsule is left for its own destructor to release, after the view is gone.
py::array host_view(const dl::DLTensor& t, bool readonly, py::handle capsule, const std::string& label,
                    unsigned set) {
    Raw r = capsule_raw(t, readonly, label);
    check_dtype(r, label, set);
    const std::int64_t numel = checked_numel(r.shape, label);
    const std::int64_t size = itemsize(*r.dtype);
    std::vector<py::ssize_t> shape(r.shape.begin(), r.shape.end()), strides(r.shape.size());
    if (r.strides.empty()) {
        py::ssize_t s = size;
        for (std::size_t d = shape.size(); d-- > 0;) {
            strides[d] = s;
            s *= shape[d];
        }
    } else {
        for (std::size_t d = 0; d < shape.size(); ++d) strides[d] = r.strides[d] * size;
    }
    if (numel > 0 && r.data == nullptr) throw py::value_error(label + ": null data pointer");
    py::array view(numpy_dtype_of(*r.dtype), shape, strides, r.data, capsule);
    if (readonly) view.attr("setflags")(py::arg("write") = false);
    return view;
}

// obj.__dlpack__(stream=..., max_version=(1, 1)), falling back to the keywords a producer
// from before DLPack 1.0 knows. A tensor that requires grad is exported detached.
py::object export_dlpack(py::handle obj, std::optional<void*> stream) {
    auto call = [&](py::handle o) -> py::object {
        py::dict kw;
        if (stream) {
            const auto s = reinterpret_cast<std::uintptr_t>(*stream);
            kw["stream"] = py::int_(s == 0 ? 1 : s);  // DLPack: 1 is the legacy default stream
        }
        kw["max_version"] = py::make_tuple(1, 1);
        try {
            return o.attr("__dlpack__")(**kw);
        } catch (const py::error_already_set& e) {
            if (!e.matches(PyExc_TypeError)) throw;
        }
        kw.attr("pop")("max_version");
        return o.attr("__dlpack__")(**kw);
    };
    try {
        return call(obj);
    } catch (const py::error_already_set&) {
        if (!(has_attr(obj, "requires_grad") && py::bool_(obj.attr("requires_grad")) && has_attr(obj, "detach"))) throw;
    }
    return call(obj.attr("detach")());
}

// NumPy's conversion of anything else (the buffer protocol, __array__, nested lists). For
// in-place use the result must share memory with the object: a copy would drop the update.
py::array convert_host(py::handle obj, const std::string& label, Access access) {
    static py::object* asarray = new py::object(py::module_::import("numpy").attr("asarray"));
    const auto failed = [&](const py::error_already_set& e) {
        return py::type_error(label + ": cannot convert " + type_name(obj) + " to an array (" + exception_text(e) +
                              ")");
    };
    // NumPy raises ValueError for ragged nested lists and NotImplementedError for some
    // multi-dimensional memoryviews: all of them name the argument.
    const auto conversion_error = [](const py::error_already_set& e) {
        return e.matches(PyExc_TypeError) || e.matches(PyExc_ValueError) || e.matches(PyExc_NotImplementedError);
    };
    if (access == Access::write) {
        PyObject* mv = PyMemoryView_FromObject(obj.ptr());
        if (mv != nullptr) {
            const py::object view = py::reinterpret_steal<py::object>(mv);
            try {
                return (*asarray)(view);
            } catch (const py::error_already_set& e) {
                if (!conversion_error(e)) throw;
            }
        } else {
            PyErr_Clear();
        }
        py::array arr;
        try {
            arr = (*asarray)(obj);
        } catch (const py::error_already_set& e) {
            if (!conversion_error(e)) throw;
            throw failed(e);
        }
        if (arr.owndata()) {
            throw py::type_error(label + ": " + type_name(obj) +
                                 " cannot be modified in place (converting it to an array would copy); pass a "
                                 "NumPy array or an object exposing its memory through DLPack or the buffer "
                                 "protocol");
        }
        return arr;
    }
    try {
        return (*asarray)(obj);
    } catch (const py::error_already_set& e) {
        if (!conversion_error(e)) throw;
        throw failed(e);
    }
}

}  // namespace

void Call::note_device(Device d, const std::string& label, py::handle obj, bool convertible) {
    Impl& c = *impl_;
    if (d.is_cuda() && c.cpu_only) {
        throw py::type_error(label + " is a CUDA device array (on " + device_text(d) +
                             "), which this function does not take: it runs on the CPU (see gradcore.cuda for "
                             "the functions that run on the GPU)");
    }
    if (!c.have_lead) {
        c.have_lead = true;
        c.lead_label = label;
        if (d.index >= 0) c.device_label = label;
        c.lead = py::reinterpret_borrow<py::object>(obj);
        device_ = d;
        return;
    }
    if (d.is_cuda() != device_.is_cuda()) {
        if (d.is_cuda()) {
            throw py::value_error(label + " is on " + device_text(d) + " but " + c.lead_label +
                                  " is a CPU array; pass all arrays on one device");
        }
        const std::string what = convertible ? "a CPU array" : "not a CUDA device array (got " + type_name(obj) + ")";
        throw py::value_error(label + " is " + what + " but " + c.lead_label + " is on cuda:" +
                              std::to_string(cuda_device()) + "; pass all arrays on one device");
    }
    if (d.is_cuda() && d.index >= 0) {
        if (device_.index < 0) {
            device_.index = d.index;
            c.device_label = label;
        } else if (d.index != device_.index) {
            throw py::value_error(label + " is on cuda:" + std::to_string(d.index) + " but " + c.device_label +
                                  " is on cuda:" + std::to_string(device_.index));
        }
    }
}

ArrayArg Call::read(py::handle obj, const Label& name, Access access, DTypes dtypes) {
    Impl& c = *impl_;
    if (py::isinstance<py::array>(obj) && !(c.have_lead && device_.is_cuda())) {
        // The common case, NumPy arrays on the CPU: no message is built unless one is raised.
        if (!c.have_lead) note_device(Device{}, name.str(), obj, true);
        ArrayArg a = read_numpy(py::reinterpret_borrow<py::array>(obj), name, access, dtypes.cpu, c.keep);
        a.object = a.memory;
        if (a.memory.ptr() != obj.ptr()) a.object = py::reinterpret_borrow<py::object>(obj);
        return a;
    }
    const std::string label = name.str();
    Found f = find(obj);
    bool readonly = false;
    const dl::DLTensor* tensor = nullptr;
    if (f.kind == Found::capsule) {
        tensor = capsule_tensor(obj.ptr(), label, readonly);
        f.device = capsule_device(*tensor, label);
    }
    if (f.kind == Found::dlpack && has_attr(obj, "is_neg") && py::bool_(obj.attr("is_neg")())) {
        // torch exports such a view as its memory, which holds the negated values.
        throw py::value_error(label + " has its negative bit set; call .resolve_neg() first");
    }
    const bool convertible = f.kind != Found::other || has_attr(obj, "__array__");
    note_device(f.device, label, obj, convertible);
    if (f.device.is_cuda() && f.device.index < 0 && device_.index >= 0) f.device.index = device_.index;

    ArrayArg a;
    if (!f.device.is_cuda()) {
        py::array host;
        switch (f.kind) {
            case Found::numpy: host = py::reinterpret_borrow<py::array>(obj); break;
            case Found::capsule: host = host_view(*tensor, readonly, obj, label, dtypes.cpu); break;
            case Found::dlpack: {
                py::object cap;
                try {
                    cap = export_dlpack(obj, std::nullopt);
                } catch (const py::error_already_set& e) {
                    if (access == Access::write) {
                        throw py::type_error(label + ": cannot view " + type_name(obj) +
                                             " memory through DLPack for in-place use (" + exception_text(e) + ")");
                    }
                    host = convert_host(obj, label, access);  // e.g. __array__ of a producer DLPack refuses
                    break;
                }
                const dl::DLTensor* t = capsule_tensor(cap.ptr(), label, readonly);
                capsule_device(*t, label);
                host = host_view(*t, readonly, cap, label, dtypes.cpu);
                break;
            }
            default: host = convert_host(obj, label, access); break;
        }
        a = read_numpy(host, name, access, dtypes.cpu, c.keep);
        if (host.ptr() != obj.ptr()) c.keep.push_back(host);
    } else {
        void* stream = c.cuda_stream(c.lead, cuda_device());
        py::object cap;
        Raw raw;
        switch (f.kind) {
            case Found::capsule: cap = py::reinterpret_borrow<py::object>(obj); break;
            case Found::dlpack:
                try {
                    cap = export_dlpack(obj, stream);
                } catch (const py::error_already_set& e) {
                    throw py::type_error(label + ": cannot export " + type_name(obj) + " through DLPack (" +
                                         exception_text(e) + ")");
                }
                if (!PyCapsule_CheckExact(cap.ptr())) {
                    throw py::type_error(label + ": " + type_name(obj) + ".__dlpack__() did not return a capsule");
                }
                break;
            default: {
                std::optional<std::uintptr_t> wait;
                raw = cai_raw(obj, label, wait);
                if (wait) c.waits.push_back(*wait);
                break;
            }
        }
        if (cap) {
            tensor = capsule_tensor(cap.ptr(), label, readonly);
            const Device d = capsule_device(*tensor, label);
            if (!d.is_cuda()) {
                throw py::value_error(label + ": on cpu, expected a CUDA device array");
            }
            note_device(d, label, obj, true);
            raw = capsule_raw(*tensor, readonly, label);
        }
        const bool strided = !raw.strides.empty() && raw.dtype &&
                             !c_contiguous(raw.shape, raw.strides, raw.stride_unit == 0 ? itemsize(*raw.dtype) : 1,
                                           checked_numel(raw.shape, label));
        if (strided && access != Access::write && f.kind != Found::capsule) {
            // Inputs are made contiguous on the device, as the CPU path copies.
            const py::object copy = device_memory("contiguous")(obj);
            if (!copy.is_none()) {
                c.keep.push_back(copy);
                ArrayArg contiguous = read(copy, name, access, dtypes);
                contiguous.object = py::reinterpret_borrow<py::object>(obj);
                contiguous.memory = copy;
                return contiguous;
            }
        }
        a = read_device_raw(std::move(raw), label, access, dtypes.cuda, f.device.index >= 0 ? f.device : device_);
        if (cap) c.pending.push_back(cap);
    }
    a.device = f.device.is_cuda() ? device_ : Device{};
    a.object = py::reinterpret_borrow<py::object>(obj);
    if (!a.memory) a.memory = a.object;
    return a;
}

ArrayArg Call::array(py::handle obj, const char* name, Access access, DTypes dtypes) {
    return read(obj, Label{name}, access, dtypes);
}

std::optional<ArrayArg> Call::optional(py::handle obj, const char* name, Access access, DTypes dtypes) {
    if (obj.is_none()) return std::nullopt;
    return read(obj, Label{name}, access, dtypes);
}

ArrayList Call::list(py::handle arg, const char* name, Access access, DTypes dtypes, Keep keep) {
    ArrayList out;
    PyObject* o = arg.ptr();
    if (PyList_Check(o) || PyTuple_Check(o)) {
        out.sequence = py::reinterpret_borrow<py::object>(arg);
    } else if (is_one_array(arg)) {
        py::list one;
        one.append(arg);
        out.sequence = one;
    } else if (PyUnicode_Check(o) || PyBytes_Check(o) || !has_attr(arg, "__iter__")) {
        throw py::type_error(std::string(name) + " must be an array or a sequence of arrays, got " + type_name(arg));
    } else {
        PyObject* items = PySequence_List(arg.ptr());
        if (items == nullptr) throw py::error_already_set();
        out.sequence = py::reinterpret_steal<py::object>(items);
    }
    PyObject* seq = out.sequence.ptr();
    const bool is_list = PyList_Check(seq);
    const auto n = static_cast<std::size_t>(is_list ? PyList_GET_SIZE(seq) : PyTuple_GET_SIZE(seq));
    if (keep == Keep::arrays) out.arrays.reserve(n);
    out.views.reserve(n);
    for (std::size_t i = 0; i < n; ++i) {
        // A producer's export method may change the list: each item is held while it is read.
        const auto k = static_cast<Py_ssize_t>(i);
        if (is_list && k >= PyList_GET_SIZE(seq)) throw py::value_error(std::string(name) + " changed size while read");
        const py::object item = py::reinterpret_borrow<py::object>(is_list ? PyList_GET_ITEM(seq, k)
                                                                            : PyTuple_GET_ITEM(seq, k));
        const Label label{name, static_cast<long>(i)};
        if (keep == Keep::views && i > 0 && !on_cuda() && py::isinstance<py::array>(item)) {
            // Host lists of NumPy arrays, the common case: a view per array, nothing more.
            out.views.push_back(numpy_view(
                check_numpy(py::reinterpret_borrow<py::array>(item), label, access, dtypes.cpu, impl_->keep)));
            continue;
        }
        ArrayArg a = read(item, label, access, dtypes);
        out.views.push_back(a.view());
        if (keep == Keep::arrays) out.arrays.push_back(std::move(a));
    }
    return out;
}

ArrayArg Call::new_array(const std::vector<std::int64_t>& shape, DType dtype, const char* name) {
    if (on_cuda()) return device_array(shape, dtype, name);
    py::array out(numpy_dtype_of(dtype), std::vector<py::ssize_t>(shape.begin(), shape.end()));
    ArrayArg a;
    a.data = out.mutable_data();
    a.shape = shape;
    a.numel = static_cast<std::int64_t>(out.size());
    a.dtype = dtype;
    a.object = std::move(out);
    a.memory = a.object;
    return a;
}

ArrayArg Call::device_array(const std::vector<std::int64_t>& shape, DType dtype, const char* name, bool zeroed) {
    const py::object out = device_memory("empty")(impl_->lead, py::tuple(py::cast(shape)), dtype_name(dtype),
                                                 cuda_device(), impl_->function, zeroed);
    return read(out, Label{name}, Access::write, {0, bit(dtype)});
}

ArrayArg Call::device_scalar(double value, const char* name) {
    const py::object out = device_memory("full")(impl_->lead, value, cuda_device(), impl_->function);
    return read(out, Label{name}, Access::read, {0, bit(DType::float64)});
}

ArrayArg Call::device_float64(py::handle obj, const char* name) {
    const py::object converted = device_memory("float64")(obj);
    if (converted.ptr() != obj.ptr()) impl_->keep.push_back(converted);
    ArrayArg a = read(converted, Label{name}, Access::read, {0, bit(DType::float64)});
    if (a.numel != 1) {
        throw py::value_error(std::string(name) + " has " + std::to_string(a.numel) + " elements, expected 1");
    }
    return a;
}

cuda::Stream Call::stream() {
    Impl& c = *impl_;
    const cuda::Stream s{cuda_device(), c.cuda_stream(c.lead, cuda_device())};
    for (const py::object& cap : c.pending) c.owned.take(cap);
    c.pending.clear();
    for (std::uintptr_t producer : c.waits) cuda::stream_wait(s, reinterpret_cast<void*>(producer));
    c.waits.clear();
    return s;
}

}  // namespace gradcore::python
