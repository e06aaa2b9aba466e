"""The guard around every gradient check: determinism and untouched parameters.

A verdict about a gradient means something only when the loss gives the same
value at the same point and leaves its parameters alone.  check_grad therefore
evaluates J(theta) twice before the check (:func:`probe`) and once after
(:func:`closing_probe`), and compares the parameters with a snapshot taken
before the first evaluation.  Every mode goes through these two functions, so
the rule is written once; the results they return instead of a verdict are
built here too.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fastcheck import _kernel
from fastcheck._evaluate import default_eps, unit_roundoff
from fastcheck._params import ParamLayout, Snapshot
from fastcheck._request import CheckRequest
from fastcheck._result import GradCheckResult, build_result
from fastcheck._verdict import C_ROUND, ComponentStatus, Tiers, tiers_for

__all__ = ["Probes", "closing_probe", "invalid_result", "probe"]

_S = ComponentStatus


@dataclass
class Probes:
    """What the two evaluations of J(theta) before the check established.

    `unit` and `tiers` are those of the coarser of the parameters' and the loss's
    dtypes (a float32 loss over float64 parameters has float32 resolution);
    `step` is the step the kernel uses (None: relative, from the dtype).
    """

    values: list[float]
    seconds_per_eval: float
    unit: float
    tiers: Tiers
    step: float | None
    relative: bool
    eps_text: str
    loss_dtype: np.dtype | None
    started: float
    snapshot: Snapshot
    notes: list[str] = field(default_factory=list)

    @property
    def center(self) -> float:
        return self.values[0]

    @property
    def evaluations(self) -> int:
        return len(self.values)

    def seconds(self) -> float:
        return time.perf_counter() - self.started


def eps_rule(layout: ParamLayout, method: str, eps: float | None) -> str:
    """The step as the report states it."""
    if eps is not None:
        return f"{eps:.3g} (absolute)"
    rules = [f"{default_eps(d, method):.2g} × max(1, |θ_i|) for {d.name}"
             if method != "complex" else f"{default_eps(d, method):.0e} (imaginary)"
             for d in layout.dtypes]
    return "; ".join(rules)


def _returned_dtype(value: Any) -> np.dtype | None:
    """The floating dtype of what a loss returned, when it says (numpy values)."""
    dtype = getattr(value, "dtype", None)
    if isinstance(dtype, np.dtype) and dtype.kind == "f":
        return dtype
    return None


def deterministic(values: list[float], unit: float) -> tuple[bool, float]:
    """Whether repeated evaluations agree within rounding; and their spread."""
    values = [v for v in values if v is not None]
    if not all(math.isfinite(v) for v in values):
        # Only called once J(theta) was finite: NaN or inf in another call at the
        # same point is a different value (max / min would skip a NaN, and inf
        # would swamp the rounding bound).
        return False, math.inf
    spread = max(values) - min(values)
    scale = max(abs(v) for v in values)
    return spread <= C_ROUND * unit * scale, spread


def _empty_result(request: CheckRequest, analytic: np.ndarray, verdict: str, note: str,
                  evaluations: int, seconds: float, eps_text: str,
                  extra: dict | None = None) -> GradCheckResult:
    layout = request.layout
    n = layout.size
    result = build_result(
        layout, np.full(n, np.nan), analytic, np.full(n, np.nan),
        np.full(n, _S.NOT_CHECKED, dtype=np.int8), tiers_for(layout.lowest_precision),
        evaluations=evaluations, seconds=seconds, eps=eps_text, method=request.method,
        mode=request.mode, notes=[note], extra=extra)
    result.verdict, result.passed = verdict, False
    result.relative_error = float("nan")
    return result


def invalid_result(request: CheckRequest, analytic: np.ndarray, note: str,
                   evaluations: int, seconds: float, eps_text: str) -> GradCheckResult:
    """No verdict on the gradient possible: `note` says why."""
    return _empty_result(request, analytic, "invalid", note, evaluations, seconds, eps_text)


def _nondeterministic_result(request: CheckRequest, analytic: np.ndarray,
                             values: list[float], spread: float, evaluations: int,
                             seconds: float, eps_text: str, when: str) -> GradCheckResult:
    scale = max((abs(v) for v in values if math.isfinite(v)), default=0.0)
    note = (f"the loss is not deterministic: J(θ) took {len({*values})} different values "
            f"at the same parameters {when} (spread {spread:.3g}, relative "
            f"{spread / scale if scale else float('inf'):.2g}), so no verdict on the "
            "gradient is possible. Likely causes: dropout still on (set keep_prob = 1, or "
            "put the model in eval mode), or unseeded random sampling (minibatches, noise "
            "injection). Fix the randomness, or pass before_eval= a function that resets "
            "the seed before every evaluation")
    return _empty_result(request, analytic, "nondeterministic", note, evaluations, seconds,
                         eps_text, extra={"loss_values": values})


def _modified(changed: list[str], when: str) -> str:
    return (f"the loss modified the parameters {changed} {when}; a loss must only read "
            "them (they were restored). No verdict on the gradient")


def probe(request: CheckRequest, analytic: np.ndarray,
          snapshot: Snapshot) -> Probes | GradCheckResult:
    """J(theta) twice before the check: the time of one evaluation, the loss's
    resolution, and determinism.  A result instead when no verdict is possible."""
    layout, method, eps = request.layout, request.method, request.eps
    started = time.perf_counter()
    eps_text = eps_rule(layout, method, eps)
    values, seconds = [], []
    for _ in range(2):
        t0 = time.perf_counter()
        returned = request.loss(layout.params)
        seconds.append(time.perf_counter() - t0)
        values.append(_kernel.loss_value(returned))
        changed = layout.changed_since(snapshot)
        if changed:
            layout.restore(snapshot)
            return invalid_result(request, analytic, _modified(changed, "when called"),
                                  len(values), time.perf_counter() - started, eps_text)
    if not np.isfinite(values[0]):
        return invalid_result(
            request, analytic, f"the loss is {values[0]} at the given parameters: nothing "
            "to check", 2, time.perf_counter() - started, eps_text)
    unit, tiers = unit_roundoff(layout.lowest_precision), tiers_for(layout.lowest_precision)
    probes = Probes(values, min(seconds), unit, tiers, eps, eps is None, eps_text,
                    _returned_dtype(returned), started, snapshot)
    loss_dtype = probes.loss_dtype
    # A loss that returns float32 (or float16) has that resolution, whatever the
    # parameters' dtype: the noise model and the tiers must know.
    if loss_dtype is not None and unit_roundoff(loss_dtype) > unit:
        probes.unit, probes.tiers = unit_roundoff(loss_dtype), tiers_for(loss_dtype)
        if eps is None:
            probes.step = default_eps(loss_dtype, method)
            probes.eps_text = (f"{probes.step:.2g} × max(1, |θ_i|) (for the loss's "
                               f"{loss_dtype.name})")
        probes.notes.append(f"the loss returns {loss_dtype.name} values: the check is "
                            f"limited to {loss_dtype.name} resolution and uses its tiers")
    same, spread = deterministic(values, probes.unit)
    if not same:
        return _nondeterministic_result(request, analytic, values, spread, 2,
                                        probes.seconds(), probes.eps_text,
                                        "in two calls before the check")
    return probes


def closing_probe(request: CheckRequest, analytic: np.ndarray, probes: Probes,
                  evaluations: int, kernel_center: float | None = None
                  ) -> GradCheckResult | None:
    """After any mode's evaluations: J(theta) once more (with the kernel's own
    J(theta), when it made one) against the probes, and the parameters against the
    snapshot.  None when both hold (`evaluations` + 1 were then made); a result
    without a verdict otherwise."""
    layout = request.layout
    values = [*probes.values, _kernel.loss_value(request.loss(layout.params))]
    evaluations += 1
    if kernel_center is not None:
        values.append(kernel_center)
    changed = layout.changed_since(probes.snapshot)
    if changed:
        layout.restore(probes.snapshot)
        return invalid_result(request, analytic, _modified(changed, "during the check"),
                              evaluations, probes.seconds(), probes.eps_text)
    same, spread = deterministic(values, probes.unit)
    if not same:
        return _nondeterministic_result(request, analytic, values, spread, evaluations,
                                        probes.seconds(), probes.eps_text,
                                        "before, during and after the check")
    return None
