"""check_grad: is a hand-written gradient right, and if not, where is it wrong?

The pipeline, top-down (each module owns one step):

1. :mod:`fastcheck._request` validates every argument into one
   :class:`~fastcheck._request.CheckRequest`, before the loss is evaluated once,
   so bad input never touches the user's arrays.
2. The analytic gradient is read (``grad(params)`` called once, after
   before_eval), and one O(n) snapshot of the parameters is taken: the kernel
   restores every component by assignment; the snapshot lets us *prove* it at
   the end, catch a loss that modifies its own parameters, and restore bit for
   bit even then.
3. :mod:`fastcheck._guard` evaluates J(theta) twice: a loss that gives different
   values at the same point (dropout left on, unseeded sampling) makes any
   verdict about the gradient meaningless, so say so instead.
4. A mode runner -- :mod:`fastcheck._full`, :mod:`fastcheck._sample` or
   :mod:`fastcheck._directional` -- evaluates and judges (:mod:`fastcheck._judge`).
5. :mod:`fastcheck._guard` evaluates J(theta) once more and compares the
   parameters with the snapshot.

The test-suite keywords (points=, budget=, save=) go through
:mod:`fastcheck._planned`, which calls check_grad back per point.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from fastcheck._accuracy import check_accuracy
from fastcheck._directional import run_directional
from fastcheck._full import run_full
from fastcheck._guard import Probes, closing_probe, probe
from fastcheck._params import ParamLayout
from fastcheck._planned import check_planned
from fastcheck._progress import DEFAULT_WARN_SECONDS
from fastcheck._request import CheckRequest, build_request
from fastcheck._result import GradCheckResult
from fastcheck._sample import run_sample
from fastcheck._validate import resolve_seed

__all__ = ["check_grad"]

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
    seed: int | None = 0,
    before_eval: Callable[[], Any] | None = None,
    refine: bool = True,
    threads: int = 1,
    progress: bool | Callable[[int, int], Any] | None = None,
    warn_seconds: float | None = DEFAULT_WARN_SECONDS,
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
        smallest parameter), or a fraction of each parameter (a float in (0, 1);
        k=1.0 is refused as ambiguous: mode="full" checks every component).
        Default: 32, or all of a smaller parameter.
    max_evals : int, optional
        mode="directional": the most loss evaluations to spend, everything
        included (default 400, more for models with many parameter arrays).  The
        result says what the budget did not cover.
    seed : int or None
        Seed of the random directions / samples (mode="directional" / "sample")
        and of drawn points (``points=N``).  Default 0, as everywhere in fastcheck,
        so that a check repeats exactly; None draws a fresh seed.  The seed used
        is in ``result.extra["seed"]`` and the notes.  mode="full" is not random and
        does not use it.
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
    request = build_request(
        loss, params, eps=eps, method=method, mode=mode, k=k, max_evals=max_evals,
        seed=seed, before_eval=before_eval, refine=refine, threads=threads,
        progress=progress, warn_seconds=warn_seconds, executor=executor, noise=noise,
        accuracy=accuracy)
    layout = request.layout
    if request.before_eval is not None:  # grad(params) sees the state of every evaluation
        layout.call_unchanged(request.before_eval, "before_eval()")
    analytic = analytic_gradient(grad, layout)
    snapshot = layout.snapshot()
    try:
        probes = probe(request, analytic, snapshot)
        if isinstance(probes, GradCheckResult):
            return probes
        return _run_mode(request, probes, analytic)
    except BaseException:
        if layout.changed_since(snapshot):
            layout.restore(snapshot)
        raise


def _run_mode(request: CheckRequest, probes: Probes,
              analytic: np.ndarray) -> GradCheckResult:
    """The mode's runner; for the partial modes, the closing probe after it (the
    full mode makes it between the kernel and the judge, see _full)."""
    if request.mode == "full":
        return run_full(request, probes, analytic)
    seed = resolve_seed(request.options.seed)
    runner = run_sample if request.mode == "sample" else run_directional
    result = runner(request, probes, analytic, seed)
    if result.verdict == "invalid":
        return result
    refused = closing_probe(request, analytic, probes, result.evaluations)
    if refused is not None:
        return refused
    result.evaluations, result.seconds = result.evaluations + 1, probes.seconds()
    return result
