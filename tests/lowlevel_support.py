"""Helpers for the C-loss and C API tests: build C code at test time, load it.

Everything is built once per test session, in pytest's temporary folders, and
shared between the test modules through the cache below.  Not a test module.
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import shutil
import subprocess
import sys
import sysconfig
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CC = os.environ.get("CC", "cc")
# The same bits as a Python loop that sums in the same order: no fused multiply-add.
STRICT_FP = [] if sys.platform == "win32" else ["-ffp-contract=off"]

_cache: dict[str, Any] = {}

requires_cc = pytest.mark.skipif(
    sys.platform == "win32" or shutil.which(CC) is None,
    reason="needs a C compiler (cc) to build test code")


# --------------------------------------------------------------- the quadratic
def quad_py(theta: np.ndarray) -> float:
    """The tests' quadratic in Python, summed in the C code's order (same bits)."""
    total = 0.0
    for i, x in enumerate(np.asarray(theta, dtype=np.float64).ravel().tolist()):
        total += 0.5 * (1.0 + i % 5) * x * x + (0.5 - (i % 3) * 0.25) * x
    return total


def quad_grad(theta: np.ndarray) -> np.ndarray:
    """Its analytic gradient."""
    i = np.arange(theta.size)
    return (1.0 + i % 5) * np.asarray(theta, dtype=np.float64) + (0.5 - (i % 3) * 0.25)


def sample_theta(n: int, dtype: Any = np.float64) -> np.ndarray:
    i = np.arange(n)
    return ((i % 7 - 3) * 0.25 + i * 0.001).astype(dtype)


# ------------------------------------------------------------------ building
def _quiet_build(function: Any) -> Any:
    """Run a setuptools/Cython build with its warnings and chatter kept out."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return function()


def compile_shared(source: Path, out_dir: Path, name: str) -> Path:
    """cc -O2 -shared -fPIC source -> out_dir/lib<name>.so"""
    target = out_dir / f"lib{name}{sysconfig.get_config_var('SHLIB_SUFFIX') or '.so'}"
    subprocess.run([CC, "-O2", "-shared", "-fPIC", *STRICT_FP, str(source), "-o", str(target)],
                   check=True, capture_output=True)
    return target


def load_module(name: str, path: str) -> Any:
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# A C consumer of the C API builds with these, as a careful third party would:
# the header must not make it warn (issue 13).
STRICT_WARNINGS = [] if sys.platform == "win32" else ["-Wall", "-Wextra", "-Werror"]


def build_extension(name: str, sources: list[Path], build_dir: Path, *,
                    define_macros: list[tuple[str, str]] | None = None,
                    cython: bool = False, extra_args: list[str] | None = None) -> str:
    """Build one extension module with setuptools into build_dir; return its path.

    Include folders: fastcheck.get_include() only, as for any consumer."""
    from setuptools import Distribution, Extension

    import fastcheck

    build_dir.mkdir(parents=True, exist_ok=True)
    local = []
    for source in sources:  # work on copies so generated files stay in build_dir
        copy = build_dir / source.name
        shutil.copyfile(source, copy)
        local.append(str(copy))
    extension = Extension(name, sources=local, include_dirs=[fastcheck.get_include()],
                          define_macros=define_macros or [],
                          extra_compile_args=STRICT_FP + (["-O1"] if cython else [])
                          + (extra_args or []))

    def build() -> str:
        extensions = [extension]
        if cython:
            from Cython.Build import cythonize
            extensions = cythonize(
                extensions, quiet=True, compiler_directives={"language_level": "3"},
                include_path=[str(Path(fastcheck.__file__).parent.parent)])
        dist = Distribution({"name": name, "ext_modules": extensions})
        command = dist.get_command_obj("build_ext")
        command.build_lib = str(build_dir)
        command.build_temp = str(build_dir / "temp")
        command.ensure_finalized()
        command.run()
        return command.get_ext_fullpath(name)

    cwd = os.getcwd()
    os.chdir(build_dir)  # cythonize writes next to its sources, relative paths
    try:
        return _quiet_build(build)
    finally:
        os.chdir(cwd)


# ------------------------------------------------------------- test libraries
class Losses:
    """tests/closs/losses.c loaded with ctypes, its functions typed."""

    def __init__(self, path: Path) -> None:
        self.path = path
        lib = ctypes.CDLL(str(path))
        dp, fp, vp = ctypes.POINTER(ctypes.c_double), ctypes.POINTER(ctypes.c_float), \
            ctypes.c_void_p
        n = ctypes.c_ssize_t
        typed = {
            "quad_status_f64": (ctypes.c_int, [dp, n, dp, vp]),
            "quad_value_f64": (ctypes.c_double, [dp, n, vp]),
            "quad_status_f32": (ctypes.c_int, [fp, n, dp, vp]),
            "quad_value_f32": (ctypes.c_double, [fp, n, vp]),
            "weighted_f64": (ctypes.c_int, [dp, n, dp, vp]),
            "failing_f64": (ctypes.c_int, [dp, n, dp, vp]),
            "slow_f64": (ctypes.c_int, [dp, n, dp, vp]),
            "writing_f64": (ctypes.c_int, [dp, n, dp, vp]),
        }
        for name, (restype, argtypes) in typed.items():
            function = getattr(lib, name)
            function.restype = restype
            function.argtypes = argtypes
            setattr(self, name, function)
        self.lib = lib

    def fresh(self, name: str) -> Any:
        """A new ctypes function object for `name` (to set other argtypes on)."""
        return getattr(ctypes.CDLL(str(self.path)), name)

    def python_twin(self, name: str) -> Any:
        """A Python loss that calls the same C function through ctypes: the same
        bits as the C-loss path, through the Python-callback path."""
        function = getattr(self, name)
        status_kind = function.restype is ctypes.c_int
        pointer_type = function.argtypes[0]

        def loss(theta: np.ndarray) -> float:
            out = ctypes.c_double()
            pointer = theta.ctypes.data_as(pointer_type)
            if status_kind:
                status = function(pointer, theta.size, ctypes.byref(out), None)
                assert status == 0
                return out.value
            return function(pointer, theta.size, None)

        return loss


def losses(tmp_path_factory: Any) -> Losses:
    if "losses" not in _cache:
        out = tmp_path_factory.mktemp("closs")
        _cache["losses"] = Losses(compile_shared(HERE / "closs" / "losses.c", out, "closs"))
    return _cache["losses"]


def c_consumer(tmp_path_factory: Any, name: str = "capi_consumer",
               target_minor: int | None = None) -> Any:
    """tests/capi_consumer/consumer.c built as module `name` (import deferred when
    target_minor is given: importing it is the test)."""
    key = f"consumer:{name}"
    if key not in _cache:
        macros = [("CONSUMER_NAME", name)]
        if target_minor is not None:
            macros.append(("FASTCHECK_CAPI_TARGET_MINOR", str(target_minor)))
        path = build_extension(name, [HERE / "capi_consumer" / "consumer.c"],
                               tmp_path_factory.mktemp(name), define_macros=macros,
                               extra_args=STRICT_WARNINGS)
        _cache[key] = path if target_minor is not None else load_module(name, path)
    return _cache[key]


def cy_consumer(tmp_path_factory: Any) -> Any:
    """tests/capi_consumer/cy_consumer.pyx, built with Cython against fastcheck.capi."""
    if "cy_consumer" not in _cache:
        path = build_extension("cy_consumer", [HERE / "capi_consumer" / "cy_consumer.pyx"],
                               tmp_path_factory.mktemp("cy_consumer"), cython=True)
        _cache["cy_consumer"] = load_module("cy_consumer", path)
    return _cache["cy_consumer"]
