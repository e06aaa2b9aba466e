"""check_grad's test-suite keywords: points=, budget= and save=, around the check
at one point.

check_grad hands itself over as `check` (the check at one point), so this module
never imports _check: the dependency goes one way.  Order of work:

1. Validate params, points, budget and save before anything is evaluated (the
   first check at one point then validates the rest, also before evaluating).
2. For each point: write it into the user's arrays (_points note 2), and run
   either the budgeted steps (_budget) or one check with the given mode.
3. Put the user's values back, bit for bit, on every exit.
4. Combine the points (the worst verdict) and, on failure or always, write the
   replay file of the worst point (_replayfile).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from fastcheck._budget import check_budget, run_budget
from fastcheck._params import as_layout
from fastcheck._points import PointSet, combine_points, prepare_points, verdict_rank, write_point
from fastcheck._replayfile import check_save, write_replay
from fastcheck._result import GradCheckResult
from fastcheck._verdict import ComponentStatus

__all__ = ["check_planned", "finding_of"]

# The options a replay must repeat to evaluate the same thing (others, such as
# threads, progress or executor, do not change what is evaluated).
RECORDED = ("eps", "method", "refine", "rtol", "atol")
NOT_CHECKED = ComponentStatus.NOT_CHECKED


def finding_of(result: GradCheckResult, k: int = 10) -> dict:
    """What a replay compares: verdict, relative error, wrong and worst components."""
    wrong = result.layout.names_of(result.indices("wrong")[:100])
    worst = [c.name for c in result.worst(k) if c.status != "not checked"]
    return {"verdict": result.verdict, "passed": bool(result.passed),
            "relative_error": result.relative_error, "wrong": wrong, "worst": worst,
            "step": result.eps, "mode": result.mode, "evaluations": int(result.evaluations)}


def _one(check: Callable, loss: Any, grad: Any, params: Any, *, budget: float | None,
         mode: str, k: Any, max_evals: Any, seed: int | None,
         options: dict) -> tuple[GradCheckResult, list[dict]]:
    """The check at the point now in the arrays, and the steps to replay it."""
    if budget is not None:
        if seed is None:
            seed = int(np.random.default_rng().integers(2**31))
        return run_budget(check, loss, grad, params, budget, seed, options)
    step: dict = {"mode": mode}
    for key, value in (("k", k), ("max_evals", max_evals),
                       ("seed", None if mode == "full" else seed)):
        if value is not None:
            step[key] = value
    result = check(loss, grad, params, **step, **options)
    if mode != "full" and "seed" in result.extra:
        step["seed"] = int(result.extra["seed"])   # the one drawn, for the replay
    return result, [step]


def check_planned(check: Callable[..., GradCheckResult], loss: Any, grad: Any, params: Any,
                  *, points: Any, budget: Any, save: Any, save_when: Any, mode: str,
                  k: Any, max_evals: Any, seed: Any, options: dict) -> GradCheckResult:
    """check_grad with points=, budget= and/or save= (module notes)."""
    layout = as_layout(params)
    budget = check_budget(budget, mode=mode, k=k, max_evals=max_evals)
    target = check_save(save, save_when)
    if points is not None:
        point_set = prepare_points(points, layout, grad, seed)
    else:
        point_set = PointSet((None,), None, "given")
    count = len(point_set)
    drawn = point_set.kind in ("int", "callable")
    base = point_set.seed if drawn else seed
    results: list[GradCheckResult] = []
    steps_of: list[list[dict]] = []
    kept: tuple[int, list[np.ndarray]] | None = None   # the worst point's values
    snapshot = layout.snapshot() if point_set.kind != "given" else None
    try:
        for j, values in enumerate(point_set.values):
            if values is not None:
                write_point(layout, values)
            # Each point gets its own seed (budget steps use seed and seed + 1).
            seed_j = None if base is None else int(base) + (2 * j if budget else j)
            if budget is None and mode == "full" and drawn:
                seed_j = None   # the seed drew the points; a full check is not random
            result, steps = _one(check, loss, grad, params, budget=None if budget is None
                                 else budget / count, mode=mode, k=k, max_evals=max_evals,
                                 seed=seed_j, options=options)
            result.extra["point"] = j
            results.append(result)
            steps_of.append(steps)
            if target is not None and (kept is None
                                       or verdict_rank(result) > verdict_rank(results[kept[0]])):
                kept = (j, layout.snapshot())
    finally:
        if snapshot is not None and layout.changed_since(snapshot):
            layout.restore(snapshot)
    result = combine_points(results, point_set.seed if drawn else None)
    if target is not None and kept is not None and (save_when == "always"
                                                    or not result.passed):
        j, arrays = kept
        write_replay(target, layout, arrays,
                     options={key: options.get(key) for key in RECORDED},
                     steps=steps_of[j], finding=finding_of(results[j]),
                     checked=np.flatnonzero(results[j].status != NOT_CHECKED),
                     point=j if count > 1 else None,
                     points_seed=point_set.seed if drawn else None)
        result.extra["replay_file"] = str(target)
        result.notes.append(f"replay file written: {target} (fastcheck.replay(path, loss, "
                            "grad) runs the same check again at the same point)")
    return result
