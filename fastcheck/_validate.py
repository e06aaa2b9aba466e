"""Validation of the options every public function shares: one rule, one message.

Every entry point (check_grad, numerical_grad, eps_sweep, check_vjp / jvp / hvp,
fastcheck.torch, assert_grad_ok) validates its options here before the first
evaluation, so an option means the same thing, and a bad value gets the same
message naming the argument, whichever function received it.  This module
imports nothing from fastcheck: every other module may use it.
"""

from __future__ import annotations

import math
import os
import sys
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = [
    "METHOD_NAMES",
    "MODES",
    "check_before_eval",
    "check_callable",
    "check_count",
    "check_eps",
    "check_flag",
    "check_method",
    "check_mode",
    "check_n_vectors",
    "check_progress",
    "check_seed",
    "check_threads",
    "check_warn_seconds",
    "outside_stacklevel",
    "resolve_seed",
]

_PACKAGE = os.path.dirname(os.path.abspath(__file__))
# The one name for the number of random vectors of check_vjp / jvp / hvp and
# fastcheck.torch; the names each had before 0.2, still accepted with a warning.
N_VECTORS_DEFAULT = 3

# The difference formulas, in the order the docs list them (the kernel's table,
# _raw.METHODS, is keyed by these names).
METHOD_NAMES = ("central", "forward", "backward", "central4", "richardson", "complex")
# Which components check_grad checks (see its docstring).
MODES = ("full", "directional", "sample")


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def check_eps(eps: Any) -> float | None:
    """Validate a user's eps: None, or a finite positive number."""
    if eps is None:
        return None
    if isinstance(eps, (bool, np.bool_)) or not isinstance(eps, (int, float, np.number)):
        raise TypeError(f"eps must be a positive number or None, got {type(eps).__name__}")
    try:
        value = float(eps)
    except OverflowError:  # an int beyond the float range, e.g. 2**1100
        value = math.inf
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"eps must be a finite number > 0, got {eps!r}")
    return value


def check_method(method: Any, allowed: tuple[str, ...] | None = None) -> str:
    """Validate a method name against :data:`METHOD_NAMES` (or `allowed`)."""
    names = allowed or METHOD_NAMES
    if not isinstance(method, str) or method not in names:
        raise ValueError(f"unknown method {method!r}; expected one of {', '.join(names)}")
    return method


def check_mode(mode: Any) -> str:
    """Validate ``mode=``: one of :data:`MODES`."""
    if not isinstance(mode, str) or mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; expected one of {', '.join(MODES)}")
    return mode


def check_flag(value: Any, name: str) -> bool:
    """Validate a True / False argument such as `refine`: a string like "no" is
    truthy, so anything but a bool would be silently taken as True."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def check_threads(threads: Any) -> int:
    """Validate a user's threads: an int >= 1."""
    if not _is_int(threads):
        raise TypeError(f"threads must be an int >= 1, got {type(threads).__name__}")
    value = int(threads)
    if value < 1:
        raise ValueError(f"threads must be >= 1, got {value}")
    if value > 4096:
        raise ValueError(f"threads={value} is too many: each thread holds its own copy of "
                         "theta; use at most the number of cores")
    return value


def check_seed(seed: Any) -> int | None:
    """Validate ``seed=``: None (drawn, and reported) or an int >= 0."""
    if seed is None:
        return None
    if not _is_int(seed) or seed < 0:
        raise TypeError(f"seed must be a non-negative int or None, got {seed!r}")
    return int(seed)


def resolve_seed(seed: Any) -> int:
    """The validated seed, or one drawn when None: reports state the seed used, so
    that any run can be repeated."""
    seed = check_seed(seed)
    return int(np.random.default_rng().integers(2**32)) if seed is None else seed


def check_count(n: Any, name: str) -> int:
    """Validate a number of random vectors (``n_vectors=``): an int >= 1."""
    if not _is_int(n):
        raise TypeError(f"{name} must be an integer >= 1, got {type(n).__name__}")
    if n < 1:
        raise ValueError(f"{name} must be >= 1 (each one is a random vector the check is "
                         f"made along), got {n}")
    return int(n)


def check_n_vectors(n_vectors: Any, old: Any = None, old_name: str = "") -> int:
    """Validate ``n_vectors=`` (default 3); `old` is the value of the deprecated
    name `old_name` (n_cotangents, n_tangents), when the caller used it."""
    if old is None:
        return check_count(N_VECTORS_DEFAULT if n_vectors is None else n_vectors,
                           "n_vectors")
    warnings.warn(f"{old_name}= is deprecated; use n_vectors= (the same number of random "
                  "vectors in check_vjp, check_jvp, check_hvp and fastcheck.torch)",
                  DeprecationWarning, stacklevel=outside_stacklevel())
    if n_vectors is not None:
        raise TypeError(f"give n_vectors= or {old_name}= (deprecated), not both")
    return check_count(old, old_name)


def outside_stacklevel() -> int:
    """The ``stacklevel`` for a warning raised by the caller of this function that
    points at the first frame outside the fastcheck package: the user's line,
    whichever entry point (check_vjp, fastcheck.torch, points=, ...) got there."""
    frame, level = sys._getframe(2), 2
    while frame is not None and os.path.dirname(
            os.path.abspath(frame.f_code.co_filename)) == _PACKAGE:
        frame, level = frame.f_back, level + 1
    return level


def check_callable(obj: Any, name: str, signature: str) -> Callable:
    """A function the user gives (f, vjp, grad, ...): callable as `signature`."""
    if not callable(obj):
        raise TypeError(f"{name} must be callable as {signature}, got {type(obj).__name__}")
    return obj


def check_before_eval(before_eval: Any) -> Callable[[], Any] | None:
    """Validate ``before_eval=``: None, or a callable taking no argument."""
    if before_eval is not None and not callable(before_eval):
        raise TypeError("before_eval must be callable with no arguments, got "
                        f"{type(before_eval).__name__}")
    return before_eval


def check_progress(progress: Any) -> Any:
    """Validate ``progress=``: None (auto), True, False or ``callable(done, total)``."""
    if progress is None or isinstance(progress, bool) or callable(progress):
        return progress
    raise TypeError("progress must be None (automatic), True, False, or a callable "
                    f"progress(done, total); got {type(progress).__name__}")


def check_warn_seconds(warn_seconds: Any) -> float | None:
    """Validate ``warn_seconds=``: None (never warn) or a number >= 0."""
    if warn_seconds is None:
        return None
    if isinstance(warn_seconds, bool) or not isinstance(warn_seconds, (int, float)):
        raise TypeError("warn_seconds must be a number of seconds or None, got "
                        f"{type(warn_seconds).__name__}")
    value = float(warn_seconds)
    if math.isnan(value) or value < 0:
        raise ValueError(f"warn_seconds must be >= 0 (or None), got {warn_seconds!r}")
    return value
