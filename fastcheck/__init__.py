"""fastcheck: fast, trustworthy numerical gradient checking with a C core.

Public API
----------
check_grad
    Check a hand-written gradient; returns a GradCheckResult (verdict, report,
    per-parameter breakdown, worst components by name).
numerical_grad
    The numerical gradient of a loss, perturbing parameters in place in C.
eps_sweep
    The relative error against the step for chosen methods (the V-shaped curve),
    with the best step, a text table and a matplotlib plot.
"""

from fastcheck._check import check_grad
from fastcheck._kernel import ComplexStepError
from fastcheck._numerical import numerical_grad
from fastcheck._result import Component, GradCheckResult, ParameterReport
from fastcheck._sweep import EpsSweep, eps_sweep
from fastcheck._version import __version__

__all__ = [
    "ComplexStepError",
    "Component",
    "EpsSweep",
    "GradCheckResult",
    "ParameterReport",
    "__version__",
    "check_grad",
    "eps_sweep",
    "numerical_grad",
]
