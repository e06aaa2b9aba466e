"""check_grad's arguments, validated once into one request object.

check_grad builds a :class:`CheckRequest` before the loss is evaluated once;
the mode runners (_full, _sample, _directional) take it and never validate again.
The rules of the partial modes' options (k, max_evals, seed) live here too, so
that the runners import this module and this module imports no runner.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from fastcheck._accuracy import Accuracy
from fastcheck._evaluate import WithBeforeEval, check_loss, check_step_resolution
from fastcheck._executor import check_executor
from fastcheck._lowlevel import CLoss, is_c_loss
from fastcheck._noise import check_noise_option
from fastcheck._params import ParamLayout, as_layout
from fastcheck._validate import (
    check_before_eval,
    check_eps,
    check_flag,
    check_method,
    check_mode,
    check_progress,
    check_seed,
    check_threads,
    check_warn_seconds,
)

__all__ = [
    "DEFAULT_MAX_EVALS",
    "DEFAULT_SAMPLE_K",
    "DIRECTIONS",
    "PROBES",
    "CheckRequest",
    "ModeOptions",
    "build_request",
    "check_max_evals",
    "localising_evals",
    "minimum_evals",
]

# mode="sample" without k: this many components per parameter (all of a smaller one).
DEFAULT_SAMPLE_K = 32
# mode="directional" without max_evals: at least this many evaluations.
DEFAULT_MAX_EVALS = 400
# Independent random directions per parameter block (_directional note 2).
DIRECTIONS = 2
# Evaluations of J(theta) at the given point: twice before the check, once after.
PROBES = 3


@dataclass(frozen=True)
class ModeOptions:
    """The validated mode options of check_grad."""

    mode: str
    k: int | float | None = None
    max_evals: int | None = None
    seed: int | None = None
    k_per_block: tuple[int, ...] = ()


@dataclass(frozen=True)
class CheckRequest:
    """Everything check_grad was asked, validated (see :func:`build_request`).

    `loss` is what the kernel calls: a :class:`~fastcheck.CLoss` for a C loss,
    with `before_eval` folded in (:class:`~fastcheck._evaluate.WithBeforeEval`)
    when given; `before_eval` is kept for the one call before ``grad(params)``.
    """

    loss: Callable[[Any], Any]
    layout: ParamLayout
    method: str
    eps: float | None
    options: ModeOptions
    refine: bool
    threads: int
    executor: Any
    noise: str | float
    progress: Any
    warn_seconds: float | None
    before_eval: Callable[[], Any] | None
    accuracy: Accuracy | None = None  # rtol= / atol=, validated (_accuracy)

    @property
    def mode(self) -> str:
        return self.options.mode


def minimum_evals(blocks: int) -> int:
    """The fewest evaluations mode="directional" can do anything useful with."""
    return PROBES + 2 * DIRECTIONS * blocks


def localising_evals(blocks: int, largest: int) -> int:
    """The evaluations mode="directional" needs to localise one wrong component
    among `largest` (the smallest max_evals it recommends)."""
    depth = max(1, math.ceil(math.log2(max(2, largest))))
    return minimum_evals(blocks) + 4 * depth + 16


def check_max_evals(max_evals: Any, layout: ParamLayout) -> int:
    """Validate max_evals for `layout`; None gives the default (_directional note 8)."""
    blocks = sum(1 for a in layout.arrays if a.size)
    least = minimum_evals(blocks)
    largest = max(a.size for a in layout.arrays)
    depth = max(1, math.ceil(math.log2(max(2, largest))))
    if max_evals is None:
        return max(DEFAULT_MAX_EVALS, localising_evals(blocks, largest))
    if isinstance(max_evals, (bool, np.bool_)) or not isinstance(max_evals,
                                                                (int, np.integer)):
        raise TypeError(f"max_evals must be an int (a number of loss evaluations), got "
                        f"{type(max_evals).__name__}")
    if max_evals < least:
        raise ValueError(
            f"max_evals={max_evals} is too small to do anything useful: mode='directional' "
            f"needs at least {least} loss evaluations for {blocks} parameter block(s) "
            f"({PROBES} evaluations of J(θ) to check the loss is deterministic, and "
            f"{DIRECTIONS} directions × 2 evaluations per block), and about "
            f"{2 * depth + 8} more to localise one wrong component among "
            f"{largest:,}. Pass max_evals >= {localising_evals(blocks, largest)}")
    return int(max_evals)


def _k_per_block(k: Any, layout: ParamLayout) -> tuple[int, ...]:
    """mode="sample": components drawn per parameter, from `k` (a count or a fraction)."""
    sizes = [a.size for a in layout.arrays]
    if k is None:
        return tuple(min(DEFAULT_SAMPLE_K, s) for s in sizes)
    if isinstance(k, (bool, np.bool_)) or not isinstance(k, (int, float, np.integer,
                                                              np.floating)):
        raise TypeError("k must be a number of components per parameter (int >= 1) or a "
                        f"fraction of each parameter (float in (0, 1)); got {type(k).__name__}")
    if isinstance(k, (float, np.floating)):
        value = float(k)
        if value == 1.0:  # k=1 is one component per parameter: 1.0 would read as it
            raise ValueError("k=1.0 is ambiguous: k=1 (an int) draws one component per "
                             "parameter, and a float k is a fraction below 1; to check "
                             "every component use mode='full'")
        if not (0.0 < value < 1.0):
            raise ValueError(f"k={k!r}: a float k is the fraction of each parameter to "
                             "sample and must be in (0, 1); for a count pass an int")
        return tuple(max(1, math.ceil(value * s)) if s else 0 for s in sizes)
    count = int(k)
    if count < 1:
        raise ValueError(f"k must be >= 1 (components per parameter), got {k!r}")
    too_small = [(name, s) for name, s in zip(layout.names, sizes, strict=True)
                 if count > s > 0]
    if too_small:
        listed = ", ".join(f"{name!r} has {s}" for name, s in too_small)
        raise ValueError(
            f"k={count} is larger than a parameter block: {listed} component(s). k counts "
            "components drawn from every parameter; pass k <= "
            f"{min(s for _, s in too_small)}, or a fraction such as k=0.1")
    return tuple(count if s else 0 for s in sizes)


def check_mode_options(mode: str, layout: ParamLayout, method: str, *, k: Any = None,
                       max_evals: Any = None, seed: Any = None) -> ModeOptions:
    """Validate the options of the partial modes before anything is evaluated."""
    if k is not None and mode != "sample":
        raise ValueError(f"k= is the number of components per parameter for mode='sample'; "
                         f"it means nothing for mode={mode!r}")
    if max_evals is not None and mode != "directional":
        raise ValueError(f"max_evals= bounds mode='directional'; it means nothing for "
                         f"mode={mode!r}")
    seed = check_seed(seed)  # mode="full" is not random: it does not use it
    if mode == "directional":
        if method != "central":
            raise ValueError(
                f"mode='directional' uses central differences along random directions; "
                f"method={method!r} is not available there (use method='central', or "
                "mode='sample' / 'full' for other formulas)")
        return ModeOptions(mode, max_evals=check_max_evals(max_evals, layout), seed=seed)
    if mode == "sample":
        return ModeOptions(mode, k=k, seed=seed, k_per_block=_k_per_block(k, layout))
    return ModeOptions(mode)


def check_c_loss_for_mode(loss: Any, params: Any, mode: str) -> None:
    """A C loss reads theta through one pointer, so mode="directional", which writes
    theta +- h v into the arrays and calls the loss itself, needs theta as a single
    C-contiguous array.  Raise before anything is evaluated otherwise."""
    if mode != "directional" or not is_c_loss(loss):
        return
    if not isinstance(params, np.ndarray):
        raise TypeError(
            "mode='directional' with a C loss (scipy.LowLevelCallable) needs theta as one "
            f"C-contiguous numpy array, the memory the loss reads; got {type(params).__name__}")
    if not params.flags.c_contiguous:
        raise ValueError(
            "mode='directional' with a C loss (scipy.LowLevelCallable) needs theta as one "
            f"C-contiguous array: the loss reads theta through a pointer, but this theta of "
            f"shape {params.shape} has strides {params.strides} (a view or Fortran order). "
            "Pass np.ascontiguousarray(theta) and read the loss from that array")


def build_request(loss: Any, params: Any, *, eps: Any, method: Any, mode: Any, k: Any,
                  max_evals: Any, seed: Any, before_eval: Any, refine: Any, threads: Any,
                  progress: Any, warn_seconds: Any, executor: Any,
                  noise: Any, accuracy: Accuracy | None = None) -> CheckRequest:
    """Validate check_grad's arguments, in an order that gives the most specific
    message first (a C loss with executor= is told to use threads=), before any
    evaluation.  Binds a C loss to the parameters' layout."""
    mode = check_mode(mode)
    check_c_loss_for_mode(loss, params, mode)
    threads = check_threads(threads)
    check_executor(executor, loss, threads)  # before check_loss wraps a C loss
    loss = check_loss(loss)  # a C loss comes back as a callable CLoss
    method = check_method(method)
    eps = check_eps(eps)
    refine = check_flag(refine, "refine")
    noise = check_noise_option(noise)
    progress = check_progress(progress)
    warn_seconds = check_warn_seconds(warn_seconds)
    before_eval = check_before_eval(before_eval)
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
    if before_eval is not None:
        loss = WithBeforeEval(loss, before_eval)
    return CheckRequest(loss, layout, method, eps, options, refine, threads, executor,
                        noise, progress, warn_seconds, before_eval, accuracy)
