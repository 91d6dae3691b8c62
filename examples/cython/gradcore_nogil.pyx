# cython: language_level=3, boundscheck=False, wraparound=False
"""A Cython consumer of gradcore: the kernels called through the C ABI (gradcore/c_api.pxd)
inside ``with nogil:`` blocks, so other Python threads run while they compute.

Build: ``python setup.py build_ext --inplace`` (see setup.py), then::

    import numpy as np, gradcore_nogil
    grads = [np.random.randn(1000).astype(np.float32), np.random.randn(10)]
    total = gradcore_nogil.clip_by_global_norm(grads, 1.0)
"""

from libc.stdlib cimport free, malloc

import numpy as np

from gradcore.c_api cimport (
    GC_FLOAT32, GC_FLOAT64, GC_NONFINITE, GC_OK, GC_PROPAGATE, GC_RELU, gc_clip_by_global_norm,
    gc_dense_forward, gc_last_error, gc_status, gc_tensor,
)


cdef int _raise(gc_status status) except -1:
    message = gc_last_error().decode()
    if status == GC_NONFINITE:
        raise FloatingPointError(message)
    raise ValueError(message)


def clip_by_global_norm(list arrays, double max_norm, double ord=2.0, double eps=1e-6):
    """Scale writeable, C-contiguous float32/float64 NumPy arrays in place by
    min(1, max_norm / (total + eps)); returns the total norm before clipping."""
    cdef Py_ssize_t n = len(arrays), i
    cdef gc_tensor* tensors = <gc_tensor*>malloc(max(n, 1) * sizeof(gc_tensor))
    cdef double total = 0.0
    cdef int clipped = 0
    cdef gc_status status
    if tensors == NULL:
        raise MemoryError()
    try:
        for i in range(n):
            a = arrays[i]
            if not (isinstance(a, np.ndarray) and a.flags.c_contiguous and a.flags.writeable):
                raise TypeError(f"arrays[{i}] must be a writeable, C-contiguous NumPy array")
            if a.dtype == np.float32:
                tensors[i].dtype = GC_FLOAT32
            elif a.dtype == np.float64:
                tensors[i].dtype = GC_FLOAT64
            else:
                raise TypeError(f"arrays[{i}] has dtype {a.dtype}; expected float32 or float64")
            # The list keeps every array (so every pointer) alive until we return.
            tensors[i].data = <void*><size_t>a.ctypes.data
            tensors[i].numel = a.size
        with nogil:
            status = gc_clip_by_global_norm(tensors, n, max_norm, ord, eps, GC_PROPAGATE, -1.0,
                                            &total, &clipped)
        if status != GC_OK:
            _raise(status)
        return total
    finally:
        free(tensors)


def dense_relu_forward(const float[:, ::1] x, const float[:, ::1] weight, const float[::1] bias):
    """relu(x @ weight.T + bias) for float32 (batch, in) x, (out, in) weight, (out,) bias."""
    cdef Py_ssize_t batch = x.shape[0], n_in = x.shape[1], n_out = weight.shape[0]
    if weight.shape[1] != n_in or bias.shape[0] != n_out:
        raise ValueError(f"x {(batch, n_in)}, weight {(n_out, weight.shape[1])} and bias "
                         f"{(bias.shape[0],)} do not fit together")
    y = np.empty((batch, n_out), dtype=np.float32)
    cdef float[:, ::1] out = y
    cdef gc_status status
    with nogil:
        status = gc_dense_forward(GC_FLOAT32, batch, n_in, n_out, &x[0, 0] if batch * n_in else NULL,
                                  &weight[0, 0] if n_out * n_in else NULL,
                                  &bias[0] if n_out else NULL, &out[0, 0] if batch * n_out else NULL,
                                  GC_RELU, 0.0)
    if status != GC_OK:
        _raise(status)
    return y
