"""Partial checks: what mode="sample" and mode="directional" share, and mode="sample".

Design notes:

1. A partial check starts where check_grad's full check starts: after validation
   and the two determinism probes, with J(theta) known.  :class:`PartialCheck`
   carries what both modes need (the loss, the layout, the analytic gradient,
   J(theta), the noise model's unit roundoff and tiers, the step rule) and counts
   evaluations against an optional budget.
2. Components checked one by one go through :meth:`PartialCheck.check_components`:
   the C kernel over an index list, then check_grad's own ``first_look`` and
   ``second_look``.  So a component's status means the same thing in every mode.
3. mode="sample" draws ``k`` components per parameter (stratified: every
   parameter, biases included, gets its share), seeded, and checks them one by
   one.  Components not drawn have status NOT_CHECKED; the notes say how much was
   covered, and that only mode="directional" covers every component.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fastcheck import _kernel
from fastcheck._accuracy import Accuracy
from fastcheck._evaluate import METHODS, run_kernel
from fastcheck._judge import (
    REFINE_LEVELS,
    Calibration,
    Noise,
    accuracy_hint,
    accuracy_notes,
    detection_limit,
    judge_components,
    limit_notes,
    status_notes,
)
from fastcheck._params import ParamLayout
from fastcheck._result import GradCheckResult, build_result
from fastcheck._verdict import ComponentStatus, Tiers

__all__ = [
    "DEFAULT_SAMPLE_K",
    "BudgetExhausted",
    "ModeOptions",
    "PartialCheck",
    "check_mode_options",
    "is_low_level_callable",
    "run_sample",
    "sample_indices",
]

_S = ComponentStatus
# mode="sample" without k: this many components per parameter (all of a smaller one).
DEFAULT_SAMPLE_K = 32


class BudgetExhausted(Exception):
    """Internal: the next step would exceed max_evals."""


@dataclass(frozen=True)
class ModeOptions:
    """The validated mode options of check_grad (see :func:`check_mode_options`)."""

    mode: str
    k: int | float | None = None
    max_evals: int | None = None
    seed: int | None = None
    k_per_block: tuple[int, ...] = ()


def is_low_level_callable(loss: Any) -> bool:
    """True for a ``scipy.LowLevelCallable`` (a loss written in C), without importing
    scipy when it is not already in use."""
    kind = type(loss)
    return kind.__name__ == "LowLevelCallable" and kind.__module__.startswith("scipy")


def check_c_loss_for_mode(loss: Any, params: Any, mode: str) -> None:
    """A C loss reads theta through one pointer, so mode="directional", which writes
    theta +- h v into the arrays and calls the loss itself, needs theta as a single
    C-contiguous array.  Raise before anything is evaluated otherwise."""
    if mode != "directional" or not is_low_level_callable(loss):
        return
    if not isinstance(params, np.ndarray):
        raise TypeError(
            "mode='directional' with a C loss (scipy.LowLevelCallable) needs theta as one "
            f"C-contiguous numpy array, the memory the loss reads; got {type(params).__name__}")
    if not params.flags.c_contiguous:
        raise ValueError(
            "mode='directional' with a C loss (scipy.LowLevelCallable) needs theta as one "
            f"C-contiguous array: the loss reads theta through a pointer, but this theta of "
            f"shape {params.shape} has strides {params.strides} (a view or Fortran order). "
            "Pass np.ascontiguousarray(theta) and read the loss from that array")


def _k_per_block(k: Any, layout: ParamLayout) -> tuple[int, ...]:
    sizes = [a.size for a in layout.arrays]
    if k is None:
        return tuple(min(DEFAULT_SAMPLE_K, s) for s in sizes)
    if isinstance(k, (bool, np.bool_)) or not isinstance(k, (int, float, np.integer,
                                                              np.floating)):
        raise TypeError("k must be a number of components per parameter (int >= 1) or a "
                        f"fraction of each parameter (float in (0, 1]); got {type(k).__name__}")
    if isinstance(k, (float, np.floating)):
        value = float(k)
        if not (0.0 < value <= 1.0):
            raise ValueError(f"k={k!r}: a float k is the fraction of each parameter to "
                             "sample and must be in (0, 1]; for a count pass an int")
        return tuple(max(1, math.ceil(value * s)) if s else 0 for s in sizes)
    count = int(k)
    if count < 1:
        raise ValueError(f"k must be >= 1 (components per parameter), got {k!r}")
    too_small = [(name, s) for name, s in zip(layout.names, sizes, strict=True)
                 if count > s > 0]
    if too_small:
        listed = ", ".join(f"{name!r} has {s}" for name, s in too_small)
        raise ValueError(
            f"k={count} is larger than a parameter block: {listed} component(s). k counts "
            "components drawn from every parameter; pass k <= "
            f"{min(s for _, s in too_small)}, or a fraction such as k=0.1")
    return tuple(count if s else 0 for s in sizes)


def check_mode_options(mode: str, layout: ParamLayout, method: str, *, k: Any = None,
                       max_evals: Any = None, seed: Any = None) -> ModeOptions:
    """Validate the options of the partial modes before anything is evaluated."""
    if k is not None and mode != "sample":
        raise ValueError(f"k= is the number of components per parameter for mode='sample'; "
                         f"it means nothing for mode={mode!r}")
    if max_evals is not None and mode != "directional":
        raise ValueError(f"max_evals= bounds mode='directional'; it means nothing for "
                         f"mode={mode!r}")
    if seed is not None:
        if mode == "full":
            raise ValueError("seed= seeds the random directions / samples of "
                             "mode='directional' and mode='sample'; mode='full' is not random")
        if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)) \
                or seed < 0:
            raise TypeError(f"seed must be a non-negative int or None, got {seed!r}")
        seed = int(seed)
    if mode == "directional":
        if method != "central":
            raise ValueError(
                f"mode='directional' uses central differences along random directions; "
                f"method={method!r} is not available there (use method='central', or "
                "mode='sample' / 'full' for other formulas)")
        from fastcheck._directional import check_max_evals
        max_evals = check_max_evals(max_evals, layout)
        return ModeOptions(mode, max_evals=max_evals, seed=seed)
    if mode == "sample":
        return ModeOptions(mode, k=k, seed=seed, k_per_block=_k_per_block(k, layout))
    return ModeOptions(mode)


@dataclass
class PartialCheck:
    """State shared by the partial modes (design note 1)."""

    loss: Callable[[Any], Any]
    layout: ParamLayout
    analytic: np.ndarray
    center: float
    unit: float
    tiers: Tiers
    method: str
    step: float | None
    relative: bool
    refine: bool
    threads: int
    evaluations: int
    max_evals: int | None = None
    progress: Callable[[int, int], Any] | None = None
    progress_total: int = 0
    executor: Any = None
    phases: dict = field(default_factory=dict)
    noise: Noise | None = None
    noise_option: str | float = "auto"   # check_grad's noise= (validated)
    accuracy: Accuracy | None = None     # check_grad's rtol= / atol= (validated)
    judged: list = field(default_factory=list, repr=False)
    _x: np.ndarray | None = field(default=None, repr=False)
    _calibration: Calibration | None = field(default=None, repr=False)

    # ------------------------------------------------------------- budget
    @property
    def remaining(self) -> float:
        if self.max_evals is None:
            return math.inf
        return self.max_evals - self.evaluations

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


def sample_indices(layout: ParamLayout, k_per_block: tuple[int, ...],
                   rng: np.random.Generator) -> np.ndarray:
    """k components per parameter, drawn without replacement; sorted flat indices."""
    picks = []
    for p, count in enumerate(k_per_block):
        size = layout.arrays[p].size
        local = np.arange(size) if count >= size else rng.choice(size, count, replace=False)
        picks.append(layout.offsets[p] + np.sort(local).astype(np.intp))
    return np.concatenate(picks)


def run_sample(check: PartialCheck, options: ModeOptions, *, seed: int, seconds: Callable,
               eps_text: str, notes: list[str],
               progress: Callable[[int, int], Any] | None = None) -> GradCheckResult:
    """mode="sample": k components per parameter, checked one by one (note 3)."""
    layout = check.layout
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
        evaluations=check.evaluations, seconds=seconds(), eps=eps_text, method=check.method,
        mode="sample", notes=notes,
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


def run_partial(options: ModeOptions, loss: Callable[[Any], Any], layout: ParamLayout,
                analytic: np.ndarray, *, center: float, unit: float, tiers: Tiers,
                method: str, step: float | None, relative: bool, refine: bool, threads: int,
                evaluations: int, seconds_per_eval: float, progress: Any,
                warn_seconds: float | None, eps_text: str, notes: list[str],
                started: float, executor: Any = None,
                noise: str | float = "auto", accuracy: Accuracy | None = None
                ) -> GradCheckResult:
    """Run mode="sample" or mode="directional" after check_grad's probes."""
    import time

    from fastcheck._check import _invalid_result
    from fastcheck._directional import ParamsModified, minimum_evals, run_directional
    from fastcheck._progress import progress_reporter, warn_if_long

    seed = options.seed
    if seed is None:
        seed = int(np.random.default_rng().integers(2**32))
    check = PartialCheck(loss, layout, analytic, center, unit, tiers, method, step, relative,
                         refine, threads, evaluations, executor=executor, noise_option=noise,
                         accuracy=accuracy)
    check.phases["probes"] = evaluations

    def seconds() -> float:
        return time.perf_counter() - started

    if options.mode == "sample":
        count = sum(options.k_per_block)
        estimate = warn_if_long(
            seconds_per_eval, check.component_cost(count),
            what=f"mode='sample' with {count:,} components", warn_seconds=warn_seconds,
            suggestion="mode='directional' covers every component in a few hundred "
                       "evaluations (max_evals=); or sample fewer (k=).", stacklevel=5)
        with progress_reporter(progress, total=count, estimate=estimate,
                               unit="components") as report:
            return run_sample(check, options, seed=seed, seconds=seconds,
                              eps_text=eps_text, notes=notes, progress=report)

    assert options.max_evals is not None
    # max_evals bounds the run; what it plans is the directional test of every
    # parameter (localisation only follows a failing one).
    planned = min(options.max_evals, minimum_evals(sum(1 for a in layout.arrays if a.size)))
    estimate = warn_if_long(
        seconds_per_eval, planned - evaluations,
        what=f"mode='directional' with max_evals={options.max_evals}",
        warn_seconds=warn_seconds, suggestion="Pass a smaller max_evals to bound it.",
        stacklevel=5)
    check.max_evals = options.max_evals - 1   # one more J(theta) after, in check_grad
    with progress_reporter(progress, total=options.max_evals, estimate=estimate,
                           unit="evaluations") as report:
        check.progress, check.progress_total = report, options.max_evals
        try:
            result = run_directional(check, seed=seed, seconds=seconds, eps_text=eps_text,
                                     notes=notes)
        except ParamsModified as exc:
            return _invalid_result(
                layout, analytic, f"the loss modified the parameter {exc} while it was "
                "perturbed (it was restored): a loss must only read its parameters. No "
                "verdict on the gradient", check.evaluations, seconds(), eps_text, method,
                "directional")
        if report is not None:
            report(check.evaluations + 1, check.evaluations + 1)
    result.extra["max_evals"] = options.max_evals
    return result
