"""Difference methods: richardson, central4, complex step, and float16 behaviour.

The 53 cases of the correctness suite are rerun with central4 and richardson in
test_correctness.py; complex step needs losses that carry complex numbers (no
float(), abs or comparisons on the parameters), so it has its own list here.
"""

from __future__ import annotations

import numpy as np
import pytest

import fastcheck
import fastcheck._evaluate as evaluate
import fastcheck._raw as raw
from fastcheck import ComplexStepError

U64 = 2.0**-53


# ------------------------------------------------------------------ complex-safe cases
def _rng(seed):
    return np.random.default_rng(seed)


def cube(dtype=np.float64):
    t = _rng(1).uniform(-2, 2, 10).astype(dtype)
    return (lambda x: np.sum(x**3)), (lambda x: 3 * x**2), t


def polynomial():
    def loss(t):
        t0, t1, t2, t3 = t
        return t0**2 * t1 - 3 * t1 * t2**3 + t0 * t3 + t3**4 - 2 * t0 * t1 * t2 + 5

    def grad(t):
        t0, t1, t2, t3 = t
        return np.array([2 * t0 * t1 + t3 - 2 * t1 * t2, t0**2 - 3 * t2**3 - 2 * t0 * t2,
                         -9 * t1 * t2**2 - 2 * t0 * t1, t0 + 4 * t3**3])

    return loss, grad, _rng(2).uniform(-1.5, 1.5, 4)


def quadratic_form(bug=False):
    A = _rng(3).standard_normal((15, 15))
    grad = (lambda x: 2 * A @ x) if bug else (lambda x: A @ x + A.T @ x)
    return (lambda x: x @ A @ x), grad, _rng(4).standard_normal(15)


def tanh_mlp(bug=None, dtype=np.float64):
    r = _rng(5)
    X, Y = r.standard_normal((16, 5)).astype(dtype), r.standard_normal((16, 2)).astype(dtype)
    params = {"W1": (r.standard_normal((8, 5)) / 2).astype(dtype),
              "b1": (0.1 * r.standard_normal(8)).astype(dtype),
              "W2": (r.standard_normal((2, 8)) / 3).astype(dtype),
              "b2": (0.1 * r.standard_normal(2)).astype(dtype)}

    def loss(p):
        A = np.tanh(X @ p["W1"].T + p["b1"])
        return 0.5 * np.sum((A @ p["W2"].T + p["b2"] - Y) ** 2) / 16

    def grad(p):
        A = np.tanh(X @ p["W1"].T + p["b1"])
        dZ2 = (A @ p["W2"].T + p["b2"] - Y) / 16
        dZ1 = (dZ2 @ p["W2"]) * (1 - A**2)
        g = {"W1": dZ1.T @ X, "b1": dZ1.sum(0), "W2": dZ2.T @ A, "b2": dZ2.sum(0)}
        if bug == "W2":
            g["W2"] = 2 * g["W2"]
        return g

    return loss, grad, params


def sin_exp():
    c = _rng(6).uniform(-1, 1, 12)

    def loss(t):
        return np.sum(np.sin(np.exp(0.5 * t))) + np.exp(0.3 * np.sum(c * np.sin(t)))

    def grad(t):
        e = np.exp(0.5 * t)
        return 0.5 * e * np.cos(e) + np.exp(0.3 * np.sum(c * np.sin(t))) * 0.3 * c * np.cos(t)

    return loss, grad, 0.8 * _rng(7).standard_normal(12)


def logsumexp_large():
    # max() of complex numbers compares real parts first; J is invariant to the shift
    def loss(t):
        m = np.max(t)
        return m + np.log(np.sum(np.exp(t - m)))

    def grad(t):
        e = np.exp(t - np.max(t))
        return e / e.sum()

    return loss, grad, 1e3 + 3 * _rng(8).standard_normal(30)


def softmax_xent(bug=False):
    r = _rng(9)
    X, labels = r.standard_normal((20, 6)), r.integers(0, 4, 20)
    Y = np.eye(4)[labels]
    params = {"W": 0.5 * r.standard_normal((4, 6)), "b": 0.1 * r.standard_normal(4)}

    def loss(p):
        Z = X @ p["W"].T + p["b"]
        Z = Z - Z.max(axis=1, keepdims=True)
        return -np.sum(Y * (Z - np.log(np.exp(Z).sum(axis=1, keepdims=True)))) / 20

    def grad(p):
        Z = X @ p["W"].T + p["b"]
        E = np.exp(Z - Z.max(axis=1, keepdims=True))
        dZ = E / E.sum(axis=1, keepdims=True) - Y
        return {"W": dZ.T @ X / 20, "b": dZ.sum(0) if bug else dZ.sum(0) / 20}

    return loss, grad, params


def rosenbrock(bug=False):
    def loss(t):
        return np.sum(100 * (t[1:] - t[:-1] ** 2) ** 2 + (1 - t[:-1]) ** 2)

    def grad(t):
        g = np.zeros_like(t)
        d = t[1:] - t[:-1] ** 2
        g[:-1] += -400 * t[:-1] * d - 2 * (1 - t[:-1])
        g[1:] += (300 if bug else 200) * d
        return g

    return loss, grad, _rng(10).uniform(-1.5, 1.5, 8)


COMPLEX_CASES = {
    "cube": (cube, "pass", ()),
    "cube_f32": (lambda: cube(np.float32), "pass", ()),
    "polynomial": (polynomial, "pass", ()),
    "quadratic_form": (quadratic_form, "pass", ()),
    "quadratic_form_symmetric_assumption": (lambda: quadratic_form(True), "fail", ("theta",)),
    "tanh_mlp": (tanh_mlp, "pass", ()),
    "tanh_mlp_f32": (lambda: tanh_mlp(dtype=np.float32), "pass", ()),
    "tanh_mlp_factor2_W2": (lambda: tanh_mlp("W2"), "fail", ("W2",)),
    "sin_exp": (sin_exp, "pass", ()),
    "logsumexp_large": (logsumexp_large, "pass", ()),
    "softmax_xent": (softmax_xent, "pass", ()),
    "softmax_db_missing_1_over_m": (lambda: softmax_xent(True), "fail", ("b",)),
    "rosenbrock_wrong_coefficient": (lambda: rosenbrock(True), "fail", ("theta",)),
}


@pytest.mark.parametrize("name", list(COMPLEX_CASES))
@pytest.mark.parametrize("method", ["complex", "central", "central4", "richardson"])
def test_complex_safe_cases(name, method):
    make, expected, wrong = COMPLEX_CASES[name]
    loss, grad, params = make()
    result = fastcheck.check_grad(loss if method == "complex" else (lambda p: loss(p).real),
                                  grad, params, method=method)
    assert result.passed == (expected == "pass"), result.report()
    assert result.n_kinks == 0
    if expected == "fail":
        blocks = {n.split("[")[0] for n in result.layout.names_of(result.indices("wrong"))}
        assert blocks == set(wrong)


def test_complex_step_is_exact_to_rounding():
    loss, grad, params = tanh_mlp()
    g = fastcheck.numerical_grad(loss, params, method="complex")
    exact = grad(params)
    for k in exact:
        assert np.allclose(g[k], exact[k], rtol=1e-13, atol=1e-16)
    result = fastcheck.check_grad(loss, grad, params, method="complex")
    assert result.relative_error < 1e-14
    assert result.evaluations == sum(a.size for a in params.values()) + 3  # no J(theta)


def test_complex_copies_are_made_once(monkeypatch):
    calls, seen = [], set()
    original = raw._complex_twin

    def spy(layout):
        calls.append(1)
        return original(layout)

    monkeypatch.setattr(raw, "_complex_twin", spy)
    loss, grad, params = tanh_mlp()

    def watching(p):
        if np.iscomplexobj(p["W1"]):
            seen.add(id(p["W1"]))
            assert p["W1"].dtype == np.complex128
        return loss(p)

    before = {k: v.copy() for k, v in params.items()}
    fastcheck.check_grad(watching, grad, params, method="complex")
    assert len(calls) == 1 and len(seen) == 1  # one complex copy for all components
    assert all(params[k].tobytes() == before[k].tobytes() for k in params)


def test_complex_step_on_float32_uses_complex64():
    dtypes = set()
    loss, grad, t = cube(np.float32)

    def watching(x):
        dtypes.add(x.dtype)
        return loss(x)

    result = fastcheck.check_grad(watching, grad, t, method="complex")
    assert result.passed
    assert np.dtype(np.complex64) in dtypes


def test_loss_that_raises_on_complex_input_names_the_method():
    def loss(t):
        return np.sum(np.logaddexp(0, t))  # softplus: a ufunc without complex loops

    theta = np.array([0.1, 0.2, 0.3])
    before = theta.copy()
    with pytest.raises(ComplexStepError) as info:
        fastcheck.check_grad(loss, lambda t: 1 / (1 + np.exp(-t)), theta, method="complex")
    message = str(info.value)
    assert "method='complex'" in message and "accepts complex parameters" in message
    assert isinstance(info.value, TypeError)
    assert isinstance(info.value.__cause__, TypeError)
    assert str(info.value.__cause__) in message
    assert theta.tobytes() == before.tobytes()
    with pytest.raises(ComplexStepError, match="method='complex'"):
        fastcheck.numerical_grad(loss, theta, method="complex")


def test_loss_that_raises_a_value_error_on_complex_input():
    def loss(t):
        if np.iscomplexobj(t):
            raise ValueError("complex values are not supported here")
        return float(np.sum(t**2))

    with pytest.raises(ComplexStepError) as info:
        fastcheck.check_grad(loss, lambda t: 2 * t, np.ones(3), method="complex")
    assert isinstance(info.value.__cause__, ValueError)
    assert "complex values are not supported here" in str(info.value)


def test_loss_that_drops_the_imaginary_part_names_the_method():
    def loss(t):
        return np.sum(np.real(t) ** 2)  # returns a real value for complex input

    with pytest.raises(ComplexStepError, match=r"method='complex'.*real value"):
        fastcheck.check_grad(loss, lambda t: 2 * t, np.ones(3), method="complex")


def test_other_methods_do_not_wrap_the_loss_errors():
    def loss(t):
        raise KeyError("boom")

    with pytest.raises(KeyError):
        fastcheck.check_grad(loss, lambda t: t, np.ones(2), method="central")


# -------------------------------------------------------------------- richardson
def test_richardson_is_four_thirds_of_the_half_step_minus_a_third_of_the_step():
    # steps that are exact powers of two, at a point where they are represented exactly
    theta = np.array([0.75, -0.375, 1.5])

    def loss(t):
        return float(np.sum(np.sin(t) * np.exp(0.3 * t)))

    h = 2.0**-8
    d1 = fastcheck.numerical_grad(loss, theta, eps=h)
    d2 = fastcheck.numerical_grad(loss, theta, eps=h / 2)
    r = fastcheck.numerical_grad(loss, theta, eps=h, method="richardson")
    assert np.allclose(r, (4 * d2 - d1) / 3, rtol=1e-14, atol=0)


def test_richardson_is_fourth_order():
    theta = np.array([0.4, -0.7])

    def loss(t):
        return float(np.sum(np.exp(t) * np.cos(t)))

    exact = np.exp(theta) * (np.cos(theta) - np.sin(theta))
    e1 = np.abs(fastcheck.numerical_grad(loss, theta, eps=0.1, method="richardson") - exact)
    e2 = np.abs(fastcheck.numerical_grad(loss, theta, eps=0.05, method="richardson") - exact)
    assert np.all((e1 / e2 > 12) & (e1 / e2 < 20))  # 2**4 = 16
    c1 = np.abs(fastcheck.numerical_grad(loss, theta, eps=0.1) - exact)
    assert np.all(e1 < c1 / 100)  # far better than central at the same step


def test_default_steps():
    assert evaluate.default_eps(np.float64, "richardson") == pytest.approx(U64 ** 0.2)
    assert evaluate.default_eps(np.float64, "richardson") == pytest.approx(6.4e-4, rel=0.01)
    assert evaluate.default_eps(np.float32, "central4") == pytest.approx((2.0**-24) ** 0.2)
    result = fastcheck.check_grad(lambda t: float(np.sum(t**3)), lambda t: 3 * t**2,
                                  np.array([0.5, 3.0]), method="richardson")
    assert result.eps.startswith("0.00064 × max(1, |θ_i|)")


def test_richardson_with_a_dict_of_mixed_dtypes():
    params = {"a": np.array([0.3, -1.1]), "b": np.array([2.0], dtype=np.float32)}

    def loss(p):
        return float(np.sum(p["a"] ** 3) + np.sum(np.sin(p["b"].astype(np.float64))))

    g = fastcheck.numerical_grad(loss, params, method="richardson")
    assert np.allclose(g["a"], 3 * params["a"] ** 2, rtol=1e-10)
    assert np.allclose(g["b"], np.cos(2.0), rtol=1e-4)
    result = fastcheck.check_grad(
        loss, {"a": 3 * params["a"] ** 2, "b": np.cos(params["b"])}, params, method="richardson")
    assert result.passed


def test_richardson_progress_counts_both_runs():
    seen = []
    theta = np.linspace(-1, 1, 200)
    fastcheck.check_grad(lambda t: float(np.sum(t**2)), lambda t: 2 * t, theta,
                         method="richardson", progress=lambda d, t: seen.append((d, t)))
    assert seen and all(total == 400 for _, total in seen)
    assert seen[-1][0] == 400 and [d for d, _ in seen] == sorted(d for d, _ in seen)


# ------------------------------------------------------------------------ float16
@pytest.mark.parametrize("method", ["central4", "richardson", "central"])
def test_float16_parameters_are_refused_with_a_clear_error(method):
    theta = np.ones(3, dtype=np.float16)
    for call in (lambda: fastcheck.check_grad(lambda t: 0.0, np.ones(3), theta, method=method),
                 lambda: fastcheck.numerical_grad(lambda t: 0.0, theta, method=method)):
        with pytest.raises(TypeError, match=r"float16.*float64 or float32"):
            call()


@pytest.mark.parametrize("method", ["central", "central4", "richardson"])
def test_loss_returning_float16_is_checked_at_float16_resolution(method):
    # documented behaviour: float64 parameters, a loss that returns np.float16 -> the
    # step and the tiers of float16, and a note
    theta = np.random.default_rng(0).standard_normal(6)
    result = fastcheck.check_grad(lambda t: np.float16(np.sum(np.sin(t))), np.cos, theta,
                                  method=method)
    assert result.passed
    assert result.tiers.dtype == "float16"
    assert "float16" in result.eps
    assert any("float16 values" in note for note in result.notes)


def _sin_loss(t):
    return float(np.sum(np.sin(t) * t))


def test_richardson_on_an_executor_matches_the_serial_run():
    from concurrent.futures import ThreadPoolExecutor

    theta = np.linspace(-1, 1, 40)
    serial = fastcheck.numerical_grad(_sin_loss, theta, method="richardson")
    with ThreadPoolExecutor(2) as executor:
        sharded = fastcheck.numerical_grad(_sin_loss, theta, method="richardson",
                                           executor=executor)
        result = fastcheck.check_grad(_sin_loss, lambda t: np.cos(t) * t + np.sin(t), theta,
                                      method="richardson", executor=executor)
    assert np.array_equal(serial, sharded)
    assert result.verdict == "excellent" and result.evaluations == 4 * 40 + 1 + 3
