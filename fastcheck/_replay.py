"""fastcheck.replay: run a recorded gradient check again and say whether its finding
is still there."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from fastcheck._budget import merge_steps, run_steps
from fastcheck._check import check_grad
from fastcheck._params import as_layout
from fastcheck._planned import finding_of
from fastcheck._replayfile import ReplayError, read_replay
from fastcheck._result import GradCheckResult
from fastcheck._verdict import ComponentStatus

__all__ = ["ReplayError", "replay"]

NOT_CHECKED = ComponentStatus.NOT_CHECKED
# Options a replay may be given again because a file cannot hold them.
_ALLOWED = ("before_eval", "threads", "progress", "warn_seconds", "executor")


def _same_finding(recorded: dict, now: dict) -> bool:
    """A failure is still there when the verdict still fails and, if components were
    named wrong, at least one of them still is; a pass when it still passes."""
    if recorded["passed"]:
        return bool(now["passed"])
    if now["passed"]:
        return False
    if recorded["wrong"]:
        return bool(set(recorded["wrong"]) & set(now["wrong"]))
    return recorded["verdict"] == now["verdict"]


def replay(path: Any, loss: Callable[[Any], Any], grad: Any, params: Any = None,
           **options: Any) -> GradCheckResult:
    """Run the check recorded in a replay file again, at the same point, with the same
    steps, seeds and options, and say whether its finding is still there.

    Parameters
    ----------
    path : str or os.PathLike
        A replay file written by ``check_grad(..., save=path)`` or the pytest plugin.
    loss, grad
        As for :func:`fastcheck.check_grad` (usually after a fix to `grad`).
    params : like the recorded parameters, optional
        Your own parameter arrays, when the loss reads them from elsewhere than its
        argument (a closure, a C loss, a model): the recorded values are written into
        them for the replay and your values are written back after it.  By default
        the loss gets fresh arrays holding the recorded values.
    **options
        before_eval, threads, progress, warn_seconds, executor: what a file cannot
        hold (a recorded check that used ``before_eval`` needs it again).

    Returns
    -------
    GradCheckResult
        The new result.  ``result.extra["replay"]`` holds the recorded finding and
        ``"reproduced"``: True when the recorded failure is still there (the check
        still fails and, if components were named wrong, one of them still is), or
        a recorded pass still passes; ``"same_components"``: whether the same
        components were checked one by one.  The first note says it in words.

    Raises
    ------
    ReplayError
        The file is corrupt or not a replay file, comes from another fastcheck
        version, or `params` has other names, shapes or dtypes than recorded.
    """
    bad = sorted(set(options) - set(_ALLOWED))
    if bad:
        raise TypeError(f"replay() got option(s) {bad} that the replay file fixes; only "
                        f"{', '.join(_ALLOWED)} may be given")
    record = read_replay(path)
    if params is None:
        params = record.params()
        snapshot = None
    else:
        layout = as_layout(params)
        record.check_layout(layout)
        snapshot = layout.snapshot()
        layout.restore(list(record.arrays))   # the recorded point, into the user's arrays
    try:
        results = run_steps(check_grad, loss, grad, params, record.steps,
                            {**record.options, **options})
    finally:
        if snapshot is not None:
            layout.restore(snapshot)
    result = merge_steps(results)
    recorded, now = record.finding, finding_of(result)
    reproduced = _same_finding(recorded, now)
    same = np.array_equal(record.checked, np.flatnonzero(result.status != NOT_CHECKED))
    where = f" at point {record.header['point']}" if record.header.get("point") is not None \
        else ""
    said = ", ".join(recorded["wrong"][:5]) or recorded["verdict"]
    result.notes.insert(0, (
        f"replay of {record.path}{where}: recorded {recorded['verdict']} ({said}); now "
        f"{result.verdict}: the finding is "
        + ("still there" if reproduced and not recorded["passed"] else
           "gone" if not recorded["passed"] else
           "unchanged (it passes)" if reproduced else "changed (it fails now)")
        + ("" if same else "; note that other components were checked one by one than "
           "recorded (the gradient or the loss behaves differently, so the check took "
           "another course)")))
    result.extra["replay"] = {"file": record.path, "recorded": recorded, "now": now,
                              "reproduced": reproduced, "same_components": same,
                              "point": record.header.get("point")}
    return result
