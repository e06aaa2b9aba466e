"""threads=: C losses declared thread-safe, split across threads, same bits."""

from __future__ import annotations

import numpy as np
import pytest
from lowlevel_support import quad_grad, quad_py, requires_cc, sample_theta

import fastcheck
from fastcheck import CLoss, LossError, _kernel
from fastcheck._evaluate import run_kernel
from fastcheck._params import as_layout

pytestmark = [requires_cc,
              pytest.mark.skipif(not _kernel.threads_available(), reason="built without threads")]


def _raw_fields(raw):
    return {k: getattr(raw, k) for k in ("center", "plus", "minus", "plus2", "minus2", "step")}


@pytest.mark.parametrize("method", ["central", "forward", "central4"])
@pytest.mark.parametrize(("name", "dtype"), [("quad_status_f64", np.float64),
                                             ("quad_value_f32", np.float32)])
@pytest.mark.parametrize("with_indices", [False, True], ids=["all", "indices"])
def test_raw_evaluations_bitwise_identical(lib, method, name, dtype, with_indices):
    theta = sample_theta(101, dtype)
    before = theta.copy()
    indices = np.array([100, 3, 57, 4, 0, 99, 58], dtype=np.intp) if with_indices else None
    layout = as_layout(theta)
    serial = run_kernel(CLoss(getattr(lib, name)), layout, method, indices=indices)
    loss = CLoss(getattr(lib, name), thread_safe=True)
    for threads in (2, 3):
        threaded = run_kernel(loss, layout, method, indices=indices, threads=threads)
        for key, value in _raw_fields(serial).items():
            other = _raw_fields(threaded)[key]
            if value is None:
                assert other is None
            else:
                assert np.array_equal(value, other), key
        assert threaded.calls == serial.calls
    assert theta.tobytes() == before.tobytes()


def test_numerical_grad_bitwise_identical(lib):
    theta = sample_theta(257)
    loss = CLoss(lib.quad_status_f64, thread_safe=True)
    one = fastcheck.numerical_grad(loss, theta)
    np.testing.assert_array_equal(one, fastcheck.numerical_grad(loss, theta, threads=2))
    np.testing.assert_array_equal(one, fastcheck.numerical_grad(quad_py, theta))
    np.testing.assert_allclose(one, quad_grad(theta), rtol=1e-8, atol=1e-8)


def test_more_threads_than_components(lib):
    theta = np.array([0.75])
    loss = CLoss(lib.quad_value_f64, thread_safe=True)
    np.testing.assert_array_equal(fastcheck.numerical_grad(loss, theta, threads=4),
                                  fastcheck.numerical_grad(loss, theta))


def test_shared_user_data(lib):
    theta = sample_theta(64)
    weights = np.linspace(0.5, 1.5, 64)
    loss = CLoss(lib.weighted_f64, weights, thread_safe=True)
    np.testing.assert_array_equal(fastcheck.numerical_grad(loss, theta, threads=2),
                                  fastcheck.numerical_grad(loss, theta))


def test_failure_reports_the_earliest_component(lib):
    theta = sample_theta(60)
    before = theta.copy()
    # fails when component 45 is perturbed: in the second thread's half
    spec = np.array([45, theta[45], 8], dtype=np.float64)
    loss = CLoss(lib.failing_f64, spec, thread_safe=True)
    with pytest.raises(LossError, match=r"status 8 at component 45 \(theta\[45\]\)"):
        fastcheck.numerical_grad(loss, theta, threads=2)
    assert theta.tobytes() == before.tobytes()


@pytest.mark.parametrize(("threads", "error", "match"), [
    pytest.param(0, ValueError, r"threads must be >= 1, got 0", id="zero"),
    pytest.param(-2, ValueError, r"threads must be >= 1, got -2", id="negative"),
    pytest.param(1.5, TypeError, r"threads must be an int >= 1, got float", id="float"),
    pytest.param("2", TypeError, r"threads must be an int >= 1, got str", id="str"),
    pytest.param(True, TypeError, r"threads must be an int >= 1, got bool", id="bool"),
    pytest.param(None, TypeError, r"threads must be an int >= 1, got NoneType", id="none"),
    pytest.param(10**6, ValueError, r"too many", id="huge"),
])
def test_bad_threads(lib, threads, error, match):
    loss = CLoss(lib.quad_status_f64, thread_safe=True)
    with pytest.raises(error, match=match):
        fastcheck.numerical_grad(loss, np.ones(3), threads=threads)


def test_numpy_integer_threads(lib):
    loss = CLoss(lib.quad_status_f64, thread_safe=True)
    theta = sample_theta(8)
    np.testing.assert_array_equal(fastcheck.numerical_grad(loss, theta, threads=np.int64(2)),
                                  fastcheck.numerical_grad(loss, theta))


def test_python_loss_refuses_threads():
    theta = np.ones(4)
    before = theta.copy()
    with pytest.raises(ValueError, match=r"threads=2 needs a loss written in C.*GIL"):
        fastcheck.numerical_grad(lambda t: float(t @ t), theta, threads=2)
    assert theta.tobytes() == before.tobytes()


def test_c_loss_must_be_declared_thread_safe(lib):
    from scipy import LowLevelCallable

    with pytest.raises(ValueError, match=r"thread_safe=True"):
        fastcheck.numerical_grad(LowLevelCallable(lib.quad_status_f64), np.ones(3),
                                 threads=2)
    with pytest.raises(ValueError, match=r"thread_safe=True"):
        fastcheck.numerical_grad(CLoss(lib.quad_status_f64), np.ones(3), threads=2)
