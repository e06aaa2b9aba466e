"""Running the kernel: one entry point over the serial run, Richardson's two runs
and ``executor=``; and the checks of the options it takes.

:func:`run_kernel` dispatches: method "richardson" to two central runs, an
executor to :mod:`fastcheck._executor` (shards, each a serial run in a worker),
everything else to :func:`fastcheck._raw.run_serial`.  The names of
:mod:`fastcheck._raw` that callers use are re-exported here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from fastcheck._executor import run_sharded
from fastcheck._lowlevel import as_c_loss
from fastcheck._params import ParamLayout
from fastcheck._raw import (
    HOOK_EVERY,
    METHODS,
    Method,
    RawEvaluations,
    WithBeforeEval,
    default_eps,
    run_serial,
    unit_roundoff,
)

__all__ = ["HOOK_EVERY", "METHODS", "Method", "RawEvaluations", "WithBeforeEval",
           "default_eps", "run_kernel", "unit_roundoff"]


def run_kernel(
    loss: Callable[[Any], Any],
    layout: ParamLayout,
    method: str = "central",
    *,
    eps: float | None = None,
    relative: bool | None = None,
    indices: np.ndarray | None = None,
    eps_each: np.ndarray | None = None,
    progress: Callable[[int, int], Any] | None = None,
    with_center: bool = True,
    threads: int = 1,
    executor: Any = None,
    shards: int | None = None,
) -> RawEvaluations:
    """Evaluate the loss around the parameters with the C kernel.

    Parameters
    ----------
    loss : callable or C loss
        ``loss(params)``, called with the user's own params object; or a loss
        written in C (:class:`fastcheck.CLoss`, a scipy.LowLevelCallable, a ctypes
        or cffi function pointer), called without the GIL on a flat theta.
    layout : ParamLayout
        The validated parameters.
    method : str
        A key of :data:`METHODS`.
    eps : float, optional
        Nominal step.  None: :func:`default_eps`, relative to ``max(1, |theta_i|)``.
        A number: an absolute step (unless `relative` says otherwise).
    relative : bool, optional
        Scale the step by ``max(1, |theta_i|)``.  Defaults to ``eps is None``.
    indices : ndarray of intp, optional
        Flat indices of the components to evaluate (all when None).
    eps_each : ndarray, optional
        One nominal step per requested component (overrides `eps`).
    progress : callable, optional
        ``progress(done, total)``, called every :data:`HOOK_EVERY` components (for
        a C loss: at most every 50 ms, and at the end).
    with_center : bool
        Evaluate J(theta) when the method allows it.
    threads : int
        Worker threads (C losses declared thread-safe only).  Each thread works on
        a private copy of theta: n x threads extra elements of memory.
    executor : concurrent.futures.Executor, optional
        Run the components in shards on this executor, each worker on its own
        copy of the parameters (see :mod:`fastcheck._executor`); the result is
        identical to a serial run.
    shards : int, optional
        How many shards (with `executor`); default 4 per worker.
    """
    if method == "richardson":
        # Two central runs (each sharded on the executor, if any).
        return _run_richardson(loss, layout, eps=eps,
                               relative=eps is None if relative is None else relative,
                               indices=indices, eps_each=eps_each, progress=progress,
                               with_center=with_center, threads=threads, executor=executor,
                               shards=shards)
    if executor is not None:
        return run_sharded(executor, loss, layout, method, eps=eps, relative=relative,
                           indices=indices, eps_each=eps_each, progress=progress,
                           with_center=with_center, threads=threads, shards=shards)
    return run_serial(loss, layout, method, eps=eps, relative=relative, indices=indices,
                      eps_each=eps_each, progress=progress, with_center=with_center,
                      threads=threads)


def _run_richardson(
    loss: Callable[[Any], Any],
    layout: ParamLayout,
    *,
    eps: float | None,
    relative: bool,
    indices: np.ndarray | None,
    eps_each: np.ndarray | None,
    progress: Callable[[int, int], Any] | None,
    with_center: bool,
    threads: int,
    executor: Any = None,
    shards: int | None = None,
) -> RawEvaluations:
    """Richardson extrapolation: two central runs, at h and at h / 2.

    The first run is an ordinary central run (its step rule is the caller's); the
    second perturbs the same components by half of each *represented* step h, as an
    absolute step.  :meth:`RawEvaluations.derivative` combines them as
    ``(4 D(h/2) - D(h)) / 3``: the h**2 terms of the two central differences cancel,
    leaving O(h**4).  Cost: 4 evaluations per component (plus J(theta) once).

    In exact arithmetic this is the five-point stencil (central4) with step h / 2;
    it is the textbook form, combines the represented steps of both runs, and the
    two central values it keeps show how fast the difference converges.
    """
    count = layout.size if indices is None else len(indices)
    if eps is None and eps_each is None:
        # The central run would take the central default: give it richardson's, per
        # dtype (still scaled by max(1, |theta_i|) when relative).
        flat = np.arange(count, dtype=np.intp) if indices is None else np.asarray(indices)
        per_param = np.array([default_eps(a.dtype, "richardson") for a in layout.arrays])
        eps_each = per_param[layout.param_of(flat)] if count else np.empty(0)
    report_first = report_second = None
    if progress is not None:
        def report_first(done: int, total: int) -> None:
            progress(done, 2 * count)

        def report_second(done: int, total: int) -> None:
            progress(count + done, 2 * count)

    first = run_kernel(loss, layout, "central", eps=eps, relative=relative, indices=indices,
                       eps_each=eps_each, progress=report_first, with_center=with_center,
                       threads=threads, executor=executor, shards=shards)
    second = run_kernel(loss, layout, "central", eps=1.0, relative=False, indices=indices,
                        eps_each=first.step / 2, progress=report_second, with_center=False,
                        threads=threads, executor=executor, shards=shards)
    return RawEvaluations(
        method=METHODS["richardson"], indices=first.indices, center=first.center,
        plus=first.plus, minus=first.minus, plus2=second.plus, minus2=second.minus,
        step=first.step, calls=first.calls + second.calls,
        seconds=first.seconds + second.seconds, step2=second.step)


def check_step_resolution(layout: ParamLayout, eps: float | None, method: str) -> None:
    """Refuse an absolute step that vanishes next to some component.

    The kernel divides by the represented step ``(x + eps) - x``; when eps is below
    half an ulp of x that step is 0 and the quotient 0/0.  Checked once, vectorised,
    before anything is evaluated.  (Default steps are relative and cannot vanish.)
    """
    if eps is None or method == "complex":
        return  # complex step perturbs the imaginary part, which starts at 0
    for name, array in zip(layout.names, layout.arrays):
        if array.size == 0:
            continue
        values = array.ravel()
        with np.errstate(over="ignore"):
            vanished = (values + array.dtype.type(eps)) - values == 0
        # eps > max(1, |x|) needs eps > 1: the usual small step skips this pass
        too_wide = eps > np.maximum(1.0, np.abs(values)) if eps > 1.0 else None
        if too_wide is not None and too_wide.any():
            where = int(np.flatnonzero(too_wide)[0])
            component = layout.name_of(int(layout.offsets[layout.names.index(name)]) + where)
            raise ValueError(
                f"eps={eps:g} is wider than parameter {name!r} at {component} (value "
                f"{values[where]!r}): a step larger than max(1, |x|) does not approximate a "
                "derivative. Use a smaller eps, or the default (eps=None)")
        if vanished.any():
            where = int(np.flatnonzero(vanished)[0])
            component = layout.name_of(int(layout.offsets[layout.names.index(name)]) + where)
            raise ValueError(
                f"eps={eps:g} is below the resolution of parameter {name!r} at {component} "
                f"(value {values[where]!r}, {array.dtype}): the step (x + eps) - x rounds "
                "to 0. Use a larger eps, or the default (eps=None), which scales the step "
                "with |x| and the dtype")


def check_loss(loss: Any) -> Callable[[Any], Any]:
    """Validate the loss: a Python callable, returned as is, or a loss written in C
    (scipy.LowLevelCallable, ctypes / cffi function pointer, CLoss), returned as a
    :class:`fastcheck.CLoss` (which is callable too: ``loss(theta)``).  Use the
    returned object from then on."""
    c_loss = as_c_loss(loss)  # raises for a C loss with a wrong signature
    if c_loss is not None:
        return c_loss
    if not callable(loss):
        raise TypeError(
            "loss must be callable as loss(params), or a loss written in C (a "
            f"scipy.LowLevelCallable or fastcheck.CLoss); got {type(loss).__name__}")
    return loss
