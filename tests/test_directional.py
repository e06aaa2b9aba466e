"""mode="directional": random-direction checks and localisation (issue 6)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import assert_bitwise, counting, snapshot

from fastcheck import check_grad, examples

# ----------------------------------------------------------------------------- models


class Quadratic:
    """J = sum 0.5 d_i theta_i**2 + c sin(sum theta): O(n), every component coupled.

    The gradient d_i theta_i + c cos(sum theta) is dense; ``planted`` adds errors.
    """

    def __init__(self, shapes, seed=0, dtype=np.float64, c=0.1, order="C"):
        rng = np.random.default_rng(seed)
        self.params = {k: np.asarray(rng.standard_normal(s), dtype=dtype, order=order)
                       for k, s in shapes.items()}
        self.d = {k: rng.uniform(0.5, 2.0, s).astype(dtype) for k, s in shapes.items()}
        self.c = c

    def loss(self, p):
        total = sum(float(np.sum(p[k].astype(np.float64))) for k in p)
        quad = sum(0.5 * float(np.sum(self.d[k] * p[k] * p[k], dtype=np.float64)) for k in p)
        return quad + self.c * np.sin(total)

    def grad(self, p):
        total = sum(float(np.sum(p[k].astype(np.float64))) for k in p)
        return {k: np.asarray(self.d[k] * p[k] + self.c * np.cos(total), dtype=np.float64)
                for k in p}


class TanhMLP:
    """A two-layer tanh network with squared error, computed in `dtype`."""

    def __init__(self, seed=0, dtype=np.float64, n_in=12, n_h=24, n_out=4, m=32):
        rng = np.random.default_rng(seed)
        self.X = rng.standard_normal((n_in, m)).astype(dtype)
        self.Y = rng.standard_normal((n_out, m)).astype(dtype)
        self.params = {
            "W1": (rng.standard_normal((n_h, n_in)) / np.sqrt(n_in)).astype(dtype),
            "b1": (0.1 * rng.standard_normal(n_h)).astype(dtype),
            "W2": (rng.standard_normal((n_out, n_h)) / np.sqrt(n_h)).astype(dtype),
            "b2": (0.1 * rng.standard_normal(n_out)).astype(dtype),
        }

    def _forward(self, p):
        H = np.tanh(p["W1"] @ self.X + p["b1"][:, None])
        return H, p["W2"] @ H + p["b2"][:, None]

    def loss(self, p):
        _, out = self._forward(p)
        m = self.X.shape[1]
        return float(0.5 / m * np.sum((out - self.Y) ** 2))

    def grad(self, p):
        H, out = self._forward(p)
        m = self.X.shape[1]
        dO = (out - self.Y) / m
        dZ = (p["W2"].T @ dO) * (1 - H * H)
        return {"W1": dZ @ self.X.T, "b1": dZ.sum(axis=1), "W2": dO @ H.T,
                "b2": dO.sum(axis=1)}


def wrong_names(result):
    return set(result.layout.names_of(result.indices("wrong")))


SHAPES = {"W1": (60, 50), "b1": (60,), "W2": (10, 60), "b2": (10,)}


# ------------------------------------------------------------------- no false alarms


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
def test_correct_gradient_passes_over_100_seeds(dtype):
    """No false alarm over 100 seeds of directions, on models of three kinds."""
    failures = []
    for seed in range(100):
        for model in (examples.demo_network(seed % 10, dtype), TanhMLP(seed % 7, dtype)):
            r = check_grad(model.loss, model.grad, model.params, mode="directional",
                           seed=seed)
            if not r.passed or r.n_wrong:
                failures.append((seed, type(model).__name__, r.verdict))
    for seed in range(0, 100, 4):
        model = Quadratic(SHAPES, seed % 5, dtype)
        r = check_grad(model.loss, model.grad, model.params, mode="directional", seed=seed)
        if not r.passed or r.n_wrong:
            failures.append((seed, "Quadratic", r.verdict))
    assert failures == []


def test_directional_costs_four_evaluations_per_block_when_correct():
    model = TanhMLP(0)
    loss = counting(model.loss)
    r = check_grad(loss, model.grad, model.params, mode="directional", seed=3)
    assert r.passed and r.mode == "directional" and r.method == "central"
    # 2 probes + 2 directions x 2 evaluations x 4 blocks + 1 final probe
    assert r.evaluations == loss.calls[0] == 2 + 16 + 1
    assert r.n_checked == 0 and r.status.size == sum(a.size for a in model.params.values())
    assert all(p.checked == 0 and p.verdict in ("excellent", "ok") for p in r.parameters)
    assert any("only" in n or "directional mode" in n for n in r.notes)
    assert set(r.extra["directional"]) == set(model.params)
    for block in r.extra["directional"].values():
        assert block["status"] == "pass" and block["directions"] == 2


# ------------------------------------------------------------------------ catching


def test_sparse_jacobian_error_is_caught():
    """The gradient is zero almost everywhere; the error sits where it is zero."""
    n = 50_000
    rng = np.random.default_rng(1)
    theta = rng.standard_normal(n)
    support = rng.choice(n, 5, replace=False)

    def loss(t):
        s = t[support]
        return float(np.sum(s ** 3 / 3 + s))

    g = np.zeros(n)
    g[support] = theta[support] ** 2 + 1
    wrong = int(np.setdiff1d(np.arange(n), support)[12345])
    g[wrong] = 1e-3  # the true derivative there is 0
    saved = theta.copy()
    r = check_grad(loss, g, theta, mode="directional", seed=0)
    assert not r.passed
    assert wrong_names(r) == {f"theta[{wrong}]"}
    assert r.worst(1)[0].index == wrong
    assert r.evaluations < 150
    assert theta.tobytes() == saved.tobytes()


def test_error_below_gradient_norm_is_caught():
    """A one-component error much smaller than |grad J| |v| (what a relative test of the
    directional derivative would need) is still seen."""
    model = Quadratic({"w": (200_000,)}, seed=2)
    g = model.grad(model.params)
    g["w"][77_777] += 1e-2   # |grad J| |v| is about 1e3 here
    r = check_grad(model.loss, g, model.params, mode="directional", seed=5)
    assert wrong_names(r) == {"w[77777]"}
    assert r.extra["directional"]["w"]["relative_error"] < 1e-4


def test_error_at_the_noise_of_one_component_is_located_and_said():
    """1e-3 is near the rounding noise of one component at the default step; the
    one-by-one check resolves it at larger steps, and the note names it."""
    model = Quadratic({"w": (200_000,)}, seed=2)
    g = model.grad(model.params)
    g["w"][77_777] += 1e-3
    r = check_grad(model.loss, g, model.params, mode="directional", seed=5)
    assert not r.passed and r.verdict == "suspicious"
    note = next(n for n in r.notes if n.startswith("w fails the directional test"))
    assert "w[77777]" in note
    assert wrong_names(r) == {"w[77777]"}


@pytest.mark.parametrize("seed", range(4))
def test_localisation_finds_errors_in_every_block(seed):
    model = Quadratic({**SHAPES, "scale": ()}, seed)
    g = model.grad(model.params)
    rng = np.random.default_rng(100 + seed)
    planted = set()
    for k, a in g.items():
        idx = np.unravel_index(rng.integers(a.size), a.shape)
        a[idx] += 0.05 * (1 + abs(a[idx]))
        planted.add(f"{k}[{', '.join(map(str, idx))}]" if a.shape else k)
    saved = snapshot(model.params)
    r = check_grad(model.loss, g, model.params, mode="directional", seed=seed)
    assert wrong_names(r) == planted
    assert r.verdict in ("suspicious", "wrong") and not r.passed
    assert {p.name for p in r.parameters if p.wrong} == set(g)
    assert r.extra["localisation"]["uncovered"] == []
    assert_bitwise(model.params, saved)


def test_localisation_in_a_network_float32():
    model = TanhMLP(3, np.float32, n_in=30, n_h=60)
    g = model.grad(model.params)
    planted = {("W1", (7, 11)), ("b1", (59,)), ("W2", (0, 0)), ("b2", (2,))}
    for k, idx in planted:
        g[k][idx] += 0.5 * abs(g[k][idx]) + 0.05
    r = check_grad(model.loss, g, model.params, mode="directional", seed=11)
    expected = {f"{k}[{', '.join(map(str, idx))}]" for k, idx in planted}
    assert wrong_names(r) == expected


def test_whole_block_wrong_is_reported_without_checking_it_all():
    model = Quadratic({"W1": (300, 200), "b1": (300,), "W2": (50, 300)}, seed=4)
    g = model.grad(model.params)
    g["W2"] *= 1.5
    loss = counting(model.loss)
    r = check_grad(loss, g, model.params, mode="directional", seed=0)
    assert r.verdict == "wrong" and not r.passed
    assert r.extra["localisation"]["throughout"] == ["W2"]
    note = next(n for n in r.notes if n.startswith("W2 is wrong throughout"))
    assert "sampled components are wrong" in note
    w2 = next(p for p in r.parameters if p.name == "W2")
    assert w2.verdict == "wrong" and 0 < w2.checked <= 20 and w2.wrong >= 5
    assert {p.name for p in r.parameters if p.wrong} == {"W2"}
    assert r.evaluations == loss.calls[0] < 150


def test_five_wrong_components_in_one_block():
    model = Quadratic({"W": (400, 250), "b": (400,)}, seed=6)
    g = model.grad(model.params)
    rng = np.random.default_rng(9)
    flat = rng.choice(g["W"].size, 5, replace=False)
    g["W"].reshape(-1)[flat] *= -1.0
    g["W"].reshape(-1)[flat] += 0.1
    r = check_grad(model.loss, g, model.params, mode="directional", seed=2)
    expected = {f"W[{i // 250}, {i % 250}]" for i in flat}
    assert wrong_names(r) == expected
    assert r.evaluations <= 400


def test_nonfinite_analytic_gradient():
    model = Quadratic({"W": (40, 30), "b": (40,)}, seed=0)
    g = model.grad(model.params)
    g["b"][3] = np.nan
    r = check_grad(model.loss, g, model.params, mode="directional", seed=0)
    assert r.verdict == "wrong"
    assert r.layout.names_of(r.indices("nonfinite gradient")) == ["b[3]"]


def test_kinks_in_a_relu_network_are_not_bugs():
    net = examples.relu_network(1)
    r = check_grad(net.loss, net.grad, net.params, mode="directional", seed=0)
    assert r.passed


# ------------------------------------------------------------------- budget, report


def test_budget_too_small_for_localisation_says_what_is_uncovered():
    model = Quadratic({"W": (500, 400), "b": (500,)}, seed=1)
    g = model.grad(model.params)
    g["W"][123, 45] += 1.0
    loss = counting(model.loss)
    r = check_grad(loss, g, model.params, mode="directional", seed=0, max_evals=30)
    assert r.evaluations == loss.calls[0] <= 30
    assert not r.passed
    uncovered = r.extra["localisation"]["uncovered"]
    assert uncovered and uncovered[0]["parameter"] == "W"
    assert any("max_evals" in n and "not localised" in n for n in r.notes)
    assert "max_evals=30 was not enough to finish" in r.notes[-1]


def test_max_evals_is_never_exceeded():
    model = Quadratic({"W": (300, 300), "b": (300,)}, seed=3)
    g = model.grad(model.params)
    g["W"] *= 1.0 + np.random.default_rng(0).uniform(-0.1, 0.1, g["W"].shape)
    for budget in (11, 12, 20, 45, 90):
        loss = counting(model.loss)
        r = check_grad(loss, g, model.params, mode="directional", seed=1, max_evals=budget)
        assert r.evaluations == loss.calls[0] <= budget
        assert not r.passed


def test_result_is_the_usual_result_object():
    model = Quadratic(SHAPES, 0)
    g = model.grad(model.params)
    g["W2"][3, 7] += 1.0
    r = check_grad(model.loss, g, model.params, mode="directional", seed=0)
    assert r.worst(1)[0].name == "W2[3, 7]" and r.worst(1)[0].status == "wrong"
    text = str(r)
    assert "directional" in text and "W2[3, 7]" in text
    assert all(c.status != "not checked" for c in r.worst(2))
    data = json.loads(r.to_json())
    assert data["mode"] == "directional" and data["evaluations"] == r.evaluations
    assert data["extra"]["localisation"]["found"] == ["W2[3, 7]"]
    assert data["extra"]["seed"] == 0
    numerical = r.numerical
    assert np.isnan(numerical["W1"]).all() and np.isfinite(numerical["W2"][3, 7])


def test_seed_makes_it_reproducible():
    model = Quadratic(SHAPES, 0)
    g = model.grad(model.params)
    g["b1"][5] += 0.3
    a = check_grad(model.loss, g, model.params, mode="directional", seed=42)
    b = check_grad(model.loss, g, model.params, mode="directional", seed=42)
    assert a.evaluations == b.evaluations
    assert a.extra["directional"] == b.extra["directional"]
    c = check_grad(model.loss, g, model.params, mode="directional")
    assert isinstance(c.extra["seed"], int) and wrong_names(c) == {"b1[5]"}


# ------------------------------------------------------------------- in place, safety


def test_strided_and_fortran_params_are_perturbed_in_place_and_restored():
    rng = np.random.default_rng(0)
    base = rng.standard_normal((80, 60))
    params = {"F": np.asfortranarray(rng.standard_normal((30, 20))),
              "S": base[::2, 1::3],            # a strided view
              "z": np.array([-0.0, 0.0, 1e-300, -1.5])}
    d = {k: rng.uniform(0.5, 2, v.shape) for k, v in params.items()}

    def loss(p):
        return sum(0.5 * float(np.sum(d[k] * p[k] ** 2)) for k in p)

    g = {k: d[k] * params[k] for k in params}
    g["S"][17, 5] += 0.5
    g["F"][29, 0] -= 0.5
    saved = snapshot(params)
    base_saved = base.copy()
    r = check_grad(loss, g, params, mode="directional", seed=0)
    assert wrong_names(r) == {"S[17, 5]", "F[29, 0]"}
    assert_bitwise(params, saved)
    assert base.tobytes() == base_saved.tobytes()


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
@pytest.mark.parametrize("fail_at", [3, 10, 25])
def test_exception_in_loss_restores_params_bitwise(error, fail_at):
    model = Quadratic(SHAPES, 0, dtype=np.float32)
    g = model.grad(model.params)
    g["W1"][1, 2] += 20.0   # well above the noise of a float32 loss of size 2e3
    saved = snapshot(model.params)
    calls = [0]

    def loss(p):
        calls[0] += 1
        if calls[0] == fail_at:
            raise error("boom")
        return model.loss(p)

    with pytest.raises(error, match="boom"):
        check_grad(loss, g, model.params, mode="directional", seed=0)
    assert_bitwise(model.params, saved)


def test_nondeterministic_loss_gets_no_verdict():
    net = examples.dropout_network(1)
    net.reseed(0)  # masks still change at every call; seeded so that the probes differ
    r = check_grad(net.loss, net.grad, net.params, mode="directional", seed=0)
    assert r.verdict == "nondeterministic" and not r.passed


def test_loss_that_modifies_its_params_is_invalid():
    model = Quadratic({"w": (100,)}, 0)
    saved = snapshot(model.params)
    calls = [0]

    def loss(p):
        calls[0] += 1
        if calls[0] == 5:
            p["w"][0] += 1.0
        return model.loss(p)

    r = check_grad(loss, model.grad(model.params), model.params, mode="directional", seed=0)
    assert r.verdict == "invalid"
    assert_bitwise(model.params, saved)


def test_loss_returning_float32_uses_its_resolution():
    model = Quadratic({"w": (500,)}, 0)

    def loss(p):
        return np.float32(model.loss(p))

    r = check_grad(loss, model.grad(model.params), model.params, mode="directional", seed=0)
    assert r.passed
    assert r.tiers.dtype == "float32"


def test_empty_parameter_is_skipped():
    params = {"a": np.ones(5), "e": np.zeros((0, 3)), "b": np.arange(3.0)}

    def loss(p):
        return float(np.sum(p["a"] ** 2) + np.sum(p["b"] ** 3))

    g = {"a": 2 * params["a"], "e": np.zeros((0, 3)), "b": 3 * params["b"] ** 2}
    loss = counting(loss)
    r = check_grad(loss, g, params, mode="directional", seed=0)
    assert r.passed and r.evaluations == loss.calls[0] == 2 + 8 + 1
    assert r.extra["directional"]["e"]["status"] == "empty"
    assert next(p for p in r.parameters if p.name == "e").verdict == "not checked"
    g["b"][1] += 1
    assert wrong_names(check_grad(loss, g, params, mode="directional", seed=0)) == {"b[1]"}
    r = check_grad(loss, g, params, mode="sample", k=3, seed=0)
    assert [p.checked for p in r.parameters] == [3, 0, 3]
