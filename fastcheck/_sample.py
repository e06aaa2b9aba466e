"""mode="sample": k components per parameter, drawn at random, checked one by one.

Design notes:

1. ``k`` components per parameter are drawn (stratified: every parameter,
   biases included, gets its share), seeded, and checked one by one through
   :meth:`fastcheck._partial.PartialCheck.check_components`, as mode="full"
   checks them.  Components not drawn have status NOT_CHECKED; the notes say how
   much was covered, and that only mode="directional" covers every component.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from fastcheck._guard import Probes
from fastcheck._judge import accuracy_hint, status_notes
from fastcheck._params import ParamLayout
from fastcheck._partial import PartialCheck
from fastcheck._progress import progress_reporter, warn_if_long
from fastcheck._request import CheckRequest
from fastcheck._result import GradCheckResult, build_result
from fastcheck._verdict import ComponentStatus

__all__ = ["run_sample", "sample_indices"]

_S = ComponentStatus


def sample_indices(layout: ParamLayout, k_per_block: tuple[int, ...],
                   rng: np.random.Generator) -> np.ndarray:
    """k components per parameter, drawn without replacement; sorted flat indices."""
    picks = []
    for p, count in enumerate(k_per_block):
        size = layout.arrays[p].size
        local = np.arange(size) if count >= size else rng.choice(size, count, replace=False)
        picks.append(layout.offsets[p] + np.sort(local).astype(np.intp))
    return np.concatenate(picks)


def _sample(check: PartialCheck, seed: int,
            progress: Callable[[int, int], Any] | None) -> GradCheckResult:
    """k components per parameter, checked one by one (note 1)."""
    layout, options = check.layout, check.request.options
    eps_text, notes = check.probes.eps_text, check.probes.notes
    rng = np.random.default_rng(seed)
    flat = sample_indices(layout, options.k_per_block, rng)
    numerical_s, noise_s, status_s = check.check_components(flat, "components", progress)
    n = layout.size
    numerical = np.full(n, np.nan)
    noise = np.full(n, np.nan)
    status = np.full(n, _S.NOT_CHECKED, dtype=np.int8)
    numerical[flat], noise[flat], status[flat] = numerical_s, noise_s, status_s

    covered = ", ".join(f"{name} {count:,} of {a.size:,}" for name, count, a in
                        zip(layout.names, options.k_per_block, layout.arrays, strict=True))
    notes = list(notes)
    notes.append(f"sample mode: {flat.size:,} of {n:,} components checked one by one, drawn "
                 f"per parameter (seed {seed}): {covered}")
    if flat.size < n:
        notes.append("the other components were not checked: a wrong gradient there goes "
                     "unseen (mode='directional' covers every component in a few hundred "
                     "evaluations)")
    suspects = check.phases.get("unrefined", 0)
    notes += check.calibration().notes()
    notes += status_notes(layout, status, 0, False)
    notes += check.limit_notes(status)
    if suspects:
        notes.append(f"{suspects} suspect component(s) were not re-evaluated at smaller steps "
                     "and count as wrong")
    result = build_result(
        layout, numerical, check.analytic, noise, status, check.tiers,
        evaluations=check.evaluations, seconds=check.probes.seconds(), eps=eps_text,
        method=check.method, mode="sample", notes=notes,
        extra={"loss_value": check.center, "seed": seed,
               "sampled": dict(zip(layout.names, map(int, options.k_per_block),
                                   strict=True)),
               "evaluations_by_phase": dict(check.phases),
               **check.calibration().extra()}, accuracy=check.accuracy)
    result.detection_limit = check.detection_limit(status)
    if check.accuracy is None and result.verdict == "suspicious":
        hint = accuracy_hint(numerical_s, check.analytic[flat], noise_s, status_s,
                             check.tiers.excellent)
        if hint:
            result.notes.append(hint)
    return result


def run_sample(request: CheckRequest, probes: Probes, analytic: np.ndarray,
               seed: int) -> GradCheckResult:
    """mode="sample" after the probes: warn when long, show progress, check."""
    check = PartialCheck.start(request, probes, analytic)
    count = sum(request.options.k_per_block)
    estimate = warn_if_long(
        probes.seconds_per_eval, check.component_cost(count),
        what=f"mode='sample' with {count:,} components", warn_seconds=request.warn_seconds,
        suggestion="mode='directional' covers every component in a few hundred "
                   "evaluations (max_evals=); or sample fewer (k=).")
    with progress_reporter(request.progress, total=count, estimate=estimate,
                           unit="components") as report:
        return _sample(check, seed, report)
