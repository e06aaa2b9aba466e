"""check_vjp, check_jvp, check_hvp: correct layers pass, planted bugs are named."""

from __future__ import annotations

import json
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pytest

import fastcheck

RNG = np.random.default_rng(0)
X = RNG.standard_normal((8, 5))


def make_params(dtype=np.float64):
    rng = np.random.default_rng(1)
    return {"W": rng.standard_normal((5, 4)).astype(dtype),
            "b": rng.standard_normal(4).astype(dtype)}


# A tanh layer: forward, backward (vjp), forward-mode (jvp).
def layer(p):
    return np.tanh(X.astype(p["W"].dtype) @ p["W"] + p["b"])


def layer_vjp(p, u, bug_w=1.0, bug_b=1.0):
    y = layer(p)
    dz = u * (1 - y ** 2)
    return {"W": X.T.astype(y.dtype) @ dz * bug_w, "b": dz.sum(axis=0) * bug_b}


def layer_jvp(p, v, bug_b=1.0):
    y = layer(p)
    return (1 - y ** 2) * (X.astype(y.dtype) @ v["W"] + v["b"] * bug_b)


# J = 0.5 * sum(tanh(XW + b)**2): gradient and Hessian-vector product.
def energy_grad(p):
    y = layer(p)
    dz = y * (1 - y ** 2)
    return {"W": X.T @ dz, "b": dz.sum(axis=0)}


def energy_hvp(p, v, bug_w=1.0, bug_b=1.0):
    y = layer(p)
    s = 1 - y ** 2
    zdot = X @ v["W"] + v["b"]
    dd = s * (s - 2 * y ** 2) * zdot  # d/dz (y s) = s^2 - 2 y^2 s
    return {"W": X.T @ dd * bug_w, "b": dd.sum(axis=0) * bug_b}


def snapshot(p):
    return {k: v.tobytes() for k, v in p.items()}


# ------------------------------------------------------------------------------- vjp
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
def test_vjp_passes_a_correct_backward(dtype):
    params = make_params(dtype)
    before = snapshot(params)
    r = fastcheck.check_vjp(layer, layer_vjp, params)
    assert r.passed, r.report()
    assert r.mode == "vjp"
    assert len(r.extra["vectors"]) == 3
    assert all(v["verdict"] in ("excellent", "ok") for v in r.extra["vectors"])
    assert "3 seeded random cotangents" in r.notes[0]
    assert snapshot(params) == before
    r.to_json()  # plain data


@pytest.mark.parametrize(("bug", "name"), [({"bug_w": 1.001}, "W"), ({"bug_b": 0.5}, "b")])
def test_vjp_names_the_wrong_parameter(bug, name):
    params = make_params()
    r = fastcheck.check_vjp(layer, lambda p, u: layer_vjp(p, u, **bug), params)
    assert not r.passed
    wrong = {p.name for p in r.parameters if p.wrong}
    assert wrong == {name}
    assert r.worst(1)[0].name.startswith(name + "[")
    assert all(name in v["wrong_parameters"] for v in r.extra["vectors"])
    assert f"{name} is " in r.report()


def test_vjp_one_cotangent_and_seed_reproducible():
    params = make_params()
    a = fastcheck.check_vjp(layer, layer_vjp, params, n_vectors=1, seed=5)
    b = fastcheck.check_vjp(layer, layer_vjp, params, n_vectors=1, seed=5)
    assert np.array_equal(a.numerical_flat, b.numerical_flat)
    assert "along 1 seeded random cotangent (seed 5)" in a.notes[0]


def test_vjp_kink_is_not_a_bug():
    """A ReLU layer with one pre-activation exactly at 0: a kink, not a wrong gradient."""
    params = make_params()
    params["b"][0] = -(X @ params["W"])[2, 0]

    def relu_layer(p):
        return np.maximum(X @ p["W"] + p["b"], 0.0)

    def relu_vjp(p, u):
        dz = u * ((X @ p["W"] + p["b"]) > 0)
        return {"W": X.T @ dz, "b": dz.sum(axis=0)}

    r = fastcheck.check_vjp(relu_layer, relu_vjp, params)
    assert r.passed, r.report()
    assert r.n_kinks > 0 and "kink" in r.report()


def test_vjp_detects_dropout_left_on():
    params = make_params()
    rng = np.random.default_rng(0)

    def dropout_layer(p):
        return layer(p) * (rng.random((8, 4)) < 0.8) / 0.8

    r = fastcheck.check_vjp(dropout_layer, layer_vjp, params)
    assert r.verdict == "nondeterministic" and not r.passed
    assert json.loads(r.to_json(allow_nan=False))["extra"]["vectors"][0]["verdict"] == \
        "nondeterministic"


def test_vjp_with_dropout_made_deterministic_by_before_eval():
    """before_eval runs before every call, the backward's too: the same mask."""
    params = make_params()
    state = {}

    def reseed():
        state["rng"] = np.random.default_rng(7)

    def mask():
        return (state["rng"].random((8, 4)) < 0.8) / 0.8

    def dropout_layer(p):
        return layer(p) * mask()

    def dropout_vjp(p, u):
        return layer_vjp(p, u * mask())

    r = fastcheck.check_vjp(dropout_layer, dropout_vjp, params, before_eval=reseed)
    assert r.passed, r.report()


def _module_layer(p):
    return layer(p)


def test_vjp_with_executor_equals_serial():
    params = make_params()
    serial = fastcheck.check_vjp(_module_layer, layer_vjp, params)
    with ProcessPoolExecutor(2) as ex:
        sharded = fastcheck.check_vjp(_module_layer, layer_vjp, params, executor=ex)
    assert np.array_equal(serial.numerical_flat, sharded.numerical_flat)
    assert serial.verdict == sharded.verdict


def test_vjp_bad_input():
    params = make_params()
    before = snapshot(params)
    with pytest.raises(ValueError, match="n_vectors must be >= 1"):
        fastcheck.check_vjp(layer, layer_vjp, params, n_vectors=0)
    with pytest.raises(TypeError, match="n_vectors must be an integer"):
        fastcheck.check_vjp(layer, layer_vjp, params, n_vectors=2.0)
    with pytest.raises(TypeError, match="must be a dict with the keys of params"):
        fastcheck.check_vjp(layer, lambda p, u: [np.zeros((5, 4)), np.zeros(4)], params)
    with pytest.raises(ValueError, match=r"parameter 'b' has shape \(1, 4\)"):
        fastcheck.check_vjp(layer, lambda p, u: {"W": np.zeros((5, 4)),
                                                 "b": np.zeros((1, 4))}, params)
    with pytest.raises(ValueError, match=r"no entry for parameter\(s\) \['b'\]"):
        fastcheck.check_vjp(layer, lambda p, u: {"W": np.zeros((5, 4))}, params)
    with pytest.raises(TypeError, match="must return one numpy array"):
        fastcheck.check_vjp(lambda p: (layer(p), layer(p)), layer_vjp, params)
    with pytest.raises(TypeError, match="vjp must be callable"):
        fastcheck.check_vjp(layer, None, params)
    with pytest.raises(ValueError, match="unknown method"):
        fastcheck.check_vjp(layer, layer_vjp, params, method="nope")
    assert snapshot(params) == before


def test_vjp_that_modifies_params_is_refused():
    params = make_params()
    before = snapshot(params)

    def sneaky(p, u):
        p["W"][0, 0] += 1
        return layer_vjp(p, u)

    with pytest.raises(ValueError, match=r"modified the parameters \['W'\]"):
        fastcheck.check_vjp(layer, sneaky, params)
    assert snapshot(params) == before


# ------------------------------------------------------------------------------- jvp
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
def test_jvp_passes_a_correct_forward_mode(dtype):
    params = make_params(dtype)
    before = snapshot(params)
    r = fastcheck.check_jvp(layer, layer_jvp, params)
    assert r.passed, r.report()
    assert r.mode == "jvp" and r.n_wrong == 0
    # 3 tangents x 2 parameters x 4 calls of f, plus 2 at θ
    assert r.evaluations == 3 * 2 * 4 + 2
    assert snapshot(params) == before


def test_jvp_names_the_wrong_parameter():
    params = make_params()
    r = fastcheck.check_jvp(layer, lambda p, v: layer_jvp(p, v, bug_b=1.0 + 1e-4), params)
    assert not r.passed
    assert {p.name for p in r.parameters if p.wrong} == {"b"}
    assert r.worst(1)[0].name.startswith("b[")


def test_jvp_sees_the_effective_tangent():
    """Huge parameters: θ ± h v rounds; the comparison must not suffer from it."""
    params = {"W": make_params()["W"] * 1e6, "b": make_params()["b"]}
    r = fastcheck.check_jvp(layer, layer_jvp, params)
    assert r.passed, r.report()


def test_jvp_restores_params_when_f_raises():
    params = make_params()
    before = snapshot(params)
    calls = []

    def fails_later(p):
        calls.append(1)
        if len(calls) > 3:
            raise RuntimeError("boom")
        return layer(p)

    with pytest.raises(RuntimeError, match="boom"):
        fastcheck.check_jvp(fails_later, layer_jvp, params)
    assert snapshot(params) == before


def test_jvp_bad_input():
    params = make_params()
    with pytest.raises(ValueError, match=r"returned an array of shape \(8,\)"):
        fastcheck.check_jvp(layer, lambda p, v: np.zeros(8), params)
    with pytest.raises(ValueError, match="n_vectors must be >= 1"):
        fastcheck.check_jvp(layer, layer_jvp, params, n_vectors=0)
    with pytest.raises(TypeError, match="real floating-point"):
        fastcheck.check_jvp(lambda p: np.zeros(3, dtype=complex), layer_jvp, params)


def test_jvp_nondeterministic():
    rng = np.random.default_rng(0)
    r = fastcheck.check_jvp(lambda p: layer(p) + rng.random(), layer_jvp, make_params())
    assert r.verdict == "nondeterministic" and "not deterministic" in r.report()


# ------------------------------------------------------------------------------- hvp
def test_hvp_passes_a_correct_hessian_vector_product():
    params = make_params()
    before = snapshot(params)
    r = fastcheck.check_hvp(energy_grad, energy_hvp, params)
    assert r.passed, r.report()
    assert r.mode == "hvp" and [p.name for p in r.parameters] == ["W", "b"]
    assert snapshot(params) == before


@pytest.mark.parametrize(("bug", "name"), [({"bug_w": 1 - 1e-5}, "W"), ({"bug_b": 2.0}, "b")])
def test_hvp_names_the_wrong_rows(bug, name):
    r = fastcheck.check_hvp(energy_grad, lambda p, v: energy_hvp(p, v, **bug), make_params())
    assert not r.passed
    assert {p.name for p in r.parameters if p.wrong} == {name}


def test_hvp_on_a_flat_array():
    a = np.random.default_rng(2).standard_normal((6, 6))
    hess = a @ a.T
    theta = np.random.default_rng(3).standard_normal(6)
    r = fastcheck.check_hvp(lambda t: hess @ t + np.sin(t), lambda t, v: hess @ v
                            + np.cos(t) * v, theta, n_vectors=2)
    assert r.passed, r.report()
    bad = fastcheck.check_hvp(lambda t: hess @ t + np.sin(t), lambda t, v: hess @ v, theta)
    assert not bad.passed and bad.worst(1)[0].name.startswith("theta[")


def test_hvp_bad_input():
    params = make_params()
    with pytest.raises(TypeError, match=r"hvp.*must be a dict"):
        fastcheck.check_hvp(energy_grad, lambda p, v: np.zeros(24), params)
    with pytest.raises(ValueError, match="n_vectors must be >= 1"):
        fastcheck.check_hvp(energy_grad, energy_hvp, params, n_vectors=-1)
    with pytest.raises(ValueError, match="eps must be"):
        fastcheck.check_hvp(energy_grad, energy_hvp, params, eps=-1.0)
