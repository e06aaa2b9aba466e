"""The judge: the one rule that decides a component (or a direction) from evaluations.

Every mode calls it: check_grad's full and sample modes (:func:`first_look`,
:func:`second_look`), mode="directional" (:func:`assess` on one direction at a
time), and check_vjp / check_jvp / check_hvp (:func:`judge_two_steps`), hence
fastcheck.torch.  The notes of _verdict (1-7) explain the tests; these add:

1. Noise.  delta, the absolute error of one loss evaluation, comes from a
   :class:`Noise`: the rounding model C_ROUND u |J| until the noise was measured
   (_noise), then max(measured, u |J|) -- the measurement replaces the C_ROUND
   guess, never goes below one rounding of |J|.  `u` is the unit roundoff of what
   the loss computes in (note 4).
2. Scaling evidence.  A difference that does not scale like a derivative is not
   evidence of a bug: J(theta + h) - J(theta - h) that is exactly 0 or a few
   ulps of J (the loss did not resolve the step), or a miss that changes between
   steps by more than rounding without following the h**2 law.  A component is
   called wrong only when the miss is the same at two steps (|R - g| far beyond
   what the steps change and beyond rounding) and both differences are resolved.
   A locally linear loss (one-sided slopes equal to the central one) has no
   truncation to wait for: its stable miss is a bug (a sign flip through an
   offset that made |J| = 0 was passed as "could not be resolved" before).
   Linear means both one-sided slopes within 10 % of the central value: a
   step far wider than the loss's own scale (_verdict note 6) shows slopes far
   from it, and stays undecided.
3. Steps up.  A component whose resolution (KAPPA x noise + floor) is worse than
   the "ok" tier of its own size -- or of (‖numerical‖ + ‖analytic‖) / sqrt(m),
   the share of one of m components in the denominator of the relative error,
   whichever is larger -- is refined upward,
   4h, 16h, ... (at most UPWARD_LEVELS), until rounding no longer limits it or
   truncation, measured as a change between steps beyond rounding, takes over.
   Suspects limited by rounding go up the same way.
   Whether a step resolves enough is judged with the error Richardson leaves
   (the change between the steps over ratio**2 - 1), the usual estimate; the
   verdict itself waits for the h**2 law to be confirmed (_verdict note 6).
   A miss of half the target or more is not settled by reaching the target:
   the climb goes on, and where truncation takes over it waits one level more
   for the h**2 law (erfc at x = -4.83, derivative 1e-11 under a value of 2:
   a 1 % error is resolved only at steps where truncation shows, and was
   passed as "ok" when the climb stopped at the target).
4. Honest limits.  What is still not resolved after that -- an error hiding in
   it could move the relative error past the "ok" tier, i.e. KAPPA x noise +
   floor > ok x (‖numerical‖ + ‖analytic‖) -- gets the status
   UNRESOLVED: neither ok nor wrong, and the verdict is "unresolved" (not
   passed) unless a component is confirmed wrong.  The detection limit of a
   check is the largest error a single checked component could carry unflagged
   (max over components of KAPPA x noise + floor).
5. Kinks are probed below.  A kink shape seen at two successive steps is not
   believed yet: one more pair is evaluated far below (the smallest step at
   which the slope gap still stands clear of rounding, at most 4**6 smaller).
   A kink at theta keeps its gap there; one 1e-9 away from theta vanishes, and
   the component is judged as smooth at that step (a wrong sign next to an abs
   kink used to be "three kinks, excellent").  Two evaluations per kink.
6. Declared accuracy.  A gradient meant to be approximate (an adjoint ODE, an
   iterative solver: fastcheck._accuracy) declares rtol / atol; a component
   then agrees when |numerical - analytic| <= atol + rtol |analytic| plus what
   the noise allows.  The allowance is added to the floor of every test above
   (first look, each pair of steps, the resolution wanted), so a stable miss
   within it is fine and one beyond it is wrong, by the same rule.  A
   component whose resolution is worse than its allowance is said so
   (:func:`accuracy_notes`); without a declared accuracy the allowance is 0
   and nothing changes.  A check found only suspicious says at which declared
   accuracy it would pass (:func:`accuracy_hint`): information, never a pass.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from fastcheck._accuracy import Accuracy, short, suggested
from fastcheck._evaluate import RawEvaluations, default_eps, run_kernel
from fastcheck._noise import (
    NoiseEstimate,
    Precision,
    effective_precision,
    given_noise,
    measure_noise,
)
from fastcheck._params import ParamLayout
from fastcheck._verdict import C_ROUND, KAPPA, ComponentStatus, Tiers, tiers_for_unit

__all__ = ["REFINE", "REFINE_LEVELS", "UPWARD_LEVELS", "Calibration", "Judgement", "Noise",
           "accuracy_hint", "accuracy_notes", "assess", "detection_limit", "first_look",
           "judge_components", "judge_two_steps",
           "limit_notes", "mark_unresolved", "poorly_resolved", "second_look",
           "status_notes"]

_S = ComponentStatus
# Suspects are evaluated again at h / REFINE, h / REFINE**2, ... (at most
# REFINE_LEVELS times, two evaluations each, and only while undecided).  Eight
# levels reach h / 65536: enough for a component whose own scale is 1e-5 of the
# max(1, |theta_i|) the default step is relative to (_verdict note 6).
REFINE = 4.0
REFINE_LEVELS = 8
# Rounding-limited components go the other way, to 4h, 16h, ... (note 3), at most
# to 4**8 h (0.3 x max(1, |theta_i|) from float64's default step), and never past
# MAX_STEP x max(1, |theta_i|).
UPWARD_LEVELS = 8
MAX_STEP = 0.25
# The first step up may jump this many levels at once (to where rounding meets
# the resolution wanted).
FIRST_JUMP = 5
# A pair J(theta + h) - J(theta - h) within this many ulps of J is not resolved.
ULPS_UNRESOLVED = 4


@dataclass(frozen=True)
class Noise:
    """delta, the noise of one evaluation, as a function of the values seen (note 1).

    Attributes
    ----------
    unit : float
        Unit roundoff of what the loss computes in.
    measured : float
        The measured bound (NaN when not measured).
    """

    unit: float
    measured: float = math.nan

    def delta(self, *values: Any) -> np.ndarray:
        """delta per component from the largest |value| among `values` (None ignored)."""
        arrays = [np.abs(np.asarray(v, dtype=np.float64)) for v in values if v is not None]
        with np.errstate(invalid="ignore"):
            scale = arrays[0]
            for a in arrays[1:]:
                scale = np.maximum(scale, a)
            scale = np.where(np.isfinite(scale), scale, 0.0)
            if math.isfinite(self.measured):
                return np.maximum(self.measured, self.unit * scale)
            return C_ROUND * self.unit * scale


def first_look(raw: RawEvaluations, analytic: np.ndarray, x: np.ndarray, noise: Noise,
               floor_rel: float, allow: Any = 0.0
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Numerical derivative, noise, status and suspects from the evaluations alone.

    See _verdict note 3.  `allow` is the declared accuracy's atol + rtol |g| (note
    6).  Returns ``(numerical, noise, status, suspect)`` for the evaluated
    components.
    """
    d = raw.derivative()
    h = raw.step
    name = raw.method.name
    with np.errstate(all="ignore"):
        if name == "complex":
            # No subtraction: the imaginary part carries h * J' to relative precision u.
            err = C_ROUND * noise.unit * np.abs(d)
        else:
            delta = noise.delta(raw.center, raw.plus, raw.minus, raw.plus2, raw.minus2)
            # Rounding of the formula in units of delta / h (h: raw.step).  Central:
            # 2 delta / 2h.  One-sided: 2 delta / h.  central4 (step h, outer 2h):
            # (8 * 2 delta + 2 delta) / 12h.  richardson (steps h, h/2):
            # (4/3) * delta / (h/2) + (1/3) * delta / h.
            factor = {"central": 1.0, "forward": 2.0, "backward": 2.0, "central4": 1.5,
                      "richardson": 3.0}[name]
            err = factor * delta / h
            if name == "central":
                slope_gap = np.abs((raw.plus - raw.center) - (raw.center - raw.minus)) / h
                err = err + h * slope_gap / np.maximum(1.0, np.abs(x))
        status = np.zeros(d.size, dtype=np.int8)
        status[~np.isfinite(d)] = _S.NONFINITE_LOSS
        status[~np.isfinite(analytic)] = _S.NONFINITE_GRAD
        diff = np.abs(d - analytic)
        allowed = KAPPA * err + floor_rel * (np.abs(d) + np.abs(analytic)) + allow
        suspect = (status == _S.OK) & (diff > allowed)
    return d, err, status, suspect


def _rounding_err(raw: RawEvaluations, noise: Noise, err: np.ndarray) -> np.ndarray:
    """The rounding part of the first look's noise (no curvature guess)."""
    if raw.method.name == "complex":
        return err
    factor = {"central": 1.0, "forward": 2.0, "backward": 2.0, "central4": 1.5,
              "richardson": 3.0}[raw.method.name]
    with np.errstate(all="ignore"):
        return factor * noise.delta(raw.center, raw.plus, raw.minus, raw.plus2,
                                    raw.minus2) / raw.step


def _scale(numerical: np.ndarray, analytic: np.ndarray) -> float:
    """(‖numerical‖ + ‖analytic‖) / sqrt(m) over the m finite components: errors of
    that size in every component make a relative error of 1 (note 3)."""
    keep = np.isfinite(numerical) & np.isfinite(analytic)
    m = int(np.count_nonzero(keep))
    if m == 0:
        return 0.0
    return float(np.linalg.norm(numerical[keep]) + np.linalg.norm(analytic[keep])) / math.sqrt(m)


def poorly_resolved(numerical: np.ndarray, analytic: np.ndarray, err: np.ndarray,
                    tiers: Tiers, rms: float | None = None, allow: Any = 0.0) -> np.ndarray:
    """Components whose resolution is worse than the "ok" tier (note 3) and than
    the declared accuracy `allow` (note 6)."""
    if rms is None:
        rms = _scale(numerical, analytic)
    with np.errstate(all="ignore"):
        size = np.maximum(np.abs(numerical) + np.abs(analytic), rms)
        limit = KAPPA * err + tiers.excellent * (np.abs(numerical) + np.abs(analytic))
        return np.isfinite(limit) & (limit > np.maximum(tiers.ok * size, allow)) & (size > 0)


def mark_unresolved(numerical: np.ndarray, analytic: np.ndarray, err: np.ndarray,
                    status: np.ndarray, tiers: Tiers, allow: Any = 0.0) -> np.ndarray:
    """Set OK components that are still poorly resolved to UNRESOLVED (note 4).

    Poorly resolved here means against the "ok" tier of ‖numerical‖ + ‖analytic‖
    (not its share per component, which the refinement aims at): an error hiding
    in that one component could move the relative error past the "ok" tier.
    """
    ok = status == _S.OK
    if not np.any(ok):
        return status
    rms = _scale(numerical[ok], analytic[ok]) * math.sqrt(np.count_nonzero(ok))
    poor = ok & poorly_resolved(numerical, analytic, err, tiers, rms, allow)
    status = status.copy()
    status[poor] = _S.UNRESOLVED
    return status


def detection_limit(numerical: np.ndarray, analytic: np.ndarray, err: np.ndarray,
                    status: np.ndarray, floor_rel: float) -> float:
    """The largest error one checked component could carry unflagged (note 4)."""
    judged = (status == _S.OK) | (status == _S.UNRESOLVED) | (status == _S.WRONG)
    if not np.any(judged):
        return math.nan
    with np.errstate(all="ignore"):
        limit = KAPPA * err[judged] + floor_rel * (np.abs(numerical[judged])
                                                   + np.abs(analytic[judged]))
    limit = limit[np.isfinite(limit)]
    return float(np.max(limit)) if limit.size else math.inf


@dataclass
class Level:
    """What one pair of steps says about each component (see :func:`assess`)."""

    kink: np.ndarray
    kink_shape: np.ndarray
    kink_ok: np.ndarray
    fine: np.ndarray
    stable_wrong: np.ndarray
    truncating: np.ndarray
    asymptotic: np.ndarray
    settled: np.ndarray
    richardson: np.ndarray      # numerical value, h**2 error removed
    rounding: np.ndarray
    trunc: np.ndarray
    miss: np.ndarray
    gap: np.ndarray
    coef: np.ndarray
    finite: np.ndarray
    resolved: np.ndarray        # both differences above a few ulps of J (note 2)
    resolve: np.ndarray         # |change of the mismatch| between the two steps
    reach: np.ndarray           # the truncation error Richardson leaves (note 3)


def assess(center: Any, h1: Any, p1: Any, m1: Any, h2: Any, p2: Any, m2: Any, g1: Any,
           g2: Any, delta: Any, floor_rel: float, coef: Any = math.nan,
           extrapolated: Any = math.nan, allow: Any = 0.0) -> Level:
    """Judge two central pairs of steps (h1 and h2) of the same components.

    The rule of _verdict notes 4, 6 and 7 and of this module's note 2, vectorised
    (scalars broadcast).  `g1`, `g2` are the analytic values the two differences
    are compared with (equal for a gradient; they differ slightly for check_jvp,
    whose effective tangent depends on the step).  `delta` is the noise of one
    evaluation, `coef` and `extrapolated` the h**2 coefficient and the
    extrapolated value of the previous pair (NaN when there is none).  `allow`
    is the declared accuracy (note 6), added to the floor.
    """
    with np.errstate(all="ignore"):
        h1, h2 = np.asarray(h1, dtype=float), np.asarray(h2, dtype=float)
        d1, d2 = (p1 - m1) / (2 * h1), (p2 - m2) / (2 * h2)
        up1, down1 = (p1 - center) / h1, (center - m1) / h1
        up2, down2 = (p2 - center) / h2, (center - m2) / h2
        gap1, gap2 = np.abs(up1 - down1), np.abs(up2 - down2)
        g = g2
        floor = floor_rel * (np.abs(d2) + np.abs(g)) + allow
        e1, e2 = d1 - g1, d2 - g2
        resolve = np.abs(e1 - e2)
        # A kink: the slope gap neither shrinks with the step (smooth: gap ~ h) nor
        # grows (rounding: gap ~ 1/h), while the central value stays put.
        kink_shape = (gap2 > 0.5 * gap1) & (gap2 < 2 * gap1) & (resolve < 0.25 * gap2)
        kink = kink_shape & (gap2 > 4 * delta / h2)
        tol = KAPPA * (2 * delta / h2 + np.abs(up1 - up2) + np.abs(down1 - down2)) + floor
        kink_ok = (g >= np.minimum(up2, down2) - tol) & (g <= np.maximum(up2, down2) + tol)
        ratio2 = (np.maximum(h1, h2) / np.minimum(h1, h2)) ** 2 - 1
        # Richardson over the two steps, on the mismatch (removes the h**2 term).
        e_r = e2 + (e2 - e1) / ((h1 / h2) ** 2 - 1)
        richardson = g2 + e_r
        rounding = 1.1 * delta / np.minimum(h1, h2)
        miss = np.abs(e_r)
        truncating = resolve > 2 * rounding
        coef_now = (e1 - e2) / (h1**2 - h2**2)
        asymptotic = np.abs(coef_now - coef) <= 0.2 * np.abs(coef_now)
        converged = np.fmin(np.abs(richardson - extrapolated), resolve / ratio2)
        trunc = np.where(truncating & asymptotic, converged, resolve)
        fine = miss <= KAPPA * (rounding + trunc) + floor
        up0 = up2 + (up2 - up1) * h2 / (h1 - h2)
        down0 = down2 + (down2 - down1) * h2 / (h1 - h2)
        rounding_x = 3 * delta / np.minimum(h1, h2)
        tol0 = KAPPA * rounding_x + floor
        may_be_kink = (kink_shape & kink_ok) | (
            (np.abs(up0 - down0) > 2 * rounding_x)
            & (g >= np.minimum(up0, down0) - tol0) & (g <= np.maximum(up0, down0) + tol0))
        # Note 2: the loss resolved both steps, and a locally linear loss has no
        # truncation to wait for.
        big = np.maximum(np.maximum(np.abs(center), np.abs(p2)), np.abs(m2))
        ulps = ULPS_UNRESOLVED * np.spacing(np.maximum(big, np.maximum(np.abs(p1),
                                                                       np.abs(m1))))
        # (or the analytic value predicts a change far above noise and ulps: then
        # a difference of 0 is itself the evidence)
        loud1 = np.abs(g1) * 2 * h1 > KAPPA * 4 * delta + ulps
        loud2 = np.abs(g2) * 2 * h2 > KAPPA * 4 * delta + ulps
        resolved = ((np.abs(p1 - m1) > ulps) | loud1) & ((np.abs(p2 - m2) > ulps) | loud2)
        linear = (gap1 <= 0.1 * np.abs(d1)) & (gap2 <= 0.1 * np.abs(d2))
        stable_wrong = (~fine & (trunc <= 0.1 * miss) & (~truncating | asymptotic | linear)
                        & ~may_be_kink & resolved)
        settled = ~truncating | (asymptotic & (trunc <= rounding + floor / KAPPA))
        finite = np.isfinite(richardson)
    return Level(kink, kink_shape, kink_ok, fine, stable_wrong, truncating, asymptotic,
                 settled, richardson, rounding, trunc, miss, gap2, coef_now, finite, resolved,
                 resolve, np.where(truncating & ~asymptotic, resolve / ratio2, trunc))


def _start(loss: Callable, layout: ParamLayout, raw: RawEvaluations, idx: np.ndarray,
           flat: np.ndarray, threads: int, step_dtype: np.dtype | None
           ) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    """The central pair refinement starts from, and the first h**2 coefficient."""
    n = idx.size
    coef = np.full(n, np.nan)
    extrapolated = np.full(n, np.nan)
    center, name = raw.center, raw.method.name
    if name == "central":
        return center, raw.step[idx], raw.plus[idx], raw.minus[idx], coef, extrapolated, 0
    if name in ("central4", "richardson"):
        # Their evaluations hold two central pairs already: refine from the finer
        # one (a large step, so little rounding), and the two give a first h**2
        # coefficient.  central4's pairs are at h and 2h, richardson's at h and h2.
        if name == "central4":
            hc, pc, mc = 2 * raw.step[idx], raw.plus2[idx], raw.minus2[idx]
            h, p, m = raw.step[idx], raw.plus[idx], raw.minus[idx]
        else:
            hc, pc, mc = raw.step[idx], raw.plus[idx], raw.minus[idx]
            h, p, m = raw.step2[idx], raw.plus2[idx], raw.minus2[idx]
        with np.errstate(all="ignore"):
            coef = ((pc - mc) / (2 * hc) - (p - m) / (2 * h)) / (hc**2 - h**2)
        return center, h, p, m, coef, raw.derivative()[idx], 0
    # Forward / backward: make the central pair at the default central step first.
    if step_dtype is not None:
        base = np.full(flat.size, default_eps(step_dtype, "central"))
    else:
        base = np.array([default_eps(layout.arrays[q].dtype, "central")
                         for q in layout.param_of(flat)])
    first = run_kernel(loss, layout, "central", relative=True, indices=flat,
                       eps_each=base, with_center=center is None, threads=threads)
    center = first.center if center is None else center
    return center, first.step, first.plus, first.minus, coef, extrapolated, first.calls


def _way(center: Any, h: np.ndarray, p: np.ndarray, m: np.ndarray, numerical: np.ndarray,
         analytic: np.ndarray, noise: Noise, top: np.ndarray, name: str,
         upward_only: np.ndarray | None, target: np.ndarray | None
         ) -> tuple[np.ndarray, np.ndarray]:
    """Which way each component is refined, and the factor of its first step.

    Smaller steps shrink truncation and reveal kinks, but their rounding grows as
    1/h.  When a step REFINE times smaller would already drown the miss in
    rounding, the component is rounding-limited: it goes to larger steps.  (Not
    from central4's or richardson's pair: it is at u**(1/5), already as large as
    steps go; 4x and 16x that cross the kinks of an ordinary ReLU network.)
    """
    with np.errstate(all="ignore"):
        rounding0 = noise.delta(center, p, m) / h
        upward = KAPPA * REFINE * rounding0 >= 0.5 * np.abs(numerical - analytic)
        if upward_only is not None:
            # Refined for resolution: up when rounding limits it, down when the
            # curvature (truncation) guess does.
            trunc0 = np.abs((p - center) - (center - m)) / np.maximum(1.0, top)
            upward = np.where(upward_only, rounding0 >= trunc0, upward)
    if name in ("central4", "richardson"):
        upward[:] = (upward_only & upward) if upward_only is not None else False
    factor = np.where(upward, REFINE, 1 / REFINE)
    if target is not None:
        # Up: start at the step whose rounding alone takes half the target
        # (note 3), rather than climbing there 4x at a time.
        with np.errstate(all="ignore"):
            goal = 2 * KAPPA * 1.1 * rounding0 * h / target
        jump = np.clip(np.nan_to_num(goal / h, nan=REFINE, posinf=REFINE), REFINE,
                       np.maximum(REFINE, np.minimum(REFINE ** FIRST_JUMP,
                                                     MAX_STEP * top / h)))
        factor = np.where(upward, jump, factor)
    return upward, factor


def _decide(lv: Level, g: np.ndarray, delta: np.ndarray, h2: np.ndarray,
            going_up: np.ndarray, last: np.ndarray, kink_before: np.ndarray,
            probed: np.ndarray, target: np.ndarray | None, floor_rel: float
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Which components one level decides, which get the kink probe, and its step
    factor (notes 3 and 5).  Updates ``lv.kink`` for the probe."""
    # A kink seen at two steps is believed only after one probe far below them
    # (note 5): a kink 1e-9 away from theta vanishes there, one at theta stays.
    # At the probe the gap only has to keep its size (its rounding was cleared
    # at the two steps before).
    lv.kink |= probed & kink_before & lv.kink_shape
    probe = lv.kink & kink_before & ~probed & ~last
    sure_kink = lv.kink & (kink_before | last) & (probed | last)
    with np.errstate(all="ignore"):
        floor = floor_rel * (np.abs(lv.richardson) + np.abs(g))
        # Resolved enough?  Going up stops there, or where truncation (a change
        # beyond rounding) takes over (note 3).
        good = (KAPPA * (lv.rounding + lv.reach) + floor <= target
                if target is not None else np.zeros(g.size, dtype=bool))
        # A miss of half the target or more is not settled by reaching the
        # target: the climb goes on until it is confirmed or shrinks (note 3).
        loud = going_up & (lv.miss > 0.5 * target) if target is not None \
            else np.zeros(g.size, dtype=bool)
    good &= ~loud
    decided = (sure_kink | (~lv.kink & lv.fine & (lv.settled | last))
               | (~lv.kink & lv.stable_wrong) | ~lv.finite) & ~probe
    # (a change twice the rounding can still be noise of two steps; four times
    # it is truncation, which grows 16x per level up; a loud miss waits one level
    # more there, for the h**2 law that confirms it)
    unconfirmed = loud & lv.truncating & ~lv.asymptotic
    up_done = going_up & (((lv.resolve > 4 * lv.rounding) & ~unconfirmed) | good)
    # Going down, the next step's rounding alone would exceed the miss (or, for a
    # fine component, the resolution wanted): nothing more to learn there.
    wanted = np.where(lv.fine & (target > 0), target, lv.miss) if target is not None \
        else lv.miss
    hopeless = np.where(going_up, last | up_done, REFINE * lv.rounding * KAPPA >= wanted)
    # Fine but coarser than wanted: keep going while a step can still help.
    more = lv.fine & ~good & ~last & ~lv.stable_wrong & ~lv.kink & ~hopeless & lv.finite
    decided &= ~more
    hopeless &= ~more & ~probe
    decided |= last | hopeless
    with np.errstate(all="ignore"):
        # the smallest step at which the gap still stands REFINE x clear of its
        # rounding (4 delta / h), at most REFINE**6 below this one
        depth = np.floor(np.log(h2 * lv.gap / (REFINE * KAPPA * 4 * delta))
                         / math.log(REFINE))
    jump = REFINE ** -np.clip(np.nan_to_num(depth, nan=1.0), 1, 6)
    return decided, probe, jump


def second_look(loss: Callable, layout: ParamLayout, raw: RawEvaluations, idx: np.ndarray,
                analytic: np.ndarray, noise: Noise, floor_rel: float, threads: int,
                step_dtype: np.dtype | None = None, upward_only: np.ndarray | None = None,
                target: np.ndarray | None = None, allow: np.ndarray | None = None,
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Re-examine components at steps h/4, h/16, ... or 4h, 16h, ...

    See _verdict notes 4, 6, 7 and this module's notes 2, 3.  `idx` are positions
    in `raw`; `analytic` is restricted to them; `upward_only` (bool per idx)
    marks the components refined for resolution, not as suspects: they go up.
    `target` (per idx) is the resolution that is enough (KAPPA x noise + floor);
    going up stops there.  Each level evaluates only the components still
    undecided (two evaluations each).  Returns ``(numerical, noise, status,
    evaluations)``.  A component left undecided is OK with a noise that covers
    its miss, so that :func:`mark_unresolved` can say whether it was resolved.
    `allow` (per idx): the declared accuracy (note 6).
    """
    flat = idx if raw.indices is None else raw.indices[idx]
    n = idx.size
    name = raw.method.name
    allow = np.zeros(n) if allow is None else allow
    center, h, p, m, coef, extrapolated, evaluations = _start(
        loss, layout, raw, idx, flat, threads, step_dtype)
    kink_before = np.zeros(n, dtype=bool)
    probed = np.zeros(n, dtype=bool)
    top = np.maximum(1.0, np.abs(layout.values()[flat]))
    levels = max(REFINE_LEVELS, UPWARD_LEVELS)
    if name in ("central4", "richardson"):
        # Their steps are larger than central's: allow the levels it takes to reach
        # the same smallest step.
        d = step_dtype if step_dtype is not None else layout.lowest_precision
        levels += max(0, round(math.log(default_eps(d, name) / default_eps(d, "central"))
                               / math.log(REFINE)))
    numerical = (p - m) / (2 * h)
    err = np.full(n, np.inf)
    status = np.full(n, _S.OK, dtype=np.int8)
    todo = np.arange(n)
    upward, factor = _way(center, h, p, m, numerical, analytic, noise, top, name,
                          upward_only, target)
    for level in range(1, levels + 1):
        if level == 2:
            factor = np.where(upward, REFINE, factor)
        new = run_kernel(loss, layout, "central", eps=1.0, relative=False, indices=flat[todo],
                         eps_each=h[todo] * factor[todo], with_center=False, threads=threads)
        evaluations += new.calls
        h2, p2, m2 = new.step, new.plus, new.minus
        g = analytic[todo]
        delta = noise.delta(center, p[todo], m[todo], p2, m2)
        lv = assess(center, h[todo], p[todo], m[todo], h2, p2, m2, g, g, delta, floor_rel,
                    coef[todo], extrapolated[todo], allow[todo])
        last_down = level == levels - max(0, UPWARD_LEVELS - REFINE_LEVELS)
        going_up = upward[todo]
        # Kinks are recognised on the way down only: larger steps cross other
        # features, and noise-dominated slopes can mimic a kink's shape.
        lv.kink &= ~going_up
        ceiling = going_up & (h2 * REFINE > MAX_STEP * top[todo])
        last = np.where(going_up, (level >= UPWARD_LEVELS) | ceiling, last_down)
        decided, probe, jump = _decide(lv, g, delta, h2, going_up, last,
                                       kink_before[todo], probed[todo],
                                       None if target is None else target[todo], floor_rel)
        factor[todo] = np.where(probe, jump,
                                np.where(probed[todo] & ~going_up, 1 / REFINE, factor[todo]))
        probed[todo] |= probe
        st = np.where(lv.kink, np.where(lv.kink_ok, _S.KINK, _S.WRONG),
                      np.where(lv.stable_wrong, _S.WRONG, _S.OK)).astype(np.int8)
        st[~lv.finite & ~lv.kink] = _S.NONFINITE_LOSS
        here = todo[decided]
        status[here] = st[decided]
        d2 = (p2 - m2) / (2 * h2)
        numerical[here] = np.where(lv.kink, (p[todo] - m[todo]) / (2 * h[todo]),
                                   np.where(lv.finite, lv.richardson, d2))[decided]
        with np.errstate(all="ignore"):
            covered = np.where(lv.fine | lv.stable_wrong, lv.rounding + lv.trunc,
                               np.fmax(lv.rounding + lv.trunc, lv.miss / KAPPA))
        err[here] = np.where(lv.kink, lv.gap, covered)[decided]
        h[todo], p[todo], m[todo] = h2, p2, m2
        coef[todo] = lv.coef
        extrapolated[todo] = lv.richardson
        kink_before[todo] = lv.kink
        todo = todo[~decided]
        if todo.size == 0:
            break
    return numerical, err, status, evaluations


def judge_two_steps(center: np.ndarray, h1: float, p1: np.ndarray, m1: np.ndarray, h2: float,
                    p2: np.ndarray, m2: np.ndarray, g1: np.ndarray, g2: np.ndarray,
                    delta: np.ndarray, floor_rel: float, allow: Any = 0.0
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Numerical value, noise and status from two fixed steps (check_jvp / hvp).

    The same rule as :func:`second_look` at its last level, for evaluations that
    cannot be refined further.  Kinks are not looked for (a Jacobian entry has no
    one-sided slope to offer): a component is wrong, ok or unresolved.  `allow`:
    the declared accuracy per component (note 6).
    """
    lv = assess(center, h1, p1, m1, h2, p2, m2, g1, g2, delta, floor_rel, allow=allow)
    status = np.where(lv.stable_wrong, _S.WRONG,
                      np.where(lv.fine, _S.OK, _S.UNRESOLVED)).astype(np.int8)
    # A miss far beyond every noise, unresolved only by the ulps rule, is wrong.
    status[~lv.finite] = _S.NONFINITE_LOSS
    status[~(np.isfinite(g1) & np.isfinite(g2))] = _S.NONFINITE_GRAD
    return lv.richardson, lv.rounding + lv.trunc, status


@dataclass
class Judgement:
    """What :func:`judge_components` concluded, per evaluated component."""

    numerical: np.ndarray
    err: np.ndarray
    status: np.ndarray
    evaluations: int
    refined: int
    noise: Noise
    tiers: Tiers
    unrefined: int = 0


Calibrate = Callable[[np.ndarray, np.ndarray, np.ndarray], "tuple[Noise, Tiers, int] | None"]


def judge_components(loss: Callable, layout: ParamLayout, raw: RawEvaluations,
                     analytic: np.ndarray, x: np.ndarray, noise: Noise, tiers: Tiers, *,
                     refine: bool, threads: int, step_dtype: np.dtype | None = None,
                     calibrate: Calibrate | None = None,
                     affordable: Callable[[int], bool] | None = None,
                     accuracy: Accuracy | None = None) -> Judgement:
    """The verdict on evaluated components: first look, noise, second look, limits.

    `raw` holds the kernel's evaluations of the components, `analytic` and `x`
    their analytic values and parameter values.  `calibrate(numerical, analytic)`
    is called at most once, when the first look finds suspects or components it
    cannot resolve (or always, when it was asked to, see _check); it measures the
    noise and returns the new noise model, tiers and the evaluations spent, or
    None.  `affordable(count)` says whether refining `count` components fits a
    budget (mode="directional"); when it does not, suspects count as wrong.
    `accuracy`: the declared accuracy (note 6), None when none was declared.
    """
    evaluations = 0
    allow = accuracy.allowance(analytic) if accuracy is not None else np.zeros(analytic.size)
    numerical, err, status, suspect = first_look(raw, analytic, x, noise, tiers.excellent,
                                                 allow)
    can_refine = refine and raw.method.name != "complex"
    # Resolution is judged on rounding alone here: the first look's curvature term
    # is a guess that a smaller step settles (and is large at a harmless kink).
    rounding = _rounding_err(raw, noise, err)
    poor = poorly_resolved(numerical, analytic, rounding, tiers, allow=allow) & (
        status == _S.OK)
    given = getattr(calibrate, "given", None) is not None
    if calibrate is not None and ((can_refine and (np.any(suspect) or np.any(poor)))
                                  or given):
        calibrated = calibrate(numerical, analytic, x)
        if calibrated is not None:
            noise, tiers, spent = calibrated
            evaluations += spent
            numerical, err, status, suspect = first_look(raw, analytic, x, noise,
                                                         tiers.excellent, allow)
            rounding = _rounding_err(raw, noise, err)
            poor = poorly_resolved(numerical, analytic, rounding, tiers, allow=allow) & (
                status == _S.OK)
    idx = np.flatnonzero(suspect | (poor & can_refine))
    unrefined = 0
    if can_refine and idx.size and (affordable is None or affordable(idx.size)):
        rms = _scale(numerical[status == _S.OK], analytic[status == _S.OK])
        with np.errstate(invalid="ignore"):
            target = np.maximum(tiers.ok * np.maximum(np.abs(numerical[idx])
                                                      + np.abs(analytic[idx]), rms), allow[idx])
        n2, e2, s2, extra = second_look(
            loss, layout, raw, idx, analytic[idx], noise, tiers.excellent, threads,
            step_dtype=step_dtype, upward_only=~suspect[idx], target=target,
            allow=allow[idx])
        evaluations += extra
        numerical[idx], err[idx], status[idx] = n2, e2, s2
        rounding[idx] = e2
    else:
        status[suspect] = _S.WRONG
        unrefined = int(np.count_nonzero(suspect)) if can_refine else 0
    status = mark_unresolved(numerical, analytic, rounding, status, tiers, allow)
    return Judgement(numerical, err, status, evaluations, int(idx.size), noise, tiers,
                     unrefined)


# ------------------------------------------------------------------- calibration
class Calibration:
    """Measure the noise once, when the judge asks (note 1), and remember it.

    Called as ``calibration(numerical, analytic, x)`` by :func:`judge_components`
    for some components; returns the noise model, the tiers and the evaluations
    spent.  The variation of J is extrapolated from those components to all.
    """

    def __init__(self, loss: Callable, layout: ParamLayout, center: float, unit: float,
                 tiers: Tiers, given: float | None = None) -> None:
        self.loss, self.layout, self.center = loss, layout, center
        self.unit, self.tiers = unit, tiers
        self.given = given   # check_grad's noise= as a number: used, not measured
        self.estimate: NoiseEstimate | None = None
        self.precision: Precision | None = None
        self.result: tuple[Noise, Tiers, int] | None = None
        self.evaluations = 0

    def __call__(self, numerical: np.ndarray, analytic: np.ndarray, x: np.ndarray
                 ) -> tuple[Noise, Tiers, int] | None:
        if self.estimate is not None:
            return self.result if self.result is None else (*self.result[:2], 0)
        est = given_noise(self.given) if self.given is not None else measure_noise(
            self.loss, self.layout, model_delta=C_ROUND * self.unit * abs(self.center))
        self.estimate, self.evaluations = est, est.evaluations
        with np.errstate(all="ignore"):
            size = np.fmax(np.abs(numerical), np.abs(analytic)) * np.maximum(1.0, np.abs(x))
        variation = float(np.sum(size[np.isfinite(size)])) * (
            self.layout.size / max(1, numerical.size))
        prec = effective_precision(est, self.center, self.unit, self.tiers.dtype, variation)
        self.precision = prec
        tiers = self.tiers
        if prec.tier_unit != self.unit:
            tiers = tiers_for_unit(prec.tier_unit, prec.label)
        measured = est.delta
        if est.status == "bounded" and not (
                est.delta < C_ROUND * self.unit * abs(self.center)):
            measured = math.nan   # a bound above the model tells nothing
        self.result = (Noise(prec.unit, measured), tiers, est.evaluations)
        return self.result

    def notes(self) -> list[str]:
        """The one plain line on what the loss resolves (when it differs)."""
        if self.precision is not None and self.precision.line:
            return [self.precision.line]
        return []

    def extra(self) -> dict:
        if self.estimate is None:
            return {}
        return {"noise": self.estimate.as_dict()}


def status_notes(layout: ParamLayout, status: np.ndarray, refined: int,
                 refine: bool) -> list[str]:
    """Plain notes on kinks, non-finite values and refinement, for every mode."""
    notes = []

    def shown(idx: np.ndarray) -> str:
        return ", ".join(layout.names_of(idx[:5])) + (", ..." if idx.size > 5 else "")

    kinks = np.flatnonzero(status == _S.KINK)
    if kinks.size:
        notes.append(
            f"{kinks.size} component(s) sit at a kink ({shown(kinks)}): the one-sided "
            "slopes differ by an amount that does not shrink with the step, and the "
            "analytic value is one of them (a valid one-sided derivative), so they are "
            "left out of the verdict")
    bad_loss = np.flatnonzero(status == _S.NONFINITE_LOSS)
    if bad_loss.size:
        notes.append(f"the loss returned NaN or inf around {bad_loss.size} component(s) "
                     f"({shown(bad_loss)}): their gradient could not be checked")
    bad_grad = np.flatnonzero(status == _S.NONFINITE_GRAD)
    if bad_grad.size:
        notes.append(f"the analytic gradient is NaN or inf at {bad_grad.size} component(s) "
                     f"({shown(bad_grad)})")
    if refined and refine:
        notes.append(f"{refined} component(s) looked off at first, or were too coarse "
                     f"at the default step, and were evaluated again at other steps "
                     f"(h/{REFINE:g}, h/{REFINE**2:g}, ... or {REFINE:g}h, {REFINE**2:g}h, "
                     "... while undecided)")
    if len(layout.dtypes) > 1:
        notes.append("parameters of mixed dtypes: the verdict uses the bounds of the least "
                     "precise one")
    return notes


def limit_notes(layout: ParamLayout, numerical: np.ndarray, analytic: np.ndarray,
                err: np.ndarray, status: np.ndarray, tiers: Tiers, noise: Noise,
                eps: float | None, flat: np.ndarray | None = None) -> list[str]:
    """What could not be resolved, the limit, and the step that would (note 4).

    `flat` maps positions in the arrays to flat component indices (partial modes).
    """
    where = np.flatnonzero(status == _S.UNRESOLVED)
    if where.size == 0:
        if status.size and np.all((status == _S.KINK) | (status == _S.NOT_CHECKED)) \
                and np.any(status == _S.KINK):
            return ["every checked component sits at a kink: nothing was left to judge the "
                    "gradient on, so it is not passed (check at a point off the kinks)"]
        return []
    idx = where if flat is None else flat[where]
    names = ", ".join(layout.names_of(idx[:5])) + (", ..." if idx.size > 5 else "")
    with np.errstate(all="ignore"):
        limit = KAPPA * err[where]
        size = np.abs(numerical[where]) + np.abs(analytic[where])
        worst = int(np.argmax(np.where(np.isfinite(limit), limit, -1.0)))
        rel = limit[worst] / size[worst] if size[worst] > 0 else math.inf
    text = (f"{where.size} component(s) could not be resolved ({names}): the arithmetic "
            f"cannot resolve them below {limit[worst]:.2g} here (relative {rel:.1g}, "
            f"worse than the 'ok' tier {tiers.ok:.1g}), so they are neither passed nor "
            "called wrong and a bug in them could be missed")
    delta = float(np.nanmax(noise.delta(np.array([0.0]))))
    if math.isfinite(noise.measured) and size[worst] > 0:
        need = 1.5 * KAPPA * 1.1 * noise.measured / (tiers.ok * size[worst])
        text += (f"; one evaluation of the loss is accurate to about {noise.measured:.2g}, "
                 f"so a step of about eps={need:.2g} would resolve them if the loss is "
                 "smooth over it (or compute the loss more precisely)")
    elif delta >= 0:
        text += ("; their numerical value keeps changing with the step: check them with "
                 "another eps (smaller where the loss varies on a small scale, larger "
                 "where it is noisy)")
    return [text]


# ------------------------------------------------------------ declared accuracy
def _shown(layout: ParamLayout, idx: np.ndarray) -> str:
    return ", ".join(layout.names_of(idx[:5])) + (", ..." if idx.size > 5 else "")


def accuracy_notes(layout: ParamLayout, analytic: np.ndarray, err: np.ndarray,
                   status: np.ndarray, accuracy: Accuracy | None,
                   flat: np.ndarray | None = None) -> list[str]:
    """Where the declared accuracy is finer than the check resolves (note 6).

    `flat` maps positions in the arrays to flat component indices (partial modes).
    """
    if accuracy is None:
        return []
    judged = np.flatnonzero((status == _S.OK) | (status == _S.UNRESOLVED))
    if judged.size == 0:
        return []
    a = analytic[judged]
    with np.errstate(all="ignore"):
        # The arithmetic's resolution, not the floor (a policy: differences below
        # the "excellent" tier are never called wrong, _verdict note 3).
        limit = KAPPA * err[judged]
        coarse = np.isfinite(limit) & (limit > accuracy.allowance(a))
    if not np.any(coarse):
        return []
    where = judged[coarse]
    worst = int(np.argmax(limit[coarse]))
    size = abs(a[coarse][worst])
    rel = f" (relative {limit[coarse][worst] / size:.1g})" if size > 0 else ""
    idx = where if flat is None else flat[where]
    return [f"the declared accuracy {accuracy.text()} is finer than what the loss resolves "
            f"at {where.size} of {judged.size} component(s) ({_shown(layout, idx)}): the "
            f"check cannot resolve below {limit[coarse][worst]:.2g}{rel} there, so they "
            "were judged at that resolution"]


def accuracy_hint(numerical: np.ndarray, analytic: np.ndarray, err: np.ndarray,
                  status: np.ndarray, floor_rel: float) -> str | None:
    """The declared accuracy at which the confirmed misses would be within (note 6).

    For a check that is only suspicious: every wrong component's miss stable
    (that is how it was confirmed), finite and within the "suspicious" tier of
    its own size.  None when a component is not finite or too far off.
    """
    wrong = status == _S.WRONG
    if not np.any(wrong) or np.any(status == _S.NONFINITE_GRAD):
        return None
    n, a = numerical[wrong], analytic[wrong]
    with np.errstate(all="ignore"):
        need = np.abs(n - a) - KAPPA * err[wrong] - floor_rel * (np.abs(n) + np.abs(a))
        need = np.maximum(need, 0.0)
        rtol = float(np.max(np.where(need > 0, need / np.abs(a), 0.0)))
    atol = float(np.max(need))
    if not (math.isfinite(atol) and atol > 0):
        return None
    text = f"atol={short(suggested(atol))}"
    if math.isfinite(rtol) and rtol > 0:
        text = f"rtol={short(suggested(rtol))} (or {text})"
    count = int(np.count_nonzero(wrong))
    return (f"{count} component(s) differ stably but by little from their numerical "
            f"value: the check would pass with a declared accuracy {text}. That is "
            "information, not a pass: declare it only if the gradient is approximate by "
            "design (an adjoint ODE, an iterative solver, truncation); otherwise these "
            "differences are bugs")
