"""Running the kernel: difference methods, default steps, and raw evaluations.

The kernel returns raw loss values, J(theta + h e_i), J(theta - h e_i), ... and
J(theta) once; :class:`RawEvaluations` keeps them so that the derivative, the
curvature and kink tests all come from the same evaluations (DESIGN, error model).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fastcheck import _kernel
from fastcheck._kernel import ComplexStepError
from fastcheck._lowlevel import as_c_loss
from fastcheck._params import ParamLayout

__all__ = ["METHODS", "Method", "RawEvaluations", "default_eps", "run_kernel"]

# How often (in components) the kernel calls back for Ctrl-C, other threads and
# progress (Python losses).  The hook costs well under a microsecond; every 16
# components bounds the Ctrl-C latency of a slow builtin loss to 32 evaluations.
HOOK_EVERY = 16


@dataclass(frozen=True)
class Method:
    """A finite-difference formula.

    Attributes
    ----------
    name : str
    evals : int
        The kernel's ``EVAL_*`` flags it needs.
    order : int
        Order of the truncation error in h.
    step_exponent : float
        The default relative step is ``u ** step_exponent`` (u: unit roundoff of the
        parameters' dtype): the step that balances truncation, h**order, against
        rounding, u / h.
    evals_per_component : int
        Loss evaluations per component.
    """

    name: str
    evals: int
    order: int
    step_exponent: float
    evals_per_component: int


_C, _P, _M = _kernel.EVAL_CENTER, _kernel.EVAL_PLUS, _kernel.EVAL_MINUS
_P2, _M2 = _kernel.EVAL_PLUS2, _kernel.EVAL_MINUS2

METHODS: dict[str, Method] = {  # keys: _validate.METHOD_NAMES, same order
    # Central also evaluates J(theta) once: with it the same evaluations give the
    # forward and backward differences, the curvature and the kink test for free.
    "central": Method("central", _C | _P | _M, 2, 1 / 3, 2),
    "forward": Method("forward", _C | _P, 1, 1 / 2, 1),
    "backward": Method("backward", _C | _M, 1, 1 / 2, 1),
    "central4": Method("central4", _C | _P | _M | _P2 | _M2, 4, 1 / 5, 4),
    # Richardson: central differences at h and h/2 combined as (4 D(h/2) - D(h)) / 3,
    # from two kernel runs (see _run_richardson); `evals` are those of each run.
    "richardson": Method("richardson", _C | _P | _M, 4, 1 / 5, 4),
    # Complex step: Im J(theta + i h e_i) / h has no subtractive cancellation, so
    # the step is tiny and fixed (see default_eps).
    "complex": Method("complex", _P, 2, 0.0, 1),
}

COMPLEX_STEP = 1e-20

# What a loss raises when it cannot take complex input (method="complex" wraps
# these in a ComplexStepError naming the method): numpy's "ufunc not supported for
# the input types" and math.* are TypeErrors, some libraries raise ValueError, and
# float() of a complex value warns ComplexWarning (an error under -W error).
_COMPLEX_WARNING = getattr(getattr(np, "exceptions", np), "ComplexWarning", None)
_REJECTS_COMPLEX: tuple[type[BaseException], ...] = (TypeError, ValueError) + (
    (_COMPLEX_WARNING,) if _COMPLEX_WARNING is not None else ())


def unit_roundoff(dtype: Any) -> float:
    """u = 2**-53 for float64, 2**-24 for float32."""
    return float(np.finfo(dtype).eps) / 2


def default_eps(dtype: Any, method: str = "central") -> float:
    """The default relative step for `method` on parameters of `dtype`.

    The step of component i is ``eps * max(1, |theta_i|)``.  ``eps`` balances the
    truncation error of the formula (order p) against the rounding error of the
    loss, u / h: the optimum is about ``u ** (1 / (p + 1))``.  For float64 this is
    4.8e-6 (central), 1.1e-8 (forward, backward) and 6.4e-4 (central4, richardson);
    for float32 3.9e-3, 2.4e-4 and 3.6e-2.  Complex step has no rounding term and
    uses 1e-20.

    Richardson's eps is its larger step h (the other is h/2).  Its error is about
    h**4 |J'''''| / 480 (truncation) + 3 u |J| / h (rounding: the combination
    (4 D(h/2) - D(h)) / 3 weighs the rounding of D(h/2), u |J| / (h/2), by 4/3),
    balanced at h = (360 u |J| / |J'''''|) ** (1/5), about 3 u**(1/5) for an O(1)
    loss.  It uses u**(1/5), the central4 value, a factor 3 on the safe side:
    truncation falls as h**4 where rounding only grows as 1/h, and a loss with
    features narrower than max(1, |theta_i|) has a larger fifth derivative than an
    O(1) guess.  float16 parameters are refused by every method (see ParamLayout);
    a loss that returns float16 gets float16's u (check_grad).
    """
    m = METHODS[method]
    if m.name == "complex":
        return COMPLEX_STEP
    return unit_roundoff(dtype) ** m.step_exponent


@dataclass
class RawEvaluations:
    """The loss values one run of the kernel produced.

    Attributes
    ----------
    method : Method
    indices : ndarray of intp or None
        Flat indices of the evaluated components; None means all, in order.
    center : float or None
        J(theta).
    plus, minus, plus2, minus2 : ndarray or None
        J(theta + h e_i), J(theta - h e_i), J(theta +- 2h e_i), one per component.
        For complex step, ``plus`` holds Im J(theta + i h e_i).  For richardson,
        ``plus2`` and ``minus2`` hold J(theta +- h2 e_i) at the second step `step2`.
    step : ndarray
        The represented step h of each component.
    calls : int
        Loss evaluations made.
    seconds : float
        Wall time of the run.
    step2 : ndarray or None
        Richardson only: the represented second step (h / 2 where representable).
    """

    method: Method
    indices: np.ndarray | None
    center: float | None
    plus: np.ndarray | None
    minus: np.ndarray | None
    plus2: np.ndarray | None
    minus2: np.ndarray | None
    step: np.ndarray
    calls: int
    seconds: float
    extra: dict = field(default_factory=dict)
    step2: np.ndarray | None = None

    def derivative(self) -> np.ndarray:
        """The numerical derivative of each evaluated component."""
        h = self.step
        name = self.method.name
        with np.errstate(all="ignore"):
            if name == "central":
                return (self.plus - self.minus) / (2 * h)
            if name == "forward":
                return (self.plus - self.center) / h
            if name == "backward":
                return (self.center - self.minus) / h
            if name == "central4":
                return (8 * (self.plus - self.minus) - (self.plus2 - self.minus2)) / (12 * h)
            if name == "richardson":
                h2 = self.step2
                d1 = (self.plus - self.minus) / (2 * h)
                d2 = (self.plus2 - self.minus2) / (2 * h2)
                # (4 D(h/2) - D(h)) / 3 when h2 is exactly h/2; written with the
                # represented steps so that it stays O(h**4) when they are not.
                return d2 + (d2 - d1) / ((h / h2) ** 2 - 1)
            if name == "complex":
                return self.plus / h
        raise ValueError(f"unknown method {name!r}")  # pragma: no cover


def _complex_twin(layout: ParamLayout) -> tuple[Any, ParamLayout]:
    """Complex copies of the parameters (made once) and a layout of their imaginary
    parts, which is what the kernel perturbs for complex step.

    Memory: one complex copy of theta per run, complex128 for float64 and complex64
    for float32 parameters, i.e. twice the parameters' own memory, allocated once
    (not per component) and freed when the run ends.  The user's arrays are only
    read.
    """
    pieces = [a.astype(np.complex128 if a.dtype == np.float64 else np.complex64)
              for a in layout.arrays]
    twin = layout._container(pieces)
    imag_views = layout._container([p.imag for p in pieces])
    return twin, ParamLayout(imag_views)


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
        from fastcheck._executor import run_sharded

        return run_sharded(executor, loss, layout, method, eps=eps, relative=relative,
                           indices=indices, eps_each=eps_each, progress=progress,
                           with_center=with_center, threads=threads, shards=shards)
    m = METHODS[method]
    c_loss = as_c_loss(loss)
    if c_loss is not None:
        if m.name == "complex":
            raise ValueError(
                "method='complex' needs a loss that computes with complex numbers; a C "
                "loss takes real double / float parameters. Use method='central' (or "
                "'central4') with a C loss, or a Python loss for complex step")
        c_loss.bind(layout, threads)  # validate before any evaluation
    if relative is None:
        relative = eps is None
    evals = m.evals if with_center else m.evals & ~_C
    target_layout, call_params, imag = layout, layout.params, False
    if m.name == "complex":
        call_params, target_layout = _complex_twin(layout)
        imag, relative = True, False  # the imaginary parts start at 0: absolute step
    n_all = layout.size
    count = n_all if indices is None else len(indices)
    out = {key: (np.empty(count) if m.evals & flag else None)
           for key, flag in (("plus", _P), ("minus", _M), ("plus2", _P2), ("minus2", _M2))}
    step = np.empty(count)
    center = None
    calls = 0
    started = time.perf_counter()
    groups = target_layout.kernel_groups()
    done_before = 0
    for g, group in enumerate(groups):
        if len(groups) == 1:
            where = slice(None)
            local = None if indices is None else np.ascontiguousarray(indices, dtype=np.intp)
        else:
            flat = np.arange(n_all, dtype=np.intp) if indices is None else np.asarray(indices)
            owner = layout.param_of(flat)
            where = np.flatnonzero(np.isin(owner, group.members))
            owner_here = owner[where]
            local = np.ascontiguousarray(
                group.local_offsets[owner_here] + flat[where] - layout.offsets[owner_here],
                dtype=np.intp)
        group_eps = eps if eps is not None else default_eps(group.dtype, m.name)
        group_eps_each = None
        if eps_each is not None:
            group_eps_each = np.ascontiguousarray(np.asarray(eps_each, dtype=np.float64)[where])

        report = None
        if progress is not None:
            offset = done_before

            def report(done: int, total: int, _offset: int = offset) -> None:
                progress(_offset + done, count)

        try:
            raw = _run_group(loss, c_loss, call_params, group, g, layout, evals,
                             float(group_eps), bool(relative), group_eps_each, local, report,
                             imag, threads)
        except _kernel.LossWroteError as exc:
            raise _named_write(exc, layout, local, group, loss) from None
        calls += raw["calls"]
        if raw["center"] is not None:
            center = raw["center"]
        for key in out:
            if out[key] is not None:
                out[key][where] = raw[key]
        step[where] = raw["step"]
        done_before += len(raw["step"])
    return RawEvaluations(
        method=m, indices=None if indices is None else np.asarray(indices, dtype=np.intp),
        center=center, plus=out["plus"], minus=out["minus"], plus2=out["plus2"],
        minus2=out["minus2"], step=step, calls=calls,
        seconds=time.perf_counter() - started)


def _named_write(exc: Any, layout: ParamLayout, local: np.ndarray | None, group: Any,
                 loss: Any) -> ValueError:
    """The kernel saw the loss write into the parameters: name the component."""
    culprit = "the loss (or before_eval)" if isinstance(loss, WithBeforeEval) else "the loss"
    where = ""
    if exc.position >= 0:
        local_flat = int(local[exc.position]) if local is not None else int(exc.position)
        # back from the group's flat index to the layout's
        p = next(i for i in group.members
                 if group.local_offsets[i] <= local_flat < group.local_offsets[i]
                 + layout.arrays[i].size)
        flat = int(layout.offsets[p]) + local_flat - int(group.local_offsets[p])
        where = f" (it wrote into {layout.name_of(flat)} while that component was perturbed)"
    else:
        where = " (in a thread's private copy of theta)"
    return ValueError(f"{culprit} modified the parameters when called{where}; a loss must "
                      "only read them (they were restored). No verdict on the gradient")


def _run_group(loss: Any, c_loss: Any, call_params: Any, group: Any, g: int,
               layout: ParamLayout, evals: int, eps: float, relative: bool,
               eps_each: np.ndarray | None, local: np.ndarray | None, report: Any,
               imag: bool, threads: int) -> dict:
    """One kernel run over the parameters of one dtype (see :func:`run_kernel`)."""
    if c_loss is not None:  # one flat array: a single group and block
        return c_loss.run(layout, evals, eps, relative, eps_each=eps_each, indices=local,
                          progress=report, threads=threads)
    try:
        return _kernel.evaluate(
            loss, call_params, group.blocks, group.dtype.name,
            evals if g == 0 else evals & ~_C, eps, relative, eps_each=eps_each,
            indices=local, hook_every=HOOK_EVERY, progress=report, imag=imag,
            threads=threads)
    except ComplexStepError:
        raise  # the loss returned a real value: the message already says so
    except _REJECTS_COMPLEX as exc:
        if not imag:
            raise
        # The loss failed on complex input (a ufunc without complex loops, math.exp,
        # float() under warnings-as-errors, ...): say which method needs it, keep the
        # original.  Other exceptions come through as raised.
        raise ComplexStepError(
            "method='complex' needs a loss that accepts complex parameters: "
            f"{type(exc).__name__}: {exc}. Use another method (e.g. 'central' or "
            "'richardson') for this loss") from exc


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


class WithBeforeEval:
    """``loss(params)`` preceded by ``before_eval()``: a picklable wrapper (a closure
    would not cross to an executor's worker processes with plain pickle)."""

    def __init__(self, loss: Callable[[Any], Any], before_eval: Callable[[], Any]) -> None:
        self.loss = loss
        self.before_eval = before_eval

    def __call__(self, params: Any) -> Any:
        try:
            self.before_eval()
        except BaseException as exc:
            if hasattr(exc, "add_note") and not isinstance(exc, KeyboardInterrupt):
                exc.add_note("raised by before_eval()")
            raise
        return self.loss(params)


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
        too_wide = eps > np.maximum(1.0, np.abs(values))
        if too_wide.any():
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
