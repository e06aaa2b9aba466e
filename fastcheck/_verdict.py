"""The verdict: tiers derived from the dtype, and a noise model per component.

The rule that applies these notes lives in one place, fastcheck._judge (its own
notes add the measured noise, scaling evidence, steps up, honest limits and the
kink probe); fastcheck._noise measures the noise that note 2 only models.

Numbered notes (the code refers to them):

1. Tiers.  The reference table (docs/design.md, "Facts") for float64 is 1e-7 / 1e-5 /
   1e-3.  Those bounds are u**(7/16), u**(5/16) and u**(3/16) for u = 2**-53, the unit roundoff
   of float64, to within 5 %.  The same exponents give the bounds for any dtype:
   float32 (u = 2**-24) gets 6.9e-4 / 5.5e-3 / 4.4e-2.  A correct float32 gradient
   differs from its central difference by about u**(2/3) ~ 1e-5 relative at best,
   more for a loss that sums many terms; a uniform factor of 2 gives 0.33.
2. Noise of one loss evaluation: delta = C_ROUND * u * |J|, with u the unit
   roundoff of the least precise parameter dtype (the loss is computed at that
   precision, usually) and C_ROUND = 32 allowing for a loss that accumulates
   rounding over many terms.  It is deliberately a modest estimate: a component
   that looks wrong against it is not called wrong yet, it is re-examined (note 4),
   and the noise is then measured (_noise; _judge note 1 uses max(measured, u |J|)).
3. First look (no extra evaluations): component i is *suspect* when
   |D_i - g_i| > KAPPA * (rounding_i + truncation_i) + floor_i, where rounding_i
   is delta / h for a central difference (2 delta / h one-sided), truncation_i is a
   curvature-based guess (h * |D+ - D-| / max(1, |x|)), and floor_i is the
   "excellent" bound times |D_i| + |g_i| (differences that small do not make a
   gradient wrong, whatever the noise).
4. Second look, for suspects only: two more evaluations at h' = h / 4 give the
   central difference D' and the one-sided slopes D+', D-'.
   - A kink: the one-sided slopes disagree by an amount that does not shrink with
     h (|D+' - D-'| > 0.5 |D+ - D-|) and is well above their rounding noise.  The
     component is a kink -- kept out of the bug verdict -- when g lies between the
     one-sided slopes (a valid one-sided derivative or subgradient), wrong otherwise.
   - Otherwise the Richardson value R = (16 D' - D) / 15 removes the h**2 error,
     and the observed change |D - D'| measures what the arithmetic can resolve
     (it is large when rounding or truncation dominates).  The component is wrong
     when |R - g| > KAPPA * (rounding(R) + |D - D'|) + floor.
   A real bug keeps the same difference at every step, so it survives; noise and
   truncation change with the step, so they do not.  A suspect whose miss a step
   4x smaller would already drown in rounding goes the other way, to larger steps
   (_judge note 3; not from central4's or richardson's pair, which starts at
   u**(1/5) already: 4x and 16x that cross the kinks of an ordinary ReLU network).
5. The overall verdict starts from the tier of the relative error (over the
   components that are not kinks) and is then corrected by the component test:
   a confirmed wrong component makes it at least "suspicious" (one bad component
   among 1e4 barely moves the global metric) -- "wrong" when its own relative
   difference is in the "wrong" tier -- and when no component differs beyond its
   noise the verdict is at most "ok"; "unresolved" when some component could not be
   resolved to the "ok" tier (_judge note 4).
6. Steps wider than the loss's own scale.  The default step is relative to
   max(1, |theta_i|), so a component whose loss varies on a scale s << 1 (e.g.
   theta_i ~ 1e-6 with J depending on theta_i / 1e-6) is first probed with h >> s.
   There every difference formula is garbage, and note 4's tests are fooled three
   ways: |D - D'| is large, so "within resolve" would hide a bug; the central
   difference is ~0 at every such step, so it looks stable and a correct gradient
   would look wrong; and the slope gap does not shrink, so it would look like a
   kink.  Hence:
   - Truncating (|D - D'| > 2 x rounding): the component is neither accepted nor
     called wrong until a third step confirms the h**2 law (the coefficient
     (D - D') / (h**2 - h'**2) agrees within 20 % between the last two pairs).
     Then the change of the extrapolated value bounds its error (the previous
     one's is ~256x larger), and it is accepted once that bound is down to
     rounding and the floor.  Suspects may take up to 8 levels (h / 65536), plus
     the levels central4 / richardson need to reach central's steps; they start
     from their own finer central pair, which has little rounding.
   - A kink must show a slope gap that neither shrinks nor grows (within 2x) on
     two successive pairs of steps.
   - What is still truncation-dominated at the smallest step is never a false
     failure: it is "unresolved" (_judge note 4), and a note names it.
   The cost stays 2 evaluations per undecided suspect per level, none for
   components that pass.
7. Kinks in float32.  With float32's delta and the refined (smaller) steps, a
   real slope jump of ~1e-2 can stay below KAPPA * 4 delta / h: the component
   would be treated as smooth, and its central difference -- the mean of the two
   slopes -- misses g by half the jump at every step, "stable", so "wrong".  And
   a small jump next to curvature (slopes up/down = up0/down0 + O(h J'')) can make
   the gap shrink between two steps as a smooth loss's does.  Hence:
   - the gap must exceed 4 delta / h (delta is already padded by C_ROUND, and
     noise alone would grow 4x per level, which the shape test refuses);
   - a component is not called wrong while it may be a kink with g one of the
     slopes: the gap has a kink's shape and g lies between the slopes, or the
     one-sided slopes extrapolated to h -> 0 (up0 = up2 + (up2 - up1) h2 /
     (h1 - h2), likewise down0) differ beyond their rounding and g lies between
     them.  It is refined further, and left "ok" if that never decides.
   tests/test_kinks.py holds the float32 ReLU networks this protects.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = [
    "C_ROUND",
    "KAPPA",
    "TIERS",
    "ComponentStatus",
    "Tiers",
    "relative_error",
    "tier_of",
    "tiers_for",
    "tiers_for_unit",
]

C_ROUND = 32.0
KAPPA = 3.0
TIERS = ("excellent", "ok", "suspicious", "wrong")


class ComponentStatus:
    """What the check concluded about one component (stored as int8)."""

    OK = 0
    WRONG = 1             # differs from the numerical derivative beyond its noise
    KINK = 2              # non-differentiable point; analytic is a valid one-sided slope
    NONFINITE_LOSS = 3    # the loss returned NaN/inf around it: cannot be checked
    NONFINITE_GRAD = 4    # the analytic gradient is NaN/inf there
    NOT_CHECKED = 5       # outside the components a partial check covered
    UNRESOLVED = 6        # the arithmetic could not resolve it to the "ok" tier (_judge)

    NAMES = ("ok", "wrong", "kink", "nonfinite loss", "nonfinite gradient", "not checked",
             "unresolved")


@dataclass(frozen=True)
class Tiers:
    """Relative-error bounds of the verdict tiers for one dtype (note 1)."""

    dtype: str
    excellent: float
    ok: float
    suspicious: float

    def as_dict(self) -> dict:
        return {"dtype": self.dtype, "excellent": self.excellent, "ok": self.ok,
                "suspicious": self.suspicious}


def tiers_for(dtype: np.dtype) -> Tiers:
    """The tier bounds for parameters of `dtype` (note 1)."""
    u = float(np.finfo(dtype).eps) / 2
    return Tiers(np.dtype(dtype).name, u ** (7 / 16), u ** (5 / 16), u ** (3 / 16))


def tiers_for_unit(unit: float, label: str) -> Tiers:
    """The tier bounds for a loss that resolves like unit roundoff `unit` (note 1),
    e.g. a float64 loss computed in float32 inside (_check, effective precision)."""
    return Tiers(label, unit ** (7 / 16), unit ** (5 / 16), unit ** (3 / 16))


def tier_of(rel_error: float, tiers: Tiers) -> str:
    """Map a relative error to "excellent", "ok", "suspicious" or "wrong"."""
    if not np.isfinite(rel_error):
        return "wrong"
    if rel_error < tiers.excellent:
        return "excellent"
    if rel_error <= tiers.ok:
        return "ok"
    if rel_error <= tiers.suspicious:
        return "suspicious"
    return "wrong"


def relative_error(numerical: np.ndarray, analytic: np.ndarray) -> float:
    """The seed metric ‖n − a‖ / (‖n‖ + ‖a‖); 0 when both are exactly zero."""
    numerical = np.asarray(numerical, dtype=np.float64).ravel()
    analytic = np.asarray(analytic, dtype=np.float64).ravel()
    if numerical.size == 0:
        return 0.0
    # Scale before squaring so that huge or tiny gradients neither overflow nor
    # underflow the norms.
    scale = max(float(np.max(np.abs(numerical), initial=0.0)),
                float(np.max(np.abs(analytic), initial=0.0)))
    if scale == 0.0:
        return 0.0
    if not np.isfinite(scale):
        return float("nan")
    # Norms as sqrt(x . x): np.linalg.norm costs more than the arithmetic on the
    # small arrays of a per-parameter breakdown.
    d, n, a = (numerical - analytic) / scale, numerical / scale, analytic / scale
    return math.sqrt(float(d @ d)) / (math.sqrt(float(n @ n)) + math.sqrt(float(a @ a)))
