#include "array_arg.hpp"

#include <pybind11/stl.h>

#include <algorithm>
#include <cstring>
#include <limits>
#include <utility>

#include "parse_args.hpp"

namespace gradcore::python {
namespace {

namespace dl = dlpack;

// The message of the Python exception being handled.
std::string exception_text(const py::error_already_set& e) { return py::str(e.value()).cast<std::string>(); }

bool has_attr(py::handle obj, const char* name) {
    return PyObject_HasAttrString(obj.ptr(), name) == 1;  // false also when the attribute raises
}

// ---- dtypes ---------------------------------------------------------------------------

// NumPy's type numbers (stable across NumPy 1.x and 2.x) and flags.
constexpr int kNpyUShort = 4, kNpyHalf = 23, kNpyFloat = 11, kNpyDouble = 12, kNpyCFloat = 14, kNpyCDouble = 15;
constexpr int kNpyAligned = 0x0100;

// bfloat16 has no NumPy type number of its own: ml_dtypes registers one when imported
// (a number that varies), so its dtype is known by kind, size and name. Where ml_dtypes
// is not installed, host bfloat16 memory from DLPack (a torch tensor) is viewed through
// a uint16 dtype marked in its metadata; such a view stays inside the call.
const py::dtype& bfloat16_bits_dtype() {
    static const py::dtype* dt = new py::dtype(py::module_::import("numpy").attr("dtype")(
        "uint16", py::arg("metadata") = py::dict(py::arg("gradcore") = "bfloat16")));
    return *dt;
}

bool is_bfloat16(const py::dtype& dt) {
    if (dt.itemsize() != 2) return false;
    if (dt.kind() == 'V') return py::str(dt.attr("name")).cast<std::string>() == "bfloat16";
    if (dt.num() != kNpyUShort) return false;
    const py::object meta = dt.attr("metadata");
    return !meta.is_none() && meta.contains("gradcore");
}

// ml_dtypes.bfloat16 where ml_dtypes is installed (what NumPy users of bfloat16 have),
// else the marked uint16 dtype.
py::dtype numpy_bfloat16() {
    static const py::dtype* dt = [] {
        try {
            return new py::dtype(py::dtype::from_args(py::module_::import("ml_dtypes").attr("bfloat16")));
        } catch (const py::error_already_set&) {
            return new py::dtype(bfloat16_bits_dtype());
        }
    }();
    return *dt;
}

std::optional<DType> numpy_dtype(const py::dtype& dt) {
    switch (dt.num()) {
        case kNpyHalf: return DType::float16;
        case kNpyFloat: return DType::float32;
        case kNpyDouble: return DType::float64;
        case kNpyCFloat: return DType::complex64;
        case kNpyCDouble: return DType::complex128;
        default: break;
    }
    if (dt.kind() == 'i' && dt.itemsize() == 8) return DType::int64;
    if (is_bfloat16(dt)) return DType::bfloat16;
    return std::nullopt;
}

// NumPy-style name of a DLPack dtype ("float32", "int8", "complex64", "bool", ...).
std::string dlpack_dtype_name(const dl::DLDataType& t) {
    static constexpr const char* kCodes[] = {"int", "uint", "float", "opaque_handle", "bfloat", "complex", "bool"};
    std::string name = t.code < std::size(kCodes) ? kCodes[t.code] : "dlpack_type_code_" + std::to_string(t.code) + "_";
    if (!(t.code == dl::kDLBool && t.bits == 8)) name += std::to_string(t.bits);
    if (t.lanes != 1) name += "x" + std::to_string(t.lanes);
    return name;
}

std::optional<DType> dlpack_dtype(const dl::DLDataType& t) {
    if (t.lanes != 1) return std::nullopt;
    if (t.code == dl::kDLFloat && t.bits == 16) return DType::float16;
    if (t.code == dl::kDLFloat && t.bits == 32) return DType::float32;
    if (t.code == dl::kDLFloat && t.bits == 64) return DType::float64;
    if (t.code == dl::kDLBfloat && t.bits == 16) return DType::bfloat16;
    if (t.code == dl::kDLInt && t.bits == 64) return DType::int64;
    if (t.code == dl::kDLComplex && t.bits == 64) return DType::complex64;
    if (t.code == dl::kDLComplex && t.bits == 128) return DType::complex128;
    return std::nullopt;
}

// "float16, float32 or float64".
std::string dtype_list(unsigned set) {
    static const DType order[] = {DType::float16,   DType::bfloat16,  DType::float32,   DType::float64,
                                  DType::complex64, DType::complex128, DType::int64};
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

[[noreturn]] void unsupported_dtype(const std::string& label, const std::string& name, unsigned set) {
    throw py::type_error(label + ": dtype " + name + " is not supported (expected " + dtype_list(set) + ")");
}

// ---- shapes ---------------------------------------------------------------------------

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
                  std::int64_t unit) {
    if (std::find(shape.begin(), shape.end(), 0) != shape.end()) return true;
    std::int64_t expected = unit;
    for (std::size_t d = shape.size(); d-- > 0;) {
        if (shape[d] != 1 && strides[d] != expected) return false;
        expected *= shape[d];
    }
    return true;
}

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

// ---- NumPy ----------------------------------------------------------------------------

// The array to read (the caller's, or a copy appended to keep) and its dtype.
std::pair<py::array, DType> checked_numpy(py::array arr, const Label& label, Access access, unsigned set,
                                          std::vector<py::object>& keep) {
    // The array's fields read directly (this runs once per array of every list); no
    // message is built unless one is raised.
    const auto* proxy = py::detail::array_proxy(arr.ptr());
    const auto* descr = py::detail::array_descriptor_proxy(proxy->descr);
    const std::optional<DType> t = numpy_dtype(arr.dtype());
    if (!t || !(set & bit(*t))) unsupported_dtype(label.str(), py::str(arr.dtype()), set);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    const bool native = descr->byteorder != '<';
#else
    const bool native = descr->byteorder != '>';
#endif
    const int flags = proxy->flags;
    const bool contiguous = (flags & py::detail::npy_api::NPY_ARRAY_C_CONTIGUOUS_) != 0;
    const bool aligned = (flags & kNpyAligned) != 0 || arr.size() == 0;
    if (access == Access::write) {
        if (!native) {
            throw py::type_error(label.str() + ": dtype " + std::string(py::str(arr.dtype())) +
                                 " is not in native byte order");
        }
        if (!contiguous) {
            throw py::value_error(label.str() + " must be C-contiguous to be modified in place (shape " +
                                  shape_str({arr.shape(), arr.shape() + arr.ndim()}) + ")");
        }
        if (!aligned) {
            throw py::value_error(label.str() +
                                  " is not aligned to its item size; in-place operations need aligned arrays");
        }
        if (!(flags & py::detail::npy_api::NPY_ARRAY_WRITEABLE_)) {
            throw py::value_error(label.str() + " is read-only; in-place operations need writeable arrays");
        }
    } else if (!native || !aligned || (!contiguous && access == Access::read)) {
        // A copy in native order; bfloat16 keeps its own dtype (its bits are copied, and
        // the marked uint16 view must not be converted as integers).
        arr = arr.attr("astype")(*t == DType::bfloat16 ? arr.dtype() : numpy_dtype_of(*t), py::arg("order") = "C");
        keep.push_back(arr);
    }
    return {std::move(arr), *t};
}

std::int64_t numel_of(const py::detail::PyArray_Proxy* proxy) {
    std::int64_t n = 1;
    for (int d = 0; d < proxy->nd; ++d) n *= proxy->dimensions[d];
    return n;
}

// ---- DLPack ---------------------------------------------------------------------------

DeviceFields dltensor_fields(const dl::DLTensor& t, bool readonly, const std::string& label) {
    if (t.ndim < 0) throw py::value_error(label + ": negative ndim " + std::to_string(t.ndim));
    if (t.ndim > 0 && t.shape == nullptr) throw py::value_error(label + ": DLPack tensor without a shape");
    DeviceFields f;
    f.shape.assign(t.shape, t.shape + t.ndim);
    if (t.strides != nullptr) f.strides.assign(t.strides, t.strides + t.ndim);
    f.dtype = dlpack_dtype(t.dtype);
    f.dtype_name = dlpack_dtype_name(t.dtype);
    f.data = t.data == nullptr ? nullptr : static_cast<char*>(t.data) + t.byte_offset;
    f.readonly = readonly;
    return f;
}

// A DLTensor in host memory as a NumPy view (its base keeps the capsule, and with it the
// producer's memory, alive), so that host arrays of every kind pass read_numpy's checks.
// The capsule is left for its own destructor to release, after the view is gone.
py::array numpy_view_of(const CapsuleTensor& t, py::handle capsule, const std::string& label, unsigned set) {
    const DeviceFields f = dltensor_fields(*t.tensor, t.readonly, label);
    if (!f.dtype || !(set & bit(*f.dtype))) unsupported_dtype(label, f.dtype_name, set);
    const std::int64_t numel = checked_numel(f.shape, label), size = itemsize(*f.dtype);
    std::vector<py::ssize_t> shape(f.shape.begin(), f.shape.end()), strides(f.shape.size());
    py::ssize_t s = size;
    for (std::size_t d = shape.size(); d-- > 0;) {
        strides[d] = f.strides.empty() ? s : f.strides[d] * size;
        s *= shape[d];
    }
    if (numel > 0 && f.data == nullptr) throw py::value_error(label + ": null data pointer");
    py::array view(numpy_dtype_of(*f.dtype), shape, strides, f.data, capsule);
    if (t.readonly) view.attr("setflags")(py::arg("write") = false);
    return view;
}

// NumPy's conversion of anything else (the buffer protocol, __array__, nested lists). For
// in-place use the result must share memory with the object: a copy would drop the update.
py::array converted(py::handle obj, const std::string& label, Access access) {
    static py::object* asarray = new py::object(py::module_::import("numpy").attr("asarray"));
    py::array arr;
    try {
        // A buffer first: some objects' __array__ copies what their buffer exposes.
        PyObject* view = access == Access::write ? PyMemoryView_FromObject(obj.ptr()) : nullptr;
        PyErr_Clear();
        arr = (*asarray)(view ? py::reinterpret_steal<py::object>(view) : py::reinterpret_borrow<py::object>(obj));
    } catch (const py::error_already_set& e) {
        // NumPy raises ValueError for ragged nested lists and NotImplementedError for
        // some multi-dimensional memoryviews: all of them name the argument.
        if (!(e.matches(PyExc_TypeError) || e.matches(PyExc_ValueError) || e.matches(PyExc_NotImplementedError))) {
            throw;
        }
        throw py::type_error(label + ": cannot convert " + type_name_of(obj) + " to an array (" + exception_text(e) +
                             ")");
    }
    if (access == Access::write && arr.owndata()) {
        throw py::type_error(label + ": " + type_name_of(obj) +
                             " cannot be modified in place (converting it to an array would copy); pass a NumPy "
                             "array or an object exposing its memory through DLPack or the buffer protocol");
    }
    return arr;
}

}  // namespace

// ---- the descriptor -------------------------------------------------------------------

py::dtype numpy_dtype_of(DType t) {
    // By type number: parsing the name costs as much as allocating a small array.
    switch (t) {
        case DType::float16: return py::dtype(kNpyHalf);
        case DType::float32: return py::dtype(kNpyFloat);
        case DType::float64: return py::dtype(kNpyDouble);
        case DType::complex64: return py::dtype(kNpyCFloat);
        case DType::complex128: return py::dtype(kNpyCDouble);
        case DType::int64: return py::dtype::of<std::int64_t>();
        case DType::bfloat16: return numpy_bfloat16();
        default: return py::dtype(std::string(dtype_name(t)));
    }
}

std::string Label::str() const {
    if (path) return py::reinterpret_borrow<py::str>(path).cast<std::string>();
    return index < 0 ? std::string(name) : std::string(name) + "[" + std::to_string(index) + "]";
}

std::string shape_str(const std::vector<std::int64_t>& shape) {
    std::string s = "(";
    for (std::size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
    return s + (shape.size() == 1 ? ",)" : ")");
}

bool ArrayArg::overlaps(const ArrayArg& other) const {
    // The byte range each may touch: from its lowest to its highest element.
    const auto range = [](const ArrayArg& a) {
        const auto item = static_cast<std::int64_t>(itemsize(a.dtype));
        std::int64_t low = 0, high = a.strides.empty() ? (a.numel - 1) * item : 0;
        for (std::size_t d = 0; d < a.strides.size(); ++d) {
            const std::int64_t span = (a.shape[d] - 1) * a.strides[d] * item;
            (span < 0 ? low : high) += span;
        }
        const auto base = reinterpret_cast<std::intptr_t>(a.data);
        return std::pair{base + low, base + high + item};
    };
    if (numel == 0 || other.numel == 0 || device.is_cuda() != other.device.is_cuda()) return false;
    const auto [a0, a1] = range(*this);
    const auto [b0, b1] = range(other);
    return a0 < b1 && b0 < a1;
}

// ---- the readers ----------------------------------------------------------------------

Found find(py::handle obj) {
    if (py::isinstance<py::array>(obj)) return {Found::numpy, {}};
    if (PyCapsule_CheckExact(obj.ptr())) return {Found::capsule, {}};
    const bool says_device = has_attr(obj, "__dlpack_device__");
    if (says_device && has_attr(obj, "__dlpack__")) return {Found::dlpack, dlpack_device(obj)};
    if (has_attr(obj, "__cuda_array_interface__")) {
        return {Found::cuda_array_interface, {Device::cuda, says_device ? dlpack_device(obj).index : -1}};
    }
    return {Found::other, {}};
}

bool is_one_array(py::handle obj) {
    return py::isinstance<py::array>(obj) || PyMemoryView_Check(obj.ptr()) || PyCapsule_CheckExact(obj.ptr()) ||
           has_attr(obj, "__dlpack__") || has_attr(obj, "__array__") || has_attr(obj, "__cuda_array_interface__");
}

ArrayArg read_numpy(py::array arr, const Label& label, Access access, unsigned dtypes,
                    std::vector<py::object>& keep) {
    auto [checked, dtype] = checked_numpy(std::move(arr), label, access, dtypes, keep);
    const auto* proxy = py::detail::array_proxy(checked.ptr());
    ArrayArg a;
    a.data = proxy->data;
    a.shape.assign(proxy->dimensions, proxy->dimensions + proxy->nd);
    a.numel = numel_of(proxy);
    a.dtype = dtype;
    if (!(proxy->flags & py::detail::npy_api::NPY_ARRAY_C_CONTIGUOUS_)) {
        const auto item = static_cast<std::int64_t>(itemsize(dtype));
        for (int d = 0; d < proxy->nd; ++d) a.strides.push_back(proxy->strides[d] / item);
    }
    a.memory = std::move(checked);
    return a;
}

TensorView numpy_view(py::array arr, const Label& label, Access access, unsigned dtypes,
                      std::vector<py::object>& keep) {
    const auto [checked, dtype] = checked_numpy(std::move(arr), label, access, dtypes, keep);
    const auto* proxy = py::detail::array_proxy(checked.ptr());
    return {proxy->data, numel_of(proxy), dtype};
}

CapsuleTensor capsule_tensor(py::handle capsule, const std::string& label) {
    PyObject* cap = capsule.ptr();
    const char* name = PyCapsule_GetName(cap);
    if (name == nullptr) {
        PyErr_Clear();
        throw py::type_error(label + ": a PyCapsule without a name is not a DLPack tensor");
    }
    const bool versioned = std::strcmp(name, dl::kVersionedCapsuleName) == 0;
    if (!versioned && std::strcmp(name, dl::kCapsuleName) != 0) {
        if (std::strcmp(name, dl::kUsedCapsuleName) == 0 || std::strcmp(name, dl::kUsedVersionedCapsuleName) == 0) {
            throw py::value_error(label + ": this DLPack capsule was already consumed");
        }
        throw py::type_error(label + ": PyCapsule '" + name +
                             "' is not a DLPack tensor (expected 'dltensor' or 'dltensor_versioned')");
    }
    void* p = PyCapsule_GetPointer(cap, name);
    if (p == nullptr) {
        PyErr_Clear();
        throw py::value_error(label + ": DLPack capsule holds a null pointer");
    }
    CapsuleTensor t{nullptr, {}, false};
    if (versioned) {
        const auto* v = static_cast<dl::DLManagedTensorVersioned*>(p);
        if (v->version.major != dl::kMajorVersion) {
            throw py::value_error(label + ": DLPack ABI version " + std::to_string(v->version.major) + "." +
                                  std::to_string(v->version.minor) + " is not supported (gradcore reads 1.x)");
        }
        t = {&v->dl_tensor, {}, (v->flags & dl::kFlagReadOnly) != 0};
    } else {
        t.tensor = &static_cast<dl::DLManagedTensor*>(p)->dl_tensor;
    }
    const dl::DLDevice d = t.tensor->device;
    if (d.device_type == dl::kDLCUDA || d.device_type == dl::kDLCUDAManaged) {
        if (d.device_id < 0) throw py::value_error(label + ": invalid device id " + std::to_string(d.device_id));
        t.device = {Device::cuda, d.device_id};
    } else if (d.device_type != dl::kDLCPU && d.device_type != dl::kDLCUDAHost) {
        throw py::value_error(label + ": on " + std::string(dl::device_type_name(d.device_type)) +
                              ", expected host memory or a CUDA device array");
    }
    return t;
}

py::object export_dlpack(py::handle obj, const std::string& label, std::optional<void*> stream) {
    // max_version=(1, 1) first, then the keywords a producer from before DLPack 1.0 knows.
    const auto call = [&](py::handle o) -> py::object {
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
    py::object cap;
    try {
        cap = call(obj);
    } catch (const py::error_already_set&) {
        // A tensor that requires grad is exported detached.
        if (!(has_attr(obj, "requires_grad") && py::bool_(obj.attr("requires_grad")) && has_attr(obj, "detach"))) {
            throw;
        }
        cap = call(obj.attr("detach")());
    }
    if (!PyCapsule_CheckExact(cap.ptr())) {
        throw py::type_error(label + ": " + type_name_of(obj) + ".__dlpack__() did not return a capsule");
    }
    return cap;
}

py::array host_array(py::handle obj, const Found& found, const Label& name, Access access, unsigned dtypes) {
    const std::string label = name.str();
    switch (found.kind) {
        case Found::numpy: return py::reinterpret_borrow<py::array>(obj);
        case Found::capsule: return numpy_view_of(capsule_tensor(obj, label), obj, label, dtypes);
        case Found::dlpack: {
            py::object cap;
            try {
                cap = export_dlpack(obj, label, std::nullopt);
            } catch (const py::error_already_set& e) {
                if (access == Access::write) {
                    throw py::type_error(label + ": cannot view " + type_name_of(obj) +
                                         " memory through DLPack for in-place use (" + exception_text(e) + ")");
                }
                return converted(obj, label, access);  // e.g. the __array__ of a producer DLPack refuses
            }
            return numpy_view_of(capsule_tensor(cap, label), cap, label, dtypes);
        }
        default: return converted(obj, label, access);
    }
}

bool DeviceFields::contiguous() const {
    if (strides.empty() || !dtype) return true;
    return c_contiguous(shape, strides, strides_in_bytes ? itemsize(*dtype) : 1);
}

DeviceFields capsule_fields(const CapsuleTensor& t, const std::string& label) {
    if (!t.device.is_cuda()) throw py::value_error(label + ": on cpu, expected a CUDA device array");
    return dltensor_fields(*t.tensor, t.readonly, label);
}

// __cuda_array_interface__ (v2/v3): strides in bytes; a v3 producer may name the
// stream its pending work is on.
DeviceFields cuda_array_interface_fields(py::handle obj, const std::string& label) {
    DeviceFields f;
    py::dict d;
    try {
        d = obj.attr("__cuda_array_interface__");
        if (d.contains("mask") && !d["mask"].is_none()) {
            throw py::value_error(label + ": masked arrays (__cuda_array_interface__ 'mask') are not supported");
        }
        f.shape = d["shape"].cast<std::vector<std::int64_t>>();
        const py::tuple data = d["data"];
        f.data = data[0].is_none() ? nullptr : reinterpret_cast<void*>(data[0].cast<std::uintptr_t>());
        f.readonly = py::bool_(data[1]);
        if (d.contains("strides") && !d["strides"].is_none()) {
            f.strides = d["strides"].cast<std::vector<std::int64_t>>();
            f.strides_in_bytes = true;
        }
        const int version = d.contains("version") ? d["version"].cast<int>() : 0;
        if (version >= 3 && d.contains("stream") && !d["stream"].is_none()) f.stream = d["stream"].cast<std::uintptr_t>();
        // The typestr ("<f4") read by NumPy; messages name what NumPy calls it.
        f.dtype_name = py::str(d["typestr"]);
        py::dtype dt;
        try {
            dt = py::dtype(f.dtype_name);
        } catch (const py::error_already_set&) {
            return f;  // not a dtype: refused by read_device under its own name
        }
        if (!dt.attr("isnative").cast<bool>()) {
            f.dtype_name += " (non-native byte order)";
        } else {
            f.dtype_name = dt.attr("name").cast<std::string>();
            f.dtype = numpy_dtype(dt);
        }
    } catch (const py::error_already_set& e) {
        throw py::type_error(label + ": unreadable __cuda_array_interface__ (" + exception_text(e) + ")");
    } catch (const py::cast_error& e) {
        throw py::type_error(label + ": unreadable __cuda_array_interface__ (" + std::string(e.what()) + ")");
    }
    return f;
}

ArrayArg read_device(DeviceFields f, const std::string& label, Access access, unsigned dtypes) {
    if (!f.dtype || !(dtypes & bit(*f.dtype))) unsupported_dtype(label, f.dtype_name, dtypes);
    ArrayArg a;
    a.dtype = *f.dtype;
    a.numel = checked_numel(f.shape, label);
    if (!f.strides.empty() && f.strides.size() != f.shape.size()) {
        throw py::value_error(label + ": " + std::to_string(f.strides.size()) + " strides for shape " +
                              shape_str(f.shape));
    }
    if (!f.contiguous()) {
        throw py::value_error(label + " must be C-contiguous (shape " + shape_str(f.shape) + ", strides " +
                              shape_str(f.strides) + (f.strides_in_bytes ? " bytes" : " elements") +
                              "); gradcore's device functions read and write C-contiguous memory");
    }
    if (a.numel > 0) {
        if (f.data == nullptr) throw py::value_error(label + ": null data pointer");
        if (reinterpret_cast<std::uintptr_t>(f.data) % static_cast<std::uintptr_t>(itemsize(a.dtype)) != 0) {
            throw py::value_error(label + ": data pointer is not aligned to its item size (" +
                                  std::to_string(itemsize(a.dtype)) + " bytes)");
        }
    }
    if (access == Access::write && f.readonly) {
        throw py::value_error(label + " is read-only; in-place operations need writeable arrays");
    }
    a.data = f.data;
    a.shape = std::move(f.shape);
    return a;
}

// ---- the rules ------------------------------------------------------------------------

void require_ndim(const ArrayArg& a, const char* name, std::size_t ndim) {
    if (a.shape.size() != ndim) {
        throw py::value_error(std::string(name) + " must be " + std::to_string(ndim) + "-D, got shape " +
                              shape_str(a.shape));
    }
}

void require_shape(const ArrayArg& a, const char* name, const std::vector<std::int64_t>& shape) {
    if (a.shape != shape) {
        throw py::value_error(std::string(name) + " has shape " + shape_str(a.shape) + ", expected " +
                              shape_str(shape));
    }
}

void same_dtype(const ArrayArg& a, const char* a_name, const ArrayArg& b, const char* b_name) {
    if (a.dtype != b.dtype) {
        throw py::type_error(std::string(a_name) + " and " + b_name + " must have the same dtype, got " +
                             dtype_name(a.dtype) + " and " + dtype_name(b.dtype));
    }
}

void same_shapes(const std::vector<ArrayArg>& a, const char* a_name, const std::vector<ArrayArg>& b,
                 const char* b_name) {
    if (a.size() != b.size()) {
        throw py::value_error(std::string(a_name) + " and " + b_name + " must have the same length, got " +
                              std::to_string(a.size()) + " and " + std::to_string(b.size()));
    }
    for (std::size_t i = 0; i < a.size(); ++i) {
        if (a[i].shape != b[i].shape) {
            throw py::value_error(std::string(a_name) + "[" + std::to_string(i) + "] has shape " +
                                  shape_str(a[i].shape) + " but " + b_name + "[" + std::to_string(i) +
                                  "] has shape " + shape_str(b[i].shape));
        }
    }
}

}  // namespace gradcore::python
