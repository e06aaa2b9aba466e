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
5. A C loss (``evaluate_c``: a function pointer taken from a scipy
   LowLevelCallable's capsule) runs with the GIL released for the whole loop.  A
   ``noexcept nogil`` adapter calls it with (theta, n, out, user_data) from the one
   contiguous block the kernel hands it: the caller's own array serially, a
   thread's private copy when threads > 1.  Nothing Python happens per component.
6. The hook of a C-loss run is a nogil C function too.  It reads a monotonic clock
   (every call at first, then, for fast components, every 2nd, 4th, ... call,
   aiming at one reading per 2-20 ms) and takes the GIL at most every 50 ms, to
   run PyErr_CheckSignals (Ctrl-C) and the progress callback.  The threaded kernel
   calls it from the calling thread every ~20 ms.  (A loss that gets much slower
   in the middle of a run is noticed late: after about 2 ms times the slow-down.)
7. A C loss reports failure by a non-zero status; the caller turns it into an
   exception naming the component.  A C loss that also set a Python exception
   (taking the GIL for it) gets that exception re-raised unchanged.
8. ``_C_API`` is the capsule other extensions import through fastcheck_capi.h: a
   versioned table of the kernel's entry points (see that header), with a ready
   Ctrl-C hook (``fc_check_signals``) for their runs.
9. Statuses other than success and a failing callback become exceptions here, in
   one place (``_raise_for_status``): FC_ERR_INVALID a ValueError with the kernel's
   own reason (``fc_validate_*``), FC_ERR_NOMEM a MemoryError naming threads,
   FC_ERR_MODIFIED a ``LossWroteError`` carrying the request position, which the
   caller turns into the component's name.  Theta is restored on every one.
"""

from cpython.exc cimport PyErr_CheckSignals, PyErr_Occurred
from cpython.float cimport PyFloat_AS_DOUBLE
from cpython.pycapsule cimport (PyCapsule_GetContext, PyCapsule_GetName,
                                PyCapsule_GetPointer, PyCapsule_New)
from cpython.ref cimport PyObject
from libc.stdlib cimport free, malloc


cdef extern from "Python.h":
    ctypedef struct PyInterpreterState:
        pass
    ctypedef struct PyThreadState:
        pass
    PyThreadState *PyThreadState_Get()
    PyInterpreterState *PyThreadState_GetInterpreter(PyThreadState *)
    PyThreadState *PyInterpreterState_ThreadHead(PyInterpreterState *)
    PyThreadState *PyThreadState_Next(PyThreadState *)

import time as _time


cdef double _last_yield = 0.0


cdef inline void _let_other_threads_run() noexcept:
    """Hand the GIL to other Python threads about every 5 ms, if there are any.

    A loss that never runs Python bytecode (a builtin, a C function behind
    functools.partial) would otherwise hold the GIL for the whole run: CPython
    only forces a switch from its eval loop, and a bare release-and-retake wins
    the race against the waiting thread.  So: release, sleep 50 µs, retake --
    only when another thread exists (a progress thread, a timer that interrupts),
    at most every 5 ms (about 1 % of the time).
    """
    global _last_yield
    cdef PyThreadState *head = PyInterpreterState_ThreadHead(
        PyThreadState_GetInterpreter(PyThreadState_Get()))
    cdef double now
    if head == NULL or PyThreadState_Next(head) == NULL:
        return  # this is the only thread
    now = _time.perf_counter()
    if now - _last_yield < 0.005:
        return
    _last_yield = now
    _time.sleep(50e-6)  # releases the GIL; portable, unlike nanosleep


import numpy as np

from fastcheck._ckernel cimport *

__all__ = ["evaluate", "evaluate_c", "call_c", "threads_available", "EVAL_CENTER",
           "EVAL_PLUS", "EVAL_MINUS", "EVAL_PLUS2", "EVAL_MINUS2", "KERNEL_VERSION",
           "C_STATUS", "C_VALUE", "CAPI_VERSION", "LossWroteError"]

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


# The kernel's block type of each element type: every adapter below, and the set-up
# of a run (`_run_kernel`), is written once over it and specialised by Cython.
ctypedef fused block_t:
    fc_block_f64
    fc_block_f32

# ... and their element types (a block_t's `data` is a `real *`).
ctypedef fused real:
    double
    float


cdef int _python_loss(const block_t *blocks, fc_index nblocks, double *value,
                      void *ctx) noexcept:
    return _call_python_loss(ctx, value)


cdef int _python_hook(fc_index done, fc_index total, void *ctx) noexcept:
    cdef _CallContext c = <_CallContext>ctx
    _let_other_threads_run()
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

cdef int _set_requests(fc_options *opt, object indices, object eps_each,
                       Py_ssize_t count) except -1:
    """Point `opt` at the requested components and their steps.

    The pointers are into `indices` and `eps_each`, which the calling entry point
    holds (as its arguments) for the whole kernel run.
    """
    cdef const Py_ssize_t[::1] index_view
    cdef const double[::1] eps_view
    if indices is not None:
        index_view = indices
        opt.count = index_view.shape[0]
        # the kernel reads "no index list" as "all": make an empty list explicit
        opt.indices = &index_view[0] if opt.count > 0 else &_NO_INDEX
    if eps_each is not None:
        eps_view = eps_each
        if eps_view.shape[0] != count:
            raise ValueError("eps_each must hold one step per requested component")
        opt.eps_each = &eps_view[0] if count > 0 else NULL
    return 0


cdef dict _new_outputs(unsigned evals, Py_ssize_t count, fc_result *res, double *center):
    """The output arrays the flags in `evals` ask for, wired into `res`."""
    out = {
        "center": None,
        "plus": np.empty(count) if evals & FC_EVAL_PLUS else None,
        "minus": np.empty(count) if evals & FC_EVAL_MINUS else None,
        "plus2": np.empty(count) if evals & FC_EVAL_PLUS2 else None,
        "minus2": np.empty(count) if evals & FC_EVAL_MINUS2 else None,
        "step": np.empty(count),
    }
    res.center = center
    res.plus = _data_or_null(out["plus"])
    res.minus = _data_or_null(out["minus"])
    res.plus2 = _data_or_null(out["plus2"])
    res.minus2 = _data_or_null(out["minus2"])
    res.step = _data_or_null(out["step"])
    return out



class LossWroteError(ValueError):
    """The loss wrote into the parameters while the kernel ran (FC_ERR_MODIFIED).

    Attributes
    ----------
    position : int
        Request position of the component being perturbed when the write was
        seen, or -1 when a thread found its copy of theta changed at its end.
    """

    def __init__(self, message, position):
        super().__init__(message)
        self.position = position


cdef int _raise_for_status(int status, const char *problem, int threads, Py_ssize_t size,
                           str dtype, Py_ssize_t failed_at) except -1:
    """The exception for a kernel status that is neither success nor a failing
    callback (theta is restored on every one of them)."""
    if status == FC_ERR_INVALID:
        reason = problem.decode() if problem != NULL else "invalid arguments"
        raise ValueError(f"fastcheck kernel refused the call: {reason}")
    if status == FC_ERR_NOMEM:
        raise MemoryError(
            f"threads={threads}: out of memory for the private copies of theta (each "
            f"thread copies all {size} elements, {size * (8 if dtype == 'float64' else 4)}"
            " bytes); theta was left as it was. Use fewer threads, or threads=1 (no copy)"
            if threads > 1 else "fastcheck kernel: out of memory (theta was left as it was)")
    if status == FC_ERR_MODIFIED:
        where = (f"into the component being perturbed (request position {failed_at})"
                 if failed_at >= 0 else
                 f"into a thread's private copy of theta (threads={threads})")
        raise LossWroteError(
            f"the loss modified the parameters when called: it wrote {where}, so the "
            "values after the write are meaningless; a loss must only read them (they "
            "were restored)", failed_at)
    return 0


cdef inline void _point(real **data, size_t address) noexcept nogil:
    """Set a block's data pointer to `address`, as a pointer to its element type."""
    data[0] = <real *>address


cdef int _run_python_blocks(const block_t *element_type,
                            const Py_ssize_t[:, ::1] blocks, _CallContext ctx,
                            const fc_options *opt, fc_result *res,
                            const char **problem) except? -1:
    """The kernel run of :func:`evaluate`: the rows of `blocks` as C structs (freed
    on every path), then one run with the Python-loss adapter (GIL held).
    `element_type` is NULL: its pointer type only selects the specialisation."""
    cdef Py_ssize_t nblocks = blocks.shape[0], k
    cdef block_t *table = <block_t *>malloc(sizeof(block_t) * (nblocks if nblocks > 0 else 1))
    cdef int status
    if table == NULL:
        raise MemoryError()
    for k in range(nblocks):
        _point(&table[k].data, <size_t>blocks[k, 0])
        table[k].size = blocks[k, 1]
        table[k].stride = blocks[k, 2]
    try:
        status = _run_kernel(table, nblocks, _PYTHON_LOSS, <void *>ctx, opt, res, problem)
    finally:
        free(table)
    return status


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
    cdef double center = 0.0
    cdef int status
    cdef const char *problem = NULL

    if threads != 1:
        raise ValueError(
            f"threads={threads} needs a loss written in C and declared thread-safe "
            "(fastcheck.CLoss(c_function, thread_safe=True)): a Python loss holds the GIL, "
            "so threads would only take turns calling it")
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
    _set_requests(&opt, indices, eps_each, count)

    out = _new_outputs(evals, count, &res, &center)

    if dtype == "float64":
        status = _run_python_blocks(<fc_block_f64 *>NULL, blocks, ctx, &opt, &res, &problem)
    else:
        status = _run_python_blocks(<fc_block_f32 *>NULL, blocks, ctx, &opt, &res, &problem)

    if ctx.error is not None:
        error, ctx.error = ctx.error, None
        raise error
    _raise_for_status(status, problem, threads, total, dtype, res.failed_at)
    if status != FC_OK:
        raise RuntimeError(f"fastcheck kernel: {fc_status_message(status).decode()} "
                           f"(status {status})")
    if evals & FC_EVAL_CENTER:
        out["center"] = center
    out["calls"] = ctx.calls
    return out


# ---------------------------------------------------------------------------
# C losses (design notes 5-7)

cdef extern from *:
    """
    #if defined(_WIN32)
    #include <windows.h>
    static double fc_py_monotonic(void)
    {
        LARGE_INTEGER frequency, counter;
        QueryPerformanceFrequency(&frequency);
        QueryPerformanceCounter(&counter);
        return (double)counter.QuadPart / (double)frequency.QuadPart;
    }
    #else
    #include <time.h>
    static double fc_py_monotonic(void)
    {
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        return (double)now.tv_sec + 1e-9 * (double)now.tv_nsec;
    }
    #endif
    """
    double fc_py_monotonic() noexcept nogil


cdef enum:
    C_STATUS_KIND = 0  # int loss(T *theta, npy_intp n, double *out, void *user_data)
    C_VALUE_KIND = 1   # double loss(T *theta, npy_intp n, void *user_data)

C_STATUS = C_STATUS_KIND
C_VALUE = C_VALUE_KIND

cdef struct _CCall:
    void *function
    void *user_data


cdef inline int _call_status(real *theta, fc_index n, double *value,
                             _CCall *call) noexcept nogil:
    """``int f(T *, npy_intp, double *, void *)`` (C_STATUS)."""
    return (<int (*)(real *, fc_index, double *, void *) noexcept nogil>call.function)(
        theta, n, value, call.user_data)


cdef inline double _call_value(real *theta, fc_index n, _CCall *call) noexcept nogil:
    """``double f(T *, npy_intp, void *)`` (C_VALUE)."""
    return (<double (*)(real *, fc_index, void *) noexcept nogil>call.function)(
        theta, n, call.user_data)


cdef int _c_status(const block_t *blocks, fc_index nblocks, double *value,
                   void *ctx) noexcept nogil:
    return _call_status(blocks[0].data, blocks[0].size, value, <_CCall *>ctx)


cdef int _c_value(const block_t *blocks, fc_index nblocks, double *value,
                  void *ctx) noexcept nogil:
    value[0] = _call_value(blocks[0].data, blocks[0].size, <_CCall *>ctx)
    return 0


# Which adapter a run calls: the C-loss kinds C_STATUS / C_VALUE, or a Python loss.
cdef int _PYTHON_LOSS = -1


cdef int _run_kernel(const block_t *blocks, fc_index nblocks, int kind, void *ctx,
                     const fc_options *opt, fc_result *res,
                     const char **problem) noexcept nogil:
    """One kernel run over `blocks` with the adapter of `kind`; on FC_ERR_INVALID,
    *problem says why.  The one place that names each dtype's entry points."""
    # Not `nogil`: the type must also hold the Python-loss adapter, which needs the
    # GIL (the caller holds it then); the kernel only passes the pointer on.
    cdef int (*loss)(const block_t *, fc_index, double *, void *) noexcept
    cdef int status
    if kind == C_STATUS_KIND:
        loss = _c_status[block_t]
    elif kind == C_VALUE_KIND:
        loss = _c_value[block_t]
    else:
        loss = _python_loss
    if block_t is fc_block_f64:
        status = fc_evaluate_f64(blocks, nblocks, loss, ctx, opt, res)
        if status == FC_ERR_INVALID:
            problem[0] = fc_validate_f64(blocks, nblocks, loss, opt, res)
    else:
        status = fc_evaluate_f32(blocks, nblocks, loss, ctx, opt, res)
        if status == FC_ERR_INVALID:
            problem[0] = fc_validate_f32(blocks, nblocks, loss, opt, res)
    return status


cdef block_t *_one_block(block_t *block, size_t address, Py_ssize_t size) noexcept nogil:
    """`block` set to `size` contiguous elements at `address` (a C loss's theta)."""
    _point(&block.data, address)
    block.size = size
    block.stride = 1
    return block


cdef int _call_once(block_t *block, int kind, _CCall *call, double *value) noexcept nogil:
    """J(theta) of a C loss, once."""
    if kind == C_STATUS_KIND:
        return _c_status(block, 1, value, call)
    return _c_value(block, 1, value, call)


# Seconds between two visits of the hook to the interpreter (Ctrl-C, progress).
cdef double _VISIT_EVERY = 0.05
# Clock readings: more often than this doubles the stride, rarer halves it.
cdef double _CHECK_MIN = 0.002
cdef double _CHECK_MAX = 0.02


cdef class _HookOwner:
    """The Python side of a C-loss hook: the progress callback and a slot for an
    exception it (or PyErr_CheckSignals) raised."""
    cdef object progress
    cdef object error

    def __cinit__(self, progress):
        self.progress = progress
        self.error = None


cdef struct _HookState:
    double last_check   # last clock reading
    double last_visit   # last time the GIL was taken
    fc_index countdown  # calls left until the next clock reading
    fc_index stride     # calls between clock readings
    Py_ssize_t visits
    PyObject *owner     # a _HookOwner, kept alive by the caller


cdef int _c_hook_visit(_HookState *state, fc_index done, fc_index total) noexcept:
    cdef _HookOwner owner = <_HookOwner>state.owner
    state.visits += 1
    if PyErr_Occurred() != NULL:
        return 1  # the C loss set an exception: stop; it is raised afterwards
    try:
        PyErr_CheckSignals()
        if owner.progress is not None:
            owner.progress(done, total)
    except BaseException as exc:
        owner.error = exc
        return 1
    return 0


cdef int _c_hook(fc_index done, fc_index total, void *ctx) noexcept nogil:
    """Design note 6: cheap when called often, takes the GIL every 50 ms at most,
    and always at the end (done == total) so that progress sees the total."""
    cdef _HookState *state = <_HookState *>ctx
    cdef double now, since
    if done < total:
        state.countdown -= 1
        if state.countdown > 0:
            return 0
        now = fc_py_monotonic()
        since = now - state.last_check
        if since < _CHECK_MIN and state.stride < 65536:
            state.stride *= 2
        elif since > _CHECK_MAX and state.stride > 1:
            state.stride //= 2
        state.last_check = now
        state.countdown = state.stride
        if now - state.last_visit < _VISIT_EVERY:
            return 0
        state.last_visit = now
    with gil:
        return _c_hook_visit(state, done, total)


cdef int _raise_pending() except -1:
    """Propagate an exception a C loss set (design note 7)."""
    if PyErr_Occurred() != NULL:
        return -1
    return 0


cdef int _unpack_capsule(object capsule, _CCall *call) except -1:
    """Function pointer and user data of a LowLevelCallable's capsule (scipy's
    convention: the pointer is the function, the context is the user data)."""
    cdef const char *name = PyCapsule_GetName(capsule)
    call.function = PyCapsule_GetPointer(capsule, name)
    call.user_data = PyCapsule_GetContext(capsule)
    return 0


cdef int _evals_per_component(unsigned evals) noexcept:
    return ((evals & FC_EVAL_PLUS) != 0) + ((evals & FC_EVAL_MINUS) != 0) + (
        (evals & FC_EVAL_PLUS2) != 0) + ((evals & FC_EVAL_MINUS2) != 0)


def evaluate_c(capsule, int kind, size_t address, Py_ssize_t size, str dtype,
               unsigned evals, double eps, bint relative, eps_each=None, indices=None,
               progress=None, int threads=1):
    """Run the kernel on a C loss, without the GIL; return the raw evaluations.

    Parameters
    ----------
    capsule : PyCapsule
        A LowLevelCallable's capsule: pointer = the loss, context = user data.  Its
        signature was checked by the caller.
    kind : {C_STATUS, C_VALUE}
        ``int f(T *, npy_intp, double *, void *)`` or ``double f(T *, npy_intp,
        void *)``, T being given by `dtype`.
    address, size : int
        Where theta is: `size` contiguous elements (validated by the caller; the
        memory must stay alive and writeable for the call).
    dtype : {"float64", "float32"}
    evals, eps, relative, eps_each, indices
        As for :func:`evaluate`.
    progress : callable, optional
        ``progress(done, total)``, called at most every 50 ms and at the end.
    threads : int
        Worker threads; each works on a private copy of theta (size * threads
        elements).  The loss must then be safe to call concurrently.

    Returns
    -------
    dict
        As :func:`evaluate`, plus ``status`` (the kernel's status: FC_OK, or
        FC_ERR_CALLBACK with ``callback_status`` and ``failed_at``, the request
        position, -1 for J(theta)) and ``gil_visits`` (times the hook took the GIL).

    Raises
    ------
    BaseException
        KeyboardInterrupt (Ctrl-C), or whatever `progress` or the C loss raised.
    """
    cdef _CCall call
    cdef fc_block_f64 block64
    cdef fc_block_f32 block32
    cdef bint dtype_is_f64 = dtype == "float64"
    cdef fc_options opt
    cdef fc_result res
    cdef _HookState state
    cdef _HookOwner owner = _HookOwner(progress)
    cdef double center = 0.0
    cdef Py_ssize_t count
    cdef int status
    cdef const char *problem = NULL

    if kind != C_STATUS and kind != C_VALUE:
        raise ValueError(f"unknown C loss kind {kind}")
    if dtype not in ("float64", "float32"):
        raise TypeError(f"unsupported dtype {dtype!r}")
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    if address == 0 or size < 1:
        raise ValueError("theta must be a non-empty array")
    _unpack_capsule(capsule, &call)
    count = size if indices is None else len(indices)

    fc_options_init(&opt)
    opt.evals = evals
    opt.eps = eps
    opt.relative = relative
    opt.hook = _c_hook
    opt.hook_ctx = <void *>&state
    opt.hook_every = 1
    opt.threads = threads
    _set_requests(&opt, indices, eps_each, count)

    out = _new_outputs(evals, count, &res, &center)

    state.last_check = fc_py_monotonic()
    state.last_visit = state.last_check
    state.countdown = 1
    state.stride = 1
    state.visits = 0
    state.owner = <PyObject *>owner

    with nogil:
        if dtype_is_f64:
            status = _run_kernel(_one_block(&block64, address, size), 1, kind, &call,
                                 &opt, &res, &problem)
        else:
            status = _run_kernel(_one_block(&block32, address, size), 1, kind, &call,
                                 &opt, &res, &problem)

    _raise_pending()
    if owner.error is not None:
        error, owner.error = owner.error, None
        raise error
    _raise_for_status(status, problem, threads, size, dtype, res.failed_at)
    if status != FC_OK and status != FC_ERR_CALLBACK:
        raise RuntimeError(f"fastcheck kernel: {fc_status_message(status).decode()} "
                           f"(status {status})")
    if status == FC_OK and evals & FC_EVAL_CENTER:
        out["center"] = center
    out["calls"] = ((evals & FC_EVAL_CENTER) != 0 and
                    not (status == FC_ERR_CALLBACK and res.failed_at < 0)) + (
        res.done * _evals_per_component(evals))
    out["status"] = status
    out["callback_status"] = res.callback_status
    out["failed_at"] = res.failed_at
    out["gil_visits"] = state.visits
    return out


def call_c(capsule, int kind, size_t address, Py_ssize_t size, str dtype):
    """Evaluate a C loss once, at theta as it is, without the GIL.

    Returns
    -------
    (status, value) : (int, float)
        The loss's status (always 0 for the C_VALUE kind) and J(theta).
    """
    cdef _CCall call
    cdef fc_block_f64 block64
    cdef fc_block_f32 block32
    cdef bint dtype_is_f64 = dtype == "float64"
    cdef double value = 0.0
    cdef int status
    if dtype not in ("float64", "float32"):
        raise TypeError(f"unsupported dtype {dtype!r}")
    if kind != C_STATUS and kind != C_VALUE:
        raise ValueError(f"unknown C loss kind {kind}")
    if address == 0 or size < 1:
        raise ValueError("theta must be a non-empty array")
    _unpack_capsule(capsule, &call)
    with nogil:
        if dtype_is_f64:
            status = _call_once(_one_block(&block64, address, size), kind, &call, &value)
        else:
            status = _call_once(_one_block(&block32, address, size), kind, &call, &value)
    _raise_pending()
    return status, value


# ---------------------------------------------------------------------------
# The C API for other extensions (design note 8; fastcheck_capi.h)

cdef extern from *:
    """
    #define FASTCHECK_CAPI_PROVIDER 1
    #include "fastcheck_capi.h"
    /* The ready Ctrl-C hook of the C API (fastcheck_capi.h, note 7). */
    static int fc_check_signals(fc_index done, fc_index total, void *ctx)
    {
        PyGILState_STATE gil;
        int stop;
        (void)done;
        (void)total;
        (void)ctx;
        gil = PyGILState_Ensure();
        stop = PyErr_Occurred() != NULL || PyErr_CheckSignals() != 0;
        PyGILState_Release(gil);
        return stop;
    }
    /* Every entry `name` of FASTCHECK_CAPI_ENTRIES set to fc_name, by name. */
    static fastcheck_capi fc_capi_table = FASTCHECK_CAPI_TABLE_INITIALIZER;
    """
    void *_capi_table_address "((void *)&fc_capi_table)"
    const char *_CAPI_CAPSULE_NAME "FASTCHECK_CAPI_CAPSULE"
    unsigned int _CAPI_VERSION "FASTCHECK_CAPI_VERSION"


CAPI_VERSION = (_CAPI_VERSION >> 16, _CAPI_VERSION & 0xFFFF)
_C_API = PyCapsule_New(_capi_table_address, _CAPI_CAPSULE_NAME, NULL)
