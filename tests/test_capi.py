"""The C API: headers, the capsule and its version checks, and consumers.

Consumers are built at test time, as third parties would build them: a C
extension (tests/capi_consumer/consumer.c) and a Cython one (cy_consumer.pyx,
through fastcheck/capi.pxd), both with include_dirs=[fastcheck.get_include()];
and the plain C example of csrc/examples, without Python.
"""

from __future__ import annotations

import ctypes
import filecmp
import os
import signal
import subprocess
import sys
import sysconfig
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from lowlevel_support import (
    CC,
    ROOT,
    STRICT_FP,
    STRICT_WARNINGS,
    build_extension,
    c_consumer,
    cy_consumer,
    load_module,
    quad_py,
    requires_cc,
    sample_theta,
)

import fastcheck
from fastcheck import _kernel

PACKAGE = Path(fastcheck.__file__).resolve().parent
CSRC = ROOT / "csrc"


@pytest.fixture(scope="session")
def consumer(tmp_path_factory):
    return c_consumer(tmp_path_factory)


# ------------------------------------------------------------------- headers
def test_get_include_holds_both_headers():
    folder = Path(fastcheck.get_include())
    assert folder.is_absolute()
    assert (folder / "fastcheck.h").is_file()
    assert (folder / "fastcheck_capi.h").is_file()
    assert folder == PACKAGE / "include"


@pytest.mark.skipif(not (CSRC / "fastcheck.h").exists(), reason="not a source tree")
@pytest.mark.parametrize("name", ["fastcheck.h", "kernel.c", "kernel_impl.h"])
def test_packaged_kernel_files_are_the_ones_in_csrc(name):
    # setup.py copies them; a stale copy would describe or build another kernel
    assert filecmp.cmp(CSRC / name, PACKAGE / "include" / name, shallow=False)


def test_public_pxd_and_headers_are_package_data():
    assert (PACKAGE / "capi.pxd").is_file()
    tomllib = pytest.importorskip("tomllib")
    pyproject = ROOT / "pyproject.toml"
    if not pyproject.exists():
        pytest.skip("not a source tree")
    setuptools = tomllib.loads(pyproject.read_text())["tool"]["setuptools"]
    assert "*.pxd" in setuptools["package-data"]["fastcheck"]
    assert "fastcheck.include" in setuptools["packages"]
    assert "*.h" in setuptools["package-data"]["fastcheck.include"]
    assert "*.c" in setuptools["package-data"]["fastcheck.include"]


def test_capsule_is_published():
    assert type(_kernel._C_API).__name__ == "PyCapsule"
    assert 'capsule object "fastcheck._kernel._C_API"' in repr(_kernel._C_API)
    major, minor = _kernel.CAPI_VERSION
    assert (major, minor) >= (1, 0)
    text = (PACKAGE / "include" / "fastcheck_capi.h").read_text()
    assert f"#define FASTCHECK_CAPI_VERSION_MAJOR {major}\n" in text
    assert f"#define FASTCHECK_CAPI_VERSION_MINOR {minor}\n" in text


# --------------------------------------------------------------- C consumer
@requires_cc
def test_c_consumer_gets_the_python_gradient(consumer):
    assert consumer.compiled_version() == _kernel.CAPI_VERSION
    theta = sample_theta(33)
    before = theta.copy()
    expected = fastcheck.numerical_grad(quad_py, theta)
    for threads in (1, 2):
        out = np.empty_like(theta)
        consumer.grad(theta, out, threads=threads)
        np.testing.assert_array_equal(out, expected)
    assert theta.tobytes() == before.tobytes()


@requires_cc
def test_c_consumer_nested_check(consumer):
    """A C loss that runs the kernel itself, through the capsule (reentrancy):
    J = |grad q|^2 / 2, whose gradient is A (A x + b)."""
    theta = sample_theta(9)
    out = np.empty_like(theta)
    consumer.grad(theta, out, nested=True)
    a = 1.0 + np.arange(9) % 5
    expected = a * (a * theta + (0.5 - (np.arange(9) % 3) * 0.25))
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4)


# ---------------------------------------------------- version and capsule checks
class _Table(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint), ("size", ctypes.c_size_t),
                ("entries", ctypes.c_void_p * 11)]


def _fake_capsule(version: int, size: int, name: bytes = b"fastcheck._kernel._C_API"):
    """A capsule like fastcheck's, holding a table with the given header; returns
    it with the objects it points into (keep them alive while it is used)."""
    table = _Table(version, size)
    name_buffer = ctypes.create_string_buffer(name)
    new = ctypes.pythonapi["PyCapsule_New"]
    new.restype = ctypes.py_object
    new.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p]
    return new(ctypes.addressof(table), name_buffer, None), (table, name_buffer)


def _reimport_with(consumer, monkeypatch, capsule):
    monkeypatch.setattr(_kernel, "_C_API", capsule)
    try:
        consumer.reimport()
    finally:
        monkeypatch.undo()


@requires_cc
def test_major_version_mismatch(consumer, monkeypatch):
    major, minor = _kernel.CAPI_VERSION
    capsule, _keep = _fake_capsule((major + 1) << 16, ctypes.sizeof(_Table))
    with pytest.raises(ImportError, match=r"version mismatch: this extension was compiled "
                       rf"against C API {major}\.{minor}, but the installed fastcheck "
                       rf"provides {major + 1}\.0.*Rebuild"):
        _reimport_with(consumer, monkeypatch, capsule)
    # the failed re-import left the module working with the real table
    out = np.empty(4)
    consumer.grad(sample_theta(4), out)
    np.testing.assert_array_equal(out, fastcheck.numerical_grad(quad_py, sample_theta(4)))


@requires_cc
def test_table_too_small(consumer, monkeypatch):
    major, minor = _kernel.CAPI_VERSION
    capsule, _keep = _fake_capsule(major << 16 | minor, 16)
    with pytest.raises(ImportError, match=r"table is too small \(16 bytes"):
        _reimport_with(consumer, monkeypatch, capsule)


@requires_cc
def test_capsule_missing_or_misnamed(consumer, monkeypatch):
    monkeypatch.delattr(_kernel, "_C_API")
    with pytest.raises(ImportError, match=r"cannot import the capsule "
                       r"fastcheck\._kernel\._C_API.*_C_API"):
        consumer.reimport()
    monkeypatch.undo()
    capsule, _keep = _fake_capsule(_kernel.CAPI_VERSION[0] << 16 | _kernel.CAPI_VERSION[1],
                                   ctypes.sizeof(_Table), name=b"other._C_API")
    with pytest.raises(ImportError, match="cannot import the capsule"):
        _reimport_with(consumer, monkeypatch, capsule)
    consumer.reimport()  # the real capsule is back


@requires_cc
def test_extension_needing_a_newer_minor_refuses_to_import(tmp_path_factory):
    major, minor = _kernel.CAPI_VERSION
    path = c_consumer(tmp_path_factory, "capi_consumer_future", target_minor=minor + 1)
    with pytest.raises(ImportError, match=rf"needs C API {major}\.{minor + 1} or newer, but "
                       rf"the installed fastcheck provides {major}\.{minor}\. Upgrade"):
        load_module("capi_consumer_future", path)


# ----------------------------------------------------------- Cython consumer
@requires_cc
def test_cython_consumer_through_the_pxd(tmp_path_factory):
    cy = cy_consumer(tmp_path_factory)
    theta = sample_theta(21)
    expected = fastcheck.numerical_grad(quad_py, theta)
    np.testing.assert_array_equal(np.array(cy.grad(theta)), expected)
    np.testing.assert_array_equal(np.array(cy.grad(theta, threads=2)), expected)


# ------------------------------------------------------- plain C, no Python
@requires_cc
@pytest.mark.skipif(not (CSRC / "examples").exists(), reason="not a source tree")
def test_plain_c_example_gets_the_python_gradient(tmp_path):
    program = tmp_path / "check_quadratic"
    subprocess.run([CC, "-std=c99", "-O2", *STRICT_FP, f"-I{CSRC}",
                    str(CSRC / "examples" / "check_quadratic.c"), str(CSRC / "kernel.c"),
                    "-o", str(program), "-lm", "-lpthread"], check=True, capture_output=True)
    run = subprocess.run([str(program), "40", "--print"], capture_output=True, text=True,
                         env={**os.environ, "LC_ALL": "C"})
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[0].startswith("n = 40, relative error = ") and "(excellent)" in lines[0]
    table = np.array([[float(v) for v in line.split()] for line in lines[1:]])
    np.testing.assert_array_equal(table[:, 0], np.arange(40))
    theta = table[:, 1].copy()
    np.testing.assert_array_equal(theta, sample_theta(40))
    np.testing.assert_array_equal(table[:, 2], fastcheck.numerical_grad(quad_py, theta))


# ------------------------------------------- validation, Ctrl-C, warning-free
@requires_cc
@pytest.mark.parametrize("eps", [0.0, -1e-6, 1e300, float("inf"), float("nan")])
def test_c_api_refuses_bad_eps_with_a_message(consumer, eps):
    status, message = consumer.check_eps(eps)
    assert status == 3  # FC_ERR_INVALID
    assert message is not None and "eps" in message


@requires_cc
def test_c_api_accepts_a_good_eps(consumer):
    assert consumer.check_eps(1e-6) == (0, None)


def _interrupt_after(delay: float) -> dict:
    """SIGINT to this process after `delay` seconds, from a timer thread; the
    time it was sent goes into the returned dict."""
    sent: dict = {}

    def fire() -> None:
        sent["at"] = time.monotonic()
        signal.raise_signal(signal.SIGINT)

    timer = threading.Timer(delay, fire)
    timer.daemon = True
    timer.start()
    sent["timer"] = timer
    return sent


@requires_cc
@pytest.mark.skipif(not hasattr(signal, "raise_signal") or sys.platform == "win32",
                    reason="needs POSIX signals")
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("which", ["c", "cython"])
def test_c_api_consumer_is_interrupted_by_sigint(tmp_path_factory, which, threads):
    module = c_consumer(tmp_path_factory) if which == "c" else cy_consumer(tmp_path_factory)
    theta = sample_theta(200)
    before = theta.copy()
    sent = _interrupt_after(0.3)
    started = time.monotonic()
    try:
        with pytest.raises(KeyboardInterrupt):
            module.slow_grad(theta, 0.005, threads)  # ~2 s without the interrupt
        latency = time.monotonic() - sent["at"]
    finally:
        sent["timer"].cancel()
    assert time.monotonic() - started < 1.5
    assert latency < 0.1, f"KeyboardInterrupt {latency * 1e3:.0f} ms after SIGINT"
    assert theta.tobytes() == before.tobytes()


@requires_cc
def test_c_api_consumer_runs_to_the_end_without_sigint(consumer):
    theta = sample_theta(6)
    grad = np.array(consumer.slow_grad(theta, 0.0005, 2))
    np.testing.assert_allclose(grad, fastcheck.numerical_grad(quad_py, theta), rtol=1e-6)


@requires_cc
@pytest.mark.parametrize("target_minor", [None, 0])
def test_header_included_for_its_types_only_is_warning_free(tmp_path, target_minor):
    """-Wunused-function (static import_fastcheck) and -Wtype-limits (unsigned < 0
    when targeting minor 0) used to break -Werror builds."""
    source = tmp_path / "types_only.c"
    source.write_text('#include "fastcheck_capi.h"\n'
                      "fc_index total(const fc_block_f64 *b) { return b->size; }\n")
    macro = [] if target_minor is None else [f"-DFASTCHECK_CAPI_TARGET_MINOR={target_minor}"]
    for body in ("", "int init(void) { return import_fastcheck(); }\n"):
        source.write_text(source.read_text() + body)
        done = subprocess.run(
            [CC, "-std=c99", "-Wall", "-Wextra", "-Werror", *macro, "-c", str(source),
             "-o", str(tmp_path / "types_only.o"), f"-I{fastcheck.get_include()}",
             f"-I{sysconfig.get_paths()['include']}"], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr


# ------------------------------------------------- the README's consumers, built
def _readme_block(language: str, first_line: str) -> str:
    """The fenced ```language block of README.md that starts with `first_line`."""
    text = (ROOT / "README.md").read_text()
    for block in text.split(f"```{language}\n")[1:]:
        body = block.split("```", 1)[0]
        if body.startswith(first_line):
            return body
    raise AssertionError(f"README.md has no {language} block starting {first_line!r}")


def _quadratic_grad(theta):
    return 2 * (np.arange(theta.size) + 1.0) * theta


@requires_cc
@pytest.mark.skipif(not (ROOT / "README.md").exists(), reason="not a source tree")
@pytest.mark.parametrize("language", ["c", "cython"])
def test_readme_consumers_build_and_compute_the_gradient(tmp_path, language):
    if language == "c":
        source = tmp_path / "mygrad.c"
        source.write_text(_readme_block("c", "#define PY_SSIZE_T_CLEAN"))
        path = build_extension("mygrad", [source], tmp_path / "build",
                               extra_args=STRICT_WARNINGS)
        module = load_module("mygrad", path)
    else:
        source = tmp_path / "mygrad_cy.pyx"
        source.write_text(_readme_block("cython", "# cython: language_level=3"))
        path = build_extension("mygrad_cy", [source], tmp_path / "build", cython=True)
        module = load_module("mygrad_cy", path)
    theta = sample_theta(30)
    before = theta.copy()
    for threads in (1, 2):
        grad = np.array(module.grad(theta, threads))
        np.testing.assert_allclose(grad, _quadratic_grad(theta), rtol=1e-8, atol=1e-8)
    assert theta.tobytes() == before.tobytes()


@requires_cc
@pytest.mark.skipif(not (CSRC / "examples").exists(), reason="not a source tree")
def test_plain_c_builds_from_get_include_alone(tmp_path):
    include = Path(fastcheck.get_include())
    program = tmp_path / "check_quadratic"
    subprocess.run([CC, "-std=c99", "-O2", "-Wall", "-Wextra", "-Werror", f"-I{include}",
                    str(CSRC / "examples" / "check_quadratic.c"), str(include / "kernel.c"),
                    "-o", str(program), "-lm", "-lpthread"], check=True, capture_output=True)
    run = subprocess.run([str(program), "50"], capture_output=True, text=True)
    assert run.returncode == 0 and "(excellent)" in run.stdout, run.stdout + run.stderr
