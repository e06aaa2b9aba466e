"""budget=: choose what to check so that a check ends within a time budget, and
say what the budget bought.

Design notes:

1. Seconds, not evaluations: a test suite thinks in seconds.  The cost of one
   evaluation is measured, not guessed: the loss (a Python one) is timed call by
   call in every step, and a step's wall time minus the loss's time is the fixed
   cost of one check call (validation and the O(n) work: snapshot, directions,
   ranking, report).  Both estimates come from the latest step (the fixed cost:
   the least seen; the first call in a process pays one-time costs).
2. The first step is the directional test with the fewest evaluations that
   decide it: J(theta) three times and two random directions per parameter
   (3 + 4 x blocks evaluations, whatever the size).  It covers every component
   at the directional detection limit, and a correct gradient passes it; on a
   large model it is what finds one wrong component among a million.  (With a
   method other than central, an executor or a C loss it is one component per
   parameter instead.)
3. A failing first step is followed by a full check when that fits in the time
   left, else by the directional check again with max_evals sized to the time,
   to localise: either names the wrong components, and the plan ends there (the
   test fails anyway).
   A passing one is followed by a full check when its 2n + 4 evaluations and the
   fixed cost fit in what is left (FILL of it, leaving room for refining a few
   suspects); otherwise by sample steps.
4. What is left buys components checked one by one (mode="sample" with a
   fraction of each parameter), sized from the measured costs so that the check
   ends near the budget.  A step takes STEP_SHARE of what is left and the next
   one, sized from costs measured again, the rest: on a machine whose speed
   changes, only the last and smallest step carries the error.
5. The steps are recorded (mode, k, max_evals, seed): a replay runs the same steps
   without timing anything, so it checks the same components on any machine.
6. The report says what the budget bought: components checked one by one, the
   detection limit, and what a larger budget would add.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from fastcheck._lowlevel import as_c_loss
from fastcheck._params import as_layout
from fastcheck._request import DEFAULT_MAX_EVALS, localising_evals, minimum_evals
from fastcheck._result import GradCheckResult, build_result
from fastcheck._verdict import KAPPA, ComponentStatus

__all__ = ["check_budget", "merge_steps", "run_budget", "run_steps"]

_S = ComponentStatus
FILL = 0.92              # share of what is left that a step is sized to (note 3)
MAX_SAMPLE_STEPS = 4
# The fixed cost of a directional check over a sample check's: it also draws two
# random directions per parameter and writes theta +- h v (measured 2.8 on the
# 1e6-parameter network of bench/bench_large.py).
DIRECTIONAL_OVERHEAD = 2.5
STEP_SHARE = 0.75        # a sample step that is not the last takes this share (note 4)


def check_budget(budget: Any, *, mode: str, k: Any, max_evals: Any) -> float | None:
    """Validate budget= (seconds) before any evaluation; None when not given."""
    if budget is None:
        return None
    if isinstance(budget, (bool, np.bool_)) or not isinstance(budget, (int, float, np.number)):
        raise TypeError(f"budget must be a number of seconds (e.g. budget=2.0), got "
                        f"{type(budget).__name__}")
    value = float(budget)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"budget must be a finite number of seconds > 0, got {budget!r}")
    if mode != "full" or k is not None or max_evals is not None:
        raise ValueError("budget= chooses the mode (full, directional, sample) and its k / "
                         "max_evals itself; pass budget= without mode=, k= or max_evals=")
    return value


class TimedLoss:
    """A Python loss whose calls are timed (note 1); picklable like the loss."""

    def __init__(self, loss: Callable[[Any], Any]) -> None:
        self.loss = loss
        self.calls = 0
        self.seconds = 0.0

    def __call__(self, params: Any) -> Any:
        start = time.perf_counter()
        try:
            return self.loss(params)
        finally:
            self.seconds += time.perf_counter() - start
            self.calls += 1


def _is_python_loss(loss: Any) -> bool:
    """A loss the kernel calls through Python (it can be timed by a wrapper)."""
    try:
        return callable(loss) and as_c_loss(loss) is None
    except (TypeError, ValueError):   # a C loss with a bad signature: the check says so
        return False


def run_steps(check: Callable, loss: Any, grad: Any, params: Any, steps: list[dict],
              options: dict) -> list[GradCheckResult]:
    """Run recorded steps (note 5): the steps a budgeted check ran, all of them."""
    return [check(loss, grad, params, **step, **options) for step in steps]


def _step(mode: str, seed: int, **kw: Any) -> dict:
    return {"mode": mode, **({"seed": seed} if mode != "full" else {}), **kw}


def _localise_step(first: GradCheckResult, left: float, costs: dict,
                   seed: int) -> dict | None:
    """Note 3: the directional check again, with max_evals sized to the time left to
    localise what it found; None when that is too little to localise anything."""
    per_eval, fixed = costs["eval_seconds"], costs["fixed_seconds"]
    max_evals = min(DEFAULT_MAX_EVALS, int((FILL * left - fixed) / max(per_eval, 1e-12)))
    blocks = sum(1 for p in first.parameters if p.size)
    if max_evals < localising_evals(blocks, max(p.size for p in first.parameters)):
        return None
    return _step("directional", seed, max_evals=max_evals)


class _Meter:
    """Runs the steps of a budgeted check and keeps the costs it measured (note 1):
    the time of one evaluation and the fixed cost of one check call, both from the
    latest step, so each estimate follows the machine's current speed."""

    def __init__(self, check: Callable, loss: Any, grad: Any, params: Any,
                 options: dict, budget: float) -> None:
        self.started = time.perf_counter()
        self.budget = budget
        self.call = (check, grad, params, {**options, "warn_seconds": None})
        self.loss = loss
        self.timed = _is_python_loss(loss)
        self.costs = {"eval_seconds": 0.0, "fixed_seconds": 0.0}
        self.steps: list[dict] = []
        self.results: list[GradCheckResult] = []

    def left(self) -> float:
        return self.budget - (time.perf_counter() - self.started)

    def run(self, step: dict) -> bool:
        check, grad, params, options = self.call
        loss = TimedLoss(self.loss) if self.timed else self.loss
        start = time.perf_counter()
        result = check(loss, grad, params, **step, **options)
        wall = time.perf_counter() - start
        if self.timed and loss.calls:
            # The fixed cost: the least seen (the first call in a process pays
            # one-time costs that later ones do not).
            fixed = max(0.0, wall - loss.seconds)
            if self.results:
                fixed = min(fixed, self.costs["fixed_seconds"])
            self.costs = {"eval_seconds": loss.seconds / loss.calls, "fixed_seconds": fixed}
        elif not self.results:   # a C loss runs inside the kernel: all to the evaluations
            self.costs = {"eval_seconds": wall / max(1, result.evaluations),
                          "fixed_seconds": 0.0}
        self.steps.append(step)
        self.results.append(result)
        return result.passed

    def sample_count(self, last: bool) -> int:
        """Components the next sample step checks (note 4): what is left, or
        STEP_SHARE of it when a later step can correct for a changed speed."""
        per_eval, fixed = self.costs["eval_seconds"], self.costs["fixed_seconds"]
        # The fixed cost is the most variable part on a busy machine: keep half of
        # it again in reserve.
        seconds = FILL * self.left() - 1.5 * fixed
        if not last and seconds > 4 * fixed:
            seconds *= STEP_SHARE
        return int(seconds / (2 * max(per_eval, 1e-12)))


def _derived(seed: int, i: int) -> int:
    """The seed of a budget's i-th sample step: distinct from every other (seed, i)."""
    return int(np.random.SeedSequence((seed, i)).generate_state(1)[0])


def _first_step(params: Any, loss: Any, options: dict, seed: int) -> dict:
    """Note 2: the directional test with the fewest evaluations that decide it (the
    probes and two directions per parameter), where it is available; else one
    component per parameter."""
    if (options.get("method", "central") != "central" or options.get("executor") is not None
            or not _is_python_loss(loss)):
        return _step("sample", seed, k=1)
    blocks = sum(1 for a in as_layout(params).arrays if a.size)
    return _step("directional", seed, max_evals=minimum_evals(blocks))


def run_budget(check: Callable, loss: Any, grad: Any, params: Any, budget: float,
               seed: int, options: dict) -> tuple[GradCheckResult, list[dict]]:
    """Plan and run the steps of a budgeted check (notes 1-4); the merged result
    and the steps that were run."""
    meter = _Meter(check, loss, grad, params, options, budget)
    first_step = _first_step(params, loss, options, seed)
    passed = meter.run(first_step)
    first = meter.results[0]
    n, blocks = first.status.size, len(first.parameters)
    if first_step["mode"] == "directional":
        # A sample step's fixed cost, until one is measured (note 1).
        meter.costs["fixed_seconds"] /= DIRECTIONAL_OVERHEAD
    per_eval, fixed = meter.costs["eval_seconds"], meter.costs["fixed_seconds"]
    full_fits = (2 * n + 4) * per_eval + fixed <= FILL * meter.left()
    if not passed:
        if first_step["mode"] == "directional" and first.verdict not in ("nondeterministic",
                                                                         "invalid"):
            # Name the wrong components: one by one if that fits, else by localising.
            step = _step("full", seed) if full_fits else _localise_step(
                first, meter.left(), meter.costs, seed)
            if step is not None:
                meter.run(step)
    elif full_fits:
        meter.steps, meter.results = [], []
        meter.run(_step("full", seed))
    else:
        # Sample steps while what is left buys evaluation time worth at least a
        # step's fixed cost (each step re-measures the costs).
        for i in range(1, MAX_SAMPLE_STEPS + 1):
            count = meter.sample_count(last=i == MAX_SAMPLE_STEPS)
            fixed, per_eval = meter.costs["fixed_seconds"], meter.costs["eval_seconds"]
            if not passed or count < blocks or 2 * count * per_eval < fixed:
                break
            passed = meter.run(_step("sample", _derived(seed, i), k=min(1.0, count / n)))
    return _finish(meter.results, meter.steps, budget, meter.started, meter.costs), meter.steps


# Notes in which a partial mode describes its own coverage: the budget's first note
# describes the coverage of all the steps together instead.
_STEP_HEADS = ("directional mode:", "sample mode:", "the other components were not checked")


def merge_steps(results: list[GradCheckResult]) -> GradCheckResult:
    """One result from the steps' results (note 5).

    A full check or a failing step stands alone; otherwise the components checked
    one by one are merged, and the verdict is the worst of the steps'."""
    if len(results) == 1 or results[-1].mode == "full" or not results[-1].passed:
        return results[-1]
    base = results[-1]
    n = base.status.size
    numerical, noise = np.full(n, np.nan), np.full(n, np.nan)
    status = np.full(n, _S.NOT_CHECKED, dtype=np.int8)
    notes: list[str] = []
    for r in results:
        seen = r.status != _S.NOT_CHECKED
        numerical[seen], noise[seen], status[seen] = (r.numerical_flat[seen],
                                                      r.noise_flat[seen], r.status[seen])
        notes += [note for note in r.notes if note not in notes
                   and not note.startswith(_STEP_HEADS)]
    modes = "+".join(m for m in ("full", "directional", "sample") if any(r.mode == m
                                                                          for r in results))
    merged = build_result(
        base.layout, numerical, base.analytic_flat, noise, status, base.tiers,
        evaluations=sum(r.evaluations for r in results),
        seconds=sum(r.seconds for r in results), eps=base.eps, method=base.method,
        mode=modes, notes=notes, extra={"steps": [r.extra for r in results]},
        accuracy=base.accuracy)
    order = ("excellent", "ok", "suspicious", "wrong")
    worst = max((r.verdict for r in [merged, *results]), key=order.index)
    merged.verdict, merged.passed = worst, worst in ("excellent", "ok")
    return merged


def component_limit(result: GradCheckResult) -> float:
    """The smallest relative error of one component that its one-by-one check would
    have called wrong, the median over the components checked (NaN if none)."""
    # TODO(merge with issue 11): use result.detection_limit once it exists.
    checked = (result.status == _S.OK) | (result.status == _S.WRONG)
    g = np.abs(result.analytic_flat[checked])
    noise = result.noise_flat[checked]
    floor = result.tiers.excellent if result.tiers is not None else 0.0
    keep = (g > 0) & np.isfinite(noise)
    if not np.any(keep):
        return math.nan
    return float(np.median(KAPPA * noise[keep] / g[keep] + 2 * floor))


def directional_limit(result: GradCheckResult) -> float:
    """The smallest error of a single component (relative to its parameter's RMS
    gradient) that the directional tests would have seen: 2 x tolerance, since
    |v_i| >= 0.5; the worst parameter's.  NaN when no directional test ran."""
    # TODO(merge with issue 11): use result.detection_limit once it exists.
    worst = math.nan
    layout = result.layout
    for p, name in enumerate(layout.names):
        tests = result.extra.get("directional", {}).get(name, {}).get("tests", [])
        tols = [t["tolerance"] for t in tests if isinstance(t.get("tolerance"), float)]
        lo, hi = int(layout.offsets[p]), int(layout.offsets[p + 1])
        g = result.analytic_flat[lo:hi]
        rms = float(np.sqrt(np.mean(g * g))) if hi > lo else 0.0
        if tols and rms > 0:
            limit = 2 * max(tols) / rms
            worst = limit if math.isnan(worst) else max(worst, limit)
    return worst


def _finish(results: list[GradCheckResult], steps: list[dict], budget: float,
            started: float, costs: dict) -> GradCheckResult:
    result = merge_steps(results)
    spent = time.perf_counter() - started
    n = result.status.size
    one_by_one = int(np.count_nonzero(result.status != _S.NOT_CHECKED))
    limit = component_limit(result)
    directional = next((r for r in results if r.mode == "directional"), None)
    d_limit = directional_limit(directional) if directional is not None else math.nan
    per_eval, fixed = costs["eval_seconds"], costs["fixed_seconds"]
    full_seconds = (2 * n + 4) * per_eval + fixed
    plan = " + ".join(s["mode"] + (f" (k={s['k']:.3g})" if "k" in s else "")
                      + (f" (max_evals={s['max_evals']})" if "max_evals" in s else "")
                      for s in steps)
    bought = (f"budget {budget:.3g} s (spent {spent:.3g} s; one evaluation "
              f"{per_eval * 1e3:.3g} ms): {plan}; {one_by_one:,} of {n:,} components "
              "checked one by one")
    if math.isfinite(limit):
        bought += (f", where an error of {limit:.2g} relative in one component would have "
                   "been seen (median)")
    if directional is not None:
        bought += ("; every component covered by the directional test, which sees a single "
                   f"wrong component off by {d_limit:.2g} of its parameter's RMS gradient")
    if not result.passed:
        larger = ("the gradient is wrong: a larger budget would only check more of it")
    elif one_by_one >= n:
        larger = "a larger budget would add nothing: every component was checked one by one"
    else:
        twice = min(n, one_by_one + max(0, int((budget - fixed) / (2 * per_eval))))
        larger = (f"a larger budget would add: {full_seconds:.3g} s checks every component "
                  f"one by one (mode='full'); {2 * budget:.3g} s about {twice:,}")
    result.notes = [f"{bought}; {larger}", *result.notes]
    result.seconds = spent
    result.extra["budget"] = {
        "seconds": budget, "spent": spent, **costs, "steps": steps,
        "components_checked": one_by_one, "detection_limit": limit,
        "directional_limit": d_limit, "full_seconds_estimate": full_seconds,
        "larger_budget": larger}
    return result
