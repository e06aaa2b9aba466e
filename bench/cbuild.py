"""Build and load ``bench/cfloor.c`` (the C-callback floor) with ctypes.

The shared library is compiled with the system C compiler into
``bench/_build/`` under a name derived from a hash of the source and the
compile command, so an edit to ``cfloor.c`` (or to the flags) triggers a
rebuild and an unchanged source is compiled once.

Example
-------
>>> from cbuild import build_cfloor
>>> lib = build_cfloor()
>>> lib.central_loop  # doctest: +SKIP
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "cfloor.c"
BUILD_DIR = HERE / "_build"

# -O2 as a typical release build; no -ffast-math, which would let the compiler
# reassociate the loss's sum and make it a different function from numpy's.
CFLAGS = ["-O2", "-std=c99", "-shared", "-fPIC"]

# The loss callback type: int loss(double *theta, ptrdiff_t n, double *out, void *ud).
# ptrdiff_t is the pointer-sized signed integer, i.e. ctypes.c_ssize_t.
LOSS_FN = ctypes.CFUNCTYPE(
    ctypes.c_int,
    ctypes.POINTER(ctypes.c_double),
    ctypes.c_ssize_t,
    ctypes.POINTER(ctypes.c_double),
    ctypes.c_void_p,
)

_cache: ctypes.CDLL | None = None


class BuildError(RuntimeError):
    """The C compiler is missing or failed on ``cfloor.c``."""


def _compiler() -> list[str]:
    """Return the compiler command: ``$CC`` if set, else ``cc``."""
    return shlex.split(os.environ.get("CC", "cc"))


def _declare(lib: ctypes.CDLL) -> ctypes.CDLL:
    """Set argument and return types, so ctypes converts and checks calls."""
    dptr = ctypes.POINTER(ctypes.c_double)
    lib.quad_loss.argtypes = [dptr, ctypes.c_ssize_t, dptr, ctypes.c_void_p]
    lib.quad_loss.restype = ctypes.c_int
    # The loss is passed as a raw address (c_void_p) of the C function, so the
    # loop calls C directly and never bounces through a Python callback.
    lib.central_loop.argtypes = [
        ctypes.c_void_p, dptr, ctypes.c_ssize_t, ctypes.c_double,
        ctypes.c_void_p, dptr, dptr,
    ]
    lib.central_loop.restype = ctypes.c_int
    lib.central_loop_subset.argtypes = [
        ctypes.c_void_p, dptr, ctypes.c_ssize_t, ctypes.POINTER(ctypes.c_ssize_t),
        ctypes.c_ssize_t, ctypes.c_double, ctypes.c_void_p, dptr, dptr,
    ]
    lib.central_loop_subset.restype = ctypes.c_int
    return lib


def build_cfloor(force: bool = False, verbose: bool = False) -> ctypes.CDLL:
    """Compile ``cfloor.c`` if needed and return it loaded with ctypes.

    Parameters
    ----------
    force : bool, optional
        Recompile even when a library for this source and command exists.
    verbose : bool, optional
        Print the compile command.

    Returns
    -------
    ctypes.CDLL
        The library with ``quad_loss``, ``central_loop`` and
        ``central_loop_subset`` declared. ``ctypes.cast(lib.quad_loss,
        ctypes.c_void_p)`` is the function pointer to pass to the loops.

    Raises
    ------
    BuildError
        If no compiler is found or compilation fails.
    """
    global _cache
    if _cache is not None and not force:
        return _cache

    cc = _compiler()
    src = SOURCE.read_bytes()
    key = hashlib.sha256(src + " ".join(cc + CFLAGS).encode()).hexdigest()[:16]
    BUILD_DIR.mkdir(exist_ok=True)
    target = BUILD_DIR / f"cfloor-{key}.so"

    if force or not target.exists():
        # Compile to a temporary name and rename: two benchmark processes
        # building at once never load a half-written library.
        fd, tmp = tempfile.mkstemp(suffix=".so", dir=BUILD_DIR)
        os.close(fd)
        cmd = cc + CFLAGS + [str(SOURCE), "-o", tmp]
        if verbose:
            print(" ".join(cmd), file=sys.stderr)
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True)
        except FileNotFoundError as exc:
            os.unlink(tmp)
            raise BuildError(f"C compiler not found: {cc[0]!r} (set $CC)") from exc
        if proc.returncode != 0:
            os.unlink(tmp)
            raise BuildError(f"compiling cfloor.c failed:\n{' '.join(cmd)}\n{proc.stderr}")
        os.replace(tmp, target)

    _cache = _declare(ctypes.CDLL(str(target)))
    return _cache


if __name__ == "__main__":
    lib = build_cfloor(force="--force" in sys.argv, verbose=True)
    print(f"loaded {lib._name}")
