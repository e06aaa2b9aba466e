"""fastcheck: fast, trustworthy numerical gradient checking with a C core.

Public API
----------
check_grad
    Check a hand-written gradient; returns a GradCheckResult (verdict, report,
    per-parameter breakdown, worst components by name).  mode="directional"
    checks a model of any size along random directions and localises the wrong
    components; mode="sample" checks k components per parameter.
LongCheckWarning
    Emitted when a check is estimated to take long (warn_seconds=).
numerical_grad
    The numerical gradient of a loss, perturbing parameters in place in C.
eps_sweep
    The relative error against the step for chosen methods (the V-shaped curve),
    with the best step, a text table and a matplotlib plot.
check_vjp, check_jvp, check_hvp
    Check a layer's hand-written backward (vector-Jacobian product), forward-mode
    (Jacobian-vector product) or second-order (Hessian-vector product) code.
CLoss
    A loss written in C (scipy.LowLevelCallable, ctypes, cffi, Cython), checked at
    C speed, optionally on several threads.
LossError
    A C loss reported failure.
replay
    Run a check recorded in a replay file (``check_grad(..., save=path)``) again.
MultiPointResult
    The result of ``check_grad(..., points=...)``: the worst point's result.
GradCheckResult, ParameterReport, Component, EpsSweep
    Result types; ``result.layout`` is a ParamLayout (names, shapes, offsets of
    the parameters), ``result.status`` holds ComponentStatus codes and
    ``result.tiers`` the relative-error Tiers the verdict used.
ComplexStepError, LossError, ReplayError, LongCheckWarning
    The exceptions and the warning fastcheck raises (all exported here).
get_include
    The folder of the C headers, for extensions that call the kernel.

fastcheck.torch (import it explicitly; needs PyTorch) checks custom
torch.autograd.Functions and nn.Module parameters.
"""

# The public names are resolved on first use (PEP 562), so that importing a
# submodule -- the pytest plugin, which pytest loads in every test run of every
# project that has fastcheck installed -- does not load numpy, scipy and the
# compiled kernel.  Type checkers read the imports below.
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from fastcheck._version import __version__

_WHERE = {
    "check_grad": "_check",
    "get_include": "_include",
    "ComplexStepError": "_kernel",
    "CLoss": "_lowlevel",
    "LossError": "_lowlevel",
    "numerical_grad": "_numerical",
    "ParamLayout": "_params",
    "MultiPointResult": "_points",
    "LongCheckWarning": "_progress",
    "ReplayError": "_replay",
    "replay": "_replay",
    "Component": "_result",
    "GradCheckResult": "_result",
    "ParameterReport": "_result",
    "EpsSweep": "_sweep",
    "ComponentStatus": "_verdict",
    "Tiers": "_verdict",
    "eps_sweep": "_sweep",
    "check_hvp": "_vjp",
    "check_jvp": "_vjp",
    "check_vjp": "_vjp",
}

if TYPE_CHECKING:
    from fastcheck._check import check_grad
    from fastcheck._include import get_include
    from fastcheck._kernel import ComplexStepError
    from fastcheck._lowlevel import CLoss, LossError
    from fastcheck._numerical import numerical_grad
    from fastcheck._params import ParamLayout
    from fastcheck._points import MultiPointResult
    from fastcheck._progress import LongCheckWarning
    from fastcheck._replay import ReplayError, replay
    from fastcheck._result import Component, GradCheckResult, ParameterReport
    from fastcheck._sweep import EpsSweep, eps_sweep
    from fastcheck._verdict import ComponentStatus, Tiers
    from fastcheck._vjp import check_hvp, check_jvp, check_vjp


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'fastcheck' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"fastcheck.{module}"), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_WHERE))


# Kept literal for linters and IDEs; tests/test_api.py checks it against _WHERE.
__all__ = [
    "CLoss",
    "ComplexStepError",
    "Component",
    "ComponentStatus",
    "EpsSweep",
    "GradCheckResult",
    "LongCheckWarning",
    "LossError",
    "MultiPointResult",
    "ParamLayout",
    "ParameterReport",
    "ReplayError",
    "Tiers",
    "__version__",
    "check_grad",
    "check_hvp",
    "check_jvp",
    "check_vjp",
    "eps_sweep",
    "get_include",
    "numerical_grad",
    "replay",
]
