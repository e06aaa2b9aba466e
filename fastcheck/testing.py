"""Helpers for test suites: assert that a hand-written gradient is right."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastcheck._check import check_grad
from fastcheck._result import GradCheckResult

__all__ = ["assert_grad_ok"]


def assert_grad_ok(
    loss: Callable[[Any], Any], grad: Any, params: Any, **kwargs: Any
) -> GradCheckResult:
    """Check a gradient and raise AssertionError with the full report if it fails.

    Parameters
    ----------
    loss, grad, params
        As for :func:`fastcheck.check_grad`.
    **kwargs
        Passed on to :func:`fastcheck.check_grad` (eps, method, mode, ...).

    Returns
    -------
    GradCheckResult
        The result, when the check passed (verdict "excellent" or "ok").

    Raises
    ------
    AssertionError
        When the check did not pass; the message is the report, which names the
        wrong parameters and components.

    Examples
    --------
    >>> import numpy as np
    >>> from fastcheck.testing import assert_grad_ok
    >>> theta = np.array([1.0, 2.0])
    >>> _ = assert_grad_ok(lambda t: float(t @ t), lambda t: 2 * t, theta)
    """
    __tracebackhide__ = True  # pytest: show the assertion, not this frame
    result = check_grad(loss, grad, params, **kwargs)
    if not result.passed:
        raise AssertionError("\n" + result.report())
    return result
