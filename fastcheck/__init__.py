"""fastcheck: fast, trustworthy numerical gradient checking with a C core.

Public API
----------
numerical_grad
    The numerical gradient of a loss, perturbing parameters in place in C.
CLoss
    A loss written in C (scipy.LowLevelCallable, ctypes, cffi, Cython), checked at
    C speed, optionally on several threads.
LossError
    A C loss reported failure.
get_include
    The folder of the C headers, for extensions that call the kernel.
"""

from fastcheck._include import get_include
from fastcheck._lowlevel import CLoss, LossError
from fastcheck._numerical import numerical_grad
from fastcheck._version import __version__

__all__ = ["CLoss", "LossError", "__version__", "get_include", "numerical_grad"]
