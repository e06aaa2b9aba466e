"""eps_sweep: the relative error of the numerical gradient against the step.

For each step eps of a grid and each difference method, the whole numerical
gradient is computed with the *same absolute* step for every component (no
max(1, |theta_i|) scaling, so that the x axis means one thing), and compared with
the analytic gradient by the seed metric ‖n − a‖ / (‖n‖ + ‖a‖).  The curve is the
familiar V: at large eps the truncation error of the formula (eps**p for a method
of order p) dominates, at small eps the rounding error of the loss (u |J| / eps);
the bottom of the V is the best step, and its height is the best agreement the
method can show for this loss.  Complex step has no rounding term: its curve
falls and stays at the level of u.

Cost: len(eps) runs of the kernel per method, i.e. len(eps) x (evaluations per
component) x n loss evaluations (2n per step for central, n for forward): meant
for small models or a subset of the parameters, like gradient checking itself.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fastcheck._check import analytic_gradient
from fastcheck._evaluate import WithBeforeEval, check_loss, default_eps, run_kernel
from fastcheck._numerical import run_guarded
from fastcheck._params import as_layout
from fastcheck._validate import check_method
from fastcheck._verdict import relative_error

__all__ = ["DEFAULT_SWEEP_EPS", "EpsSweep", "SweepBest", "eps_sweep"]

#: The default grid: 1e-1 down to 1e-12, two points per decade (23 steps).
DEFAULT_SWEEP_EPS: tuple[float, ...] = tuple(float(10.0 ** (-k / 2)) for k in range(2, 25))

SWEEP_METHODS = ("central", "forward", "backward", "central4", "richardson", "complex")

# Errors of exactly 0 (e.g. complex step on a polynomial) are drawn at this level
# on the log axis.
_PLOT_FLOOR = 1e-17


@dataclass(frozen=True)
class SweepBest:
    """The step with the smallest relative error for one method."""

    eps: float
    error: float

    def as_dict(self) -> dict:
        return {"eps": self.eps, "error": self.error}


@dataclass
class EpsSweep:
    """The relative error of each method at each step (see :func:`eps_sweep`).

    Attributes
    ----------
    eps : ndarray
        The absolute steps, largest first.
    errors : dict of str to ndarray
        Per method, the relative error at each step (NaN where the step was too
        small to be represented for some component, or the loss was not finite).
    best : dict of str to SweepBest or None
        Per method, the step with the smallest error (None if every error is NaN).
    default_eps : dict of str to float
        Per method, fastcheck's default step for these parameters' dtype (it is
        relative to max(1, |theta_i|), so equal to the absolute step where
        |theta_i| <= 1).
    dtype : str
        The least precise parameter dtype.
    size : int
        Number of components.
    evaluations : int
        Loss evaluations made.
    seconds : float
    """

    eps: np.ndarray
    errors: dict[str, np.ndarray]
    best: dict[str, SweepBest | None]
    default_eps: dict[str, float]
    dtype: str
    size: int
    evaluations: int = 0
    seconds: float = 0.0
    methods: tuple[str, ...] = field(default=())

    def table(self) -> str:
        """A text table: one row per step, one column per method; * marks the best."""
        methods = self.methods or tuple(self.errors)
        header = ["eps", *methods]
        rows = []
        for i, e in enumerate(self.eps):
            row = [f"{e:.1e}"]
            for m in methods:
                err = self.errors[m][i]
                best = self.best[m]
                mark = "*" if best is not None and best.eps == e else " "
                row.append(("nan" if not math.isfinite(err) else f"{err:.2e}") + mark)
            rows.append(row)
        widths = [max(len(h), *(len(r[k]) for r in rows)) for k, h in enumerate(header)]
        lines = ["  ".join(h.rjust(w) for h, w in zip(header, widths, strict=True))]
        lines += ["  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
        return "\n".join(lines)

    def summary(self) -> str:
        """One line per method: the best step and its error."""
        out = []
        for m in self.methods or tuple(self.errors):
            b = self.best[m]
            if b is None:
                out.append(f"{m}: no finite error at any step")
            else:
                out.append(f"{m}: best eps {b.eps:.1e} (relative error {b.error:.2e}; "
                           f"fastcheck's default {self.default_eps[m]:.1e})")
        return "\n".join(out)

    def __str__(self) -> str:
        return (f"eps sweep: relative error ‖n − a‖ / (‖n‖ + ‖a‖) of {self.size} components "
                f"({self.dtype}), absolute steps; * = best\n{self.table()}\n{self.summary()}")

    def to_dict(self) -> dict:
        """Plain data (JSON-friendly; NaN errors become None)."""
        def plain(x: float) -> float | None:
            return float(x) if math.isfinite(x) else None

        methods = self.methods or tuple(self.errors)
        return {
            "eps": [float(e) for e in self.eps],
            "errors": {m: [plain(v) for v in self.errors[m]] for m in methods},
            "best": {m: (None if self.best[m] is None else self.best[m].as_dict())
                     for m in methods},
            "default_eps": {m: self.default_eps[m] for m in methods},
            "dtype": self.dtype,
            "size": self.size,
            "evaluations": self.evaluations,
            "seconds": self.seconds,
        }

    def plot(self, ax: Any = None, path: str | None = None, title: str | None = None) -> Any:
        """Draw the curves with matplotlib (log-log), best steps marked.

        Parameters
        ----------
        ax : matplotlib Axes, optional
            Where to draw; a new figure when None.
        path : str, optional
            Save the figure there (the format follows the extension).
        title : str, optional

        Returns
        -------
        matplotlib Axes

        Raises
        ------
        ImportError
            When matplotlib is not installed (it is an optional dependency).
        """
        try:
            import matplotlib.pyplot as plt
        except ImportError as exc:
            raise ImportError(
                "EpsSweep.plot needs matplotlib, an optional dependency of fastcheck: "
                "pip install matplotlib (or pip install fastcheck[plot]). The numbers "
                "are available without it: print(sweep) or sweep.to_dict()") from exc
        if ax is None:
            _, ax = plt.subplots(figsize=(6.4, 4.2))
        for m in self.methods or tuple(self.errors):
            err = np.where(self.errors[m] == 0, _PLOT_FLOOR, self.errors[m])
            (line,) = ax.loglog(self.eps, err, marker="o", markersize=3.5, linewidth=1.5,
                                label=m)
            b = self.best[m]
            if b is not None:
                ax.loglog([b.eps], [max(b.error, _PLOT_FLOOR)], marker="*", markersize=13,
                          color=line.get_color(), markeredgecolor="black",
                          markeredgewidth=0.6, linestyle="none")
                ax.annotate(f"{b.eps:.0e}", (b.eps, max(b.error, _PLOT_FLOOR)),
                            textcoords="offset points", xytext=(0, -15), ha="center",
                            fontsize=7, color=line.get_color())
        finite = [e[np.isfinite(e) & (e > 0)] for e in self.errors.values()]
        lows = [float(e.min()) for e in finite if e.size]
        if lows:  # room below the lowest point for the best-step labels
            ax.set_ylim(bottom=max(min(lows), _PLOT_FLOOR) / 20)
        ax.set_xlabel("step ε (absolute)")
        ax.set_ylabel("relative error ‖n − a‖ / (‖n‖ + ‖a‖)")
        ax.set_title(title or f"ε sweep ({self.size} components, {self.dtype}); ★ = best ε")
        ax.invert_xaxis()
        ax.grid(True, which="major", linewidth=0.5, alpha=0.5)
        ax.legend(fontsize=8)
        if path is not None:
            ax.figure.tight_layout()
            ax.figure.savefig(path, dpi=110)
        return ax


def _check_eps_list(eps: Any) -> np.ndarray:
    """Validate the grid: a non-empty sequence of finite numbers > 0."""
    if eps is None:
        return np.array(DEFAULT_SWEEP_EPS)
    if isinstance(eps, (int, float, np.number)) and not isinstance(eps, (bool, np.bool_)):
        eps = [eps]
    if isinstance(eps, (str, bytes)) or not isinstance(eps, (Iterable, np.ndarray)):
        raise TypeError(f"eps must be a sequence of positive numbers, got {type(eps).__name__}")
    values = eps.ravel().tolist() if isinstance(eps, np.ndarray) else list(eps)
    if not values:
        raise ValueError("eps must contain at least one step; got an empty sequence "
                         "(or pass eps=None for the default grid 1e-1 ... 1e-12)")
    out = []
    for v in values:
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.number)):
            raise TypeError(f"eps must contain numbers, got {v!r} ({type(v).__name__})")
        out.append(float(v))
    bad = [v for v in out if not math.isfinite(v) or v <= 0]
    if bad:
        raise ValueError(f"every eps must be a finite number > 0; got {bad[:5]}")
    return np.array(sorted(set(out), reverse=True))


def _check_methods(methods: Any) -> tuple[str, ...]:
    if isinstance(methods, str):
        methods = (methods,)
    try:
        methods = tuple(methods)
    except TypeError:
        raise TypeError("methods must be a method name or a sequence of them, got "
                        f"{type(methods).__name__}") from None
    if not methods:
        raise ValueError(f"methods must name at least one of {', '.join(SWEEP_METHODS)}")
    out: list[str] = []
    for m in methods:
        check_method(m, SWEEP_METHODS)
        if m not in out:
            out.append(m)
    return tuple(out)


def eps_sweep(
    loss: Callable[[Any], Any],
    grad: Any,
    params: Any,
    *,
    eps: Iterable[float] | None = None,
    methods: Iterable[str] | str = ("central", "forward"),
    before_eval: Callable[[], Any] | None = None,
) -> EpsSweep:
    """The relative error of the numerical gradient against the step, per method.

    Parameters
    ----------
    loss : callable
        ``loss(params) -> float``, called with the very `params` object given here.
    grad : structure like params, or callable
        The analytic gradient, or ``grad(params)`` (evaluated once).
    params : ndarray, or dict / list / tuple of ndarrays
        float64 or float32; restored bit for bit.
    eps : sequence of float, optional
        Absolute steps, each applied to every component as is (no
        max(1, |theta_i|) scaling).  Default: :data:`DEFAULT_SWEEP_EPS`, 1e-1 down
        to 1e-12, two per decade (23 steps).  Must be non-empty, finite and > 0.
    methods : str or sequence of str
        Any of "central", "forward", "backward", "central4", "richardson",
        "complex" (the latter needs a loss that accepts complex parameters).
    before_eval : callable, optional
        Called before every loss evaluation (e.g. to reset a seed).

    Returns
    -------
    EpsSweep
        ``print(sweep)`` shows the table and the best step per method;
        ``sweep.best``, ``sweep.to_dict()``, ``sweep.plot()`` (matplotlib).

    Raises
    ------
    TypeError, ValueError
        Before any evaluation: bad eps list, unknown method, bad params or grad.
    ComplexStepError
        method "complex" with a loss that cannot take complex parameters.

    Examples
    --------
    >>> import numpy as np, fastcheck
    >>> theta = np.array([1.0])
    >>> sweep = fastcheck.eps_sweep(lambda t: float(t[0] ** 3), lambda t: 3 * t**2, theta,
    ...                             eps=[1e-2, 1e-5, 1e-8], methods="central")
    >>> float(sweep.best["central"].eps)
    1e-05
    """
    check_loss(loss)
    grid = _check_eps_list(eps)
    methods = _check_methods(methods)
    if before_eval is not None and not callable(before_eval):
        raise TypeError("before_eval must be callable with no arguments, got "
                        f"{type(before_eval).__name__}")
    layout = as_layout(params)
    analytic = analytic_gradient(grad, layout)
    if before_eval is not None:  # named, should it write into the parameters
        layout.call_unchanged(before_eval, "before_eval()")
        loss = WithBeforeEval(loss, before_eval)

    dtype = layout.lowest_precision
    errors: dict[str, np.ndarray] = {}
    best: dict[str, SweepBest | None] = {}
    evaluations = 0
    started = time.perf_counter()
    for m in methods:
        errs = np.full(grid.size, np.nan)
        for k, e in enumerate(grid):
            raw = run_guarded(layout, functools.partial(
                run_kernel, loss, layout, m, eps=float(e), relative=False))
            evaluations += raw.calls
            numerical = raw.derivative()
            if np.all(np.isfinite(numerical)):
                errs[k] = relative_error(numerical, analytic)
        errors[m] = errs
        finite = np.flatnonzero(np.isfinite(errs))
        if finite.size:
            k = finite[np.argmin(errs[finite])]
            best[m] = SweepBest(float(grid[k]), float(errs[k]))
        else:
            best[m] = None
    return EpsSweep(
        eps=grid, errors=errors, best=best,
        default_eps={m: default_eps(dtype, m) for m in methods}, dtype=dtype.name,
        size=layout.size, evaluations=evaluations, seconds=time.perf_counter() - started,
        methods=methods)
