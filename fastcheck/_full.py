"""mode="full": every component through the C kernel, then the one judge.

The kernel evaluates every component (central: J(theta +- h e_i), J(theta)).
The judge (_judge) marks suspects from the noise model without further
evaluations; only when there are suspects (or components too coarse for the
"ok" tier) is the noise measured (_noise) and are those components evaluated
again at smaller or larger steps to tell bugs from noise, truncation and kinks.
"""

from __future__ import annotations

import numpy as np

from fastcheck._evaluate import METHODS, RawEvaluations, run_kernel
from fastcheck._guard import Probes, closing_probe
from fastcheck._judge import (
    Calibration,
    Noise,
    accuracy_hint,
    accuracy_notes,
    detection_limit,
    judge_components,
    limit_notes,
    status_notes,
)
from fastcheck._progress import progress_reporter, warn_if_long
from fastcheck._request import CheckRequest
from fastcheck._result import GradCheckResult, build_result
from fastcheck._verdict import tier_of

__all__ = ["run_full"]


def _kernel_pass(request: CheckRequest, probes: Probes) -> RawEvaluations:
    """Every component's evaluations, with the long-check warning and progress."""
    layout, method = request.layout, request.method
    estimate = warn_if_long(
        probes.seconds_per_eval, layout.size * METHODS[method].evals_per_component,
        what=f"a full check of {layout.size:,} components",
        warn_seconds=request.warn_seconds,
        suggestion="mode='directional' checks every parameter and finds wrong "
                   "components in a few hundred evaluations (max_evals=).")
    with progress_reporter(request.progress, total=layout.size, estimate=estimate,
                           unit="components") as report:
        return run_kernel(request.loss, layout, method, eps=probes.step,
                          relative=probes.relative, threads=request.threads,
                          progress=report, executor=request.executor)


def run_full(request: CheckRequest, probes: Probes, analytic: np.ndarray) -> GradCheckResult:
    """mode="full" after the probes, the closing probe included."""
    layout, eps = request.layout, request.eps
    raw = _kernel_pass(request, probes)
    evaluations = probes.evaluations + raw.calls
    refused = closing_probe(request, analytic, probes, evaluations, raw.center)
    if refused is not None:
        return refused
    evaluations += 1
    calibration = Calibration(request.loss, layout, probes.center, probes.unit, probes.tiers,
                              given=request.noise if isinstance(request.noise, float)
                              else None)
    jd = judge_components(
        request.loss, layout, raw, analytic, layout.values(), Noise(probes.unit),
        probes.tiers, refine=request.refine, threads=request.threads,
        # the loss's coarser dtype set the step (probe): start from its too
        step_dtype=probes.loss_dtype if eps is None and probes.step is not None else None,
        calibrate=calibration if request.noise != "model" else None,
        accuracy=request.accuracy)
    evaluations += jd.evaluations
    numerical, noise, status, tiers = jd.numerical, jd.err, jd.status, jd.tiers
    notes = probes.notes + calibration.notes() + status_notes(
        layout, status, jd.refined, request.refine and request.method != "complex")
    notes += limit_notes(layout, numerical, analytic, noise, status, tiers, jd.noise, eps)
    notes += accuracy_notes(layout, analytic, noise, status, request.accuracy)
    result = build_result(
        layout, numerical, analytic, noise, status, tiers,
        evaluations=evaluations, seconds=probes.seconds(), eps=probes.eps_text,
        method=request.method, mode="full", notes=notes,
        extra={"loss_value": probes.center, "suspects_refined": jd.refined,
               "evaluations_by_phase": {"probes": 3,
                                        "kernel": raw.calls,
                                        "noise": calibration.evaluations,
                                        "refinement": jd.evaluations
                                        - calibration.evaluations},
               **calibration.extra()}, accuracy=request.accuracy)
    result.detection_limit = detection_limit(numerical, analytic, noise, status,
                                             tiers.excellent)
    _explain_lowered_tier(result, probes, tiers)
    if request.accuracy is None and result.verdict == "suspicious":
        hint = accuracy_hint(numerical, analytic, noise, status, tiers.excellent)
        if hint:
            result.notes.append(hint)
    return result


def _explain_lowered_tier(result: GradCheckResult, probes: Probes, tiers: object) -> None:
    """A passed check whose relative error sits in a failing tier: say why it passed
    (_verdict note 5) and what would sharpen the check."""
    tier = tier_of(result.relative_error, tiers)
    if result.passed and tier in ("suspicious", "wrong"):
        result.notes.append(
            f"the relative error {result.relative_error:.1e} is in the {tier!r} tier, but "
            "no component differs from its numerical value by more than the estimated "
            f"noise (rounding of a loss of size |J| = {abs(probes.center):.3g} in "
            f"{tiers.dtype}, truncation, what the smaller steps resolved), so it is "
            "not called wrong. To check more sharply: check in float64 (parameters and loss), "
            "keep |J| small (a mean rather than a sum, no constant offsets), or use "
            "method='richardson'")
