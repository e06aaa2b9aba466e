"""Helpers for test suites: assert that a hand-written gradient is right, and draw
the points to check it at.

Hypothesis is optional: only :func:`parameter_points` needs it, and imports it
when called, so importing this module never does.  The pytest plugin (the
``gradcheck`` fixture) lives in ``fastcheck.pytest_plugin``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from fastcheck._check import check_grad
from fastcheck._params import as_layout
from fastcheck._result import GradCheckResult

__all__ = ["assert_grad_ok", "parameter_points"]


def assert_grad_ok(
    loss: Callable[[Any], Any], grad: Any, params: Any, **kwargs: Any
) -> GradCheckResult:
    """Check a gradient and raise AssertionError with the full report if it fails.

    Parameters
    ----------
    loss, grad, params
        As for :func:`fastcheck.check_grad`.
    **kwargs
        Passed on to :func:`fastcheck.check_grad` (eps, method, mode, ...;
        ``rtol=`` / ``atol=`` declare the accuracy of a gradient that is
        approximate by design).

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


def _bounds_per_parameter(bounds: Any, names: tuple[str, ...]) -> list[tuple[float, float]]:
    """(lo, hi) for every parameter, from one pair or a dict of pairs by name."""
    if isinstance(bounds, Mapping):
        unknown = sorted(set(map(str, bounds)) - set(names))
        if unknown:
            raise ValueError(f"bounds names {unknown}, which are not parameters "
                             f"({list(names)})")
        pairs = [bounds.get(name, (-1.0, 1.0)) for name in names]
    else:
        pairs = [bounds] * len(names)
    out = []
    for name, pair in zip(names, pairs):
        try:
            lo, hi = (float(v) for v in pair)
        except (TypeError, ValueError):
            raise TypeError(f"bounds for {name!r} must be a pair (low, high) of numbers, got "
                            f"{pair!r}") from None
        if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
            raise ValueError(f"bounds for {name!r} must be finite with low < high, got "
                             f"({lo!r}, {hi!r})")
        out.append((lo, hi))
    return out


def parameter_points(like: Any, *, bounds: Any = (-1.0, 1.0),
                     kinks: Callable[[Any], Any] | None = None,
                     distance: float = 1e-3) -> Any:
    """A Hypothesis strategy for parameter sets inside bounds and away from kinks.

    Hypothesis is an optional dependency: it is imported by this function, not by
    ``fastcheck.testing``.

    Parameters
    ----------
    like : ndarray, or dict / list / tuple of ndarrays
        The parameters: each drawn set has their container, names, shapes and
        dtypes (new arrays; `like` is not modified).
    bounds : (low, high) or dict of name -> (low, high)
        The domain: every component is drawn uniformly in its parameter's
        ``[low, high]`` (parameters missing from a dict get (-1, 1)).
    kinks : callable, optional
        ``kinks(params)`` returns an array (or a list of arrays) that is 0 where
        the loss has a kink: the pre-activations of a ReLU network, ``x`` for
        ``abs(x)``, ``a - b`` for ``max(a, b)``.  Sets where any of its values is
        within `distance` of 0 are rejected, so that a central difference with
        steps below `distance` (times the slope) does not straddle a kink.
    distance : float
        How far from 0 every value of ``kinks(params)`` must stay.

    Returns
    -------
    hypothesis.strategies.SearchStrategy
        Drawing parameter sets.  The values come from a seeded numpy generator
        whose seed Hypothesis draws, so large parameters cost no more than small
        ones and a failing example is reproduced from its seed (Hypothesis does
        not shrink the values themselves: shrinking towards 0 would land on the
        kinks this avoids).  When most sets are rejected, Hypothesis's health
        check says so: use a smaller `distance` or tighter `bounds`.

    Examples
    --------
    >>> from hypothesis import given, settings
    >>> from fastcheck import examples
    >>> net = examples.relu_network(straddle=False)
    >>> @settings(max_examples=5, deadline=None)
    ... @given(parameter_points(net.params, kinks=net.preactivations, distance=1e-4))
    ... def test_relu_backward(params):
    ...     assert_grad_ok(net.loss, net.grad, params)
    >>> test_relu_backward()
    """
    layout = as_layout(like)
    pairs = _bounds_per_parameter(bounds, layout.names)
    if kinks is not None and not callable(kinks):
        raise TypeError(f"kinks must be callable as kinks(params), got {type(kinks).__name__}")
    if isinstance(distance, bool) or not isinstance(distance, (int, float, np.number)) \
            or not math.isfinite(distance) or distance < 0:
        raise ValueError(f"distance must be a finite number >= 0, got {distance!r}")
    try:
        from hypothesis import strategies as st
    except ImportError as exc:
        raise ImportError("fastcheck.testing.parameter_points needs Hypothesis: "
                          "pip install hypothesis") from exc
    shapes = [(a.shape, a.dtype) for a in layout.arrays]

    def draw(seed: int) -> Any:
        rng = np.random.default_rng(seed)
        return layout._container([rng.uniform(lo, hi, size=shape).astype(dtype)
                                  for (shape, dtype), (lo, hi) in zip(shapes, pairs)])

    def far_from_kinks(params: Any) -> bool:
        values = kinks(params)
        parts = values if isinstance(values, (list, tuple)) else [values]
        return all(np.all(np.abs(np.asarray(v, dtype=np.float64)) >= distance)
                   for v in parts)

    points = st.integers(min_value=0, max_value=2**32 - 1).map(draw)
    return points.filter(far_from_kinks) if kinks is not None else points
