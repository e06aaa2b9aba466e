"""check_grad: is a hand-written gradient right, and if not, where is it wrong?

The steps, in order (each has a reason):

1. Validate everything -- parameters, gradient structure, method, eps -- before
   the loss is evaluated once, so bad input never touches the user's arrays.
2. Take one O(n) snapshot of the parameters.  The kernel already restores every
   component by assignment; the snapshot lets us *prove* it at the end, catch a
   loss that modifies its own parameters, and restore bit for bit even then.
3. Evaluate J(theta) twice before the check (and compare with the kernel's own
   J(theta) and one more evaluation after it).  A loss that gives different values
   at the same point (dropout left on, unseeded sampling) makes any verdict about
   the gradient meaningless: say so instead.
4. The kernel evaluates every component (central: J(theta +- h e_i), J(theta)).
5. The noise model (see _verdict) marks suspects without further evaluations; only
   suspects are evaluated again at h / 4 to tell bugs from noise, truncation and
   kinks.

mode="directional" and mode="sample" branch off after step 3 (see _directional
and _sample); their components checked one by one go through steps 4 and 5.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from fastcheck import _kernel
from fastcheck._evaluate import (
    METHODS,
    RawEvaluations,
    WithBeforeEval,
    check_eps,
    check_flag,
    check_loss,
    check_method,
    check_step_resolution,
    check_threads,
    default_eps,
    run_kernel,
    unit_roundoff,
)
from fastcheck._executor import check_executor
from fastcheck._lowlevel import CLoss
from fastcheck._params import ParamLayout, as_layout
from fastcheck._planned import check_planned
from fastcheck._progress import (
    check_progress,
    check_warn_seconds,
    progress_reporter,
    warn_if_long,
)
from fastcheck._result import GradCheckResult, build_result
from fastcheck._sample import check_c_loss_for_mode, check_mode_options, run_partial
from fastcheck._verdict import (
    C_ROUND,
    KAPPA,
    ComponentStatus,
    rounding_noise,
    tier_of,
    tiers_for,
)

__all__ = ["check_grad"]

_S = ComponentStatus
CHECK_METHODS = ("central", "forward", "backward", "central4", "richardson", "complex")
MODES = ("full", "directional", "sample")
# Suspects are evaluated again at h / REFINE, h / REFINE**2, ... (at most
# REFINE_LEVELS times, two evaluations each, and only while undecided).  Eight
# levels reach h / 65536: enough for a component whose own scale is 1e-5 of the
# max(1, |theta_i|) the default step is relative to (_verdict note 6).
REFINE = 4.0
REFINE_LEVELS = 8
# Rounding-limited suspects go the other way, to 4h, 16h: at most UPWARD_LEVELS.
UPWARD_LEVELS = 2


def _add_note(exc: BaseException, note: str) -> None:
    if hasattr(exc, "add_note"):  # Python >= 3.11
        exc.add_note(note)


def analytic_gradient(grad: Any, layout: ParamLayout) -> np.ndarray:
    """The analytic gradient as a flat float64 array, validated against params.

    `grad` is a structure matching the parameters, or a callable evaluated once
    as ``grad(params)`` at the unperturbed point.
    """
    if callable(grad):
        snapshot = layout.snapshot()
        try:
            value = grad(layout.params)
        except Exception as exc:
            _add_note(exc, "raised by grad(params), the analytic gradient callable")
            raise
        changed = layout.changed_since(snapshot)
        if changed:
            layout.restore(snapshot)
            raise ValueError(f"grad(params) modified the parameters {changed}; a gradient "
                             "function must not change its input (restored)")
        return layout.flatten(value, what="grad(params)")
    return layout.flatten(grad, what="grad")


def _eps_rule(layout: ParamLayout, method: str, eps: float | None) -> str:
    if eps is not None:
        return f"{eps:.3g} (absolute)"
    rules = [f"{default_eps(d, method):.2g} × max(1, |θ_i|) for {d.name}"
             if method != "complex" else f"{default_eps(d, method):.0e} (imaginary)"
             for d in layout.dtypes]
    return "; ".join(rules)


def _returned_dtype(value: Any) -> np.dtype | None:
    """The floating dtype of what a loss returned, when it says (numpy values)."""
    dtype = getattr(value, "dtype", None)
    if isinstance(dtype, np.dtype) and dtype.kind == "f":
        return dtype
    return None


def _loss_is_deterministic(values: list[float], unit: float) -> tuple[bool, float]:
    """Whether repeated evaluations agree within rounding; and their spread."""
    values = [v for v in values if v is not None]
    if not all(math.isfinite(v) for v in values):
        # Only called once J(theta) was finite: NaN or inf in another call at the
        # same point is a different value (max / min would skip a NaN, and inf
        # would swamp the rounding bound).
        return False, math.inf
    spread = max(values) - min(values)
    scale = max(abs(v) for v in values)
    return spread <= C_ROUND * unit * scale, spread


def _nondeterministic_result(layout: ParamLayout, analytic: np.ndarray, values: list[float],
                             spread: float, evaluations: int, seconds: float, eps: str,
                             method: str, mode: str, when: str) -> GradCheckResult:
    scale = max((abs(v) for v in values if math.isfinite(v)), default=0.0)
    note = (f"the loss is not deterministic: J(θ) took {len({*values})} different values "
            f"at the same parameters {when} (spread {spread:.3g}, relative "
            f"{spread / scale if scale else float('inf'):.2g}), so no verdict on the "
            "gradient is possible. Likely causes: dropout still on (set keep_prob = 1, or "
            "put the model in eval mode), or unseeded random sampling (minibatches, noise "
            "injection). Fix the randomness, or pass before_eval= a function that resets "
            "the seed before every evaluation")
    n = layout.size
    result = build_result(
        layout, np.full(n, np.nan), analytic, np.full(n, np.nan),
        np.full(n, _S.NOT_CHECKED, dtype=np.int8), tiers_for(layout.lowest_precision),
        evaluations=evaluations, seconds=seconds, eps=eps, method=method, mode=mode,
        notes=[note], extra={"loss_values": values})
    result.verdict, result.passed = "nondeterministic", False
    result.relative_error = float("nan")
    return result


def _invalid_result(layout: ParamLayout, analytic: np.ndarray, note: str, evaluations: int,
                    seconds: float, eps: str, method: str, mode: str) -> GradCheckResult:
    n = layout.size
    result = build_result(
        layout, np.full(n, np.nan), analytic, np.full(n, np.nan),
        np.full(n, _S.NOT_CHECKED, dtype=np.int8), tiers_for(layout.lowest_precision),
        evaluations=evaluations, seconds=seconds, eps=eps, method=method, mode=mode,
        notes=[note])
    result.verdict, result.passed = "invalid", False
    result.relative_error = float("nan")
    return result


def first_look(raw: RawEvaluations, analytic: np.ndarray, x: np.ndarray, unit: float,
               floor_rel: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Numerical derivative, noise, status and suspects from the evaluations alone.

    See _verdict note 3.  Returns ``(numerical, noise, status, suspect)`` for the
    evaluated components.
    """
    d = raw.derivative()
    h = raw.step
    name = raw.method.name
    with np.errstate(all="ignore"):
        if name == "complex":
            # No subtraction: the imaginary part carries h * J' to relative precision u.
            noise = C_ROUND * unit * np.abs(d)
        else:
            delta = rounding_noise(raw.center, raw.plus, raw.minus, raw.plus2, raw.minus2,
                                   unit_roundoff=unit)
            # Rounding of the formula in units of delta / h (h: raw.step).  Central:
            # 2 delta / 2h.  One-sided: 2 delta / h.  central4 (step h, outer 2h):
            # (8 * 2 delta + 2 delta) / 12h.  richardson (steps h, h/2):
            # (4/3) * delta / (h/2) + (1/3) * delta / h.
            factor = {"central": 1.0, "forward": 2.0, "backward": 2.0, "central4": 1.5,
                      "richardson": 3.0}[name]
            noise = factor * delta / h
            if name == "central":
                slope_gap = np.abs((raw.plus - raw.center) - (raw.center - raw.minus)) / h
                noise = noise + h * slope_gap / np.maximum(1.0, np.abs(x))
        status = np.zeros(d.size, dtype=np.int8)
        status[~np.isfinite(d)] = _S.NONFINITE_LOSS
        status[~np.isfinite(analytic)] = _S.NONFINITE_GRAD
        diff = np.abs(d - analytic)
        allowed = KAPPA * noise + floor_rel * (np.abs(d) + np.abs(analytic))
        suspect = (status == _S.OK) & (diff > allowed)
    return d, noise, status, suspect


def second_look(loss: Callable, layout: ParamLayout, raw: RawEvaluations, idx: np.ndarray,
                analytic: np.ndarray, unit: float, floor_rel: float,
                threads: int, step_dtype: np.dtype | None = None,
                info: dict | None = None,
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Re-examine suspects at steps h/4, h/16, ... (or 4h, 16h when rounding limits
    them): bug, noise, truncation or kink?

    See _verdict notes 4 and 6.  `idx` are positions in `raw`; `analytic` is
    restricted to them.  Each level evaluates only the components still undecided
    (two evaluations each).  `step_dtype` is the dtype whose default central step
    to start from when `raw` has no central pair (forward, backward), e.g. the
    loss's float32 when it returns float32 for float64 parameters.  Returns
    ``(numerical, noise, status, evaluations)``; when `info` is a dict, its
    ``"unresolved"`` gets the positions (in `idx`) of the components that were
    still dominated by truncation at the smallest step (left "ok", noise large).
    """
    flat = idx if raw.indices is None else raw.indices[idx]
    center = raw.center
    evaluations = 0
    n = idx.size
    # The h**2 coefficient of the central difference seen between the last two
    # steps (note 6); NaN until two steps were seen.
    coef = np.full(n, np.nan)
    # The extrapolated value of the previous pair of steps, NaN until there is one.
    extrapolated = np.full(n, np.nan)
    # Whether the previous level already saw the kink signature (note 6).
    kink_before = np.zeros(n, dtype=bool)
    name = raw.method.name
    if name == "central":
        h, p, m = raw.step[idx], raw.plus[idx], raw.minus[idx]
    elif name in ("central4", "richardson"):
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
        extrapolated = raw.derivative()[idx]
    else:
        # Forward / backward: make the central pair at the default central step first.
        if step_dtype is not None:
            base = np.full(flat.size, default_eps(step_dtype, "central"))
        else:
            base = np.array([default_eps(layout.arrays[q].dtype, "central")
                             for q in layout.param_of(flat)])
        first = run_kernel(loss, layout, "central", relative=True, indices=flat,
                           eps_each=base, with_center=center is None, threads=threads)
        evaluations += first.calls
        center = first.center if center is None else center
        h, p, m = first.step, first.plus, first.minus
    levels = REFINE_LEVELS
    if name in ("central4", "richardson"):
        # Their steps are larger than central's: allow the levels it takes to reach
        # the same smallest step.
        d = step_dtype if step_dtype is not None else layout.lowest_precision
        levels += max(0, round(math.log(default_eps(d, name) / default_eps(d, "central"))
                               / math.log(REFINE)))
    numerical = (p - m) / (2 * h)
    noise = np.full(n, np.inf)
    status = np.full(n, _S.OK, dtype=np.int8)
    unresolved = np.zeros(n, dtype=bool)
    todo = np.arange(n)
    # Which way to go: smaller steps shrink truncation and reveal kinks, but their
    # rounding grows as 1/h.  When a step REFINE times smaller would already drown
    # the miss in rounding, the suspect is rounding-limited: go to larger steps.
    # (Not from central4's or richardson's pair: it is at u**(1/5), already as large
    # as steps go; 4x and 16x that cross the kinks of an ordinary ReLU network.)
    with np.errstate(all="ignore"):
        rounding0 = rounding_noise(center, p, m, unit_roundoff=unit) / h
        upward = KAPPA * REFINE * rounding0 >= 0.5 * np.abs(numerical - analytic)
    if name in ("central4", "richardson"):
        upward[:] = False
    factor = np.where(upward, REFINE, 1 / REFINE)
    for level in range(1, levels + 1):
        new = run_kernel(loss, layout, "central", eps=1.0, relative=False, indices=flat[todo],
                         eps_each=h[todo] * factor[todo], with_center=False, threads=threads)
        evaluations += new.calls
        h1, p1, m1 = h[todo], p[todo], m[todo]
        h2, p2, m2 = new.step, new.plus, new.minus
        g = analytic[todo]
        with np.errstate(all="ignore"):
            delta = rounding_noise(center, p1, m1, p2, m2, unit_roundoff=unit)
            d1, d2 = (p1 - m1) / (2 * h1), (p2 - m2) / (2 * h2)
            up1, down1 = (p1 - center) / h1, (center - m1) / h1
            up2, down2 = (p2 - center) / h2, (center - m2) / h2
            gap1, gap2 = np.abs(up1 - down1), np.abs(up2 - down2)
            floor = floor_rel * (np.abs(d2) + np.abs(g))
            resolve = np.abs(d1 - d2)
            # A kink: the slope gap neither shrinks with the step (smooth: gap ~ h) nor
            # grows (rounding: gap ~ 1/h; a smooth loss probed with steps wider than
            # its own scale, note 6), while the central value stays put (it is the
            # mean of two fixed one-sided slopes).
            kink_shape = (gap2 > 0.5 * gap1) & (gap2 < 2 * gap1) & (resolve < 0.25 * gap2)
            # The stable gap is itself the evidence, so the modelled rounding of
            # p - 2c + m (4 delta) only has to be exceeded, not by KAPPA: in float32
            # the model is conservative enough to hide a genuine ReLU kink otherwise.
            kink = kink_shape & (gap2 > 4 * delta / h2)
            # The one-sided slopes carry O(h J'') truncation: allow for how much they
            # moved between the two steps.
            tol = KAPPA * (2 * delta / h2 + np.abs(up1 - up2) + np.abs(down1 - down2)) + floor
            kink_ok = (g >= np.minimum(up2, down2) - tol) & (g <= np.maximum(up2, down2) + tol)
            # Richardson extrapolation over the two steps removes the h**2 term.
            richardson = d2 + (d2 - d1) / ((h1 / h2) ** 2 - 1)
            # (the finer difference's error is resolve / ratio2, in either direction)
            ratio2 = (np.maximum(h1, h2) / np.minimum(h1, h2)) ** 2 - 1
            rounding = 1.1 * delta / np.minimum(h1, h2)
            miss = np.abs(richardson - g)
            # Truncation still dominates the change between the two steps (note 6):
            # then `resolve` is the error of the coarser difference, not what the
            # arithmetic resolves.  Once a third step confirms the h**2 law (the
            # same coefficient from both pairs), the change of the extrapolated
            # value bounds its error (the previous one's error is ~256x larger), as
            # does the finer difference's own, resolve / ratio2; until then the
            # component waits for a smaller step.
            truncating = resolve > 2 * rounding
            coef_now = (d1 - d2) / (h1**2 - h2**2)
            asymptotic = np.abs(coef_now - coef[todo]) <= 0.2 * np.abs(coef_now)
            converged = np.fmin(np.abs(richardson - extrapolated[todo]), resolve / ratio2)
            trunc = np.where(truncating & asymptotic, converged, resolve)
            fine = miss <= KAPPA * (rounding + trunc) + floor
            # Wrong: the miss is far beyond what the steps change.  While truncation
            # dominates, only once the h**2 law is confirmed: with steps much wider
            # than the loss's own scale the central difference is near 0 at every
            # step, which also looks stable.
            # Nor is it wrong when the slopes may be a kink's and g is one of them
            # (note 7): the gap has a kink's shape but is not clear of rounding, or
            # the one-sided slopes extrapolated to h -> 0 (they are O(h) accurate:
            # up(h) = up0 + h J''/2) differ and g is one of them -- a small jump
            # that curvature hides at these steps.
            up0 = up2 + (up2 - up1) * h2 / (h1 - h2)
            down0 = down2 + (down2 - down1) * h2 / (h1 - h2)
            rounding_x = 3 * delta / np.minimum(h1, h2)
            tol0 = KAPPA * rounding_x + floor
            may_be_kink = (kink_shape & kink_ok) | (
                (np.abs(up0 - down0) > 2 * rounding_x)
                & (g >= np.minimum(up0, down0) - tol0) & (g <= np.maximum(up0, down0) + tol0))
            stable_wrong = (~fine & (trunc <= 0.1 * miss) & (~truncating | asymptotic)
                            & ~may_be_kink)
            finite = np.isfinite(richardson)
        last = level == levels
        # A kink is only believed when two successive pairs of steps show it: a
        # smooth loss probed with steps wider than its own scale shows a slope gap
        # that does not shrink either, until the step gets below that scale.
        sure_kink = kink & (kink_before[todo] | last)
        # Accepted as fine when the arithmetic, not truncation, limits the check,
        # or when the confirmed truncation bound is down to rounding and floor.
        settled = ~truncating | (asymptotic & (trunc <= rounding + floor / KAPPA))
        decided = (sure_kink | (~kink & fine & (settled | last)) | (~kink & stable_wrong)
                   | ~finite)
        # Going down only helps while the next step's rounding stays well below the
        # miss; past that the arithmetic cannot resolve it: leave it as fine.  Going
        # up, truncation grows 16x per level: stop after UPWARD_LEVELS.
        going_up = upward[todo]
        hopeless = np.where(going_up, level >= UPWARD_LEVELS,
                            REFINE * rounding * KAPPA >= miss)
        decided |= last | hopeless
        unresolved[todo] = (last & ~hopeless & ~kink & ~stable_wrong & finite
                            & ~(fine & settled))
        here = todo[decided]
        st = np.where(kink, np.where(kink_ok, _S.KINK, _S.WRONG),
                      np.where(stable_wrong, _S.WRONG, _S.OK)).astype(np.int8)
        st[~finite & ~kink] = _S.NONFINITE_LOSS
        status[here] = st[decided]
        numerical[here] = np.where(kink, d1, np.where(finite, richardson, d2))[decided]
        noise[here] = np.where(kink, gap2, rounding + trunc)[decided]
        h[todo], p[todo], m[todo] = h2, p2, m2
        coef[todo] = coef_now
        extrapolated[todo] = richardson
        kink_before[todo] = kink
        todo = todo[~decided]
        if todo.size == 0:
            break
    if info is not None:
        info["unresolved"] = np.flatnonzero(unresolved)
    return numerical, noise, status, evaluations


def check_grad(
    loss: Callable[[Any], Any],
    grad: Any,
    params: Any,
    *,
    eps: float | None = None,
    method: str = "central",
    mode: str = "full",
    k: int | float | None = None,
    max_evals: int | None = None,
    seed: int | None = None,
    before_eval: Callable[[], Any] | None = None,
    refine: bool = True,
    threads: int = 1,
    progress: bool | Callable[[int, int], Any] | None = None,
    warn_seconds: float | None = 60.0,
    executor: Any = None,
    points: Any = None,
    budget: float | None = None,
    save: Any = None,
    save_when: str = "failure",
) -> GradCheckResult:
    """Check a hand-written gradient against numerical derivatives.

    Parameters
    ----------
    loss : callable
        ``loss(params) -> float``, called with the very `params` object given here
        while its components are perturbed in place.
    grad : structure like params, or callable
        The analytic gradient (dW1, db1, ... in the same structure and shapes), or a
        function ``grad(params)`` evaluated once at the unperturbed point.
    params : ndarray, or dict / list / tuple of ndarrays
        float64 or float32, writeable, non-overlapping.  Restored bit for bit on
        every exit (success, exception, Ctrl-C).
    eps : float, optional
        Absolute step.  Default: adapted to the dtype, the method and each
        component's magnitude (see :func:`fastcheck.numerical_grad`).
    method : {"central", "forward", "backward", "central4", "richardson", "complex"}
        The difference formula (see :func:`fastcheck.numerical_grad`).  Central
        (default) is the best value: its evaluations also give the one-sided
        slopes for the noise and kink tests.  "complex" needs a loss that accepts
        complex parameters (it works on complex copies made once: twice the
        parameters' memory); otherwise a ``ComplexStepError`` (a TypeError) names
        the method and keeps the loss's own error as ``__cause__``.
    mode : {"full", "directional", "sample"}
        Which components to check.  "full": every component (2 evaluations each
        for central differences).  "directional": each parameter along random
        directions, 2 evaluations per direction whatever its size; a failing
        parameter is then localised by splitting it in halves until the wrong
        components are isolated and checked one by one (about 2 log2(n)
        evaluations per wrong component), within `max_evals`.  "sample": `k`
        components per parameter, drawn at random and checked one by one.
    k : int or float, optional
        mode="sample": components per parameter (an int, at most the size of the
        smallest parameter), or a fraction of each parameter (a float in (0, 1]).
        Default: 32, or all of a smaller parameter.
    max_evals : int, optional
        mode="directional": the most loss evaluations to spend, everything
        included (default 400, more for models with many parameter arrays).  The
        result says what the budget did not cover.
    seed : int, optional
        Seed of the random directions / samples; the one used is in
        ``result.extra["seed"]``.
    before_eval : callable, optional
        Called with no argument before every loss evaluation (and before a `grad`
        callable), e.g. to reset a random seed so that a loss with dropout
        becomes deterministic.
    refine : bool
        Re-evaluate suspicious components at smaller steps (h/4, h/16, ...) to
        tell bugs from noise, truncation and kinks: 2 more evaluations per
        suspect and level, only while it is undecided (usually 1 level, 2 for a
        kink, up to 8 where the step is wider than the loss's own scale), none
        for components that pass.  False: judge from the first evaluations
        alone (suspects are then called wrong, kinks included).
    threads : int
        Worker threads, for a C loss declared thread-safe
        (``fastcheck.CLoss(f, thread_safe=True)``); each thread works on a private
        copy of theta (n × threads elements).  Results are identical to 1 thread.
    progress : bool or callable, optional
        None (default): a progress bar on stderr when it is a terminal and the
        check is estimated to take over 2 s (tqdm when installed).  True / False:
        always / never.  A callable: ``progress(done, total)``, called
        periodically from the kernel (components; evaluations for
        mode="directional").
    warn_seconds : float or None
        When the check is estimated (time of one loss evaluation × planned
        evaluations) to take longer than this, emit a
        :class:`fastcheck.LongCheckWarning` saying how long, with a cheaper mode.
        None: never.
    executor : concurrent.futures.Executor, optional
        Spread the evaluations over this executor's workers (processes or machines:
        ``ProcessPoolExecutor(n)``, or dask.distributed's
        ``Client(...).get_executor()``).  The components are split into shards;
        each worker runs the C kernel on its own copy of the parameters, so the
        result is identical to a serial run and the caller's arrays are not
        perturbed by the workers.  The loss and the parameters must be picklable
        (a module-level function; cloudpickle, when installed, also takes lambdas
        and closures), and the loss must read the parameters from its argument.
        A C loss cannot cross processes: use `threads` for it.
    points : int, list of parameter sets, or callable, optional
        Check at several points; the verdict is the worst, and the report says at
        which point each finding was made (a :class:`fastcheck.MultiPointResult`).
        An int N: the given point and N - 1 drawn around it (each parameter moved
        by 0.1 × its RMS value × a normal draw, from `seed`).  A list: those
        parameter sets (each like `params`).  A callable: ``points(seed)`` returns
        such a list.  The points are written into your arrays in turn, and your
        values written back after.  `grad` must then be a callable.
    budget : float, optional
        Seconds.  From the measured cost of one evaluation, choose full, directional
        and / or sample checks so that the check ends within the budget (split
        evenly over `points`); the first note says what the budget bought
        (components checked, the detection limit) and what a larger one would add.
        Not with `mode`, `k` or `max_evals`, which it chooses itself.
    save : str or os.PathLike, optional
        Write a replay file there when the check fails (always, with
        ``save_when="always"``): the parameters at the failing point, the steps,
        seeds and options.  ``fastcheck.replay(path, loss, grad)`` runs it again.
    save_when : {"failure", "always"}

    Returns
    -------
    GradCheckResult
        ``str(result)`` is a readable report; ``result.passed``, ``.verdict``,
        ``.worst(k)``, ``.parameters`` and ``.to_dict()`` give the details.

    Raises
    ------
    TypeError, ValueError
        Before any evaluation, for bad parameters, a gradient that does not match
        them, an unknown method or mode, or a bad eps.
    Exception
        Whatever the loss raised, unchanged, after the parameters were restored.
    """
    if points is not None or budget is not None or save is not None or save_when != "failure":
        # The test-suite keywords (_planned): it calls back this function per point.
        return check_planned(
            check_grad, loss, grad, params, points=points, budget=budget, save=save,
            save_when=save_when, mode=mode, k=k, max_evals=max_evals, seed=seed,
            options=dict(eps=eps, method=method, before_eval=before_eval, refine=refine,
                         threads=threads, progress=progress, warn_seconds=warn_seconds,
                         executor=executor))
    if not isinstance(mode, str) or mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; expected one of {', '.join(MODES)}")
    check_c_loss_for_mode(loss, params, mode)
    loss = check_loss(loss)  # a C loss comes back as a callable CLoss
    threads = check_threads(threads)
    method = check_method(method, CHECK_METHODS)
    eps = check_eps(eps)
    refine = check_flag(refine, "refine")
    progress = check_progress(progress)
    warn_seconds = check_warn_seconds(warn_seconds)
    if before_eval is not None and not callable(before_eval):
        raise TypeError("before_eval must be callable with no arguments, got "
                        f"{type(before_eval).__name__}")
    check_executor(executor, loss, threads)
    if threads > 1 and not isinstance(loss, CLoss):
        raise ValueError(
            f"threads={threads} needs a loss written in C (a scipy.LowLevelCallable or "
            "fastcheck.CLoss): a Python loss holds the GIL, so threads would only take "
            "turns calling it")
    layout = as_layout(params)
    if isinstance(loss, CLoss):
        loss.bind(layout, threads)  # a flat, contiguous theta of its dtype; thread-safety
    check_step_resolution(layout, eps, method)
    options = check_mode_options(mode, layout, method, k=k, max_evals=max_evals, seed=seed)
    if before_eval is not None:  # grad(params) sees the state of every evaluation
        layout.call_unchanged(before_eval, "before_eval()")
    analytic = analytic_gradient(grad, layout)

    if before_eval is not None:
        loss = WithBeforeEval(loss, before_eval)

    started = time.perf_counter()
    eps_text = _eps_rule(layout, method, eps)
    unit = unit_roundoff(layout.lowest_precision)
    tiers = tiers_for(layout.lowest_precision)
    snapshot = layout.snapshot()
    evaluations = 0
    extra_notes: list[str] = []
    try:
        # Step 3: determinism probes.
        probes, probe_seconds = [], []
        for _ in range(2):
            probe_seconds.append(time.perf_counter())
            returned = loss(layout.params)
            probe_seconds[-1] = time.perf_counter() - probe_seconds[-1]
            probes.append(_kernel.loss_value(returned))
            evaluations += 1
            changed = layout.changed_since(snapshot)
            if changed:
                layout.restore(snapshot)
                return _invalid_result(
                    layout, analytic,
                    f"the loss modified the parameters {changed} when called; a loss must "
                    "only read them (they were restored). No verdict on the gradient",
                    evaluations, time.perf_counter() - started, eps_text, method, mode)
        if not np.isfinite(probes[0]):
            return _invalid_result(
                layout, analytic,
                f"the loss is {probes[0]} at the given parameters: nothing to check",
                evaluations, time.perf_counter() - started, eps_text, method, mode)
        # A loss that returns float32 (or float16) has that resolution, whatever the
        # parameters' dtype: the noise model and the tiers must know.
        loss_dtype = _returned_dtype(returned)
        step, relative = eps, eps is None
        if loss_dtype is not None and unit_roundoff(loss_dtype) > unit:
            unit, tiers = unit_roundoff(loss_dtype), tiers_for(loss_dtype)
            if eps is None:
                step = default_eps(loss_dtype, method)
                eps_text = f"{step:.2g} × max(1, |θ_i|) (for the loss's {loss_dtype.name})"
            extra_notes.append(f"the loss returns {loss_dtype.name} values: the check is "
                               f"limited to {loss_dtype.name} resolution and uses its tiers")
        same, spread = _loss_is_deterministic(probes, unit)
        if not same:
            return _nondeterministic_result(
                layout, analytic, probes, spread, evaluations, time.perf_counter() - started,
                eps_text, method, mode, "in two calls before the check")

        if mode != "full":
            result = run_partial(
                options, loss, layout, analytic, center=probes[0], unit=unit, tiers=tiers,
                method=method, step=step, relative=relative, refine=refine, threads=threads,
                evaluations=evaluations, seconds_per_eval=min(probe_seconds),
                progress=progress, warn_seconds=warn_seconds, eps_text=eps_text,
                notes=extra_notes, started=started, executor=executor)
            return _finish_partial(result, loss, layout, analytic, snapshot, probes, unit,
                                   started)

        # Step 4: the kernel.
        estimate = warn_if_long(
            min(probe_seconds), layout.size * METHODS[method].evals_per_component,
            what=f"a full check of {layout.size:,} components", warn_seconds=warn_seconds,
            suggestion="mode='directional' checks every parameter and finds wrong "
                       "components in a few hundred evaluations (max_evals=).")
        with progress_reporter(progress, total=layout.size, estimate=estimate,
                               unit="components") as report:
            raw = run_kernel(loss, layout, method, eps=step, relative=relative,
                             threads=threads, progress=report, executor=executor)
        evaluations += raw.calls
        probes.append(_kernel.loss_value(loss(layout.params)))
        evaluations += 1
        if raw.center is not None:
            probes.append(raw.center)
        changed = layout.changed_since(snapshot)
        if changed:
            layout.restore(snapshot)
            return _invalid_result(
                layout, analytic,
                f"the parameters {changed} changed during the check: the loss modifies "
                "them (they were restored). No verdict on the gradient",
                evaluations, time.perf_counter() - started, eps_text, method, mode)
        same, spread = _loss_is_deterministic(probes, unit)
        if not same:
            return _nondeterministic_result(
                layout, analytic, probes, spread, evaluations, time.perf_counter() - started,
                eps_text, method, mode, "before, during and after the check")

        # Step 5: the verdict.
        x = layout.values()
        numerical, noise, status, suspect = first_look(raw, analytic, x, unit, tiers.excellent)
        idx = np.flatnonzero(suspect)
        unresolved = np.empty(0, dtype=np.intp)
        if refine and idx.size and method != "complex":
            info: dict = {}
            n2, noise2, status2, extra_evals = second_look(
                loss, layout, raw, idx, analytic[idx], unit, tiers.excellent, threads,
                # the loss's coarser dtype set the step (above): start from its too
                step_dtype=loss_dtype if eps is None and step is not None else None,
                info=info)
            evaluations += extra_evals
            numerical[idx], noise[idx], status[idx] = n2, noise2, status2
            unresolved = idx[info["unresolved"]]
        else:
            status[idx] = _S.WRONG
    except BaseException:
        if layout.changed_since(snapshot):
            layout.restore(snapshot)
        raise

    notes = extra_notes + _notes(layout, status, idx.size, refine and method != "complex")
    if unresolved.size:
        shown = ", ".join(layout.names_of(unresolved[:5])) + (
            ", ..." if unresolved.size > 5 else "")
        notes.append(
            f"{unresolved.size} component(s) could not be resolved ({shown}): even the "
            "smallest step tried is too wide for the loss's scale there (their numerical "
            "value keeps changing with the step), so they are not called wrong, but a bug "
            "in them could be missed. Check them with a smaller eps")
    result = build_result(
        layout, numerical, analytic, noise, status, tiers,
        evaluations=evaluations, seconds=time.perf_counter() - started, eps=eps_text,
        method=method, mode=mode, notes=notes,
        extra={"loss_value": probes[0], "suspects_refined": int(idx.size)})
    tier = tier_of(result.relative_error, tiers)
    if result.passed and tier in ("suspicious", "wrong"):
        # _verdict note 5 lowered the tier: say so, and what would sharpen the check.
        result.notes.append(
            f"the relative error {result.relative_error:.1e} is in the {tier!r} tier, but "
            "no component differs from its numerical value by more than the estimated "
            f"noise (rounding of a loss of size |J| = {abs(probes[0]):.3g} in "
            f"{tiers.dtype}, truncation, what the smaller steps resolved), so it is "
            "not called wrong. To check more sharply: check in float64 (parameters and loss), "
            "keep |J| small (a mean rather than a sum, no constant offsets), or use "
            "method='richardson'")
    return result


def _notes(layout: ParamLayout, status: np.ndarray, suspects: int, refined: bool) -> list[str]:
    notes = []
    kinks = np.flatnonzero(status == _S.KINK)
    if kinks.size:
        shown = ", ".join(layout.names_of(kinks[:5])) + (", ..." if kinks.size > 5 else "")
        notes.append(
            f"{kinks.size} component(s) sit at a kink ({shown}): the one-sided slopes "
            "differ by an amount that does not shrink with the step, and the analytic "
            "value is one of them (a valid one-sided derivative), so they are left out "
            "of the verdict")
    bad_loss = np.flatnonzero(status == _S.NONFINITE_LOSS)
    if bad_loss.size:
        shown = ", ".join(layout.names_of(bad_loss[:5])) + (", ..." if bad_loss.size > 5 else "")
        notes.append(f"the loss returned NaN or inf around {bad_loss.size} component(s) "
                     f"({shown}): their gradient could not be checked")
    bad_grad = np.flatnonzero(status == _S.NONFINITE_GRAD)
    if bad_grad.size:
        shown = ", ".join(layout.names_of(bad_grad[:5])) + (", ..." if bad_grad.size > 5 else "")
        notes.append(f"the analytic gradient is NaN or inf at {bad_grad.size} component(s) "
                     f"({shown})")
    if suspects and refined:
        notes.append(f"{suspects} component(s) looked off at first and were evaluated again "
                     f"at smaller steps (h/{REFINE:g}, h/{REFINE**2:g}, ... while undecided)")
    if len(layout.dtypes) > 1:
        notes.append("parameters of mixed dtypes: the verdict uses the bounds of the least "
                     "precise one")
    return notes


def _finish_partial(result: GradCheckResult, loss: Callable, layout: ParamLayout,
                    analytic: np.ndarray, snapshot: list[np.ndarray], probes: list[float],
                    unit: float, started: float) -> GradCheckResult:
    """The checks a full check makes after the kernel, for a partial mode's result:
    J(theta) once more (determinism), and the parameters unchanged."""
    evaluations = result.evaluations + 1
    probes.append(_kernel.loss_value(loss(layout.params)))
    args = (evaluations, time.perf_counter() - started, result.eps, result.method,
            result.mode)
    changed = layout.changed_since(snapshot)
    if changed:
        layout.restore(snapshot)
        return _invalid_result(
            layout, analytic, f"the parameters {changed} changed during the check: the loss "
            "modifies them (they were restored). No verdict on the gradient", *args)
    same, spread = _loss_is_deterministic(probes, unit)
    if not same:
        return _nondeterministic_result(layout, analytic, probes, spread, *args,
                                        "before, during and after the check")
    result.evaluations, result.seconds = args[0], args[1]
    return result
