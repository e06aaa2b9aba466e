"""get_include: where the C headers for other extensions are."""

from __future__ import annotations

import os

__all__ = ["get_include"]

_HEADERS = ("fastcheck.h", "fastcheck_capi.h")


def get_include() -> str:
    """The folder holding fastcheck's C headers, for building other extensions.

    It holds ``fastcheck_capi.h`` (the C API: the kernel's entry points through a
    versioned capsule, with ``import_fastcheck()``) and ``fastcheck.h`` (the
    kernel's types and entry points, which it includes).  Cython extensions
    ``cimport fastcheck.capi`` and need this folder too.

    Returns
    -------
    str
        An absolute path; pass it as ``include_dirs=[fastcheck.get_include()]``.

    Raises
    ------
    RuntimeError
        When a header is missing (a source tree that was never built: run
        ``python setup.py build_ext --inplace``, which writes fastcheck.h there).

    Examples
    --------
    >>> import os, fastcheck
    >>> sorted(f for f in os.listdir(fastcheck.get_include()) if f.endswith(".h"))
    ['fastcheck.h', 'fastcheck_capi.h']
    """
    folder = os.path.join(os.path.dirname(os.path.abspath(__file__)), "include")
    missing = [h for h in _HEADERS if not os.path.exists(os.path.join(folder, h))]
    if missing:
        raise RuntimeError(
            f"fastcheck's C headers {missing} are missing from {folder}. In a source "
            "tree, build first (python setup.py build_ext --inplace copies "
            "csrc/fastcheck.h there); otherwise reinstall fastcheck")
    return folder
