"""points=: a gradient check at several points, the worst verdict, and where each
finding was made.

Design notes:

1. Why.  A gradient can be right at one point and wrong at another: a branch
   taken only for negative inputs, a term that vanishes at a zero initialisation,
   a bias gradient that is right while the bias is 0.  A check at three points
   catches what one misses.
2. In place.  The loss reads the user's own arrays, so each point is written into
   them, checked, and the original values are written back on every exit
   (success, exception, Ctrl-C), bit for bit, by the caller of :func:`at_points`.
3. Which points.  ``points=N`` (an int) checks the given point and N - 1 others
   drawn around it: each parameter moves by DRAW_SCALE times its RMS value (times
   1 when it is all zeros) times a standard normal draw, from a seeded generator.
   A list gives the parameter sets themselves (each like params; for a single
   array theta, the rows of a 2-d array also do).  A callable is
   called as ``points(seed)`` and returns such a list.  Every set is validated
   against params (names, shapes, finite values) before anything is evaluated.
4. The gradient must be a callable ``grad(params)``: a fixed gradient array
   belongs to one point.
5. The result is the worst point's result (verdict order: excellent, ok,
   suspicious, wrong, nondeterministic, invalid; ties by relative error), with
   every point's result and a per-point table in the report.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from fastcheck._params import ParamLayout
from fastcheck._result import GradCheckResult

__all__ = ["DRAW_SCALE", "MultiPointResult", "PointSet", "combine_points", "prepare_points",
           "verdict_rank", "write_point"]

DRAW_SCALE = 0.1
MAX_POINTS = 10_000
_ORDER = ("excellent", "ok", "suspicious", "wrong", "nondeterministic", "invalid")


@dataclass(frozen=True)
class PointSet:
    """Validated points (note 3): flat float64 values, None for the given point."""

    values: tuple[np.ndarray | None, ...]
    seed: int | None
    kind: str   # "int", "list" or "callable"

    def __len__(self) -> int:
        return len(self.values)


def verdict_rank(result: GradCheckResult) -> tuple[int, float]:
    """Sort key: larger is worse (note 5)."""
    rank = _ORDER.index(result.verdict) if result.verdict in _ORDER else len(_ORDER)
    rel = result.relative_error
    return rank, rel if isinstance(rel, float) and math.isfinite(rel) else math.inf


def _draw(layout: ParamLayout, count: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    x = layout.values()
    scale = np.empty_like(x)
    for p in range(len(layout.arrays)):
        lo, hi = int(layout.offsets[p]), int(layout.offsets[p + 1])
        rms = float(np.sqrt(np.mean(x[lo:hi] ** 2))) if hi > lo else 0.0
        scale[lo:hi] = DRAW_SCALE * (rms if rms > 0 and math.isfinite(rms) else 1.0)
    return [x + scale * rng.standard_normal(x.size) for _ in range(count)]


def _validated(sets: Any, layout: ParamLayout, what: str) -> list[np.ndarray]:
    if isinstance(sets, (str, bytes)) or not isinstance(sets, Sequence):
        raise TypeError(f"{what} must be a list of parameter sets (each like params), got "
                        f"{type(sets).__name__}")
    if not 1 <= len(sets) <= MAX_POINTS:
        raise ValueError(f"{what} must hold between 1 and {MAX_POINTS:,} parameter sets, "
                         f"got {len(sets)}")
    out = []
    for j, values in enumerate(sets):
        flat = layout.flatten(values, what=f"{what}[{j}]")
        bad = np.flatnonzero(~np.isfinite(flat))
        if bad.size:
            raise ValueError(f"{what}[{j}] is not finite at {layout.name_of(int(bad[0]))} "
                             f"({bad.size} non-finite value(s) in all)")
        out.append(flat)
    return out


def prepare_points(points: Any, layout: ParamLayout, grad: Any, seed: Any) -> PointSet:
    """Validate points= (and the seed that draws them) before any evaluation."""
    if seed is not None and (isinstance(seed, (bool, np.bool_))
                             or not isinstance(seed, (int, np.integer)) or seed < 0):
        raise TypeError(f"seed must be a non-negative int or None, got {seed!r}")
    if not callable(grad):
        raise TypeError(
            "points= needs the analytic gradient as a callable grad(params), evaluated at "
            f"each point; got a fixed {type(grad).__name__}, which belongs to one point")
    if isinstance(points, (bool, np.bool_)):
        raise TypeError("points must be an int (how many points), a list of parameter "
                        "sets, or a callable points(seed) returning one; got a bool")
    chosen = int(seed) if seed is not None else int(np.random.default_rng().integers(2**32))
    if isinstance(points, (int, np.integer)):
        if not 1 <= points <= MAX_POINTS:
            raise ValueError(f"points={points}: the number of points must be between 1 and "
                             f"{MAX_POINTS:,}")
        return PointSet((None, *_draw(layout, int(points) - 1, chosen)), chosen, "int")
    if callable(points):
        sets = points(chosen)
        return PointSet(tuple(_validated(sets, layout, "points(seed)")), chosen, "callable")
    if isinstance(points, np.ndarray) and points.ndim >= 1:
        points = list(points)   # rows: one point each (theta as a single array)
    if isinstance(points, Sequence) and not isinstance(points, (str, bytes)):
        return PointSet(tuple(_validated(points, layout, "points")), None, "list")
    raise TypeError("points must be an int (how many points), a list of parameter sets, or "
                    f"a callable points(seed) returning one; got {type(points).__name__}")


def write_point(layout: ParamLayout, flat: np.ndarray) -> None:
    """Write flat float64 values into the user's arrays (cast to each dtype)."""
    for p, array in enumerate(layout.arrays):
        lo, hi = int(layout.offsets[p]), int(layout.offsets[p + 1])
        array[...] = flat[lo:hi].reshape(array.shape)


@dataclass
class MultiPointResult(GradCheckResult):
    """The result of a check at several points (``points=``).

    It is the worst point's :class:`GradCheckResult` (its verdict, components and
    report), with the others beside it.

    Attributes
    ----------
    points : list of GradCheckResult
        One result per point, in order.
    point : int
        The index of the worst point, whose result this is.
    """

    points: list[GradCheckResult] = field(default_factory=list, repr=False)
    point: int = 0

    def findings(self, k: int = 10) -> list[dict]:
        """What was found, and at which point: one dict per finding.

        A finding is a component that is wrong, not finite or at a kink (up to `k`
        per point), or a point where the loss was nondeterministic or invalid.
        """
        out = []
        for j, r in enumerate(self.points):
            if r.verdict in ("nondeterministic", "invalid"):
                out.append({"point": j, "component": None, "status": r.verdict})
                continue
            for c in r.worst(k):
                if c.status in ("ok", "not checked"):
                    continue
                out.append({"point": j, "component": c.name, "status": c.status,
                            "numerical": c.numerical, "analytic": c.analytic})
        return out

    def summary(self) -> str:
        failing = sum(not r.passed for r in self.points)
        return (f"{super().summary()}; worst of {len(self.points)} points: point {self.point}"
                + (f", {failing} failing" if failing else ""))

    def report(self, k: int = 8) -> str:
        rows = []
        for j, r in enumerate(self.points):
            found = [c.name for c in r.worst(3) if c.status not in ("ok", "not checked")]
            rows.append(f"  {j:>5}  {r.verdict:<16}  {r.relative_error:.2e}  "
                        f"{r.evaluations:>9,}  {', '.join(found) or '-'}")
        table = ["points (the worst is reported in full below):",
                 "  point  verdict           rel. error  evaluations  findings", *rows]
        single = GradCheckResult.report(self, k)
        head, _, rest = single.partition("\n")
        return "\n".join([head, *table, rest])

    def to_dict(self, k: int = 10) -> dict:
        d = super().to_dict(k)
        d["worst_point"] = self.point
        d["points"] = [{"point": j, "verdict": r.verdict, "passed": bool(r.passed),
                        "relative_error": r.relative_error
                        if math.isfinite(r.relative_error) else str(r.relative_error),
                        "evaluations": int(r.evaluations)}
                       for j, r in enumerate(self.points)]
        d["findings"] = [{key: (v if not isinstance(v, float) or math.isfinite(v) else str(v))
                          for key, v in f.items()} for f in self.findings(k)]
        return d


def combine_points(results: list[GradCheckResult], seed: int | None) -> GradCheckResult:
    """One result for several points (note 5); a single point is returned as is."""
    if len(results) == 1:
        return results[0]
    worst = max(range(len(results)), key=lambda j: verdict_rank(results[j]))
    base = results[worst]
    values = {f.name: getattr(base, f.name) for f in fields(GradCheckResult)}
    combined = MultiPointResult(**values, points=list(results), point=worst)
    combined.evaluations = sum(r.evaluations for r in results)
    combined.seconds = sum(r.seconds for r in results)
    combined.notes = [f"checked at {len(results)} points"
                      + (f" (drawn with seed {seed})" if seed is not None else "")
                      + f"; this is point {worst}, the worst; "
                      + ", ".join(f"point {j}: {r.verdict}" for j, r in enumerate(results)),
                      *base.notes]
    combined.extra = {**base.extra, "point": worst, "points_seed": seed}
    return combined
