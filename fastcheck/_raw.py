"""Raw evaluations of the loss: the difference methods, their default steps, and
one serial run of the C kernel.

The kernel returns raw loss values, J(theta + h e_i), J(theta - h e_i), ... and
J(theta) once; :class:`RawEvaluations` keeps them so that the derivative, the
curvature and kink tests all come from the same evaluations (docs/design.md,
"Verdict rules").  This module runs in this process only; :mod:`fastcheck._evaluate`
puts Richardson's two runs and ``executor=`` (:mod:`fastcheck._executor`, which
runs this module's :func:`run_serial` on each shard) on top of it.
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

__all__ = ["METHODS", "Method", "RawEvaluations", "WithBeforeEval", "default_eps",
           "run_serial", "unit_roundoff"]

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

METHODS: dict[str, Method] = {
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


def run_serial(
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
) -> RawEvaluations:
    """One kernel run in this process (not richardson, no executor): the parameters
    and result of :func:`fastcheck._evaluate.run_kernel`, which dispatches here."""
    m = METHODS[method]
    c_loss = as_c_loss(loss)
    if c_loss is not None:
        if m.name == "complex":
            raise ValueError(
                "method='complex' needs a loss that computes with complex numbers; a C "
                "loss takes real double / float parameters. Use method='central' (or "
                "'central4') with a C loss, or a Python loss for complex step")
        # (c_loss.run validates theta and threads before its first evaluation)
    if relative is None:
        relative = eps is None
    evals = m.evals if with_center else m.evals & ~_C
    target_layout, call_params, imag = layout, layout.params, False
    if m.name == "complex":
        call_params, target_layout = _complex_twin(layout)
        imag, relative = True, False  # the imaginary parts start at 0: absolute step
    n_all = layout.size
    count = n_all if indices is None else len(indices)
    started = time.perf_counter()
    groups = target_layout.kernel_groups()
    # One group (one dtype): the kernel's own arrays are the result.  Several: each
    # run fills its components' places in arrays allocated here.
    single = len(groups) == 1
    out = {key: (np.empty(count) if m.evals & flag and not single else None)
           for key, flag in (("plus", _P), ("minus", _M), ("plus2", _P2), ("minus2", _M2))}
    step = None if single else np.empty(count)
    center = None
    calls = 0
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
        if single:
            out = {key: raw[key] for key in out}
            step = raw["step"]
        else:
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
