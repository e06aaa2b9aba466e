"""Losses written in C: scipy.LowLevelCallable, ctypes, cffi, Cython.

A C loss is checked at C speed: the kernel calls it through a function pointer,
with the GIL released, and does no Python work per component (``_kernel.pyx``,
design notes 5-7).  It sees theta as one pointer and a length, so it applies to a
flat theta: one C-contiguous float64 or float32 array.

Accepted signatures, in scipy's notation (``T`` is ``double`` for float64
parameters, ``float`` for float32)::

    int (T *, npy_intp, double *, void *)    theta, n, out, user_data -> status
    double (T *, npy_intp, void *)           theta, n, user_data -> J(theta)

The first stores J(theta) in ``*out`` and returns 0, or returns a non-zero status
to report failure (it becomes a :class:`LossError`).  ``npy_intp`` may be spelled
by any C type of the same size (``intptr_t``, ``ssize_t``, ``Py_ssize_t``,
``ptrdiff_t``, ``long`` on 64-bit Unix, ...), as ctypes, cffi and Cython spell it
differently; ``const T *`` is accepted too.

For example, with a C function compiled into ``libloss.so``::

    int loss(const double *theta, ptrdiff_t n, double *out, void *user_data);

    lib = ctypes.CDLL("./libloss.so")
    lib.loss.restype = ctypes.c_int
    lib.loss.argtypes = [ctypes.POINTER(ctypes.c_double), ctypes.c_ssize_t,
                         ctypes.POINTER(ctypes.c_double), ctypes.c_void_p]
    g = fastcheck.numerical_grad(scipy.LowLevelCallable(lib.loss), theta)
    g = fastcheck.numerical_grad(fastcheck.CLoss(lib.loss, weights, thread_safe=True),
                                 theta, threads=2)

A C loss cannot take a dict of parameters or a non-contiguous array (it reads
theta[0..n-1] through one pointer): pack them into one array, or use a Python
loss.  Complex step needs a Python loss.
"""

from __future__ import annotations

import ctypes
import re
import sys
from typing import Any

import numpy as np
from scipy import LowLevelCallable

from fastcheck import _kernel

__all__ = ["SIGNATURES", "CLoss", "LossError", "as_c_loss", "is_c_loss"]

# The table of accepted signatures: canonical spelling -> (dtype, kind).
SIGNATURES: dict[str, tuple[np.dtype, int]] = {
    "int (double *, npy_intp, double *, void *)": (np.dtype(np.float64), _kernel.C_STATUS),
    "double (double *, npy_intp, void *)": (np.dtype(np.float64), _kernel.C_VALUE),
    "int (float *, npy_intp, double *, void *)": (np.dtype(np.float32), _kernel.C_STATUS),
    "double (float *, npy_intp, void *)": (np.dtype(np.float32), _kernel.C_VALUE),
}

_INTP_SIZE = np.dtype(np.intp).itemsize

# C spellings of an integer the size of npy_intp: scipy names ctypes types after
# the class (c_long -> "long", c_longlong -> "longlong"), cffi and Cython keep the
# declared name.  Only those as wide as npy_intp on this platform are accepted.
_INDEX_SIZES = {
    "npy_intp": _INTP_SIZE,
    "intptr_t": ctypes.sizeof(ctypes.c_void_p),
    "ssize_t": ctypes.sizeof(ctypes.c_ssize_t),
    "Py_ssize_t": ctypes.sizeof(ctypes.c_ssize_t),
    "ptrdiff_t": ctypes.sizeof(ctypes.c_ssize_t),
    "fc_index": ctypes.sizeof(ctypes.c_ssize_t),
    "long": ctypes.sizeof(ctypes.c_long),
    "long int": ctypes.sizeof(ctypes.c_long),
    "longlong": ctypes.sizeof(ctypes.c_longlong),
    "long long": ctypes.sizeof(ctypes.c_longlong),
    "int64_t": 8,
    "int32_t": 4,
    "int": ctypes.sizeof(ctypes.c_int),
}
_INDEX_SPELLINGS = tuple(k for k, size in _INDEX_SIZES.items() if size == _INTP_SIZE)

_SIGNATURE_HELP = (
    "(npy_intp may also be spelled " + ", ".join(s for s in _INDEX_SPELLINGS if s != "npy_intp")
    + ": the integer types as wide as a pointer here; and the pointer to theta may be "
    "const)")


class LossError(RuntimeError):
    """A C loss reported failure (returned a non-zero status).

    Attributes
    ----------
    status : int
        The status the loss returned.
    component : int or None
        Flat index of the component being evaluated, None for J(theta) itself.
    name : str or None
        Its readable name (``theta[17]``).
    """

    def __init__(self, message: str, status: int, component: int | None = None,
                 name: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.component = component
        self.name = name


def _normalize_type(text: str, *, argument: bool = True) -> str:
    """One C type in a single spelling: no const, ``T *`` with one space, and an
    argument integer as wide as npy_intp spelled ``npy_intp``."""
    words = [w for w in text.replace("*", " * ").split() if w != "const"]
    stars = words.count("*")
    base = " ".join(w for w in words if w != "*")
    if stars:
        return f"{base} {'*' * stars}"
    if argument and base in _INDEX_SPELLINGS:
        return "npy_intp"
    return base


def normalize_signature(signature: str) -> str | None:
    """The canonical spelling of a C signature such as ``"int (double const *,
    long, double *, void *)"``, or None when it cannot be parsed."""
    match = re.fullmatch(r"\s*([^()]+?)\s*\((.*)\)\s*", signature)
    if match is None:
        return None
    result, args = match.groups()
    parts = [a for a in (p.strip() for p in args.split(",")) if a]
    arguments = ", ".join(_normalize_type(p) for p in parts)
    return f"{_normalize_type(result, argument=False)} ({arguments})"


def _signature_error(given: str | None) -> ValueError:
    accepted = list(SIGNATURES)
    return ValueError(
        f'invalid signature "{given}" for a fastcheck C loss. Expected one of: '
        f"{accepted} {_SIGNATURE_HELP}")


def _is_ctypes_function(obj: Any) -> bool:
    return isinstance(obj, ctypes._CFuncPtr)


def _is_cffi(obj: Any) -> bool:
    return type(obj).__module__ == "_cffi_backend"


_USER_DATA_KINDS = ("None, a C-contiguous numpy array (its data pointer is passed), a "
                    "ctypes pointer or c_void_p, a cffi pointer, or a PyCapsule")


def _user_data_pointer(user_data: Any) -> tuple[Any, Any]:
    """What scipy.LowLevelCallable accepts as user_data, and what to keep alive."""
    if user_data is None:
        return None, None
    if isinstance(user_data, np.ndarray):
        if not user_data.flags.c_contiguous:
            raise ValueError(
                "user_data is a numpy array that is not C-contiguous; the C loss gets "
                "one pointer to its data. Pass np.ascontiguousarray(user_data)")
        if user_data.dtype.hasobject:
            raise TypeError("user_data is a numpy array of Python objects, which C "
                            "cannot read; pass an array of numbers")
        return ctypes.c_void_p(user_data.ctypes.data), user_data
    if isinstance(user_data, ctypes.c_void_p):
        return user_data, user_data
    if isinstance(user_data, (ctypes._Pointer, ctypes.Array, ctypes.Structure, ctypes.Union)):
        return ctypes.cast(user_data if isinstance(user_data, ctypes._Pointer)
                           else ctypes.pointer(user_data), ctypes.c_void_p), user_data
    if _is_cffi(user_data) or type(user_data).__name__ == "PyCapsule":
        return user_data, user_data
    if type(user_data).__name__ == "CArgObject":
        raise TypeError(
            "user_data is ctypes.byref(...), which only lives for the duration of one "
            "direct ctypes call; pass ctypes.pointer(obj) instead (fastcheck keeps it "
            "alive for the whole check)")
    raise TypeError(f"user_data must be {_USER_DATA_KINDS}; got {type(user_data).__name__}")


class CLoss:
    """A loss written in C, for :func:`fastcheck.numerical_grad` and check_grad.

    A plain ``scipy.LowLevelCallable`` works as a loss too; wrap it (or a ctypes or
    cffi function pointer, or a PyCapsule) in a CLoss to pass user data more
    conveniently or to declare it thread-safe.

    Parameters
    ----------
    function : LowLevelCallable, ctypes or cffi function pointer, or PyCapsule
        The loss, with one of the signatures of :data:`SIGNATURES` (see the module
        docstring), e.g. ``int loss(double *theta, npy_intp n, double *out,
        void *user_data)``.  Cython ``cdef api`` functions come through
        ``LowLevelCallable.from_cython(module, "name")``.
    user_data : optional
        Passed to the loss as its ``void *`` argument: a C-contiguous numpy array
        (its data pointer; the array is kept alive), a ctypes pointer or
        ``c_void_p``, a cffi pointer or a PyCapsule.  Replaces the user data of a
        LowLevelCallable.
    signature : str, optional
        The signature, when it cannot be read from `function`.
    thread_safe : bool
        Declare that the loss may be called from several threads at once (it reads
        theta and user_data and writes only to ``*out`` and its own locals).  Needed
        for ``threads > 1``, where each thread works on a private copy of theta:
        n x threads extra elements of memory.

    Attributes
    ----------
    callable : scipy.LowLevelCallable
    signature : str
        The canonical signature it matched.
    dtype : numpy.dtype
        float64 or float32: the parameters it takes.
    thread_safe : bool

    Notes
    -----
    Calling a CLoss, ``loss(theta)``, evaluates it once and returns J(theta).
    """

    __slots__ = ("_capsule", "_dtype_name", "_keep", "callable", "dtype", "kind", "signature",
                 "thread_safe")

    def __init__(self, function: Any, user_data: Any = None, *, signature: str | None = None,
                 thread_safe: bool = False) -> None:
        if not isinstance(thread_safe, (bool, np.bool_)):
            raise TypeError(f"thread_safe must be True or False, got {thread_safe!r}")
        context, keep = _user_data_pointer(user_data)
        if isinstance(function, CLoss):
            if context is None:
                keep = function._keep  # the user data its pointer points into
            function = function.callable
        if _is_ctypes_function(function) and signature is None and (
                function.argtypes is None):
            raise ValueError(
                "the ctypes function has no argtypes, so its signature is unknown: set "
                "function.argtypes and function.restype (e.g. [POINTER(c_double), "
                "c_ssize_t, POINTER(c_double), c_void_p] and c_int)")
        if isinstance(function, LowLevelCallable) and context is None and signature is None:
            llc = function
        else:
            try:
                llc = LowLevelCallable(function, context, signature)
            except ValueError as exc:
                raise TypeError(
                    "a C loss must be a scipy.LowLevelCallable, a ctypes or cffi function "
                    f"pointer or a PyCapsule; got {type(function).__name__} ({exc})"
                ) from None
        try:
            given = llc.signature
        except ValueError:  # scipy: "Capsule has no signature" (a NULL name)
            raise TypeError(
                "the capsule has no name, so its signature is unknown: pass signature=, "
                f"e.g. fastcheck.CLoss(capsule, signature={next(iter(SIGNATURES))!r})"
            ) from None
        canonical = normalize_signature(given) if given else None
        if canonical not in SIGNATURES:
            raise _signature_error(given)
        self.callable = llc
        self._capsule = tuple.__getitem__(llc, 0)
        self._keep = keep
        self.signature = canonical
        self.dtype, self.kind = SIGNATURES[canonical]
        self._dtype_name = self.dtype.name  # (numpy computes .name on each access)
        self.thread_safe = bool(thread_safe)

    def __repr__(self) -> str:
        safe = ", thread_safe=True" if self.thread_safe else ""
        return f"CLoss({self.signature!r}{safe})"

    # ---------------------------------------------------------------- checks
    def _theta(self, layout: Any) -> np.ndarray:
        """The one array a C loss can take, validated (before any evaluation)."""
        if layout.kind != "array":
            count = len(layout.arrays)
            raise ValueError(
                f"a C loss takes one contiguous array theta (a pointer and a length), but "
                f"params is a {layout.kind} of {count} array{'s' if count != 1 else ''} "
                f"({', '.join(layout.names)}). Not supported: pack the parameters into one "
                f"{self.dtype} array (e.g. np.concatenate([p.ravel() for p in params])) "
                "and unpack them in the C loss, or check with a Python loss")
        theta = layout.arrays[0]
        if theta.dtype != self.dtype:
            ctype = "double" if self.dtype == np.float64 else "float"
            raise TypeError(
                f"the C loss has signature {self.signature!r} and takes {ctype} * "
                f"({self.dtype}), but theta is {theta.dtype}. Pass theta.astype(np.{self.dtype})"
                f" or give the loss the {'float' if ctype == 'double' else 'double'} * "
                "signature")
        if not theta.flags.c_contiguous:
            raise ValueError(
                f"theta is not C-contiguous (shape {theta.shape}, strides {theta.strides}); "
                "a C loss reads theta[0..n-1] through one pointer, so fastcheck cannot "
                "perturb it in place. Not supported: check a contiguous copy, "
                "theta = np.ascontiguousarray(theta), or use a Python loss")
        return theta

    def bind(self, layout: Any, threads: int = 1) -> tuple[int, int]:
        """Validate the parameters (and threads) for this loss; return the address
        and length of theta."""
        theta = self._theta(layout)
        if threads > 1:
            if not self.thread_safe:
                raise ValueError(
                    f"threads={threads} calls the C loss from several threads at once; "
                    "declare that this is safe with fastcheck.CLoss(loss, "
                    "thread_safe=True) (the loss must not write to shared state, "
                    "user_data included)")
            if not _kernel.threads_available():
                raise ValueError(f"threads={threads}: this build of fastcheck has no "
                                 "thread support; use threads=1")
        return theta.ctypes.data, theta.size

    # ------------------------------------------------------------ evaluation
    def __call__(self, params: Any) -> float:
        """J(params) for one array params (validated like the check's theta)."""
        from fastcheck._params import as_layout

        address, size = self.bind(as_layout(params))
        with _callback_errors():
            status, value = _kernel.call_c(self._capsule, self.kind, address, size,
                                           self._dtype_name)
        if status != 0:
            raise LossError(f"the C loss returned status {status} at theta", status)
        return value

    def run(self, layout: Any, evals: int, eps: float, relative: bool, *,
            eps_each: np.ndarray | None = None, indices: np.ndarray | None = None,
            progress: Any = None, threads: int = 1) -> dict:
        """Run the kernel (see ``_kernel.evaluate_c``); raise :class:`LossError`
        when the loss fails, with theta restored."""
        address, size = self.bind(layout, threads)
        with _callback_errors():
            raw = _kernel.evaluate_c(
                self._capsule, self.kind, address, size, self._dtype_name, evals, eps,
                relative, eps_each=eps_each, indices=indices, progress=progress,
                threads=threads)
        if raw["status"] != 0:
            status, position = raw["callback_status"], raw["failed_at"]
            if position < 0:
                raise LossError(
                    f"the C loss returned status {status} at theta itself (J(theta), "
                    "before any component was perturbed)", status)
            flat = int(indices[position]) if indices is not None else int(position)
            name = layout.name_of(flat)
            raise LossError(
                f"the C loss returned status {status} at component {flat} ({name}); "
                "theta was restored", status, flat, name)
        return raw


class _callback_errors:
    """Catch an exception raised inside a ctypes callback (a Python function made
    into a C function pointer) while a C loss runs, and raise it afterwards.

    ctypes cannot pass it to its C caller: it reports it through
    ``sys.unraisablehook`` ("Exception ignored on calling ctypes callback
    function") and returns an undefined status.  This hook keeps the first such
    exception (others go to the previous hook), and on exit, with theta restored by
    the kernel, raises it unchanged with a note.
    """

    def __enter__(self) -> _callback_errors:
        self.previous = sys.unraisablehook
        self.caught: BaseException | None = None
        self.count = 0
        sys.unraisablehook = self._hook
        return self

    def _hook(self, unraisable: Any) -> None:
        if "ctypes callback" not in (unraisable.err_msg or ""):
            self.previous(unraisable)
            return
        self.count += 1  # the kernel may call it again before it sees a failure
        if self.caught is None:
            self.caught = unraisable.exc_value

    def __exit__(self, exc_type: Any, exc: Any, traceback: Any) -> None:
        sys.unraisablehook = self.previous
        if self.caught is not None:
            caught = self.caught
            if hasattr(caught, "add_note"):
                caught.add_note(f"raised inside the C loss ({self.count} time(s); a ctypes "
                                "callback made from a Python function): the run was "
                                "stopped, theta restored")
            raise caught


def is_c_loss(loss: Any) -> bool:
    """Whether `loss` is written in C (a CLoss, scipy.LowLevelCallable, ctypes or
    cffi function pointer): the one answer every module asks for (threads=,
    executor=, mode="directional").  A cffi callable counts only when it is a
    function pointer, as in :func:`as_c_loss`."""
    return isinstance(loss, (CLoss, LowLevelCallable)) or _is_ctypes_function(loss) or (
        _is_cffi(loss) and callable(loss))


def as_c_loss(loss: Any) -> CLoss | None:
    """A :class:`CLoss` for anything that is a C loss (CLoss, LowLevelCallable,
    ctypes or cffi function pointer), None for a Python callable."""
    if isinstance(loss, CLoss):
        return loss
    return CLoss(loss) if is_c_loss(loss) else None
