"""fastcheck: fast, trustworthy numerical gradient checking with a C core.

Public API
----------
numerical_grad
    The numerical gradient of a loss, perturbing parameters in place in C.
"""

from fastcheck._numerical import numerical_grad
from fastcheck._version import __version__

__all__ = ["__version__", "numerical_grad"]
