"""numerical_grad: the numerical gradient of a loss, in the parameters' structure."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from fastcheck._evaluate import WithBeforeEval, check_loss, check_step_resolution, run_kernel
from fastcheck._executor import check_executor
from fastcheck._params import ParamLayout, as_layout
from fastcheck._validate import (
    check_before_eval,
    check_eps,
    check_method,
    check_threads,
)

__all__ = ["check_indices", "numerical_grad"]


def numerical_grad(
    loss: Callable[[Any], Any],
    params: Any,
    *,
    eps: float | None = None,
    method: str = "central",
    threads: int = 1,
    executor: Any = None,
    before_eval: Callable[[], Any] | None = None,
    indices: Any = None,
) -> Any:
    """The numerical gradient of ``loss(params)`` by finite differences.

    Each component is perturbed in place in the caller's own arrays and restored
    bit for bit, by a loop in C; nothing is copied per component.

    Parameters
    ----------
    loss : callable or C loss
        ``loss(params) -> float``, called with the very `params` object given here.
        It may return a Python float, a numpy scalar or a 0-d / size-1 array.
        Or a loss written in C: a ``scipy.LowLevelCallable`` (from ctypes, cffi or
        ``LowLevelCallable.from_cython``) or a :class:`fastcheck.CLoss`, with the
        signature ``int (double *theta, npy_intp n, double *out, void *user_data)``
        or ``double (double *theta, npy_intp n, void *user_data)`` (``float *``
        for float32 parameters); `params` must then be one C-contiguous array.  A
        C loss runs without the GIL, with no Python work per component.
    params : ndarray, or dict / list / tuple of ndarrays
        float64 or float32, writeable.  Any shape and memory order (C, Fortran,
        strided views).
    eps : float, optional
        Absolute step: finite, > 0, at most max(1, |theta_i|) (a wider step does not
        approximate a derivative) and not below the resolution of any component
        (ValueError otherwise, before any evaluation).  By default the step adapts
        to the dtype, the method and each component's magnitude:
        ``h_i = eps0 * max(1, |theta_i|)`` with eps0 about
        ``u ** (1/3)`` for central differences (4.8e-6 in float64, 3.9e-3 in
        float32), ``u ** (1/2)`` for forward / backward and ``u ** (1/5)`` for
        central4 and richardson, where u is the unit roundoff: the step that
        balances truncation and rounding error.  Complex step uses 1e-20.
    method : {"central", "forward", "backward", "central4", "richardson", "complex"}
        Central: ``(J(θ+h) − J(θ−h)) / 2h``, error O(h²), 2 evaluations per
        component.  Forward / backward: O(h), 1 evaluation (plus a shared J(θ)).
        central4: the five-point stencil, O(h⁴), 4 evaluations.  richardson:
        central differences at h and h/2 combined as ``(4 D(h/2) − D(h)) / 3``,
        O(h⁴), 4 evaluations (eps is the larger step).  complex:
        ``Im J(θ + ih) / h`` on complex copies of the parameters, exact to
        rounding, 1 evaluation; the loss must accept complex input (otherwise a
        ``ComplexStepError`` names the method and keeps the loss's own error as
        ``__cause__``), and the copies cost twice the parameters' memory, once.
        float16 parameters are refused by every method (TypeError).  Complex step
        is not for C losses.
    executor : concurrent.futures.Executor, optional
        Evaluate the components in shards on this executor's workers, each on its
        own copy of the parameters; the result is identical to a serial run (see
        :func:`fastcheck.check_grad`).
    threads : int
        Split the components across this many threads: only for a C loss declared
        thread-safe (``fastcheck.CLoss(loss, thread_safe=True)``).  Each thread
        works on a private copy of theta, so the memory cost is n x threads
        elements; the results are bitwise identical to ``threads=1``.  A Python
        loss must use 1: it holds the GIL, so threads would only take turns.
    before_eval : callable, optional
        Called with no argument before every loss evaluation (e.g. to reset a
        random seed), as in :func:`fastcheck.check_grad`.
    indices : sequence of int, optional
        Evaluate only these components: flat indices into the parameters taken in
        order, each array in C order (the order of ``GradCheckResult`` component
        names), distinct, in any order.  The cost is that of these components
        only (plus one J(θ) for the one-sided methods and central).

    Returns
    -------
    ndarray, or dict / list / tuple of ndarrays
        float64 arrays with the structure and shapes of `params`; with `indices`,
        one flat float64 array, the derivative along each index in the order given.

    Raises
    ------
    TypeError, ValueError
        Before any evaluation, for a bad parameter, method, eps, threads or loss
        (a C loss with a signature not accepted, parameters it cannot take).
    ValueError
        When the loss wrote into the parameters or rebound an entry of their dict /
        list (named), after they were restored.
    MemoryError
        When a thread could not allocate its copy of theta (``threads > 1``), at
        once, theta untouched.
    LossError
        A C loss returned a non-zero status (the message names the component),
        after the parameters were restored.
    Exception
        Whatever the loss raised (KeyboardInterrupt included), unchanged, after the
        parameters were restored.

    Examples
    --------
    >>> import numpy as np, fastcheck
    >>> theta = np.array([1.0])
    >>> g = fastcheck.numerical_grad(lambda t: float(t[0] ** 3), theta, eps=0.01)
    >>> round(float(g[0]), 10)
    3.0001
    """
    threads = check_threads(threads)
    check_executor(executor, loss, threads)  # before check_loss wraps a C loss
    loss = check_loss(loss)
    method = check_method(method)
    eps = check_eps(eps)
    before_eval = check_before_eval(before_eval)
    layout = as_layout(params)
    check_step_resolution(layout, eps, method)
    flat = position = None
    if indices is not None:
        _, flat, position = check_indices(indices, layout.size)
    if before_eval is not None:
        loss = WithBeforeEval(loss, before_eval)
    raw = run_guarded(layout, lambda: run_kernel(loss, layout, method, eps=eps,
                                                 indices=flat, threads=threads,
                                                 executor=executor))
    if indices is None:
        return layout.unflatten(raw.derivative())
    derivative = raw.derivative()
    return derivative if position is None else derivative[position]


def check_indices(indices: Any,
                  size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Validate ``indices=``: distinct flat component indices in [0, size).

    Returns the indices as given (intp), the same indices in increasing order (the
    kernel's order), and where each given index sits in the increasing ones, or
    None when they were given in increasing order already (the common case, which
    then costs one O(k) comparison and no sort).
    """
    if isinstance(indices, (str, bytes, dict)) or np.ndim(indices) != 1:
        raise TypeError("indices must be a 1-d sequence of flat component indices (ints), "
                        f"got {type(indices).__name__}")
    flat = np.asarray(indices)
    if flat.size and flat.dtype.kind not in "iu":
        raise TypeError(f"indices must be integers (flat component indices), got dtype "
                        f"{flat.dtype}")
    flat = flat.astype(np.intp)
    if flat.size == 0:
        raise ValueError("indices is empty: name at least one component to evaluate")
    if flat.min() < 0 or flat.max() >= size:
        bad = flat[(flat < 0) | (flat >= size)]
        raise ValueError(f"indices must be in [0, {size}) (the parameters have {size} "
                         f"components); got {int(bad[0])}")
    if (flat[1:] > flat[:-1]).all():  # strictly increasing: distinct, already sorted
        return flat, flat, None
    position = np.argsort(flat, kind="stable")
    increasing = flat[position]
    if (increasing[1:] == increasing[:-1]).any():
        raise ValueError("indices must be distinct: each component is evaluated once")
    # position[j] is where increasing[j] was given; invert it: where each given
    # index sits among the increasing ones.
    where = np.empty_like(position)
    where[position] = np.arange(position.size, dtype=position.dtype)
    return flat, increasing, where


def run_guarded(layout: ParamLayout, run: Callable[[], Any]) -> Any:
    """``run()``, with the parameters bitwise as before on every exit.

    The kernel restores each component it perturbs; a loss that writes into the
    parameters itself (or rebinds an entry of their dict) would leave them changed
    and every later difference meaningless.  One O(n) snapshot finds and undoes it.

    Raises
    ------
    ValueError
        When the loss changed the parameters (named), after restoring them.
    """
    snapshot = layout.snapshot()
    try:
        value = run()
    except BaseException:
        if layout.changed_since(snapshot):
            layout.restore(snapshot)
        raise
    changed = layout.changed_since(snapshot)
    if changed:
        layout.restore(snapshot)
        raise ValueError(
            f"the loss modified the parameters {changed} when called; a loss must only "
            "read them (they were restored). The numerical gradient would be meaningless")
    return value
