"""GradCheckResult: everything a check found, as a report and as plain data."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fastcheck._accuracy import Accuracy
from fastcheck._params import ParamLayout
from fastcheck._verdict import TIERS, ComponentStatus, Tiers, relative_error, tier_of

__all__ = ["Component", "GradCheckResult", "ParameterReport", "build_result"]

_S = ComponentStatus


@dataclass(frozen=True)
class Component:
    """One component of the gradient, as ranked by :meth:`GradCheckResult.worst`.

    Attributes
    ----------
    name : str
        ``"W2[3, 1]"``, ``"theta[17]"``.
    index : int
        Flat index in theta (parameters concatenated in order, each in C order).
    numerical, analytic : float
    abs_diff : float
        ``|numerical - analytic|``.
    rel_diff : float
        ``|numerical - analytic| / (|numerical| + |analytic|)`` (0 when both are 0).
    noise : float
        The estimated error of the numerical value (rounding plus truncation).
    score : float
        The ranking key: ``abs_diff / (|numerical| + |analytic| + 3 * noise)``.
    status : str
        "ok", "wrong", "kink", "nonfinite loss", "nonfinite gradient", "not checked"
        or "unresolved".
    """

    name: str
    index: int
    numerical: float
    analytic: float
    abs_diff: float
    rel_diff: float
    noise: float
    score: float
    status: str

    def as_dict(self) -> dict:
        return {k: _plain(v) for k, v in self.__dict__.items()}


@dataclass(frozen=True)
class ParameterReport:
    """The check restricted to one parameter (one array of params).

    Attributes
    ----------
    name : str
    shape : tuple of int
    dtype : str
    relative_error : float
        The seed metric over this parameter's checked, non-kink components.
    verdict : str
    size, checked, wrong, kinks, nonfinite : int
        Component counts.
    worst : str or None
        Name of this parameter's highest-ranked component.
    """

    name: str
    shape: tuple
    dtype: str
    relative_error: float
    verdict: str
    size: int
    checked: int
    wrong: int
    kinks: int
    nonfinite: int
    worst: str | None

    def as_dict(self) -> dict:
        d = {k: _plain(v) for k, v in self.__dict__.items()}
        d["shape"] = list(self.shape)
        return d


def _plain(value: Any) -> Any:
    """JSON-friendly scalars (NaN and inf become strings)."""
    if isinstance(value, (np.floating, float)):
        value = float(value)
        return value if math.isfinite(value) else str(value)
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value


@dataclass
class GradCheckResult:
    """The outcome of a gradient check.

    Print it for a report; :meth:`to_dict` gives plain data for JSON.

    Attributes
    ----------
    verdict : str
        "excellent", "ok", "suspicious" or "wrong" for the gradient; "unresolved"
        when no component is wrong but some could not be resolved to the "ok"
        tier (or only kinks were left to judge): not a pass, see the notes for
        the limit and the step that would resolve them; or "nondeterministic"
        (the loss is not a function of the parameters alone) or "invalid" (the
        loss changed the parameters, or is not finite at them).
    passed : bool
        True for "excellent" and "ok".
    relative_error : float
        ``‖numerical − analytic‖₂ / (‖numerical‖₂ + ‖analytic‖₂)`` over the checked
        components, kinks and non-finite components left out (they are counted
        separately).
    numerical, analytic : same structure as params
        float64 arrays; components that were not checked hold NaN in `numerical`.
    noise : same structure as params
        The estimated error of each numerical value (rounding + truncation).
    status : ndarray of int8
        Per flat component: see :class:`fastcheck._verdict.ComponentStatus`.
    parameters : list of ParameterReport
        The per-parameter breakdown.
    evaluations : int
        Loss evaluations made (including the determinism probes).
    seconds : float
    eps : str
        The step rule used, e.g. ``"4.8e-06 × max(1, |θ_i|)"``.
    method, mode : str
    tiers : Tiers
        The relative-error bounds used for the verdict (derived from the dtype).
    notes : list of str
        Plain-language findings (kinks, nondeterminism, non-finite values, ...).
    detection_limit : float
        The largest error a single checked component could carry without being
        flagged (absolute, in the gradient's units): KAPPA x its noise plus the
        "excellent" floor, maximised over the checked components; for
        mode="directional" the smallest single-component error the directional
        tests would have seen.  NaN when nothing was judged.
    accuracy : Accuracy or None
        The declared accuracy (``rtol=`` / ``atol=``), None when none was
        declared.  With one, a component outside it is wrong and makes the
        verdict "wrong"; the report says how many were outside.
    """

    verdict: str
    passed: bool
    relative_error: float
    layout: ParamLayout = field(repr=False)
    numerical_flat: np.ndarray = field(repr=False)
    analytic_flat: np.ndarray = field(repr=False)
    noise_flat: np.ndarray = field(repr=False)
    status: np.ndarray = field(repr=False)
    parameters: list[ParameterReport] = field(repr=False)
    evaluations: int = 0
    seconds: float = 0.0
    eps: str = ""
    method: str = "central"
    mode: str = "full"
    tiers: Tiers | None = field(default=None, repr=False)
    notes: list[str] = field(default_factory=list, repr=False)
    extra: dict = field(default_factory=dict, repr=False)
    detection_limit: float = math.nan
    accuracy: Accuracy | None = field(default=None, repr=False)

    # --------------------------------------------------------------- structures
    @property
    def numerical(self) -> Any:
        """The numerical gradient, shaped like params."""
        return self.layout.unflatten(self.numerical_flat)

    @property
    def analytic(self) -> Any:
        """The analytic gradient, shaped like params."""
        return self.layout.unflatten(self.analytic_flat)

    @property
    def noise(self) -> Any:
        """The estimated error of each numerical value, shaped like params."""
        return self.layout.unflatten(self.noise_flat)

    # ------------------------------------------------------------------ counts
    def _count(self, status: int) -> int:
        return int(np.count_nonzero(self.status == status))

    @property
    def n_wrong(self) -> int:
        """Components that differ beyond their noise (or have a NaN/inf gradient)."""
        return self._count(_S.WRONG) + self._count(_S.NONFINITE_GRAD)

    @property
    def n_kinks(self) -> int:
        """Components at a kink (kept out of the verdict)."""
        return self._count(_S.KINK)

    @property
    def n_unresolved(self) -> int:
        """Components the arithmetic could not resolve to the "ok" tier."""
        return self._count(_S.UNRESOLVED)

    @property
    def n_checked(self) -> int:
        """Components whose numerical derivative was computed."""
        return int(self.status.size) - self._count(_S.NOT_CHECKED)

    def indices(self, status: str) -> np.ndarray:
        """Flat indices of the components with `status` (e.g. "wrong", "kink")."""
        code = ComponentStatus.NAMES.index(status)
        return np.flatnonzero(self.status == code)

    # ----------------------------------------------------------------- ranking
    def _scores(self) -> np.ndarray:
        n, a, noise = self.numerical_flat, self.analytic_flat, self.noise_flat
        with np.errstate(all="ignore"):
            score = np.abs(n - a) / (np.abs(n) + np.abs(a) + 3.0 * noise)
        score = np.where(np.isnan(score), 0.0, score)
        # Components whose status is a finding come first, in this order.
        return _PRIORITY[self.status] + np.clip(score, 0.0, 1.0) * 0.999

    def worst(self, k: int = 10) -> list[Component]:
        """The k components most likely to be wrong, most likely first.

        Ranking: components with a non-finite value or confirmed wrong come first,
        then kinks; within each group, by ``|n − a| / (|n| + |a| + 3·noise)``.
        That is the relative difference of the component, so a parameter with
        large values does not drown out a bug in one with small values (a plain
        absolute difference would), guarded by the noise estimate, so components
        whose gradients are both near zero, where the relative difference is
        meaningless, do not float to the top on rounding error alone.
        """
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 0:
            raise ValueError(f"k must be a non-negative integer, got {k!r}")
        scores = self._scores()
        k = min(int(k), scores.size)
        if k == 0:
            return []
        top = np.argpartition(-scores, k - 1)[:k]
        top = top[np.argsort(-scores[top], kind="stable")]
        return [self._component(int(i)) for i in top]

    def _component(self, i: int) -> Component:
        n, a = float(self.numerical_flat[i]), float(self.analytic_flat[i])
        diff = abs(n - a)
        denom = abs(n) + abs(a)
        noise = float(self.noise_flat[i])
        with np.errstate(all="ignore"):
            rel = diff / denom if denom > 0 else (0.0 if diff == 0 else math.inf)
            score = diff / (denom + 3.0 * noise) if denom + noise > 0 else 0.0
        return Component(self.layout.name_of(i), i, n, a, diff, rel, noise, score,
                         ComponentStatus.NAMES[int(self.status[i])])

    # ------------------------------------------------------------------ output
    def summary(self) -> str:
        """One line: the verdict and the headline numbers."""
        if self.verdict == "nondeterministic":
            return ("gradient check NONDETERMINISTIC: the loss gives different values at the "
                    f"same parameters, so no verdict on the gradient ({self.method}, {self.mode})")
        if self.verdict == "invalid":
            return ("gradient check INVALID: no verdict on the gradient "
                    f"({self.method}, {self.mode})")
        head = (f"gradient check {self.verdict.upper()}: relative error "
                f"{self.relative_error:.2e}")
        parts = [f"{self.n_checked:,} of {self.status.size:,} components checked"
                 if self.n_checked < self.status.size else f"{self.status.size:,} components"]
        if self.n_wrong:
            parts.append(f"{self.n_wrong:,} wrong")
        if self.n_kinks:
            parts.append(f"{self.n_kinks:,} at kinks")
        unresolved = self._count(_S.UNRESOLVED)
        if unresolved:
            parts.append(f"{unresolved:,} not resolved")
        nonfinite = self._count(_S.NONFINITE_LOSS)
        if nonfinite:
            parts.append(f"{nonfinite:,} not finite")
        declared = f"; declared {self.accuracy.text()}" if self.accuracy else ""
        return f"{head} ({', '.join(parts)}; {self.method}, {self.mode}{declared})"

    def accuracy_line(self) -> str | None:
        """The declared accuracy in one line: components outside it, the largest miss."""
        if self.accuracy is None or self.verdict in ("nondeterministic", "invalid"):
            return None
        judged = np.flatnonzero((self.status == _S.OK) | (self.status == _S.WRONG)
                                | (self.status == _S.UNRESOLVED))
        outside = self._count(_S.WRONG)
        line = (f"declared accuracy {self.accuracy.text()}: {outside:,} of {judged.size:,} "
                "components outside")
        if self.mode == "directional":
            line += (f" ({judged.size:,} checked one by one; each directional test allows "
                     "the sum of |v_i| (atol + rtol |g_i|) along its direction v, so a "
                     "component outside its own allowance by less than that can go unseen: "
                     "mode='full' checks each component)")
        if judged.size:
            n, a = self.numerical_flat[judged], self.analytic_flat[judged]
            with np.errstate(all="ignore"):
                diff = np.abs(n - a)
                allow = self.accuracy.allowance(a)
                ratio = np.where(allow > 0, diff / allow, diff / (np.abs(n) + np.abs(a)))
            ratio = np.where(np.isfinite(ratio), ratio, -1.0)
            i = int(np.argmax(ratio))
            rel = diff[i] / abs(a[i]) if a[i] != 0 else math.inf
            line += (f"; largest difference {diff[i]:.2g} (relative {rel:.2g}) at "
                     f"{self.layout.name_of(int(judged[i]))}")
        return line

    def _blame(self) -> str | None:
        """A sentence naming the wrong parameters, if the gradient is not fine."""
        if self.verdict in ("nondeterministic", "invalid"):
            return None
        bad = [p for p in self.parameters if p.verdict in ("suspicious", "wrong")
               or p.wrong or p.nonfinite]
        if not bad:
            return None
        good = [p for p in self.parameters if p not in bad]
        said = ", ".join(
            f"{p.name} is {p.verdict if p.verdict != 'ok' else 'wrong'} "
            f"(relative error {p.relative_error:.1e}"
            + (f", {p.wrong:,} of {p.checked:,} checked components wrong)" if p.checked
               else ")")
            for p in bad)
        if good:
            order = (*TIERS, "unresolved", "not checked")
            tiers = sorted({p.verdict for p in good},
                           key=lambda v: order.index(v) if v in order else len(order))
            rest = "every other parameter is " + " or ".join(tiers)
            return f"{said}; {rest}."
        return said + "."

    def report(self, k: int = 8) -> str:
        """The readable multi-line report (what ``str(result)`` prints)."""
        lines = ["fastcheck: " + self.summary()]
        declared = self.accuracy_line()
        if declared:
            lines.append("  " + declared)
        blame = self._blame()
        if blame:
            lines.append("  " + blame)
        for note in self.notes:
            lines.append("  note: " + note)
        if self.verdict not in ("nondeterministic", "invalid"):
            lines.append("")
            lines.append(_table(
                ["parameter", "shape", "rel. error", "verdict", "wrong", "kinks", "checked"],
                [[p.name, "×".join(map(str, p.shape)) or "()", f"{p.relative_error:.2e}",
                  p.verdict, str(p.wrong), str(p.kinks), f"{p.checked}/{p.size}"]
                 for p in self.parameters]))
            worst = [c for c in self.worst(k) if c.status != "not checked"]
            if worst and (not self.passed or self.n_kinks):
                lines.append("")
                lines.append("components ranked by relative difference (noise-guarded):")
                lines.append(_table(
                    ["component", "numerical", "analytic", "abs diff", "rel diff", "noise",
                     "status"],
                    [[c.name, f"{c.numerical:.6e}", f"{c.analytic:.6e}", f"{c.abs_diff:.2e}",
                      f"{c.rel_diff:.2e}", f"{c.noise:.1e}", c.status] for c in worst]))
        lines.append("")
        lines.append(f"{self.evaluations:,} loss evaluations in {self.seconds:.3g} s; "
                     f"step {self.eps} ({self.method})")
        if self.tiers is not None:
            t = self.tiers
            lines.append(f"tiers for {t.dtype}: excellent < {t.excellent:.1e} ≤ ok ≤ "
                         f"{t.ok:.1e} < suspicious ≤ {t.suspicious:.1e} < wrong")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.report()

    def to_dict(self, k: int = 10) -> dict:
        """Plain data (``json.dumps`` accepts it): verdict, metrics, breakdown, worst."""
        return {
            "verdict": self.verdict,
            "passed": bool(self.passed),
            "relative_error": _plain(self.relative_error),
            "method": self.method,
            "mode": self.mode,
            "eps": self.eps,
            "evaluations": int(self.evaluations),
            "seconds": float(self.seconds),
            "components": int(self.status.size),
            "checked": self.n_checked,
            "wrong": self.n_wrong,
            "kinks": self.n_kinks,
            "tiers": self.tiers.as_dict() if self.tiers else None,
            "detection_limit": _plain(self.detection_limit),
            "accuracy": ({**self.accuracy.as_dict(), "outside": self._count(_S.WRONG)}
                         if self.accuracy is not None else None),
            "parameters": [p.as_dict() for p in self.parameters],
            "worst": [c.as_dict() for c in self.worst(k)],
            "notes": list(self.notes),
            "extra": json.loads(json.dumps(self.extra, default=_plain)),
        }

    def to_json(self, **kwargs: Any) -> str:
        """:meth:`to_dict` as a JSON string."""
        return json.dumps(self.to_dict(), **kwargs)


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(header)]
    out = ["  " + "  ".join(h.ljust(w) for h, w in zip(header, widths)).rstrip()]
    for r in rows:
        out.append("  " + "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    return "\n".join(out)


# Ranking priority by status code (GradCheckResult._scores): findings first.
_PRIORITY = np.zeros(len(_S.NAMES))
_PRIORITY[[_S.NONFINITE_GRAD, _S.NONFINITE_LOSS, _S.WRONG, _S.KINK, _S.NOT_CHECKED]] = (
    4, 3, 2, 1, -1)


def _verdict_from(rel: float, tiers: Tiers, status: np.ndarray,
                  numerical: np.ndarray | None = None,
                  analytic: np.ndarray | None = None, declared: bool = False) -> str:
    """The corrected verdict of a set of components (_verdict note 5, _judge note 4).

    A confirmed wrong component whose own relative difference is in the "wrong"
    tier makes the verdict "wrong", whatever the global metric (the headline
    agrees with the components).  Unresolved components, or nothing left to
    judge but kinks, make an otherwise passing verdict "unresolved".  With a
    declared accuracy (`declared`) every wrong component is outside it: "wrong".
    """
    tier = tier_of(rel, tiers)
    # One pass over the statuses (a check's fixed cost is many small numpy calls).
    counts = np.bincount(status, minlength=len(_S.NAMES))
    wrong = counts[_S.WRONG] + counts[_S.NONFINITE_GRAD]
    unverifiable = counts[_S.NONFINITE_LOSS]
    if counts[_S.NONFINITE_GRAD] or (declared and wrong):
        return "wrong"
    if wrong and numerical is not None and analytic is not None:
        wrong_mask = status == _S.WRONG
        n, a = numerical[wrong_mask], analytic[wrong_mask]
        with np.errstate(all="ignore"):
            own = np.abs(n - a) / (np.abs(n) + np.abs(a))
        if np.any(own > tiers.suspicious):
            return "wrong"
    if wrong and tier in ("excellent", "ok"):
        return "suspicious"
    if not wrong and tier in ("suspicious", "wrong"):
        tier = "ok"
    if unverifiable and tier in ("excellent", "ok"):
        return "suspicious"
    judged = counts[_S.OK] + counts[_S.WRONG]
    if not wrong and (counts[_S.UNRESOLVED] or (judged == 0 and counts[_S.KINK])):
        return "unresolved"
    return tier


def build_result(
    layout: ParamLayout,
    numerical: np.ndarray,
    analytic: np.ndarray,
    noise: np.ndarray,
    status: np.ndarray,
    tiers: Tiers,
    *,
    evaluations: int,
    seconds: float,
    eps: str,
    method: str,
    mode: str,
    notes: list[str] | None = None,
    extra: dict | None = None,
    accuracy: Accuracy | None = None,
) -> GradCheckResult:
    """Assemble a :class:`GradCheckResult` from per-component findings.

    Parameters
    ----------
    layout : ParamLayout
    numerical, analytic, noise : ndarray
        Flat float64 arrays over all components (NaN in `numerical` where not
        checked).
    status : ndarray of int8
        :class:`ComponentStatus` per component.
    tiers : Tiers
        Bounds for the verdict.
    accuracy : Accuracy, optional
        The declared accuracy: a wrong component then makes the verdict "wrong".
    """
    counted = (status == _S.OK) | (status == _S.WRONG)
    rel = relative_error(numerical[counted], analytic[counted])
    declared = accuracy is not None
    verdict = _verdict_from(rel, tiers, status, numerical, analytic, declared)
    offsets = layout.offsets
    scores_holder = GradCheckResult(
        verdict, verdict in ("excellent", "ok"), rel, layout, numerical, analytic, noise,
        status, [], evaluations, seconds, eps, method, mode, tiers, list(notes or []),
        dict(extra or {}), accuracy=accuracy)
    scores = scores_holder._scores()
    reports = []
    single = len(layout.arrays) == 1  # its breakdown is the whole: computed once
    for p, (name, array) in enumerate(zip(layout.names, layout.arrays)):
        lo, hi = int(offsets[p]), int(offsets[p + 1])
        st = status[lo:hi]
        mask = counted[lo:hi]
        prel = rel if single else relative_error(numerical[lo:hi][mask],
                                                 analytic[lo:hi][mask])
        checked = int(np.count_nonzero(st != _S.NOT_CHECKED))
        worst = layout.name_of(lo + int(np.argmax(scores[lo:hi]))) if hi > lo else None
        reports.append(ParameterReport(
            name=name, shape=tuple(array.shape), dtype=array.dtype.name,
            relative_error=prel,
            verdict=("not checked" if not checked else verdict if single
                     else _verdict_from(prel, tiers, st, numerical[lo:hi], analytic[lo:hi],
                                        declared)),
            size=hi - lo, checked=checked,
            wrong=int(np.count_nonzero((st == _S.WRONG) | (st == _S.NONFINITE_GRAD))),
            kinks=int(np.count_nonzero(st == _S.KINK)),
            nonfinite=int(np.count_nonzero(st == _S.NONFINITE_LOSS)),
            worst=worst))
    scores_holder.parameters = reports
    return scores_holder
