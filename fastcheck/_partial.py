"""The state of a partial check (mode="sample" and mode="directional").

Design notes:

1. A partial check starts where a full check starts: after validation (the
   request) and the two determinism probes, with J(theta) known.
   :class:`PartialCheck` carries what both modes need on top of them and counts
   evaluations against an optional budget (max_evals, everything included).
2. Components checked one by one go through :meth:`PartialCheck.check_components`:
   the C kernel over an index list, then the one judge (_judge).  So a
   component's status means the same thing in every mode.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fastcheck import _kernel
from fastcheck._evaluate import METHODS, run_kernel
from fastcheck._guard import Probes
from fastcheck._judge import (
    REFINE_LEVELS,
    Calibration,
    Noise,
    accuracy_notes,
    detection_limit,
    judge_components,
    limit_notes,
)
from fastcheck._request import CheckRequest
from fastcheck._verdict import Tiers

__all__ = ["BudgetExhausted", "PartialCheck"]


class BudgetExhausted(Exception):
    """Internal: the next step would exceed max_evals."""


@dataclass
class PartialCheck:
    """A partial mode's state over one request (note 1): evaluations spent, by
    phase, against the budget; the judge's noise and tiers as they are refined."""

    request: CheckRequest
    probes: Probes
    analytic: np.ndarray
    evaluations: int
    tiers: Tiers
    max_evals: int | None = None
    # Evaluations the budget keeps for after the mode (the closing probe).
    reserved: int = 0
    progress: Callable[[int, int], Any] | None = None
    progress_total: int = 0
    phases: dict = field(default_factory=dict)
    noise: Noise | None = None
    judged: list = field(default_factory=list, repr=False)
    _x: np.ndarray | None = field(default=None, repr=False)
    _calibration: Calibration | None = field(default=None, repr=False)

    @classmethod
    def start(cls, request: CheckRequest, probes: Probes,
              analytic: np.ndarray) -> PartialCheck:
        check = cls(request, probes, analytic, probes.evaluations, probes.tiers)
        check.phases["probes"] = probes.evaluations
        return check

    # The request's and the probes' values, under the names the modes use.
    loss = property(lambda self: self.request.loss)
    layout = property(lambda self: self.request.layout)
    method = property(lambda self: self.request.method)
    refine = property(lambda self: self.request.refine)
    threads = property(lambda self: self.request.threads)
    executor = property(lambda self: self.request.executor)
    noise_option = property(lambda self: self.request.noise)
    accuracy = property(lambda self: self.request.accuracy)
    center = property(lambda self: self.probes.center)
    unit = property(lambda self: self.probes.unit)
    step = property(lambda self: self.probes.step)
    relative = property(lambda self: self.probes.relative)

    # ------------------------------------------------------------- budget
    @property
    def remaining(self) -> float:
        if self.max_evals is None:
            return math.inf
        return self.max_evals - self.reserved - self.evaluations

    def spend(self, calls: int, phase: str) -> None:
        self.evaluations += calls
        self.phases[phase] = self.phases.get(phase, 0) + calls
        if self.progress is not None and calls:
            self.progress(self.evaluations, self.progress_total)

    def evaluate(self, phase: str) -> float:
        """J at the parameters as they are now (one evaluation, counted)."""
        if self.remaining < 1:
            raise BudgetExhausted
        value = _kernel.loss_value(self.loss(self.layout.params))
        self.spend(1, phase)
        return value

    def values(self) -> np.ndarray:
        """theta as one flat float64 array (computed once)."""
        if self._x is None:
            self._x = self.layout.values()
        return self._x

    # ---------------------------------------------------- one by one (note 2)
    def component_cost(self, count: int) -> int:
        """Evaluations the first look at `count` components takes."""
        return METHODS[self.method].evals_per_component * count

    def check_components(self, flat: np.ndarray, phase: str = "components",
                         progress: Callable[[int, int], Any] | None = None,
                         ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Check components one by one, as mode="full" does.

        Returns ``(numerical, noise, status)`` for `flat` (sorted, unique flat
        indices).  With a budget, suspects that cannot be refined within it keep
        the first look's verdict (WRONG), as with ``refine=False``.
        """
        flat = np.asarray(flat, dtype=np.intp)
        if flat.size == 0:
            empty = np.empty(0)
            return empty, empty.copy(), np.empty(0, dtype=np.int8)
        if self.remaining < self.component_cost(flat.size):
            raise BudgetExhausted
        raw = run_kernel(self.loss, self.layout, self.method, eps=self.step,
                         relative=self.relative, indices=flat, with_center=False,
                         threads=self.threads, progress=progress, executor=self.executor)
        self.spend(raw.calls, phase)
        if self.method != "complex":
            raw.center = self.center
        analytic = self.analytic[flat]
        per_suspect = 2 * REFINE_LEVELS + (0 if self.method == "central" else 2)

        def affordable(count: int) -> bool:
            return self.remaining >= per_suspect * count

        jd = judge_components(
            self.loss, self.layout, raw, analytic, self.values()[flat],
            self.noise if self.noise is not None else Noise(self.unit), self.tiers,
            refine=self.refine, threads=self.threads,
            calibrate=self.calibration() if self.noise_option != "model" else None,
            affordable=affordable, accuracy=self.accuracy)
        calibration = self.calibration()
        noise_spent = calibration.evaluations - self.phases.get("noise", 0)
        self.spend(noise_spent, "noise")
        self.spend(jd.evaluations - noise_spent, phase)
        self.noise, self.tiers = jd.noise, jd.tiers
        if jd.unrefined:
            self.phases["unrefined"] = self.phases.get("unrefined", 0) + jd.unrefined
        self.judged.append((flat, jd))
        return jd.numerical, jd.err, jd.status

    def limit_notes(self, status: np.ndarray) -> list[str]:
        """The notes on unresolved components, over everything judged one by one."""
        if not self.judged:
            return []
        flat = np.concatenate([f for f, _ in self.judged])
        parts = [np.concatenate([getattr(jd, a) for _, jd in self.judged])
                 for a in ("numerical", "err")]
        return limit_notes(self.layout, parts[0], self.analytic[flat], parts[1],
                           status[flat], self.tiers, self.noise or Noise(self.unit), None,
                           flat=flat) + accuracy_notes(
            self.layout, self.analytic[flat], parts[1], status[flat], self.accuracy,
            flat=flat)

    def detection_limit(self, status: np.ndarray) -> float:
        """The judged components' detection limit (_judge note 4)."""
        if not self.judged:
            return math.nan
        flat = np.concatenate([f for f, _ in self.judged])
        numerical = np.concatenate([jd.numerical for _, jd in self.judged])
        err = np.concatenate([jd.err for _, jd in self.judged])
        return detection_limit(numerical, self.analytic[flat], err, status[flat],
                               self.tiers.excellent)

    def calibration(self) -> Calibration:
        """The one noise measurement of this check (made when the judge asks)."""
        if self._calibration is None:
            given = self.noise_option if isinstance(self.noise_option, float) else None
            self._calibration = Calibration(self.loss, self.layout, self.center, self.unit,
                                            self.tiers, given=given)
        return self._calibration
