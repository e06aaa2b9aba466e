"""check_vjp, check_jvp, check_hvp: hand-written backward, forward and second-order code.

Users check layers, not only losses.  The three checks reduce to what fastcheck
already does well:

1. ``check_vjp(f, vjp, params)``: f maps the parameters to an array (a layer's
   forward), ``vjp(params, u)`` is the hand-written backward.  For a cotangent u,
   J_u(θ) = ⟨u, f(θ)⟩ is a scalar whose gradient is exactly vjp(θ, u), so each of a
   few seeded random cotangents is one ordinary :func:`~fastcheck.check_grad`
   (same kernel, noise model, kinks, determinism probes, executor).  An error in
   the backward shows along almost every random u.
2. ``check_jvp(f, jvp, params)``: for a tangent v, (f(θ + h v) − f(θ − h v)) / 2h
   approximates jvp(θ, v) output by output.  The tangents are supported on one
   parameter at a time, so a mismatch names the parameter whose forward-mode
   contribution is wrong.
3. ``check_hvp(grad, hvp, params)``: for a vector v over all parameters,
   (∇J(θ + h v) − ∇J(θ − h v)) / 2h approximates the Hessian-vector product H v,
   component by component; the result is shaped like the parameters, so the
   breakdown names the rows (parameters) of H v that are wrong.

Design notes (the code refers to them):

a. Every check returns a :class:`~fastcheck.GradCheckResult`, so the report, the
   ranking and ``to_dict`` look the same as for check_grad.  Several random
   vectors are checked; the result is the worst of them (by verdict, then wrong
   components, then relative error), with a note, and ``extra["vectors"]`` holds a
   summary of every one.
b. The represented perturbation.  θ ± h v is rounded when written into the
   parameters' dtype; the actual displacement d± = fl(θ ± h v) − θ is exact in
   float64, and by linearity the directional difference approximates J·(d₊ + d₋)/2h.
   So the tangent given to jvp / hvp is v_eff = (d₊ + d₋) / 2h, not v: the
   comparison carries no rounding of the step.
c. Two steps, h and h/4 (four evaluations per vector, for every output at once),
   judged by the one rule of fastcheck._judge (judge_two_steps): with
   e = numerical − analytic at each step, the Richardson value e_R removes the h²
   truncation, |e₁ − e₂| measures what the arithmetic can resolve, and a
   component is wrong only when the miss is stable and the differences resolved
   (_judge note 2), with δ = C_ROUND · u · scale (_verdict note 2).  What the two
   steps cannot resolve is "unresolved".
d. The scale of δ.  A computed array (an output of f, a gradient) can cancel
   inside: a component near 0 may be the difference of large terms and carry
   their rounding.  δ therefore uses the largest magnitude in the same array
   block (all outputs of f; one parameter's gradient), not the component's own.
e. For check_vjp the same concern applies to J_u = Σ u_j f_j, whose terms cancel
   (|J_u| is about √m times smaller than Σ|u_j f_j| for m outputs): a constant
   offset c = Σ|u_j f_j(θ₀)| − Σ u_j f_j(θ₀) is added to J_u, so that J_u(θ₀) =
   Σ|u_j f_j(θ₀)|.  It changes no derivative, and makes |J|, which check_grad's
   noise model reads, match the rounding of the sum.  (Adding Σ|u_j f_j| alone made
   J_u(θ₀) exactly 0 for one output with u·f < 0: a sign-flipped backward of a
   one-element function then passed as "not resolvable".)
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from fastcheck import _check
from fastcheck._accuracy import Accuracy, check_accuracy
from fastcheck._evaluate import default_eps, unit_roundoff
from fastcheck._executor import check_executor
from fastcheck._judge import Noise, detection_limit, judge_two_steps
from fastcheck._noise import check_noise_option
from fastcheck._params import ParamLayout, as_layout
from fastcheck._result import GradCheckResult, _plain, build_result
from fastcheck._validate import (
    check_before_eval,
    check_callable,
    check_eps,
    check_flag,
    check_method,
    check_mode,
    check_n_vectors,
    check_progress,
    resolve_seed,
)
from fastcheck._verdict import C_ROUND, ComponentStatus, Tiers, tiers_for

__all__ = ["check_hvp", "check_jvp", "check_vjp"]

_S = ComponentStatus
# The second step is h / REFINE (note c).
REFINE = 4.0
_SEVERITY = {"excellent": 0, "ok": 1, "unresolved": 1.5, "suspicious": 2, "wrong": 3,
             "nondeterministic": 4,
             "invalid": 5}


# ------------------------------------------------------------------------ validation
def _as_output(value: Any, what: str, shape: tuple | None = None) -> np.ndarray:
    """What f (or jvp) returned, as a real floating array; checked against `shape`."""
    if isinstance(value, (list, tuple, dict)) or value is None:
        raise TypeError(f"{what} must return one numpy array, got {type(value).__name__}")
    arr = np.asarray(value)
    if arr.dtype.kind not in "fiu" or arr.dtype.kind == "b":
        raise TypeError(f"{what} must return a real floating-point array, got dtype "
                        f"{arr.dtype}")
    if shape is not None and arr.shape != shape:
        raise ValueError(f"{what} returned an array of shape {arr.shape}; expected "
                         f"{shape}, the shape of f(params)")
    if arr.size == 0:
        raise ValueError(f"{what} returned an empty array: nothing to check")
    return arr


def _out_dtype(arr: np.ndarray) -> np.dtype:
    return arr.dtype if arr.dtype.kind == "f" else np.dtype(np.float64)


def _call_unchanged(fn: Callable, args: tuple, layout: ParamLayout, what: str,
                    before_eval: Callable[[], Any] | None = None) -> Any:
    """Call fn(*args) at the unperturbed parameters (after before_eval, so that a
    seeded dropout mask is the same as in the evaluations); it must not change them."""
    if before_eval is not None:  # named, should it write into the parameters
        layout.call_unchanged(before_eval, "before_eval()")
    snapshot = layout.snapshot()
    try:
        value = fn(*args)
    except Exception as exc:
        _check._add_note(exc, f"raised by {what}")
        raise
    changed = layout.changed_since(snapshot)
    if changed:
        layout.restore(snapshot)
        raise ValueError(f"{what} modified the parameters {changed}; it must not change "
                         "its input (restored)")
    return value


def _worst(results: list[GradCheckResult]) -> int:
    def key(k: int) -> tuple:
        r = results[k]
        rel = r.relative_error if math.isfinite(r.relative_error) else math.inf
        return (_SEVERITY.get(r.verdict, 0), r.n_wrong, rel)
    return max(range(len(results)), key=key)


def _combine(results: list[GradCheckResult], kind: str, vectors: str, seed: Any,
             how: str, mode: str) -> GradCheckResult:
    """The worst result, noting the others (note a)."""
    k = _worst(results)
    worst = results[k]
    summary = [{"index": i, "verdict": r.verdict, "relative_error": _plain(r.relative_error),
                "wrong": r.n_wrong,
                "wrong_parameters": [p.name for p in r.parameters if p.wrong]}
               for i, r in enumerate(results)]
    worst.extra = {**worst.extra, "vectors": summary, "shown": k, "seed": seed}
    if math.isnan(worst.detection_limit) and worst.tiers is not None:
        worst.detection_limit = detection_limit(worst.numerical_flat, worst.analytic_flat,
                                                worst.noise_flat, worst.status,
                                                worst.tiers.excellent)
    worst.evaluations = sum(r.evaluations for r in results)
    worst.seconds = sum(r.seconds for r in results)
    worst.mode = mode
    if len(results) > 1:
        others = ", ".join(f"{r.verdict} ({r.relative_error:.1e})" for r in results)
        note = (f"{kind}: {how}, along {len(results)} seeded random {vectors} (seed "
                f"{seed}); shown: {vectors[:-1]} {k + 1}, the worst. All: {others}")
    else:
        note = f"{kind}: {how}, along 1 seeded random {vectors[:-1]} (seed {seed})"
    worst.notes = [note, *worst.notes]
    return worst


# ------------------------------------------------------------------------- check_vjp
class _Projected:
    """J_u(θ) = ⟨u, f(θ)⟩ + c: a scalar loss whose gradient is vjp(θ, u) (note e).

    A module-level class, so that it pickles (for executor=) whenever f does.
    """

    def __init__(self, f: Callable, u: np.ndarray, offset: float, shape: tuple,
                 dtype: np.dtype) -> None:
        self.f, self.u, self.offset, self.shape, self.dtype = f, u, offset, shape, dtype

    def __call__(self, params: Any) -> Any:
        y = _as_output(self.f(params), "f(params)", self.shape)
        with np.errstate(invalid="ignore", over="ignore"):  # f's own NaN / inf
            value = float(np.dot(self.u, y.ravel().astype(np.float64))) + self.offset
        # A float32 layer has float32 resolution: say so to check_grad (its tiers).
        return self.dtype.type(value) if self.dtype.itemsize < 8 else value


def check_vjp(
    f: Callable[[Any], Any],
    vjp: Callable[[Any, np.ndarray], Any],
    params: Any,
    *,
    n_vectors: int | None = None,
    seed: int | None = 0,
    eps: float | None = None,
    method: str = "central",
    mode: str = "full",
    before_eval: Callable[[], Any] | None = None,
    refine: bool = True,
    progress: Callable[[int, int], Any] | None = None,
    executor: Any = None,
    noise: str | float = "auto",
    rtol: float | None = None,
    atol: float | None = None,
    n_cotangents: int | None = None,
) -> GradCheckResult:
    """Check a hand-written vector-Jacobian product (a layer's backward pass).

    For each of `n_vectors` seeded random cotangents u (shaped like f's output),
    the scalar J_u(θ) = ⟨u, f(θ)⟩ has the gradient vjp(θ, u); each is checked by
    :func:`fastcheck.check_grad` (the same kernel, noise model, kink and
    nondeterminism detection, ``executor=``), and the worst is returned.

    Parameters
    ----------
    f : callable
        ``f(params) -> ndarray`` (any shape), the forward pass, called with the very
        `params` object while its components are perturbed in place.
    vjp : callable
        ``vjp(params, u) -> structure like params``: the backward pass, the
        gradient of ⟨u, f(params)⟩ (dW, db, ... with the parameters' shapes).
    params : ndarray, or dict / list / tuple of ndarrays
        As for :func:`fastcheck.check_grad`; restored bit for bit on every exit.
    n_vectors : int
        Random cotangents (>= 1, default 3).  Each costs one full gradient check.
    seed : int or None
        Seed of the cotangents (standard normal entries), and of the samples or
        directions of ``mode="sample"`` / ``"directional"``.  Default 0; None draws
        one.  The seed used is in ``result.extra["seed"]``.
    eps, method, mode, before_eval, refine, progress, executor, noise, rtol, atol
        As for :func:`fastcheck.check_grad` (rtol / atol: the declared accuracy of
        vjp(θ, u), component by component).
    n_cotangents : int, optional
        Deprecated name of `n_vectors`.

    Returns
    -------
    GradCheckResult
        The check along the worst cotangent, with a note; ``extra["vectors"]``
        summarises every cotangent (verdict, relative error, wrong parameters).

    Raises
    ------
    TypeError, ValueError
        Before the gradient check, for bad arguments, an f that does not return a
        real array, or a vjp whose result does not match the parameters'
        structure (naming the parameter and the shapes).
    """
    check_callable(f, "f", "f(params) -> array")
    check_callable(vjp, "vjp", "vjp(params, cotangent) -> structure like params")
    count = check_n_vectors(n_vectors, n_cotangents, "n_cotangents")
    seed = resolve_seed(seed)
    check_method(method)
    check_eps(eps)
    mode = check_mode(mode)
    before_eval = check_before_eval(before_eval)
    check_flag(refine, "refine")
    progress = check_progress(progress)
    check_noise_option(noise)
    check_accuracy(rtol, atol)
    check_executor(executor, f)
    layout = as_layout(params)

    y0 = _as_output(_call_unchanged(f, (layout.params,), layout, "f(params)", before_eval),
                    "f(params)")
    shape, dtype = y0.shape, _out_dtype(y0)
    rng = np.random.default_rng(seed)
    results = []
    for k in range(count):
        u = rng.standard_normal(shape).astype(dtype)
        u64 = u.ravel().astype(np.float64)
        grad = _call_unchanged(vjp, (layout.params, u), layout, "vjp(params, cotangent)",
                               before_eval)
        try:
            layout.flatten(grad, what="vjp(params, cotangent)")
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"{exc}. vjp(params, u) must return the gradient of "
                            "<u, f(params)> in the structure of params") from None
        terms = u64 * y0.ravel().astype(np.float64)
        # J_u(θ₀) = Σ|u_j f_j| (note e); adding Σ|u_j f_j| to a sum that is itself
        # -Σ|u_j f_j| (one output with u·f < 0) would make J_u(θ₀) exactly 0.
        with np.errstate(invalid="ignore", over="ignore"):  # f's own NaN / inf
            offset = float(np.sum(np.abs(terms))) - float(np.sum(terms))
        loss = _Projected(f, u64, offset, shape, dtype)
        report = progress  # None (automatic), True or False: check_grad's own bar
        if callable(progress) and not isinstance(progress, bool):
            def report(done: int, total: int, _k: int = k) -> None:
                progress(_k * total + done, count * total)
        results.append(_check.check_grad(
            loss, grad, layout.params, eps=eps, method=method, mode=mode,
            before_eval=before_eval, refine=refine, progress=report, executor=executor,
            noise=noise, seed=None if mode == "full" else seed, rtol=rtol, atol=atol))
    how = "each a gradient check of J_u(θ) = ⟨u, f(θ)⟩ against vjp(θ, u)"
    return _combine(results, "check_vjp", "cotangents", seed, how,
                    "vjp" if mode == "full" else f"vjp, {mode}")


# ------------------------------------------------------------- directional differences
class _Directional:
    """Evaluates a function at θ ± h v in place (note b) and restores θ bit for bit."""

    def __init__(self, layout: ParamLayout, fn: Callable[[], np.ndarray],
                 before_eval: Callable[[], Any] | None) -> None:
        self.layout = layout
        self.fn = fn
        self.before_eval = before_eval
        self.snapshot = layout.snapshot()
        self.expected = self.snapshot  # what the parameters hold during evaluate()
        self.base = [s.astype(np.float64) for s in self.snapshot]
        self.calls = 0

    def evaluate(self) -> np.ndarray:
        if self.before_eval is not None:
            self.before_eval()
        self.calls += 1
        value = self.fn()
        self._untouched()
        return value

    def _untouched(self) -> None:
        """The function (or before_eval) must have left the parameters as they were
        set for it (θ, or θ ± h v in `pair`, whose restore would hide a write)."""
        changed = self.layout.changed_since(self.expected)
        if changed:
            self.layout.restore(self.snapshot)
            culprit = "the function" + (" (or before_eval)" if self.before_eval else "")
            raise ValueError(f"{culprit} modified the parameters {changed} when called; "
                             "it must only read them (they were restored)")

    def pair(self, v: list[np.ndarray | None], h: float
             ) -> tuple[np.ndarray, np.ndarray, list[np.ndarray | None]]:
        """f(θ + h v), f(θ − h v) and the effective tangent (d₊ + d₋) / 2h."""
        layout, base = self.layout, self.base
        eff: list[np.ndarray | None] = [None] * len(v)
        try:
            for p, vp in enumerate(v):
                if vp is not None:
                    layout.arrays[p][...] = base[p] + h * vp
            self.expected = layout.snapshot()
            plus = self.evaluate()
            d = [None if vp is None else layout.arrays[p].astype(np.float64) - base[p]
                 for p, vp in enumerate(v)]
            for p, vp in enumerate(v):
                if vp is not None:
                    layout.arrays[p][...] = base[p] - h * vp
            self.expected = layout.snapshot()
            minus = self.evaluate()
            for p, vp in enumerate(v):
                if vp is not None:
                    eff[p] = (d[p] + (base[p] - layout.arrays[p].astype(np.float64))) / (2 * h)
        finally:
            layout.restore(self.snapshot)
            self.expected = self.snapshot
        return plus, minus, eff


def _judge(y0: np.ndarray, ys: list[np.ndarray], h1: float, h2: float, g1: np.ndarray,
           g2: np.ndarray, scale: np.ndarray, unit: float, tiers: Tiers,
           accuracy: Accuracy | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Numerical value, noise and status per component from two steps (note c):
    the one rule of :mod:`fastcheck._judge`, at its last level (with the declared
    accuracy, if any)."""
    delta = Noise(unit).delta(y0, *ys, scale)
    allow = accuracy.allowance(g2) if accuracy is not None else 0.0
    return judge_two_steps(y0, h1, ys[0], ys[1], h2, ys[2], ys[3], g1, g2, delta,
                           tiers.excellent, allow)


def _tangent(layout: ParamLayout, rng: np.random.Generator, eps: float | None,
             only: int | None = None) -> list[np.ndarray | None]:
    """A random direction: standard normal entries, times max(1, |θ_i|) for the
    default (relative) step; on parameter `only`, or on all."""
    v: list[np.ndarray | None] = []
    for p, a in enumerate(layout.arrays):
        if only is not None and p != only:
            v.append(None)
            continue
        z = rng.standard_normal(a.shape)
        v.append(z if eps is not None else z * np.maximum(1.0, np.abs(a.astype(np.float64))))
    return v


def _as_params(layout: ParamLayout, eff: list[np.ndarray | None]) -> Any:
    """A tangent in the structure and dtypes of the parameters (zeros off support)."""
    return layout._container([
        (np.zeros(a.shape, dtype=a.dtype) if e is None else e.astype(a.dtype))
        for a, e in zip(layout.arrays, eff, strict=True)])


def _steps(layout: ParamLayout, eps: float | None) -> tuple[float, float, str]:
    h = eps if eps is not None else default_eps(layout.lowest_precision, "central")
    rule = (f"{h:.3g} (absolute)" if eps is not None
            else f"{h:.2g} × max(1, |θ_i|) × z_i, z standard normal")
    return h, h / REFINE, f"{rule}, and a quarter of it"


def _nondeterministic(layout: ParamLayout, n: int, first: np.ndarray, second: np.ndarray,
                      tiers: Tiers, calls: int, seconds: float, eps: str, mode: str,
                      what: str) -> GradCheckResult:
    spread = float(np.max(np.abs(first - second)))
    note = (f"{what} is not deterministic: two calls at the same parameters differ by up "
            f"to {spread:.3g}, so no verdict is possible. Likely causes: dropout still on, "
            "or unseeded random sampling. Fix the randomness, or pass before_eval= a "
            "function that resets the seed before every evaluation")
    result = build_result(layout, np.full(n, np.nan), np.full(n, np.nan),
                          np.full(n, np.nan), np.full(n, _S.NOT_CHECKED, dtype=np.int8),
                          tiers, evaluations=calls, seconds=seconds, eps=eps,
                          method="central", mode=mode, notes=[note])
    result.verdict, result.passed, result.relative_error = "nondeterministic", False, math.nan
    return result


def _deterministic(first: np.ndarray, second: np.ndarray, unit: float) -> bool:
    with np.errstate(invalid="ignore"):
        scale = float(np.max(np.abs(first), initial=0.0))
        return bool(np.all((first == second) | (np.abs(first - second)
                                                <= C_ROUND * unit * scale)))


# ------------------------------------------------------------------------- check_jvp
def check_jvp(
    f: Callable[[Any], Any],
    jvp: Callable[[Any, Any], Any],
    params: Any,
    *,
    n_vectors: int | None = None,
    seed: int | None = 0,
    eps: float | None = None,
    before_eval: Callable[[], Any] | None = None,
    rtol: float | None = None,
    atol: float | None = None,
    n_tangents: int | None = None,
) -> GradCheckResult:
    """Check a hand-written Jacobian-vector product (forward-mode code).

    For each of `n_vectors` seeded random tangents and each parameter p, the
    tangent v is random on p and zero elsewhere; jvp(params, v) is compared output
    by output with (f(θ + h v) − f(θ − h v)) / 2h, evaluated in place at two steps
    (h and h/4, Richardson-extrapolated; see the module notes).  The report has one
    row per parameter whose components are the *outputs* of f: ``W1[3]`` is output
    3 of the directional derivative along a tangent on W1.  The worst tangent is
    returned.

    Parameters
    ----------
    f : callable
        ``f(params) -> ndarray``, called with the very `params` object.
    jvp : callable
        ``jvp(params, v) -> ndarray`` shaped like f's output; `v` has the structure,
        shapes and dtypes of params.
    params : ndarray, or dict / list / tuple of ndarrays
        Restored bit for bit on every exit.
    n_vectors : int
        Random tangents per parameter (>= 1, default 3); each costs 4 calls of f
        and 2 of jvp per parameter.
    seed : int or None
        Seed of the tangents (default 0; None draws one, reported).
    eps : float, optional
        Absolute step along a standard normal tangent.  Default: the central step
        for the parameters' dtype, relative to each component (the tangent's
        entries are scaled by ``max(1, |θ_i|)``).
    before_eval : callable, optional
        Called before every evaluation of f (e.g. to reset a random seed).
    rtol, atol : float, optional
        The declared accuracy of jvp(θ, v), output by output (as for
        :func:`fastcheck.check_grad`).
    n_tangents : int, optional
        Deprecated name of `n_vectors`.

    Returns
    -------
    GradCheckResult
    """
    check_callable(f, "f", "f(params) -> array")
    check_callable(jvp, "jvp", "jvp(params, tangent) -> array like f(params)")
    count = check_n_vectors(n_vectors, n_tangents, "n_tangents")
    seed = resolve_seed(seed)
    eps = check_eps(eps)
    before_eval = check_before_eval(before_eval)
    accuracy = check_accuracy(rtol, atol)
    layout = as_layout(params)
    started = time.perf_counter()

    def forward() -> np.ndarray:
        return _as_output(f(layout.params), "f(params)", shape).astype(np.float64)

    y = _as_output(_call_unchanged(f, (layout.params,), layout, "f(params)", before_eval),
                   "f(params)")
    shape = y.shape
    unit = max(unit_roundoff(layout.lowest_precision), unit_roundoff(_out_dtype(y)))
    tiers = tiers_for(layout.lowest_precision if unit_roundoff(layout.lowest_precision)
                      >= unit else _out_dtype(y))
    h1, h2, eps_text = _steps(layout, eps)
    out_layout = ParamLayout({_unique(layout, p): np.zeros(shape)
                              for p in range(len(layout.arrays))})
    m = y.size
    n_params = len(layout.arrays)
    run = _Directional(layout, forward, before_eval)
    y0 = y.astype(np.float64).ravel()
    y_again = run.evaluate().ravel()
    if not _deterministic(y0, y_again, unit):
        return _nondeterministic(out_layout, m * n_params, y0, y_again, tiers, run.calls + 1,
                                 time.perf_counter() - started, eps_text, "jvp", "f(params)")
    rng = np.random.default_rng(seed)
    results = []
    for _ in range(count):
        numerical, noise, status, analytic = [], [], [], []
        for p in range(n_params):
            v = _tangent(layout, rng, eps, only=p)
            p1, m1, eff1 = run.pair(v, h1)
            p2, m2, eff2 = run.pair(v, h2)
            g = []
            for eff in (eff1, eff2):
                tangent = _as_params(layout, eff)
                value = _call_unchanged(jvp, (layout.params, tangent), layout,
                                        "jvp(params, tangent)", before_eval)
                g.append(_as_output(value, "jvp(params, tangent)", shape)
                         .astype(np.float64).ravel())
            ys = [p1.ravel(), m1.ravel(), p2.ravel(), m2.ravel()]
            scale = np.full(m, np.max(np.abs(y0)))
            nu, no, st = _judge(y0, ys, h1, h2, g[0], g[1], scale, unit, tiers, accuracy)
            numerical.append(nu)
            noise.append(no)
            status.append(st)
            analytic.append(g[1])
        results.append(build_result(
            out_layout, np.concatenate(numerical), np.concatenate(analytic),
            np.concatenate(noise), np.concatenate(status), tiers,
            evaluations=run.calls, seconds=time.perf_counter() - started, eps=eps_text,
            method="central", mode="jvp",
            notes=[f"rows are parameters, components are the {m} output(s) of f: "
                   "name[j] is output j of the directional derivative along a random "
                   "tangent on that parameter"], accuracy=accuracy))
        run.calls, started = 0, time.perf_counter()
    results[0].evaluations += 1  # the first call of f, before `run` counted
    how = "each parameter's directional derivative of f against jvp(θ, v)"
    return _combine(results, "check_jvp", "tangents", seed, how, "jvp")


def _unique(layout: ParamLayout, p: int) -> str:
    name = layout.names[p]
    return name if layout.names.count(name) == 1 else f"{name}#{p}"


# ------------------------------------------------------------------------- check_hvp
def check_hvp(
    grad: Callable[[Any], Any],
    hvp: Callable[[Any, Any], Any],
    params: Any,
    *,
    n_vectors: int | None = None,
    seed: int | None = 0,
    eps: float | None = None,
    before_eval: Callable[[], Any] | None = None,
    rtol: float | None = None,
    atol: float | None = None,
) -> GradCheckResult:
    """Check a hand-written Hessian-vector product by differencing the gradient.

    For each of `n_vectors` seeded random vectors v over all parameters,
    hvp(params, v) is compared component by component with
    (grad(θ + h v) − grad(θ − h v)) / 2h, evaluated in place at two steps (h and
    h/4, Richardson-extrapolated; see the module notes).  The result is shaped like
    the parameters, so the breakdown names the parameters (rows of H v) that are
    wrong.  The worst vector is returned.

    Parameters
    ----------
    grad : callable
        ``grad(params) -> structure like params``: the gradient, trusted (check it
        first with :func:`fastcheck.check_grad`).
    hvp : callable
        ``hvp(params, v) -> structure like params``; `v` has the structure, shapes
        and dtypes of params.
    params : ndarray, or dict / list / tuple of ndarrays
        Restored bit for bit on every exit.
    n_vectors : int
        Random vectors (>= 1, default 3); each costs 4 gradient and 2 hvp
        evaluations.
    seed : int or None
        Seed of the vectors (default 0; None draws one, reported).
    eps : float, optional
        As for :func:`check_jvp`.
    before_eval : callable, optional
        Called before every evaluation of grad.
    rtol, atol : float, optional
        The declared accuracy of hvp(θ, v), component by component (as for
        :func:`fastcheck.check_grad`).

    Returns
    -------
    GradCheckResult
    """
    check_callable(grad, "grad", "grad(params) -> structure like params")
    check_callable(hvp, "hvp", "hvp(params, v) -> structure like params")
    n_vectors = check_n_vectors(n_vectors)
    seed = resolve_seed(seed)
    eps = check_eps(eps)
    before_eval = check_before_eval(before_eval)
    accuracy = check_accuracy(rtol, atol)
    layout = as_layout(params)
    started = time.perf_counter()

    def gradient() -> np.ndarray:
        return layout.flatten(grad(layout.params), what="grad(params)")

    g0 = layout.flatten(_call_unchanged(grad, (layout.params,), layout, "grad(params)",
                                        before_eval), what="grad(params)")
    unit = unit_roundoff(layout.lowest_precision)
    tiers = tiers_for(layout.lowest_precision)
    h1, h2, eps_text = _steps(layout, eps)
    run = _Directional(layout, gradient, before_eval)
    again = run.evaluate()
    n = layout.size
    if not _deterministic(g0, again, unit):
        return _nondeterministic(layout, n, g0, again, tiers, run.calls + 1,
                                 time.perf_counter() - started, eps_text, "hvp",
                                 "grad(params)")
    # Cancellation inside one parameter's gradient (note d): its largest entry.
    sizes = np.diff(layout.offsets)
    scale = np.repeat([np.max(np.abs(g0[lo:hi]), initial=0.0) for lo, hi
                       in zip(layout.offsets[:-1], layout.offsets[1:], strict=True)], sizes)
    rng = np.random.default_rng(seed)
    results = []
    for _ in range(n_vectors):
        v = _tangent(layout, rng, eps)
        p1, m1, eff1 = run.pair(v, h1)
        p2, m2, eff2 = run.pair(v, h2)
        g = []
        for eff in (eff1, eff2):
            value = _call_unchanged(hvp, (layout.params, _as_params(layout, eff)), layout,
                                    "hvp(params, v)", before_eval)
            try:
                g.append(layout.flatten(value, what="hvp(params, v)"))
            except (TypeError, ValueError) as exc:
                raise type(exc)(f"{exc}. hvp(params, v) must return H·v in the structure "
                                "of params") from None
        numerical, noise, status = _judge(g0, [p1, m1, p2, m2], h1, h2, g[0], g[1], scale,
                                          unit, tiers, accuracy)
        results.append(build_result(
            layout, numerical, g[1], noise, status, tiers, evaluations=run.calls,
            seconds=time.perf_counter() - started, eps=eps_text, method="central",
            mode="hvp",
            notes=["components are the entries of H·v, named by the parameter they "
                   "belong to (rows of the Hessian), for a random v over all parameters"],
            accuracy=accuracy))
        run.calls, started = 0, time.perf_counter()
    results[0].evaluations += 1  # the first call of grad, before `run` counted
    how = "(∇J(θ + h v) − ∇J(θ − h v)) / 2h against hvp(θ, v)"
    return _combine(results, "check_hvp", "vectors", seed, how, "hvp")
