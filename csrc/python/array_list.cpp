#include "array_list.hpp"
#include "ndarray_util.hpp"

#include <pybind11/stl.h>

#include <string>

namespace gradcore::python {
namespace {

std::string item_name(const char* name, std::size_t i) {
    return std::string(name) + "[" + std::to_string(i) + "]";
}

// Objects that are not NumPy arrays go through gradcore._convert, which knows DLPack,
// the buffer protocol and __array__, and which refuses to copy for in-place use.
py::array convert(py::handle item, const std::string& label, Access access) {
    // Leaked on purpose: a static py::object would be destroyed after the interpreter.
    static py::object* as_array = new py::object(py::module_::import("gradcore._convert").attr("as_array"));
    return (*as_array)(item, access == Access::write, label).cast<py::array>();
}

}  // namespace

ArrayList to_array_list(py::handle sequence, const char* name, Access access) {
    if (!PySequence_Check(sequence.ptr()) || PyUnicode_Check(sequence.ptr()) ||
        PyBytes_Check(sequence.ptr())) {
        throw py::type_error(std::string(name) + " must be a sequence of arrays, got " +
                             std::string(py::str(py::type::handle_of(sequence).attr("__name__"))));
    }
    const py::sequence seq = py::reinterpret_borrow<py::sequence>(sequence);
    const std::size_t n = seq.size();
    ArrayList out;
    out.views.reserve(n);
    out.arrays.reserve(n);
    for (std::size_t i = 0; i < n; ++i) {
        const py::object item = seq[i];
        py::array arr = py::isinstance<py::array>(item)
                            ? py::reinterpret_borrow<py::array>(item)
                            : convert(item, item_name(name, i), access);
        const py::dtype dt = arr.dtype();
        const int num = dt.num();
        DType dtype;
        if (num == kNpyFloat) {
            dtype = DType::float32;
        } else if (num == kNpyDouble) {
            dtype = DType::float64;
        } else if (num == kNpyHalf && access == Access::read) {
            dtype = DType::float16;
        } else {
            const char* wanted = access == Access::read ? "float16, float32 or float64"
                                                        : "float32 or float64";
            throw py::type_error(item_name(name, i) + ": dtype " + std::string(py::str(dt)) +
                                 " is not supported (expected " + wanted + ")");
        }
        if (!is_native_byte_order(arr)) {
            throw py::type_error(item_name(name, i) + ": dtype " + std::string(py::str(dt)) +
                                 " is not in native byte order");
        }
        if (!(arr.flags() & py::array::c_style)) {
            if (access == Access::write) {
                throw py::value_error(item_name(name, i) +
                                      " must be C-contiguous to be modified in place (shape " +
                                      std::string(py::str(py::tuple(py::cast(std::vector<py::ssize_t>(
                                          arr.shape(), arr.shape() + arr.ndim()))))) + ")");
            }
        }
        if (!is_aligned(arr) && access == Access::write) {
            throw py::value_error(item_name(name, i) + " is not aligned to its item size; in-place "
                                  "operations need aligned arrays");
        }
        arr = contiguous_input(arr);
        if (access == Access::write && !arr.writeable()) {
            throw py::value_error(item_name(name, i) + " is read-only; in-place operations need "
                                  "writeable arrays");
        }
        out.views.push_back({const_cast<void*>(arr.data()), static_cast<std::int64_t>(arr.size()), dtype});
        out.arrays.push_back(std::move(arr));
    }
    return out;
}

}  // namespace gradcore::python
