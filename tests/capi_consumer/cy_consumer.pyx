# cython: language_level=3, boundscheck=False, wraparound=False
"""A Cython extension that uses fastcheck the two ways Cython code can.

1. It cimports the kernel's entry points from fastcheck.capi (the public .pxd) and
   calls them on its own nogil loss: ``grad``.
2. It exports ``cdef api`` losses, which fastcheck takes as
   ``scipy.LowLevelCallable.from_cython(module, name)``.

Built only by the tests (tests/test_capi.py), in a temporary folder.
"""

from cpython.exc cimport PyErr_SetString
from libc.math cimport ldexp, pow
from libc.stdint cimport intptr_t
from libc.stdlib cimport free, malloc

from fastcheck.capi cimport (FC_ERR_STOPPED, FC_OK, fc_block_f64, fc_check_signals,
                             fc_evaluate_f64, fc_index, fc_options, fc_options_init,
                             fc_result, fc_result_init, fc_status_message,
                             fastcheck_raise_pending, import_fastcheck)
from libc.time cimport time_t

cdef extern from "<time.h>" nogil:
    struct timespec:
        time_t tv_sec
        long tv_nsec
    int nanosleep(const timespec *req, timespec *rem)

import_fastcheck()


cdef double quad_term(Py_ssize_t i, double x) noexcept nogil:
    cdef double a = 1.0 + <double>(i % 5)
    cdef double b = 0.5 - <double>(i % 3) * 0.25
    return 0.5 * a * x * x + b * x


cdef int block_loss(const fc_block_f64 *blocks, fc_index nblocks, double *value,
                    void *ctx) noexcept nogil:
    cdef double total = 0.0
    cdef fc_index blk, k, i = 0
    for blk in range(nblocks):
        for k in range(blocks[blk].size):
            total += quad_term(i, blocks[blk].data[k * blocks[blk].stride])
            i += 1
    value[0] = total
    return 0


def grad(double[::1] theta, int threads=1):
    """The numerical gradient of the quadratic at theta, through the capsule."""
    cdef fc_block_f64 block
    cdef fc_options opt
    cdef fc_result res
    cdef double center
    cdef fc_index n = theta.shape[0], i
    cdef double *work = <double *>malloc(sizeof(double) * 3 * (n if n > 0 else 1))
    cdef int status
    if work == NULL:
        raise MemoryError()
    block.data = &theta[0]
    block.size = n
    block.stride = 1
    fc_options_init(&opt)
    opt.eps = pow(ldexp(1.0, -53), 1.0 / 3.0)
    opt.relative = 1
    opt.threads = threads
    res.center = &center
    res.plus = work
    res.minus = work + n
    res.plus2 = NULL
    res.minus2 = NULL
    res.step = work + 2 * n
    with nogil:
        status = fc_evaluate_f64(&block, 1, block_loss, NULL, &opt, &res)
    try:
        if status != FC_OK:
            raise RuntimeError(fc_status_message(status).decode())
        return [(work[i] - work[n + i]) / (2 * work[2 * n + i]) for i in range(n)]
    finally:
        free(work)


cdef api int quad_cy(const double *x, Py_ssize_t n, double *out,
                     void *user_data) noexcept nogil:
    """int (double const *, Py_ssize_t, double *, void *)"""
    cdef double total = 0.0
    cdef Py_ssize_t i
    for i in range(n):
        total += quad_term(i, x[i])
    out[0] = total
    return 0


cdef api double quad_value_cy_f32(float *x, intptr_t n, void *user_data) noexcept nogil:
    """double (float *, intptr_t, void *)"""
    cdef double total = 0.0
    cdef intptr_t i
    for i in range(n):
        total += quad_term(i, x[i])
    return total


cdef api int raising_cy(const double *x, Py_ssize_t n, double *out,
                        void *user_data) noexcept nogil:
    """Sets a Python exception (taking the GIL for it) and reports failure."""
    with gil:
        PyErr_SetString(ValueError, b"boom from a Cython loss")
    return 5


cdef api int wrong_cy(double *x, int n, double *out, void *user_data) noexcept nogil:
    """A signature fastcheck does not accept (int n)."""
    return 0


cdef int sleepy_loss(const fc_block_f64 *blocks, fc_index nblocks, double *value,
                     void *ctx) noexcept nogil:
    cdef double seconds = (<double *>ctx)[0]
    cdef timespec pause
    pause.tv_sec = <time_t>seconds
    pause.tv_nsec = <long>((seconds - <double>pause.tv_sec) * 1e9)
    nanosleep(&pause, NULL)
    return block_loss(blocks, nblocks, value, NULL)


def slow_grad(double[::1] theta, double seconds, int threads=1):
    """Central differences of a slow loss with the ready Ctrl-C hook: raises
    KeyboardInterrupt on Ctrl-C (theta restored), else returns the derivatives."""
    cdef fc_block_f64 block
    cdef fc_options opt
    cdef fc_result res
    cdef double center
    cdef fc_index n = theta.shape[0], i
    cdef double *work = <double *>malloc(sizeof(double) * 3 * (n if n > 0 else 1))
    cdef int status
    if work == NULL:
        raise MemoryError()
    block.data = &theta[0]
    block.size = n
    block.stride = 1
    fc_options_init(&opt)
    opt.threads = threads
    opt.hook = fc_check_signals
    opt.hook_every = 1
    fc_result_init(&res)
    res.center = &center
    res.plus = work
    res.minus = work + n
    res.step = work + 2 * n
    try:
        with nogil:
            status = fc_evaluate_f64(&block, 1, sleepy_loss, &seconds, &opt, &res)
        if status == FC_ERR_STOPPED:
            fastcheck_raise_pending()  # the KeyboardInterrupt the hook left set
        if status != FC_OK:
            raise RuntimeError(fc_status_message(status).decode())
        return [(work[i] - work[n + i]) / (2 * work[2 * n + i]) for i in range(n)]
    finally:
        free(work)
