#include "call.hpp"

#include <pybind11/stl.h>

#include <cstring>
#include <utility>

#include "parse_args.hpp"

namespace gradcore::python {
namespace {

namespace dl = dlpack;

std::string device_text(Device d) {
    if (!d.is_cuda()) return "cpu";
    return d.index < 0 ? "cuda" : "cuda:" + std::to_string(d.index);
}

bool says_negative(py::handle obj) {
    // torch exports such a view as its memory, which holds the negated values.
    return PyObject_HasAttrString(obj.ptr(), "is_neg") == 1 && py::bool_(obj.attr("is_neg")());
}

}  // namespace

py::object result_type(const char* name) { return py::module_::import("gradcore._types").attr(name); }

py::object device_memory(const char* name) { return py::module_::import("gradcore._device_memory").attr(name); }

Call::~Call() {
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

void* Call::cuda_stream() {
    if (!stream_) {
        const py::object s = device_memory("stream")(lead_, cuda_device());
        stream_ = reinterpret_cast<void*>(static_cast<std::uintptr_t>(s.cast<unsigned long long>()));
    }
    return *stream_;
}

void Call::note_device(Device d, const std::string& label, py::handle obj, bool convertible) {
    if (d.is_cuda() && cpu_only_) {
        throw py::type_error(label + " is a CUDA device array (on " + device_text(d) +
                             "), which this function does not take: it runs on the CPU (see gradcore.cuda for "
                             "the functions that run on the GPU)");
    }
    if (!lead_) {
        lead_ = py::reinterpret_borrow<py::object>(obj);
        lead_label_ = label;
        if (d.index >= 0) device_label_ = label;
        device_ = d;
        return;
    }
    if (d.is_cuda() != device_.is_cuda()) {
        if (d.is_cuda()) {
            throw py::value_error(label + " is on " + device_text(d) + " but " + lead_label_ +
                                  " is a CPU array; pass all arrays on one device");
        }
        const std::string what = convertible ? "a CPU array" : "not a CUDA device array (got " + type_name_of(obj) + ")";
        throw py::value_error(label + " is " + what + " but " + lead_label_ + " is on cuda:" +
                              std::to_string(cuda_device()) + "; pass all arrays on one device");
    }
    if (d.is_cuda() && d.index >= 0) {
        if (device_.index < 0) {
            device_.index = d.index;
            device_label_ = label;
        } else if (d.index != device_.index) {
            throw py::value_error(label + " is on cuda:" + std::to_string(d.index) + " but " + device_label_ +
                                  " is on cuda:" + std::to_string(device_.index));
        }
    }
}

ArrayArg Call::read(py::handle obj, const Label& name, Access access, DTypes dtypes) {
    if (py::isinstance<py::array>(obj) && !(lead_ && device_.is_cuda())) {
        // The common case, NumPy arrays on the CPU: no message is built unless one is raised.
        if (!lead_) note_device(Device{}, name.str(), obj, true);
        ArrayArg a = read_numpy(py::reinterpret_borrow<py::array>(obj), name, access, dtypes.cpu, keep_);
        a.object = py::reinterpret_borrow<py::object>(obj);
        return a;
    }
    const std::string label = name.str();
    Found found = find(obj);
    if (found.kind == Found::capsule) found.device = capsule_tensor(obj, label).device;
    if (found.kind == Found::dlpack && says_negative(obj)) {
        throw py::value_error(label + " has its negative bit set; call .resolve_neg() first");
    }
    note_device(found.device, label, obj, found.kind != Found::other || PyObject_HasAttrString(obj.ptr(), "__array__"));
    if (found.device.is_cuda()) return read_on_device(obj, found, name, access, dtypes);

    const py::array host = host_array(obj, found, name, access, dtypes.cpu);
    if (host.ptr() != obj.ptr()) keep_.push_back(host);
    ArrayArg a = read_numpy(host, name, access, dtypes.cpu, keep_);
    a.object = py::reinterpret_borrow<py::object>(obj);
    return a;
}

ArrayArg Call::read_on_device(py::handle obj, const Found& found, const Label& name, Access access, DTypes dtypes) {
    const std::string label = name.str();
    py::object cap;
    DeviceFields fields;
    if (found.kind == Found::cuda_array_interface) {
        fields = cuda_array_interface_fields(obj, label);
        if (fields.stream) waits_.push_back(*fields.stream);
    } else {
        cap = found.kind == Found::capsule ? py::reinterpret_borrow<py::object>(obj) : [&] {
            try {
                return export_dlpack(obj, label, cuda_stream());
            } catch (const py::error_already_set& e) {
                throw py::type_error(label + ": cannot export " + type_name_of(obj) + " through DLPack (" +
                                     py::str(e.value()).cast<std::string>() + ")");
            }
        }();
        const CapsuleTensor t = capsule_tensor(cap, label);
        fields = capsule_fields(t, label);
        note_device(t.device, label, obj, true);
    }
    if (!fields.contiguous() && access != Access::write && found.kind != Found::capsule) {
        // Inputs are made contiguous on the device, as the CPU path copies.
        const py::object copy = device_memory("contiguous")(obj);
        if (!copy.is_none()) {
            keep_.push_back(copy);
            ArrayArg a = read(copy, name, access, dtypes);
            a.object = py::reinterpret_borrow<py::object>(obj);
            return a;
        }
    }
    ArrayArg a = read_device(std::move(fields), label, access, dtypes.cuda);
    if (cap) pending_.push_back(cap);
    a.device = device_;
    a.object = py::reinterpret_borrow<py::object>(obj);
    a.memory = a.object;
    return a;
}

ArrayArg Call::array(py::handle obj, const char* name, Access access, DTypes dtypes) {
    return read(obj, Label{name}, access, dtypes);
}

std::optional<ArrayArg> Call::optional(py::handle obj, const char* name, Access access, DTypes dtypes) {
    if (obj.is_none()) return std::nullopt;
    return read(obj, Label{name}, access, dtypes);
}

namespace {

bool is_tree_node(PyObject* o) { return o == Py_None || PyList_Check(o) || PyTuple_Check(o) || PyDict_Check(o); }

// Whether a list argument is a tree: a dict, or a sequence with a None or a container in
// it (None itself is refused: as a whole argument it is more likely a mistake).
bool is_tree(PyObject* seq) {
    if (PyDict_Check(seq)) return true;
    const bool is_list = PyList_Check(seq);
    const Py_ssize_t n = is_list ? PyList_GET_SIZE(seq) : PyTuple_GET_SIZE(seq);
    for (Py_ssize_t i = 0; i < n; ++i) {
        if (is_tree_node(is_list ? PyList_GET_ITEM(seq, i) : PyTuple_GET_ITEM(seq, i))) return true;
    }
    return false;
}

}  // namespace

ArrayList Call::list(py::handle arg, const char* name, Access access, DTypes dtypes, Keep keep, const ArrayList* like) {
    ArrayList out{name};
    PyObject* o = arg.ptr();
    if (PyList_Check(o) || PyTuple_Check(o) || (trees_ && PyDict_Check(o))) {
        out.sequence = py::reinterpret_borrow<py::object>(arg);
    } else if (is_one_array(arg)) {
        py::list one;
        one.append(arg);
        out.sequence = one;
    } else if (PyUnicode_Check(o) || PyBytes_Check(o) || PyObject_HasAttrString(o, "__iter__") != 1) {
        throw py::type_error(std::string(name) + " must be an array or a sequence of arrays, got " + type_name_of(arg));
    } else {
        PyObject* items = PySequence_List(o);
        if (items == nullptr) throw py::error_already_set();
        out.sequence = py::reinterpret_steal<py::object>(items);
    }
    py::object leaves = out.sequence, paths;
    if (trees_ && ((like && like->tree) || is_tree(out.sequence.ptr()))) {
        // gradcore._pytree decides what a container and a leaf are; the paths name them.
        const py::module_ pytree = py::module_::import("gradcore._pytree");
        out.tree = like && like->tree ? pytree.attr("flatten_like")(out.sequence, like->tree, name, like->name)
                                      : pytree.attr("flatten")(out.sequence, name);
        leaves = out.tree.attr("leaves");
        paths = out.tree.attr("labels");
    }
    PyObject* seq = leaves.ptr();
    const bool is_list = PyList_Check(seq);
    const auto n = static_cast<std::size_t>(is_list ? PyList_GET_SIZE(seq) : PyTuple_GET_SIZE(seq));
    if (keep == Keep::arrays) out.arrays.reserve(n);
    out.views.reserve(n);
    for (std::size_t i = 0; i < n; ++i) {
        // A producer's export method may change the list: each item is held while it is read.
        const auto k = static_cast<Py_ssize_t>(i);
        if (is_list && k >= PyList_GET_SIZE(seq)) throw py::value_error(std::string(name) + " changed size while read");
        const py::object item =
            py::reinterpret_borrow<py::object>(is_list ? PyList_GET_ITEM(seq, k) : PyTuple_GET_ITEM(seq, k));
        const Label label{name, static_cast<long>(i), paths ? PyList_GET_ITEM(paths.ptr(), k) : nullptr};
        if (keep == Keep::views && i > 0 && !on_cuda() && py::isinstance<py::array>(item)) {
            // Host lists of NumPy arrays, the common case: a view per array, nothing more.
            out.views.push_back(numpy_view(py::reinterpret_borrow<py::array>(item), label, access, dtypes.cpu, keep_));
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
    const py::object out =
        device_memory("empty")(lead_, py::tuple(py::cast(shape)), dtype_name(dtype), cuda_device(), function_, zeroed);
    return read(out, Label{name}, Access::write, {0, bit(dtype)});
}

ArrayArg Call::device_scalar(double value, const char* name) {
    const py::object out = device_memory("full")(lead_, value, cuda_device(), function_);
    return read(out, Label{name}, Access::read, {0, bit(DType::float64)});
}

ArrayArg Call::device_float64(py::handle obj, const char* name) {
    const py::object converted = device_memory("float64")(obj);
    if (converted.ptr() != obj.ptr()) keep_.push_back(converted);
    ArrayArg a = read(converted, Label{name}, Access::read, {0, bit(DType::float64)});
    if (a.numel != 1) {
        throw py::value_error(std::string(name) + " has " + std::to_string(a.numel) + " elements, expected 1");
    }
    return a;
}

cuda::Stream Call::stream() {
    const cuda::Stream s{cuda_device(), cuda_stream()};
    // The same capsule twice in one call is taken once (the second is renamed already).
    for (const py::object& cap : pending_) {
        const char* name = PyCapsule_GetName(cap.ptr());
        const bool plain = name && std::strcmp(name, dl::kCapsuleName) == 0;
        const bool versioned = name && std::strcmp(name, dl::kVersionedCapsuleName) == 0;
        if ((plain || versioned) &&
            PyCapsule_SetName(cap.ptr(), plain ? dl::kUsedCapsuleName : dl::kUsedVersionedCapsuleName) == 0) {
            taken_.push_back(cap);
        }
        PyErr_Clear();
    }
    pending_.clear();
    for (std::uintptr_t producer : waits_) cuda::stream_wait(s, reinterpret_cast<void*>(producer));
    waits_.clear();
    return s;
}

}  // namespace gradcore::python
