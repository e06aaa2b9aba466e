"""A declared accuracy: the rtol / atol a gradient is meant to have.

Some hand-written gradients are approximate on purpose: an adjoint ODE gradient
is accurate to the integrator's tolerance, an implicit gradient through an
iterative solver to the solver's, a truncated backpropagation to its window.
The user says so with ``rtol=`` / ``atol=``; this module holds the value, its
validation (before any evaluation) and the words the report uses.  The rule
that applies it -- a component agrees when |numerical - analytic| <= atol +
rtol |analytic| plus what the noise allows -- lives in the judge
(:mod:`fastcheck._judge`), with every other acceptance rule.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["Accuracy", "check_accuracy", "short", "suggested"]


@dataclass(frozen=True)
class Accuracy:
    """The declared accuracy of an analytic gradient.

    Attributes
    ----------
    rtol, atol : float
        A component may differ from the exact derivative by up to
        ``atol + rtol * |analytic|``.
    """

    rtol: float = 0.0
    atol: float = 0.0

    def allowance(self, analytic: Any) -> np.ndarray:
        """``atol + rtol * |analytic|`` per component (0 where analytic is not finite)."""
        a = np.abs(np.asarray(analytic, dtype=np.float64))
        with np.errstate(invalid="ignore", over="ignore"):
            allow = self.atol + self.rtol * a
        return np.where(np.isfinite(allow), allow, 0.0)

    def text(self) -> str:
        """``"rtol=1e-05"``, ``"atol=1e-08"`` or both, as declared."""
        parts = []
        if self.rtol or not self.atol:
            parts.append(f"rtol={short(self.rtol)}")
        if self.atol:
            parts.append(f"atol={short(self.atol)}")
        return ", ".join(parts)

    def as_dict(self) -> dict:
        return {"rtol": self.rtol, "atol": self.atol}


def short(value: float) -> str:
    """A tolerance as people write it: 1e-5, 2.5e-8, 0.01, 0."""
    if value == 0 or 1e-3 <= abs(value) < 1e4:
        return f"{value:.3g}"
    mantissa, exponent = f"{value:.2e}".split("e")
    mantissa = mantissa.rstrip("0").rstrip(".")
    return f"{mantissa}e{int(exponent)}"


def _one(value: Any, name: str) -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer,
                                                                     np.floating)):
        raise TypeError(f"{name} must be a non-negative finite number (the accuracy the "
                        f"gradient is meant to have), got {type(value).__name__}")
    number = float(value)
    if not math.isfinite(number) or number < 0:
        raise ValueError(f"{name}={value!r}: the declared accuracy must be a non-negative "
                         "finite number")
    return number


def check_accuracy(rtol: Any = None, atol: Any = None) -> Accuracy | None:
    """Validate ``rtol=`` / ``atol=`` before anything is evaluated.

    Returns None when neither was given (nothing declared: the usual verdict),
    else an :class:`Accuracy` (the one not given is 0).
    """
    if rtol is None and atol is None:
        return None
    return Accuracy(0.0 if rtol is None else _one(rtol, "rtol"),
                    0.0 if atol is None else _one(atol, "atol"))


def suggested(value: float) -> float:
    """`value` rounded up to 1, 2 or 5 times a power of ten (for a hint)."""
    if not math.isfinite(value) or value <= 0:
        return value
    power = 10.0 ** math.floor(math.log10(value))
    for step in (1.0, 2.0, 5.0, 10.0):
        if step * power >= value * (1 - 1e-12):
            return step * power
    return 10 * power
