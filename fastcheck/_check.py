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
5. The judge (_judge) marks suspects from the noise model without further
   evaluations; only when there are suspects (or components too coarse for the
   "ok" tier) is the noise measured (_noise) and are those components evaluated
   again at smaller or larger steps to tell bugs from noise, truncation and kinks.

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
from fastcheck._accuracy import check_accuracy
from fastcheck._evaluate import (
    METHODS,
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
from fastcheck._judge import (
    Calibration,
    Noise,
    accuracy_hint,
    accuracy_notes,
    detection_limit,
    judge_components,
    limit_notes,
    status_notes,
)
from fastcheck._lowlevel import CLoss
from fastcheck._noise import check_noise_option
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
from fastcheck._verdict import C_ROUND, ComponentStatus, tier_of, tiers_for

__all__ = ["check_grad"]

_S = ComponentStatus
CHECK_METHODS = ("central", "forward", "backward", "central4", "richardson", "complex")
MODES = ("full", "directional", "sample")


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
    noise: str | float = "auto",
    points: Any = None,
    budget: float | None = None,
    save: Any = None,
    save_when: str = "failure",
    rtol: float | None = None,
    atol: float | None = None,
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
        Re-evaluate suspicious components at smaller steps (h/4, h/16, ...), or
        at larger ones where rounding limits them, to tell bugs from noise,
        truncation and kinks: 2 more evaluations per suspect and level, only
        while it is undecided (usually 1 level, 3 for a kink, up to 8 where the
        step is wider than the loss's own scale), none for components that pass;
        and measure the loss's noise once (8 to 24 evaluations) when there are
        suspects or components too coarse for the "ok" tier.  False: judge from
        the first evaluations alone (suspects are then called wrong, kinks
        included).
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
    noise : {"auto", "model"} or float
        The noise of one loss evaluation, which every verdict rests on.  "auto"
        (default): modelled as 32 u |J|, and measured near θ (8 to 24
        evaluations along a random direction) when the first look finds suspects
        or components it cannot resolve; the report then says in one line what
        the loss resolves.  "model": never measured.  A number > 0: the known
        absolute error of one evaluation (e.g. a solver's tolerance times |J|),
        used instead of a measurement.
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
    rtol, atol : float, optional
        The accuracy the analytic gradient is meant to have, when it is
        approximate by design (an adjoint ODE gradient, an implicit gradient
        through an iterative solver, truncated backpropagation).  A component
        then agrees when ``|numerical - analytic| <= atol + rtol * |analytic|``
        plus what the noise allows; one outside makes the verdict "wrong".  The
        report says how many components were outside and the largest
        difference.  Default: none declared (the usual verdict).

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
    accuracy = check_accuracy(rtol, atol)   # before any path evaluates anything
    if points is not None or budget is not None or save is not None or save_when != "failure":
        # The test-suite keywords (_planned): it calls back this function per point.
        return check_planned(
            check_grad, loss, grad, params, points=points, budget=budget, save=save,
            save_when=save_when, mode=mode, k=k, max_evals=max_evals, seed=seed,
            options=dict(eps=eps, method=method, before_eval=before_eval, refine=refine,
                         threads=threads, progress=progress, warn_seconds=warn_seconds,
                         executor=executor, noise=noise, rtol=rtol, atol=atol))
    if not isinstance(mode, str) or mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; expected one of {', '.join(MODES)}")
    check_c_loss_for_mode(loss, params, mode)
    loss = check_loss(loss)  # a C loss comes back as a callable CLoss
    threads = check_threads(threads)
    method = check_method(method, CHECK_METHODS)
    eps = check_eps(eps)
    refine = check_flag(refine, "refine")
    noise = check_noise_option(noise)
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
                notes=extra_notes, started=started, executor=executor, noise=noise,
                accuracy=accuracy)
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

        # Step 5: the verdict (_judge).
        calibration = Calibration(loss, layout, probes[0], unit, tiers,
                                  given=noise if isinstance(noise, float) else None)
        jd = judge_components(
            loss, layout, raw, analytic, layout.values(), Noise(unit), tiers, refine=refine,
            threads=threads,
            # the loss's coarser dtype set the step (above): start from its too
            step_dtype=loss_dtype if eps is None and step is not None else None,
            calibrate=calibration if noise != "model" else None, accuracy=accuracy)
        evaluations += jd.evaluations
        numerical, noise, status, tiers = jd.numerical, jd.err, jd.status, jd.tiers
    except BaseException:
        if layout.changed_since(snapshot):
            layout.restore(snapshot)
        raise

    notes = extra_notes + calibration.notes() + status_notes(
        layout, status, jd.refined, refine and method != "complex")
    notes += limit_notes(layout, numerical, analytic, noise, status, tiers, jd.noise, eps)
    notes += accuracy_notes(layout, analytic, noise, status, accuracy)
    result = build_result(
        layout, numerical, analytic, noise, status, tiers,
        evaluations=evaluations, seconds=time.perf_counter() - started, eps=eps_text,
        method=method, mode=mode, notes=notes,
        extra={"loss_value": probes[0], "suspects_refined": jd.refined,
               "evaluations_by_phase": {"probes": 3,
                                        "kernel": raw.calls,
                                        "noise": calibration.evaluations,
                                        "refinement": jd.evaluations
                                        - calibration.evaluations},
               **calibration.extra()}, accuracy=accuracy)
    result.detection_limit = detection_limit(numerical, analytic, noise, status,
                                             tiers.excellent)
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
    if accuracy is None and result.verdict == "suspicious":
        hint = accuracy_hint(numerical, analytic, noise, status, tiers.excellent)
        if hint:
            result.notes.append(hint)
    return result


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
