"""Time estimates, the long-check warning and the progress bar.

Design notes:

1. The estimate costs nothing extra: check_grad already evaluates J(theta) twice
   before the check (the determinism probes); the faster of the two is the time
   of one evaluation, and the planned number of evaluations is known before the
   kernel runs (2 per component for a full central check).
2. Above ``warn_seconds`` a :class:`LongCheckWarning` says how long the check
   will take and suggests ``mode="directional"``, which finds wrong components
   in a few hundred evaluations whatever the size of the model.
3. The bar is fed from the kernel's periodic hook (every ``_evaluate.HOOK_EVERY``
   components), never per component, and it redraws at most every
   0.1 s: it costs nothing measurable.  tqdm draws it when installed; otherwise a
   plain ``\\r`` line on stderr.  ``progress=None`` (auto) shows it only when
   stderr is a terminal and the work is estimated to take more than
   ``AUTO_SECONDS``.
"""

from __future__ import annotations

import math
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TextIO

from fastcheck._validate import outside_stacklevel

__all__ = [
    "AUTO_SECONDS",
    "DEFAULT_WARN_SECONDS",
    "LongCheckWarning",
    "ProgressLine",
    "format_seconds",
    "progress_reporter",
    "warn_if_long",
]

# progress=None shows a bar when stderr is a terminal and the work is estimated to
# take longer than this.
AUTO_SECONDS = 2.0
# A LongCheckWarning is emitted when a check is estimated to take longer than this.
DEFAULT_WARN_SECONDS = 60.0
# The plain line redraws at most this often.
REDRAW_SECONDS = 0.1


class LongCheckWarning(UserWarning):
    """A gradient check is estimated to take long; the message says how long and
    what to do instead (usually ``mode="directional"``)."""


def format_seconds(seconds: float) -> str:
    """A duration a person reads at a glance: ``"0.35 s"``, ``"4.2 min"``, ``"3.1 h"``."""
    if not math.isfinite(seconds):
        return "unknown time"
    if seconds < 120:
        return f"{seconds:.2g} s" if seconds < 10 else f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.2g} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.2g} h"
    return f"{seconds / 86400:.2g} days"


def warn_if_long(seconds_per_eval: float, planned: int, *, what: str,
                 warn_seconds: float | None, suggestion: str | None = None,
                 stacklevel: int | None = None) -> float:
    """Estimate a check's duration; warn when it exceeds `warn_seconds`.

    Parameters
    ----------
    seconds_per_eval : float
        Time of one loss evaluation (the faster determinism probe).
    planned : int
        Loss evaluations the check is about to make.
    what : str
        What is planned, for the message ("a full check of 1,000,000 components").
    warn_seconds : float or None
        Threshold; None never warns.
    suggestion : str, optional
        The last sentence of the message (what to do instead).
    stacklevel : int, optional
        Default: the warning points at the first frame outside fastcheck (the
        user's call, through check_vjp, fastcheck.torch or points= alike).

    Returns
    -------
    float
        The estimated duration in seconds.
    """
    estimate = seconds_per_eval * planned
    if warn_seconds is not None and estimate > warn_seconds:
        message = (f"{what} needs about {planned:,} loss evaluations: about "
                   f"{format_seconds(estimate)} at {seconds_per_eval * 1e3:.3g} ms per "
                   "evaluation.")
        if suggestion:
            message += " " + suggestion
        message += " (warn_seconds=None silences this warning.)"
        warnings.warn(message, LongCheckWarning,
                      stacklevel=stacklevel if stacklevel is not None else outside_stacklevel())
    return estimate


class ProgressLine:
    """A progress display: tqdm when installed, else one ``\\r`` line on a stream.

    ``update(done, total)`` is what the kernel's hook calls; ``close()`` ends the
    line.  Redraws are throttled to one per :data:`REDRAW_SECONDS`.
    """

    def __init__(self, total: int, unit: str, desc: str = "fastcheck",
                 stream: TextIO | None = None, use_tqdm: bool | None = None) -> None:
        self.total = int(total)
        self.unit = unit
        self.desc = desc
        self.stream = stream if stream is not None else sys.stderr
        self.done = 0
        self.started = time.perf_counter()
        self._drawn = -math.inf
        self._width = 0
        self._bar = None
        if use_tqdm is None or use_tqdm:
            try:
                from tqdm import tqdm  # optional dependency
            except ImportError:
                if use_tqdm:
                    raise
            else:
                self._bar = tqdm(total=self.total, desc=desc, unit=" " + unit,
                                 file=self.stream, leave=True, mininterval=REDRAW_SECONDS)

    def update(self, done: int, total: int | None = None) -> None:
        if total is not None and total != self.total:
            self.total = int(total)
            if self._bar is not None:
                self._bar.total = self.total
        done = int(done)
        if self._bar is not None:
            if done > self.done:
                self._bar.update(done - self.done)
            self.done = max(self.done, done)
            return
        self.done = max(self.done, done)
        now = time.perf_counter()
        if now - self._drawn >= REDRAW_SECONDS or self.done >= self.total:
            self._drawn = now
            self._draw(now)

    def _draw(self, now: float) -> None:
        elapsed = now - self.started
        text = f"{self.desc}: {self.done:,}/{self.total:,} {self.unit}"
        if self.total:
            text += f" ({100 * self.done / self.total:.0f}%)"
        text += f", {format_seconds(elapsed)}"
        if 0 < self.done < self.total:
            text += f", about {format_seconds(elapsed * (self.total / self.done - 1))} left"
        pad = " " * max(0, self._width - len(text))
        self._width = len(text)
        self.stream.write("\r" + text + pad)
        self.stream.flush()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
            return
        if self._width:
            self._draw(time.perf_counter())
            self.stream.write("\n")
            self.stream.flush()
            self._width = 0


def _is_terminal(stream: Any) -> bool:
    try:
        return bool(stream is not None and stream.isatty())
    except (AttributeError, ValueError):  # closed or exotic streams
        return False


@contextmanager
def progress_reporter(progress: Any, *, total: int, estimate: float, unit: str,
                      desc: str = "fastcheck") -> Iterator[Callable[[int, int], Any] | None]:
    """The ``progress(done, total)`` callback to hand to the kernel, if any.

    `progress` is what the user passed: a callable is used as is; True shows a
    bar; False shows nothing; None shows a bar when stderr is a terminal and the
    `estimate` (seconds) exceeds :data:`AUTO_SECONDS`.  The bar is closed on exit,
    also when the check raises.
    """
    if callable(progress) and not isinstance(progress, bool):
        yield progress
        return
    show = progress if isinstance(progress, bool) else (
        estimate > AUTO_SECONDS and _is_terminal(sys.stderr))
    if not show:
        yield None
        return
    line = ProgressLine(total, unit, desc)
    try:
        yield line.update
    finally:
        line.close()
