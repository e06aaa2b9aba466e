"""Fixtures and helpers shared by the test files.

Fixtures (pytest finds them here):

- ``lib``: the C losses of ``tests/closs/losses.c`` compiled once per
  session (test_faults, test_lowlevel, test_threads).

Helpers, imported by the files that use them (``from conftest import ...``):

- :func:`cube` and :func:`cube_grad`: J = sum(theta**3) and its gradient;
- :func:`counting`: a loss that counts its calls;
- :func:`snapshot` and :func:`assert_bitwise`: copies of a dict of arrays, and the
  check that the arrays hold the same bits again (parameters restored).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from lowlevel_support import losses


@pytest.fixture(scope="session")
def lib(tmp_path_factory):
    return losses(tmp_path_factory)


def cube(p: np.ndarray) -> float:
    """J = sum(theta**3): smooth, with a different curvature at every component."""
    return float(np.sum(p**3))


def cube_grad(p: np.ndarray) -> np.ndarray:
    """The gradient of :func:`cube`."""
    return 3 * p**2


def counting(loss: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """`loss`, counting its calls in ``.calls[0]``."""
    calls = [0]

    def counted(p):
        calls[0] += 1
        return loss(p)

    counted.calls = calls
    return counted


def snapshot(params: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A copy of every array of a dict of parameters."""
    return {k: v.copy() for k, v in params.items()}


def assert_bitwise(params: dict[str, np.ndarray], saved: dict[str, np.ndarray]) -> None:
    """Every array of `params` holds the bits of its copy in `saved`."""
    for k in params:
        assert params[k].tobytes() == saved[k].tobytes(), k
