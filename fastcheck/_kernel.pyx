# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The bridge between Python and the C kernel (csrc/kernel.c).

Design notes:

1. This module is deliberately thin.  The Python side (``_evaluate.py``) validates
   every argument and describes the parameters as a table of blocks (address,
   length, stride in elements); this module only turns that table into C structs,
   calls the kernel and returns the raw evaluations.
2. A Python loss runs with the GIL held for the whole loop: the callback is a plain
   ``noexcept`` C function that calls ``loss(params)`` with the user's own params
   object, whose memory the kernel perturbs in place.
3. A callback must not let a Python exception escape into C.  It stores the
   exception on the call context and returns a non-zero status; the kernel restores
   the component in hand and returns; then the stored exception is re-raised here,
   unchanged (same object, same type, original traceback frames kept).
4. Ctrl-C: the loss itself usually runs Python code, where the interpreter raises
   KeyboardInterrupt; the periodic hook also calls PyErr_CheckSignals, so a loss
   that never enters the interpreter is interrupted too.
"""

from cpython.exc cimport PyErr_CheckSignals
from cpython.float cimport PyFloat_AS_DOUBLE
from libc.stdlib cimport free, malloc

import numpy as np

from fastcheck._ckernel cimport *

__all__ = ["evaluate", "threads_available", "EVAL_CENTER", "EVAL_PLUS", "EVAL_MINUS",
           "EVAL_PLUS2", "EVAL_MINUS2", "KERNEL_VERSION"]

EVAL_CENTER = FC_EVAL_CENTER
EVAL_PLUS = FC_EVAL_PLUS
EVAL_MINUS = FC_EVAL_MINUS
EVAL_PLUS2 = FC_EVAL_PLUS2
EVAL_MINUS2 = FC_EVAL_MINUS2
KERNEL_VERSION = (FC_VERSION_MAJOR, FC_VERSION_MINOR, FC_VERSION_PATCH)


def threads_available():
    """True when the kernel was built with thread support."""
    return bool(fc_threads_available())


_SCALAR_HINT = "a Python float, a numpy scalar or a 0-d/size-1 array"


def _describe(obj):
    """A short description of a returned object, for error messages."""
    if isinstance(obj, np.ndarray):
        return f"an array of shape {obj.shape} and dtype {obj.dtype}"
    if obj is None:
        return "None"
    return f"{type(obj).__name__} {obj!r:.60}"


def loss_value(obj):
    """Convert what a loss returned into a float, or raise TypeError naming it."""
    if isinstance(obj, float):
        return float(obj)
    if isinstance(obj, (bool, np.bool_)):
        raise TypeError(f"the loss must return a real scalar ({_SCALAR_HINT}); "
                        f"it returned a bool: {obj!r}")
    if isinstance(obj, (int, np.integer, np.floating)):
        return float(obj)
    arr = None
    if isinstance(obj, np.ndarray):
        arr = obj
    elif hasattr(obj, "__array__") and not isinstance(obj, (str, bytes)):
        arr = np.asarray(obj)
    if arr is not None and arr.size == 1 and arr.dtype.kind in "fiu":
        return float(arr.reshape(()))
    if isinstance(obj, (complex, np.complexfloating)) or (
            arr is not None and arr.dtype.kind == "c"):
        raise TypeError(f"the loss must return a real scalar ({_SCALAR_HINT}); "
                        f"it returned a complex value ({_describe(obj)}). "
                        "Return the real loss, or use method='complex' for complex step")
    raise TypeError(f"the loss must return a real scalar ({_SCALAR_HINT}); "
                    f"it returned {_describe(obj)}")


class ComplexStepError(TypeError):
    """The loss cannot carry complex numbers, so complex step cannot be used."""


def loss_imag(obj):
    """The imaginary part of a complex loss value (method='complex')."""
    if isinstance(obj, (complex, np.complexfloating)):
        return float(obj.imag)
    arr = None
    if isinstance(obj, np.ndarray):
        arr = obj
    elif hasattr(obj, "__array__") and not isinstance(obj, (str, bytes)):
        arr = np.asarray(obj)
    if arr is not None and arr.size == 1 and arr.dtype.kind == "c":
        return float(arr.reshape(()).imag)
    if isinstance(obj, (float, int, np.floating, np.integer)) or (
            arr is not None and arr.size == 1 and arr.dtype.kind in "fiu"):
        raise ComplexStepError(
            "method='complex' needs a loss that carries complex numbers, but the loss "
            f"returned a real value ({_describe(obj)}) for complex parameters: it "
            "dropped the imaginary part (abs, np.real, float(), a comparison or a cast "
            "on the parameters?). Use method='central' for this loss")
    raise TypeError(f"the loss must return a scalar ({_SCALAR_HINT}); "
                    f"it returned {_describe(obj)}")


cdef fc_index _NO_INDEX = 0


cdef class _CallContext:
    """What a callback needs: the loss, the user's params object, and a slot for an
    exception raised while the kernel was running (design note 3)."""
    cdef object loss
    cdef object params
    cdef object progress
    cdef object error
    cdef bint imag
    cdef Py_ssize_t calls

    def __cinit__(self, loss, params, progress, bint imag):
        self.loss = loss
        self.params = params
        self.progress = progress
        self.error = None
        self.imag = imag
        self.calls = 0


cdef int _call_python_loss(void *ctx, double *value) noexcept:
    cdef _CallContext c = <_CallContext>ctx
    try:
        result = c.loss(c.params)
        c.calls += 1
        if c.imag:
            value[0] = loss_imag(result)
        elif isinstance(result, float):
            # fast path: Python floats and numpy float64 scalars
            value[0] = PyFloat_AS_DOUBLE(result)
        else:
            value[0] = loss_value(result)
    except BaseException as exc:
        c.error = exc
        return 1
    return 0


cdef int _python_loss_f64(const fc_block_f64 *blocks, fc_index nblocks,
                          double *value, void *ctx) noexcept:
    return _call_python_loss(ctx, value)


cdef int _python_loss_f32(const fc_block_f32 *blocks, fc_index nblocks,
                          double *value, void *ctx) noexcept:
    return _call_python_loss(ctx, value)


cdef int _python_hook(fc_index done, fc_index total, void *ctx) noexcept:
    cdef _CallContext c = <_CallContext>ctx
    try:
        PyErr_CheckSignals()
        if c.progress is not None:
            c.progress(done, total)
    except BaseException as exc:
        c.error = exc
        return 1
    return 0


cdef double *_data_or_null(object array) except? NULL:
    cdef double[::1] view
    if array is None:
        return NULL
    view = array
    if view.shape[0] == 0:
        return NULL
    return &view[0]


def evaluate(loss, params, const Py_ssize_t[:, ::1] blocks, str dtype, unsigned evals,
             double eps, bint relative, eps_each=None, indices=None,
             Py_ssize_t hook_every=0, progress=None, bint imag=False, int threads=1):
    """Run the kernel with a Python loss; return the raw evaluations.

    Parameters
    ----------
    loss : callable
        Called as ``loss(params)``; must return a real scalar (or a complex one when
        `imag` is true, whose imaginary part is recorded).
    params : object
        Passed to `loss` unchanged; its arrays own the memory in `blocks`.
    blocks : ndarray of intp, shape (nblocks, 3)
        Rows of (address, length, stride in elements), validated by the caller.
    dtype : {"float64", "float32"}
        Element type of every block.
    evals : int
        ``EVAL_*`` flags.
    eps : float
        Nominal step; scaled by ``max(1, |x|)`` when `relative` is true.
    eps_each : ndarray of float64, optional
        One nominal step per requested component (overrides `eps`).
    indices : ndarray of intp, optional
        Flat indices into the concatenated blocks; all components when None.
    hook_every : int
        Call the hook (signals, `progress`) every this many components; 0: only at
        the end.
    progress : callable, optional
        Called as ``progress(done, total)`` from the hook.
    imag : bool
        Record the imaginary part of the loss (complex step).
    threads : int
        Must be 1: a Python loss needs the GIL, so threads would only take turns.

    Returns
    -------
    dict
        ``center`` (float or None), ``plus``, ``minus``, ``plus2``, ``minus2`` (arrays
        or None), ``step`` (array), ``calls`` (loss calls made).
    """
    cdef Py_ssize_t nblocks = blocks.shape[0], k, total = 0, count
    cdef fc_options opt
    cdef fc_result res
    cdef _CallContext ctx = _CallContext(loss, params, progress, imag)
    cdef void *table = NULL
    cdef const Py_ssize_t[::1] index_view
    cdef const double[::1] eps_view
    cdef double center = 0.0
    cdef int status

    if threads != 1:
        raise ValueError(
            f"threads={threads} needs a loss written in C (a scipy.LowLevelCallable): a "
            "Python loss holds the GIL, so threads would only take turns calling it")
    if blocks.shape[1] != 3:
        raise ValueError("blocks must have shape (nblocks, 3)")
    if dtype not in ("float64", "float32"):
        raise TypeError(f"unsupported dtype {dtype!r}")
    for k in range(nblocks):
        total += blocks[k, 1]
    count = total if indices is None else len(indices)

    fc_options_init(&opt)
    opt.evals = evals
    opt.eps = eps
    opt.relative = relative
    opt.hook = _python_hook
    opt.hook_ctx = <void *>ctx
    opt.hook_every = hook_every
    if indices is not None:
        index_view = indices
        opt.count = index_view.shape[0]
        opt.indices = &index_view[0] if opt.count > 0 else NULL
        if opt.count == 0:
            # the kernel reads "no index list" as "all": make an empty list explicit
            opt.indices = &_NO_INDEX
    if eps_each is not None:
        eps_view = eps_each
        if eps_view.shape[0] != count:
            raise ValueError("eps_each must hold one step per requested component")
        opt.eps_each = &eps_view[0] if count > 0 else NULL

    out = {
        "center": None,
        "plus": np.empty(count) if evals & FC_EVAL_PLUS else None,
        "minus": np.empty(count) if evals & FC_EVAL_MINUS else None,
        "plus2": np.empty(count) if evals & FC_EVAL_PLUS2 else None,
        "minus2": np.empty(count) if evals & FC_EVAL_MINUS2 else None,
        "step": np.empty(count),
    }
    res.center = &center
    res.plus = _data_or_null(out["plus"])
    res.minus = _data_or_null(out["minus"])
    res.plus2 = _data_or_null(out["plus2"])
    res.minus2 = _data_or_null(out["minus2"])
    res.step = _data_or_null(out["step"])

    if dtype == "float64":
        table = malloc(sizeof(fc_block_f64) * (nblocks if nblocks > 0 else 1))
        if table == NULL:
            raise MemoryError()
        for k in range(nblocks):
            (<fc_block_f64 *>table)[k].data = <double *>blocks[k, 0]
            (<fc_block_f64 *>table)[k].size = blocks[k, 1]
            (<fc_block_f64 *>table)[k].stride = blocks[k, 2]
        try:
            status = fc_evaluate_f64(<fc_block_f64 *>table, nblocks, _python_loss_f64,
                                     <void *>ctx, &opt, &res)
        finally:
            free(table)
    else:
        table = malloc(sizeof(fc_block_f32) * (nblocks if nblocks > 0 else 1))
        if table == NULL:
            raise MemoryError()
        for k in range(nblocks):
            (<fc_block_f32 *>table)[k].data = <float *>blocks[k, 0]
            (<fc_block_f32 *>table)[k].size = blocks[k, 1]
            (<fc_block_f32 *>table)[k].stride = blocks[k, 2]
        try:
            status = fc_evaluate_f32(<fc_block_f32 *>table, nblocks, _python_loss_f32,
                                     <void *>ctx, &opt, &res)
        finally:
            free(table)

    if ctx.error is not None:
        error, ctx.error = ctx.error, None
        raise error
    if status != FC_OK:
        raise RuntimeError(f"fastcheck kernel: {fc_status_message(status).decode()} "
                           f"(status {status})")
    if evals & FC_EVAL_CENTER:
        out["center"] = center
    out["calls"] = ctx.calls
    return out
