"""Losses written in C: LowLevelCallables from ctypes, cffi and Cython, CLoss.

The C losses come from tests/closs/losses.c (ctypes, cffi) and
tests/capi_consumer/cy_consumer.pyx (Cython), built once per session.
"""

from __future__ import annotations

import _thread
import ctypes
import threading
import time

import numpy as np
import pytest
from lowlevel_support import (
    cy_consumer,
    quad_grad,
    quad_py,
    requires_cc,
    sample_theta,
)
from scipy import LowLevelCallable

import fastcheck
from fastcheck import CLoss, LossError
from fastcheck._evaluate import run_kernel
from fastcheck._lowlevel import SIGNATURES, normalize_signature
from fastcheck._params import as_layout

pytestmark = requires_cc


@pytest.fixture(scope="session")
def cy(tmp_path_factory):
    return cy_consumer(tmp_path_factory)


def _spec(component: int, value: float, status: int) -> np.ndarray:
    """user_data of failing_f64."""
    return np.array([component, value, status], dtype=np.float64)


# ------------------------------------------------------------ the signatures
SIGNATURE_CASES = [
    pytest.param("quad_status_f64", np.float64, id="int(double*,n,double*,void*)"),
    pytest.param("quad_value_f64", np.float64, id="double(double*,n,void*)"),
    pytest.param("quad_status_f32", np.float32, id="int(float*,n,double*,void*)"),
    pytest.param("quad_value_f32", np.float32, id="double(float*,n,void*)"),
]


@pytest.mark.parametrize(("name", "dtype"), SIGNATURE_CASES)
def test_each_signature_matches_the_python_path(lib, name, dtype):
    theta = sample_theta(23, dtype)
    before = theta.copy()
    c_grad = fastcheck.numerical_grad(LowLevelCallable(getattr(lib, name)), theta)
    py_grad = fastcheck.numerical_grad(lib.python_twin(name), theta)
    # the same function, through the C path and the Python path: the same bits
    np.testing.assert_array_equal(c_grad, py_grad)
    np.testing.assert_array_equal(theta, before)
    tol = 1e-8 if dtype == np.float64 else 1e-3
    np.testing.assert_allclose(c_grad, quad_grad(theta), rtol=tol, atol=tol)


def test_same_bits_as_a_python_loss(lib):
    theta = sample_theta(31)
    c_grad = fastcheck.numerical_grad(LowLevelCallable(lib.quad_status_f64), theta)
    np.testing.assert_array_equal(c_grad, fastcheck.numerical_grad(quad_py, theta))


@pytest.mark.parametrize("method", ["forward", "backward", "central4"])
def test_other_methods_match_the_python_path(lib, method):
    theta = sample_theta(17)
    c_grad = fastcheck.numerical_grad(lib.quad_status_f64, theta, method=method)
    py_grad = fastcheck.numerical_grad(lib.python_twin("quad_status_f64"), theta,
                                       method=method)
    np.testing.assert_array_equal(c_grad, py_grad)


@pytest.mark.parametrize("signature", [
    "int (double *, npy_intp, double *, void *)",
    "int (double const *, Py_ssize_t, double *, void *)",
    "int (const double*, intptr_t, double*, void*)",
    "int (double *, ssize_t, double *, void *)",
    "int (double *, ptrdiff_t, double *, void *)",
    "int (double *, long, double *, void *)",
    "int (double *, int64_t, double *, void *)",
])
def test_index_type_spellings_are_equivalent(lib, signature):
    loss = LowLevelCallable(lib.quad_status_f64, signature=signature)
    assert CLoss(loss).signature == "int (double *, npy_intp, double *, void *)"
    theta = sample_theta(5)
    np.testing.assert_array_equal(fastcheck.numerical_grad(loss, theta),
                                  fastcheck.numerical_grad(quad_py, theta))


@pytest.mark.parametrize("signature", [
    "int (double *, int, double *, void *)",
    "double (double *, long)",
    "float (float *, long, void *)",
    "int (double, long, double *, void *)",
    "void (double *, long, double *, void *)",
    "not a signature",
])
def test_wrong_signature_names_given_and_accepted(lib, signature):
    loss = LowLevelCallable(lib.quad_status_f64, signature=signature)
    with pytest.raises(ValueError, match="invalid signature") as info:
        fastcheck.numerical_grad(loss, sample_theta(3))
    message = str(info.value)
    assert f'"{signature}"' in message
    for accepted in SIGNATURES:
        assert accepted in message


def test_normalize_signature():
    assert normalize_signature("double(float const*,long,void*)") == \
        "double (float *, npy_intp, void *)"
    assert normalize_signature("int (double *, int, double *, void *)") == \
        "int (double *, int, double *, void *)"
    assert normalize_signature("garbage") is None


def test_plain_ctypes_function_is_taken_as_a_c_loss(lib):
    theta = sample_theta(9)
    np.testing.assert_array_equal(fastcheck.numerical_grad(lib.quad_status_f64, theta),
                                  fastcheck.numerical_grad(quad_py, theta))


def test_ctypes_function_without_argtypes_is_refused(lib):
    bare = lib.fresh("quad_status_f64")
    with pytest.raises(ValueError, match="argtypes"):
        CLoss(bare)


# ---------------------------------------------------------------- cffi, Cython
def test_cffi_function_pointers(lib):
    cffi = pytest.importorskip("cffi")
    ffi = cffi.FFI()
    ffi.cdef("""
        int quad_status_f64(const double *x, intptr_t n, double *out, void *user_data);
        double quad_value_f32(const float *x, ssize_t n, void *user_data);
        int failing_f64(const double *x, intptr_t n, double *out, void *user_data);
    """)
    clib = ffi.dlopen(str(lib.path))
    theta = sample_theta(12)
    grad = fastcheck.numerical_grad(LowLevelCallable(clib.quad_status_f64), theta)
    np.testing.assert_array_equal(grad, fastcheck.numerical_grad(quad_py, theta))

    theta32 = sample_theta(12, np.float32)
    grad32 = fastcheck.numerical_grad(LowLevelCallable(clib.quad_value_f32), theta32)
    np.testing.assert_array_equal(
        grad32, fastcheck.numerical_grad(lib.python_twin("quad_value_f32"), theta32))

    # user data as a cffi pointer, through a cast function pointer
    spec = ffi.new("double[3]", [4, float(theta[4]), 6])
    pointer = ffi.cast("int (*)(double *, intptr_t, double *, void *)", clib.failing_f64)
    loss = LowLevelCallable(pointer, ffi.cast("void *", spec))
    with pytest.raises(LossError, match=r"status 6 at component 4 \(theta\[4\]\)"):
        fastcheck.numerical_grad(loss, theta)


def test_cython_from_cython(cy):
    theta = sample_theta(15)
    loss = LowLevelCallable.from_cython(cy, "quad_cy")
    assert loss.signature == "int (double const *, Py_ssize_t, double *, void *)"
    np.testing.assert_array_equal(fastcheck.numerical_grad(loss, theta),
                                  fastcheck.numerical_grad(quad_py, theta))
    theta32 = sample_theta(15, np.float32)
    loss32 = LowLevelCallable.from_cython(cy, "quad_value_cy_f32")
    np.testing.assert_array_equal(
        fastcheck.numerical_grad(loss32, theta32),
        fastcheck.numerical_grad(lambda t: quad_py(t), theta32))


def test_cython_wrong_signature(cy):
    loss = LowLevelCallable.from_cython(cy, "wrong_cy")
    with pytest.raises(ValueError, match=r'"int \(double \*, int, double \*, void \*\)"'):
        fastcheck.numerical_grad(loss, sample_theta(3))


def test_exception_set_by_a_c_loss_propagates_unchanged(cy):
    theta = sample_theta(8)
    before = theta.copy()
    loss = LowLevelCallable.from_cython(cy, "raising_cy")
    with pytest.raises(ValueError, match="boom from a Cython loss"):
        fastcheck.numerical_grad(loss, theta)
    assert theta.tobytes() == before.tobytes()


# ------------------------------------------------------------------ failures
def test_failure_status_names_the_component_and_restores_theta(lib):
    theta = sample_theta(40)
    before = theta.copy()
    loss = CLoss(lib.failing_f64, user_data=_spec(17, theta[17], 3))
    with pytest.raises(LossError) as info:
        fastcheck.numerical_grad(loss, theta)
    assert str(info.value).startswith(
        "the C loss returned status 3 at component 17 (theta[17])")
    assert (info.value.status, info.value.component, info.value.name) == (3, 17, "theta[17]")
    assert isinstance(info.value, RuntimeError)
    assert theta.tobytes() == before.tobytes()


def test_failure_names_the_component_of_a_matrix(lib):
    theta = sample_theta(12).reshape(3, 4)
    loss = CLoss(lib.failing_f64, user_data=_spec(6, theta.flat[6], 9))
    with pytest.raises(LossError, match=r"component 6 \(theta\[1, 2\]\)"):
        fastcheck.numerical_grad(loss, theta)


def test_failure_at_theta_itself(lib):
    theta = sample_theta(5)
    loss = CLoss(lib.failing_f64, user_data=_spec(-1, 0.0, 4))
    with pytest.raises(LossError, match=r"status 4 at theta itself") as info:
        fastcheck.numerical_grad(loss, theta)
    assert info.value.component is None


def test_failure_in_a_call(lib):
    loss = CLoss(lib.failing_f64, user_data=_spec(-1, 0.0, 4))
    with pytest.raises(LossError, match="status 4 at theta"):
        loss(sample_theta(3))


def test_a_c_loss_is_callable(lib):
    theta = sample_theta(11)
    assert CLoss(lib.quad_status_f64)(theta) == quad_py(theta)
    assert CLoss(lib.quad_value_f32)(theta.astype(np.float32)) == \
        lib.python_twin("quad_value_f32")(theta.astype(np.float32))


# ------------------------------------------------------------------ bad input
def test_dict_of_parameters_is_refused(lib):
    params = {"W": np.ones(3), "b": np.zeros(2)}
    with pytest.raises(ValueError, match=r"one contiguous array.*dict of 2 arrays \(W, b\)"
                       r".*np.concatenate"):
        fastcheck.numerical_grad(LowLevelCallable(lib.quad_status_f64), params)
    with pytest.raises(ValueError, match="list of 1 array"):
        fastcheck.numerical_grad(lib.quad_status_f64, [np.ones(3)])


@pytest.mark.parametrize("make", [
    pytest.param(lambda: np.arange(10.0)[::2], id="strided"),
    pytest.param(lambda: np.asfortranarray(np.ones((3, 4))), id="fortran"),
    pytest.param(lambda: np.arange(10.0)[::-1], id="reversed"),
])
def test_non_contiguous_theta_is_refused(lib, make):
    theta = make()
    before = theta.copy()
    with pytest.raises(ValueError, match=r"not C-contiguous.*np.ascontiguousarray"):
        fastcheck.numerical_grad(LowLevelCallable(lib.quad_status_f64), theta)
    np.testing.assert_array_equal(theta, before)


def test_dtype_mismatch_is_refused(lib):
    with pytest.raises(TypeError, match=r"takes double \* \(float64\), but theta is float32"):
        fastcheck.numerical_grad(lib.quad_status_f64, np.ones(3, dtype=np.float32))
    with pytest.raises(TypeError, match=r"takes float \* \(float32\), but theta is float64"):
        fastcheck.numerical_grad(lib.quad_status_f32, np.ones(3))


def test_complex_step_is_refused(lib):
    with pytest.raises(ValueError, match=r"method='complex'.*C loss"):
        fastcheck.numerical_grad(lib.quad_status_f64, np.ones(3), method="complex")


@pytest.mark.parametrize(("user_data", "error", "match"), [
    pytest.param([1.0, 2.0], TypeError, "user_data must be .* got list", id="list"),
    pytest.param({"w": 1.0}, TypeError, "user_data must be .* got dict", id="dict"),
    pytest.param(3, TypeError, "user_data must be .* got int", id="int"),
    pytest.param("abc", TypeError, "user_data must be .* got str", id="str"),
    pytest.param(np.ones(6)[::2], ValueError, "not C-contiguous", id="strided-array"),
    pytest.param(np.array([object()]), TypeError, "Python objects", id="object-array"),
])
def test_user_data_of_the_wrong_kind(lib, user_data, error, match):
    with pytest.raises(error, match=match):
        CLoss(lib.weighted_f64, user_data=user_data)


def test_user_data_kinds_that_work(lib):
    theta = sample_theta(6)
    weights = np.linspace(1.0, 2.0, 6)
    expected = 2 * weights * theta
    for user_data in (weights, ctypes.c_void_p(weights.ctypes.data),
                      weights.ctypes.data_as(ctypes.POINTER(ctypes.c_double))):
        grad = fastcheck.numerical_grad(CLoss(lib.weighted_f64, user_data), theta)
        np.testing.assert_allclose(grad, expected, rtol=1e-8)
    # scipy's own user_data argument, and a scale through the quadratic's pointer
    scale = ctypes.c_double(3.0)
    loss = LowLevelCallable(lib.quad_status_f64, ctypes.cast(ctypes.pointer(scale),
                                                             ctypes.c_void_p))
    np.testing.assert_allclose(fastcheck.numerical_grad(loss, theta),
                               3 * quad_grad(theta), rtol=1e-8)


def test_rewrapping_keeps_the_user_data_alive(lib):
    import gc

    theta = sample_theta(6)
    inner = CLoss(lib.weighted_f64, np.linspace(1.0, 2.0, 6))
    outer = CLoss(inner, thread_safe=True)
    del inner
    gc.collect()
    np.testing.assert_allclose(fastcheck.numerical_grad(outer, theta, threads=2),
                               2 * np.linspace(1.0, 2.0, 6) * theta, rtol=1e-8)
    assert repr(outer) == "CLoss('int (double *, npy_intp, double *, void *)', " \
        "thread_safe=True)"


def test_not_a_loss():
    with pytest.raises(TypeError, match=r"loss must be callable.*LowLevelCallable"):
        fastcheck.numerical_grad(42, np.ones(3))
    with pytest.raises(TypeError, match="a C loss must be"):
        CLoss(lambda t: 0.0)
    with pytest.raises(TypeError, match="thread_safe"):
        CLoss(ctypes.CFUNCTYPE(ctypes.c_double)(lambda: 0.0), thread_safe="yes")


# ------------------------------------------------------- GIL, Ctrl-C, progress
def _slow(lib, seconds, thread_safe=False):
    delay = np.array([seconds])
    return CLoss(lib.slow_f64, user_data=delay, thread_safe=thread_safe)


def test_the_loop_runs_without_the_gil(lib):
    loss = _slow(lib, 0.002)  # 20 components, 2 evaluations each: >= 80 ms
    counted = []
    stop = threading.Event()

    def count():
        n = 0
        while not stop.is_set():
            n += 1
        counted.append(n)

    thread = threading.Thread(target=count)
    thread.start()
    try:
        fastcheck.numerical_grad(loss, sample_theta(20))
    finally:
        stop.set()
        thread.join()
    # With the GIL held for the whole run the counter could hardly move.
    assert counted[0] > 10_000


def test_few_gil_visits_per_run(lib):
    theta = sample_theta(3000)
    loss = CLoss(lib.quad_status_f64)
    started = time.perf_counter()
    raw = loss.run(as_layout(theta), 7, 1e-6, False)
    seconds = time.perf_counter() - started
    assert raw["status"] == 0
    # at most one visit per 50 ms, plus the final one
    assert 1 <= raw["gil_visits"] <= 2 + seconds / 0.05
    assert raw["calls"] == 1 + 2 * theta.size


@pytest.mark.parametrize("threads", [1, 2])
def test_ctrl_c_stops_a_c_loss_quickly(lib, threads):
    theta = sample_theta(400)  # 800 evaluations of 5 ms: 4 s (2 s on 2 threads)
    before = theta.copy()
    loss = _slow(lib, 0.005, thread_safe=True)
    timer = threading.Timer(0.2, _thread.interrupt_main)
    started = time.perf_counter()
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            fastcheck.numerical_grad(loss, theta, threads=threads)
    finally:
        timer.cancel()
    assert time.perf_counter() - started < 0.2 + 0.5
    assert theta.tobytes() == before.tobytes()


def test_progress_is_reported_and_can_stop(lib):
    theta = sample_theta(50)
    calls = []
    run_kernel(lib.quad_status_f64, as_layout(theta), progress=lambda d, t: calls.append((d, t)))
    assert calls[-1] == (50, 50)

    class Stop(Exception):
        pass

    def stop(done, total):
        raise Stop

    before = theta.copy()
    with pytest.raises(Stop):
        run_kernel(_slow(lib, 0.001), as_layout(theta), progress=stop)
    assert theta.tobytes() == before.tobytes()


# ---------------------------------------------------------------- reentrancy
def test_nested_checks(lib):
    """A Python loss that itself runs fastcheck on a C loss: J(x) = |grad q(x)|^2 / 2,
    whose gradient is A (A x + b) for the quadratic q."""
    inner = LowLevelCallable(lib.quad_status_f64)

    def outer(x):
        g = fastcheck.numerical_grad(inner, x.copy())
        return 0.5 * float(g @ g)

    theta = sample_theta(10)
    # J is quadratic, so a large outer step is exact and keeps the inner rounding
    # noise (divided by the outer step) small
    grad = fastcheck.numerical_grad(outer, theta, eps=1e-2)
    a = 1.0 + np.arange(10) % 5
    np.testing.assert_allclose(grad, a * quad_grad(theta), rtol=1e-6, atol=1e-7)

    def outer_in_place(x):  # the inner check perturbs the outer's own array
        g = fastcheck.numerical_grad(inner, x)
        return 0.5 * float(g @ g)

    np.testing.assert_array_equal(
        fastcheck.numerical_grad(outer_in_place, theta, eps=1e-2), grad)
