"""The noise of one loss evaluation, measured rather than assumed.

Numbered notes (the code refers to them):

1. Why.  The rounding model delta = C_ROUND u |J| (_verdict note 2) is wrong by
   factors of 1e2 to 1e11 on real losses: a float32 model behind float64 numbers,
   an energy relative to a large baseline, a confident classifier, an iterative
   solver or an adaptive integrator with a tolerance.  It can also be far above
   the truth (a large offset added exactly).  A verdict built on it then calls a
   correct gradient wrong, or passes a sign flip.
2. How (after Moré and Wild, "Estimating computational noise", SIAM J. Sci.
   Comput. 33(3), 2011).  J is evaluated at TABLE_POINTS equally spaced points
   theta + t s v, t = 1 .. TABLE_POINTS, along one random direction v.  In the
   difference table, the k-th differences of the smooth part of J are of order
   (s |v|)**k J^(k), negligible for k >= 2 at a small spacing, while noise of
   standard deviation sigma gives k-th differences of variance sigma**2 (2k)! /
   (k!)**2.  So sigma_k = sqrt(gamma_k mean((Delta^k J)**2)), gamma_k = (k!)**2 /
   (2k)!, estimates sigma once the differences are noise: they change sign, and
   sigma_k agrees with sigma_{k+1} within a factor 4.  The smallest such k in
   2 .. 5 is taken.
3. The points.  The table starts at t = 1, not 0: a loss checked exactly at a
   kink (a ReLU on its hinge) has the kink at theta, and a table across it would
   read the jump in slope as noise.  The displacement t s v_i is a multiple of
   the parameter dtype's spacing at theta_i, so every point is represented
   exactly and equally spaced (components where that fails are not moved):
   otherwise the rounding of theta + t s v in float32 would itself look like
   noise of a float64 loss.  v_i = +-(0.5 .. 1.5) max(1, |theta_i|), the scale
   the default step is relative to.
4. The spacing.  s = SPACING (4.8e-6, float64's default central step): wide
   enough that a float32 inner computation moves by ~80 of its ulps per point,
   small enough that the smooth part has vanished by the 3rd difference for a
   loss of O(1) scale.  When J takes the same value at every point (a quantised
   or piecewise-constant loss), or the table is smooth (no sign change: the
   noise is below what 8 points resolve), the spacing is multiplied by WIDEN
   once and the table measured again: 8 or 16 evaluations (8 more when noise
   was found, note 8).  A table that never looks like noise still bounds it:
   sigma <= min_k sigma_k ("bounded").
5. What is returned.  delta = NOISE_BOUND * sigma, a bound on the error of one
   evaluation (noise is about normal for rounding; 3 sigma covers 99.7 %), or
   NaN when the table shows no noise ("smooth": below what it resolves) or J did
   not change ("constant").  The judge uses max(measured delta, u |J|) in place
   of the model once a measurement exists (_judge note 1).
7. Features are not noise.  A loss that varies on a scale smaller than the
   spacing (a component of scale 1e-6 under a step of 4.8e-6) fills the table
   with differences that change sign too: read as noise, they would make every
   component "unresolved" and send steps the wrong way.  So a noise above the
   rounding model is measured again along the same direction at s / CONFIRM:
   rounding noise keeps its size (the inner values still move by several of
   their ulps), a feature's differences shrink like (s / CONFIRM)**k.  When
   sigma falls by more than AGREE, the estimate is rejected ("feature") and the
   model stays.
8. Aliasing.  A loss whose result is rounded to a quantum far coarser than its
   own ulp (torch.special.ndtr in its lower tail is (1 + erf(x / sqrt 2)) / 2,
   rounded to 2**-54 absolute while its value is 1e-7) has a rounding error
   that is a sawtooth of the smooth value.  When the smooth change per table
   step is close to a whole number of quanta, the eight errors line up on a
   smooth curve and the table reads a noise a million times too small (then a
   correct derivative is called suspicious from the slope of one tooth).  So
   every measured table is measured again at s / CONFIRM, which does not line
   up with the first: when it finds noise AGREE times larger, that is the
   noise (the smooth part only shrinks with the spacing: a larger reading at
   the smaller spacing cannot be it).  8 more evaluations per measurement.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from fastcheck import _kernel
from fastcheck._params import ParamLayout

__all__ = ["NOISE_OPTIONS", "NoiseEstimate", "check_noise_option", "given_noise",
           "measure_noise", "noise_from_table"]

NOISE_OPTIONS = ("auto", "model")

TABLE_POINTS = 8        # evaluations per table (note 2)
MAX_ORDER = 5           # highest difference order tried
SPACING = 4.8e-6        # note 4
WIDEN = 1e3             # note 4
NOISE_BOUND = 3.0       # delta = 3 sigma (note 5)
AGREE = 4.0             # sigma_k and sigma_{k+1} within this factor (note 2)
CONFIRM = 16.0          # a noise above the model is measured again at s / CONFIRM


@dataclass(frozen=True)
class NoiseEstimate:
    """The measured noise of one loss evaluation near theta.

    Attributes
    ----------
    delta : float
        A bound on the absolute error of one evaluation (3 sigma); NaN when the
        table showed none (`status` says why).
    sigma : float
        The estimated standard deviation of the noise (NaN when not measured).
    order : int
        The difference order the estimate came from (0 when none).
    evaluations : int
        Loss evaluations spent (8 to 24).
    spacing : float
        The last relative spacing s used.
    status : str
        "measured"; "bounded" (no order looked like pure noise: `delta` is an
        upper bound from the smallest sigma_k, used only when it is below the
        rounding model); "constant" (J took one value at every point); or
        "feature" (what looked like noise shrank with the spacing, note 7); or
        "given" (the user's ``noise=``, nothing evaluated).
    exact_in : str
        The narrowest of float16, float32, float64 that holds every value of the
        table exactly: a loss computed in float32 returns float32 values, even
        as Python floats (note 6).
    """

    delta: float
    sigma: float
    order: int
    evaluations: int
    spacing: float
    status: str
    exact_in: str = "float64"

    def as_dict(self) -> dict:
        return {"delta": self.delta, "sigma": self.sigma, "order": self.order,
                "evaluations": self.evaluations, "spacing": self.spacing,
                "status": self.status, "exact_in": self.exact_in}


def _exact_in(values: np.ndarray) -> str:
    for name in ("float16", "float32"):
        with np.errstate(over="ignore"):
            if np.array_equal(values.astype(name).astype(np.float64), values):
                return name
    return "float64"


def noise_from_table(values: np.ndarray) -> tuple[float, int, str]:
    """sigma, the order it came from, and a status, from equally spaced J values.

    Pure function of the table (note 2): ``(sigma, k, "measured")``,
    ``(bound, k, "bounded")`` or ``(nan, 0, "constant")``.
    """
    f = np.asarray(values, dtype=np.float64)
    if not np.all(np.isfinite(f)):
        return math.nan, 0, "constant"
    if np.all(f == f[0]):
        return math.nan, 0, "constant"
    sigmas, signs = [], []
    diff = f
    for k in range(1, MAX_ORDER + 2):
        diff = np.diff(diff)
        gamma = math.factorial(k) ** 2 / math.factorial(2 * k)
        sigmas.append(math.sqrt(gamma * float(np.mean(diff**2))))
        nonzero = diff[diff != 0]
        signs.append(bool(nonzero.size > 1 and np.any(np.sign(nonzero[1:])
                                                      != np.sign(nonzero[:-1]))))
    for k in range(2, MAX_ORDER + 1):
        s, s_next = sigmas[k - 1], sigmas[k]
        if not signs[k - 1] or s == 0 or s_next == 0:
            continue
        if max(s, s_next) <= AGREE * min(s, s_next):
            return s, k, "measured"
    # No order looks like pure noise: the differences still bound it from above.
    k = int(np.argmin(sigmas[1:MAX_ORDER])) + 2
    return sigmas[k - 1], k, "bounded"


def _direction(layout: ParamLayout, x: np.ndarray, rng: np.random.Generator,
               spacing: float) -> np.ndarray:
    """Per-component displacement of one table step, exact in each dtype (note 3)."""
    v = rng.uniform(0.5, 1.5, x.size) * rng.choice(np.array([-1.0, 1.0]), x.size)
    step = spacing * v * np.maximum(1.0, np.abs(x))
    t = np.arange(1, TABLE_POINTS + 1)[:, None]
    for p, a in enumerate(layout.arrays):
        lo, hi = int(layout.offsets[p]), int(layout.offsets[p + 1])
        xs, vs = x[lo:hi], step[lo:hi]
        far = (np.abs(xs) + TABLE_POINTS * np.abs(vs)).astype(a.dtype)
        ulp = np.spacing(far).astype(np.float64)
        vs = np.maximum(1.0, np.round(np.abs(vs) / ulp)) * ulp * np.sign(vs)
        points = xs + t * vs
        exact = np.all(points.astype(a.dtype).astype(np.float64) == points, axis=0)
        step[lo:hi] = np.where(exact, vs, 0.0)
    return step


def _table(loss: Callable[[Any], Any], layout: ParamLayout, x: np.ndarray,
           step: np.ndarray) -> np.ndarray:
    """J at theta + t step, t = 1 .. TABLE_POINTS, written into the caller's arrays
    (the caller restores them)."""
    offsets = layout.offsets
    table = np.empty(TABLE_POINTS)
    for t in range(1, TABLE_POINTS + 1):
        point = x + t * step
        for p, a in enumerate(layout.arrays):
            a[...] = point[offsets[p]:offsets[p + 1]].reshape(a.shape)
        table[t - 1] = _kernel.loss_value(loss(layout.params))
    return table


def measure_noise(loss: Callable[[Any], Any], layout: ParamLayout, *, seed: int = 0,
                  model_delta: float = math.inf) -> NoiseEstimate:
    """Measure the noise of one evaluation of `loss` near the current parameters.

    Writes theta + t s v into the caller's arrays, evaluates, and restores them
    bit for bit on every exit (also on exceptions).  Costs TABLE_POINTS (8)
    evaluations, twice that when the first table shows nothing (note 4), and 8
    more to confirm a measured noise (notes 7, 8): 8 to 24 in all.  A noise
    above `model_delta` that shrinks with the spacing is a feature (note 7).
    """
    x = layout.values()
    snapshot = layout.snapshot()
    spacing = SPACING
    calls = [0]

    def counted(params: Any) -> Any:
        calls[0] += 1
        return loss(params)

    sigma, order, status, exact = math.nan, 0, "constant", "float64"
    try:
        for attempt in range(2):
            step = _direction(layout, x, np.random.default_rng([seed, attempt]), spacing)
            # (what the loss raises propagates, as from any evaluation of the
            # check, after the parameters were restored)
            table = _table(counted, layout, x, step)
            sigma, order, status = noise_from_table(table)
            exact = _exact_in(table)
            if status == "measured" or attempt == 1:
                break
            spacing *= WIDEN
        if status == "measured":
            # Notes 7 and 8: noise keeps its size when the spacing shrinks, a
            # feature does not; and the first table may have missed the noise.
            step = _direction(layout, x, np.random.default_rng([seed, attempt]),
                              spacing / CONFIRM)
            again, _, status_again = noise_from_table(_table(counted, layout, x, step))
            if (status_again != "constant" and again < sigma / AGREE
                    and NOISE_BOUND * sigma > model_delta):
                status = "feature"
            elif status_again == "measured" and again > AGREE * sigma:
                sigma = again
    finally:
        layout.restore(snapshot)
    delta = NOISE_BOUND * sigma if status in ("measured", "bounded") else math.nan
    return NoiseEstimate(delta, sigma, order, calls[0], spacing, status, exact)


def check_noise_option(noise: Any) -> str | float:
    """Validate check_grad's ``noise=`` before anything is evaluated.

    "auto" (measure when it matters), "model" (never measure: the rounding model
    C_ROUND u |J| only), or a number > 0: the known absolute error of one
    evaluation (a solver's tolerance times |J|, say), used instead of a measurement.
    """
    if isinstance(noise, str):
        if noise not in NOISE_OPTIONS:
            raise ValueError(f"noise={noise!r}: expected 'auto' (measure the loss's noise "
                             "when it matters), 'model' (never measure) or a number > 0 "
                             "(the absolute error of one loss evaluation)")
        return noise
    if isinstance(noise, (bool, np.bool_)) or not isinstance(noise, (int, float, np.number)):
        raise TypeError(f"noise must be 'auto', 'model' or a number > 0 (the absolute error "
                        f"of one loss evaluation), got {type(noise).__name__}")
    value = float(noise)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"noise={noise!r}: the absolute error of one loss evaluation must "
                         "be a finite number > 0")
    return value


def given_noise(delta: float) -> NoiseEstimate:
    """The estimate for a noise the user gave (``noise=`` a number): no evaluation."""
    return NoiseEstimate(delta, delta / NOISE_BOUND, 0, 0, math.nan, "given")


# ------------------------------------------------------------------ effective precision
_NAMED = (("float64", 2.0**-53), ("float32", 2.0**-24), ("float16", 2.0**-11))
# The coarsest resolution tiers are derived for: beyond it a relative error of a few
# per cent is all a central difference can tell.
COARSEST_UNIT = 1e-3


@dataclass(frozen=True)
class Precision:
    """What the loss resolves, from a noise measurement (notes 1, 6).

    Attributes
    ----------
    unit : float
        Unit roundoff for the noise model (C_ROUND u |J| before a measurement,
        max(measured, u |J|) after).
    tier_unit : float
        The unit roundoff the verdict's tiers are derived from.
    label : str
        The tiers' label, e.g. ``"float64 (loss resolves like float32)"``.
    line : str
        One plain sentence for the report; empty when nothing differs.
    """

    unit: float
    tier_unit: float
    label: str
    line: str


def _like(u: float) -> str:
    """The dtype a relative resolution `u` is like, or the two it lies between."""
    finer = None
    for name, unit in _NAMED:
        if u <= 4 * unit:
            return name if finer is None or u > unit / 16 else f"between {finer} and {name}"
        finer = name
    return "coarser than float16"


def effective_precision(est: NoiseEstimate, center: float, unit: float, dtype_name: str,
                        variation: float) -> Precision:
    """Choose the noise unit and the tiers from a measurement (note 6).

    6. The loss's relative resolution is sigma / |J|: about u for a loss computed
       in its parameters' dtype, 1e-8 for a float32 model behind float64 numbers,
       1e-16 for a float64 loss over float32 parameters ("finer").  The tiers
       need the resolution relative to how much J varies, not to |J|: a large
       exact offset leaves sigma / |J| at u but drowns the variation.  So the
       tiers follow sigma / min(|J|, variation) when it exceeds u (variation:
       sum_i |g_i| max(1, |theta_i|), what J changes by over a unit relative
       step), capped at COARSEST_UNIT; and a finer loss gets the tiers of u**2
       (its differences are float64-accurate, its steps float32-limited) and the
       float64 noise model.
    """
    if est.status not in ("measured", "given") or not math.isfinite(center):
        # A bound says nothing about the effective precision; the judge may still use
        # it to tighten the rounding model (_judge.Calibration).
        return Precision(unit, unit, dtype_name, "")
    size = abs(center) if center != 0 else variation
    relative = est.sigma / size if size > 0 else math.inf
    scale = min(abs(center), variation) if variation > 0 else abs(center)
    coarse = est.sigma / scale if scale > 0 else math.inf
    how = (f"noise measured along a random direction ({est.evaluations} evaluations): "
           f"one evaluation is accurate to about {est.delta:.2g}"
           if est.status == "measured" else
           f"noise given: one evaluation is accurate to about {est.delta:.2g}")
    finer_values = est.exact_in == "float64" or (
        est.exact_in == "float32" and unit > 2.0**-24)
    if relative < unit / 8 and unit > 2.0**-53 and finer_values:
        finer = max(2.0**-53, relative)
        return Precision(finer, unit, dtype_name,
                         f"the loss resolves finer than its {dtype_name} parameters "
                         f"(about {relative:.1g} of |J|; {how}): components are judged "
                         f"against that noise, so an error the {dtype_name} tiers would "
                         "call ok is still confirmed wrong when it is resolved")
    if coarse <= 4 * unit:
        return Precision(unit, unit, dtype_name, "")
    tier_unit = min(coarse, COARSEST_UNIT)
    what = (f"about {relative:.1g} of |J| = {abs(center):.3g}"
            if relative > 4 * unit else
            f"about {coarse:.1g} of the {scale:.3g} that J varies by (|J| = {abs(center):.3g})")
    return Precision(unit, tier_unit, f"{dtype_name} (loss resolves like {_like(tier_unit)}"
                     f", u ≈ {tier_unit:.1g})",
                     f"the loss resolves coarser than its {dtype_name} parameters: {what}, "
                     f"like {_like(tier_unit)} ({how}); steps go up where the default one "
                     "cannot resolve a component, and the tiers follow what the loss resolves")
