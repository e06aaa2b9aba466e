"""check_grad: verdict tiers, correct gradients, locating bugs, ranking, the report,
non-finite values, plain data, evaluation counts, and fastcheck.testing."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

import fastcheck
from fastcheck import check_grad, examples

DEMO_KEYS = ["W1", "b1", "W2", "b2", "W3", "b3"]

# ----------------------------------------------------------- smooth test problem

_RNG = np.random.default_rng(0)
_A = _RNG.standard_normal((6, 6))
_SPD = _A @ _A.T / 6 + np.eye(6)


def smooth_loss(p):
    A = _SPD.astype(p.dtype)
    return float(np.sum(np.sin(p)) + 0.5 * p @ A @ p + np.sum(np.exp(0.3 * p)))


def smooth_grad(p):
    A = _SPD.astype(p.dtype)
    return np.cos(p) + A @ p + 0.3 * np.exp(0.3 * p)


# ======================================================================= tiers


@pytest.mark.parametrize(
    ("dtype", "bounds"),
    [(np.float64, (1e-7, 1e-5, 1e-3)), (np.float32, (6.9e-4, 5.5e-3, 4.4e-2))],
    ids=["f64", "f32"],
)
def test_tiers_come_from_the_dtype(dtype, bounds):
    theta = np.random.default_rng(1).standard_normal(6).astype(dtype)
    result = check_grad(smooth_loss, smooth_grad, theta)
    t = result.tiers
    assert t.dtype == np.dtype(dtype).name
    assert (t.excellent, t.ok, t.suspicious) == pytest.approx(bounds, rel=0.05)


# grad = true * (1 + r).  The relative error is then r / (2 + r).  The tier of that
# number is corrected by the per-component noise test (_verdict note 5): in float64
# a uniform relative error of 1e-6 is far above the noise of every component, so the
# components are confirmed wrong and the verdict is raised from "ok" to "suspicious".
FLOAT64_TIERS = [
    (0.0, "excellent", True),
    (1e-8, "excellent", True),  # below the "excellent" floor: never flagged
    (1e-6, "suspicious", False),  # tier "ok", but 6 of 6 components confirmed wrong
    (1e-4, "suspicious", False),
    (1e-2, "wrong", False),
    (1e-1, "wrong", False),
]


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize(("r", "verdict", "passed"), FLOAT64_TIERS,
                         ids=[f"r={r:g}-{v}" for r, v, _ in FLOAT64_TIERS])
def test_verdict_for_a_uniform_relative_error_float64(r, verdict, passed, seed):
    theta = np.random.default_rng(seed).standard_normal(6)
    result = check_grad(smooth_loss, smooth_grad(theta) * (1 + r), theta)
    assert result.verdict == verdict, str(result)
    assert result.passed is passed
    if r >= 1e-6:
        assert result.relative_error == pytest.approx(r / (2 + r), rel=1e-3)
        assert result.n_wrong == 6
    else:
        assert result.relative_error < 1e-7
        assert result.n_wrong == 0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ok_is_reached_when_the_arithmetic_cannot_resolve_more(seed):
    # float32: a 0.2 % error (relative error 1e-3) is in the "ok" band (5.5e-3) and
    # within the noise of every component, even at the 4x and 16x larger steps that
    # rounding-limited suspects are re-evaluated at, so nothing is confirmed wrong
    # and the verdict stays "ok".  (At 0.5 % some components become resolvable.)
    theta = np.random.default_rng(seed).standard_normal(6).astype(np.float32)
    result = check_grad(smooth_loss, smooth_grad(theta) * (1 + 2e-3), theta)
    assert result.verdict == "ok", str(result)
    assert result.passed
    assert result.tiers.excellent < result.relative_error <= result.tiers.ok
    assert result.n_wrong == 0


def test_float32_correct_gradient_is_excellent():
    theta = np.random.default_rng(4).standard_normal(6).astype(np.float32)
    result = check_grad(smooth_loss, smooth_grad, theta)
    assert result.verdict == "excellent", str(result)


# ============================================================ correct gradients


def _logistic():
    rng = np.random.default_rng(11)
    X = rng.standard_normal((20, 4))
    y = (rng.uniform(size=20) < 0.5).astype(float)

    def loss(w):
        z = X @ w
        return float(np.mean(np.logaddexp(0, z) - y * z) + 0.05 * w @ w)

    def grad(w):
        s = 1 / (1 + np.exp(-(X @ w)))
        return X.T @ (s - y) / len(y) + 0.1 * w

    return rng.standard_normal(4), loss, grad


def _softmax_xent():
    rng = np.random.default_rng(12)
    X = rng.standard_normal((4, 8))
    Y = np.eye(3)[rng.integers(0, 3, 8)].T

    def loss(p):
        Z = p["W"] @ X + p["b"]
        Z = Z - Z.max(axis=0)
        logp = Z - np.log(np.exp(Z).sum(axis=0))
        return float(-np.sum(Y * logp) / 8)

    def grad(p):
        Z = p["W"] @ X + p["b"]
        P = np.exp(Z - Z.max(axis=0))
        P /= P.sum(axis=0)
        dZ = (P - Y) / 8
        return {"W": dZ @ X.T, "b": dZ.sum(axis=1, keepdims=True)}

    params = {"W": rng.standard_normal((3, 4)), "b": rng.standard_normal((3, 1))}
    return params, loss, grad


def _rosenbrock():
    def loss(t):
        return float(np.sum(100 * (t[1:] - t[:-1] ** 2) ** 2 + (1 - t[:-1]) ** 2))

    def grad(t):
        g = np.zeros_like(t)
        g[:-1] = -400 * t[:-1] * (t[1:] - t[:-1] ** 2) - 2 * (1 - t[:-1])
        g[1:] += 200 * (t[1:] - t[:-1] ** 2)
        return g

    return np.array([-1.2, 1.0, 0.5, 0.8, 1.1]), loss, grad


def _tanh_mlp_list():
    rng = np.random.default_rng(13)
    x = rng.standard_normal(5)

    def loss(p):
        W1, W2 = p
        return float(np.sum(np.tanh(W2 @ np.tanh(W1 @ x)) ** 2))

    def grad(p):
        W1, W2 = p
        h = np.tanh(W1 @ x)
        o = np.tanh(W2 @ h)
        do = 2 * o * (1 - o**2)
        dh = (W2.T @ do) * (1 - h**2)
        return [np.outer(do, h), np.outer(dh, x)][::-1]

    return [rng.standard_normal((4, 5)), np.asfortranarray(rng.standard_normal((2, 4)))], \
        loss, grad


def _large_scale():
    # parameters of order 1e3 and a loss of order 1e7: a fixed eps would fail here
    def loss(t):
        return float(np.sum(t**2) + np.sum(np.sin(t / 100)))

    def grad(t):
        return 2 * t + np.cos(t / 100) / 100

    return np.random.default_rng(14).uniform(500, 2000, 8), loss, grad


CORRECT = {
    "logistic": _logistic,
    "softmax-xent-dict": _softmax_xent,
    "rosenbrock": _rosenbrock,
    "tanh-mlp-list": _tanh_mlp_list,
    "large-scale": _large_scale,
}


@pytest.mark.parametrize("method", ["central", "forward", "backward", "central4"])
@pytest.mark.parametrize("name", list(CORRECT))
def test_correct_gradients_pass(name, method):
    # (these losses use float(), max or logaddexp: complex step is tested below)
    params, loss, grad = CORRECT[name]()
    result = check_grad(loss, grad, params, method=method)
    assert result.passed, str(result)
    if method in ("central", "central4"):
        assert result.verdict == "excellent", str(result)
    assert result.n_wrong == 0 and result.n_kinks == 0


def test_complex_step_check_passes_for_an_analytic_loss():
    theta = np.array([0.3, -1.2, 2.0, 0.1])
    result = check_grad(lambda t: np.sum(np.sin(t) * np.exp(t)),
                        lambda t: np.exp(t) * (np.sin(t) + np.cos(t)), theta, method="complex")
    assert result.verdict == "excellent"
    assert result.relative_error < 1e-14


# ================================================================= demo network


def test_demo_network_passes_excellent():
    net = examples.demo_network()
    result = check_grad(net.loss, net.grad, net.params)
    assert result.verdict == "excellent" and result.passed, str(result)
    assert [p.name for p in result.parameters] == DEMO_KEYS
    assert all(p.verdict == "excellent" and p.wrong == 0 for p in result.parameters)
    assert result.relative_error < 1e-7


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_demo_network_buggy_grad_blames_w2_and_b1(seed):
    net = examples.demo_network(seed)
    result = check_grad(net.loss, net.buggy_grad, net.params)
    assert not result.passed
    assert result.verdict == "wrong"
    by_name = {p.name: p for p in result.parameters}
    bad = {name for name, p in by_name.items() if p.verdict in ("suspicious", "wrong")}
    assert bad == {"W2", "b1"}
    assert all(p.wrong == 0 for name, p in by_name.items() if name not in bad)
    # every non-zero component of dW2 (x2) and db1 (x4) is wrong, and only those
    true = net.grad(net.params)
    assert by_name["b1"].wrong == np.count_nonzero(true["b1"])
    assert by_name["W2"].wrong == np.count_nonzero(true["W2"])
    # every wrong component is in W2 or b1, and the top of the ranking too
    wrong_names = [result.layout.name_of(i) for i in result.indices("wrong")]
    assert wrong_names and all(n.startswith(("W2[", "b1[")) for n in wrong_names)
    worst = result.worst(result.n_wrong)
    assert len(worst) >= 5
    assert worst[0].name.startswith(("b1[", "W2["))
    assert all(c.name.startswith(("W2[", "b1[")) and c.status == "wrong" for c in worst)
    # b1's analytic value is 4x the numerical one, W2's 2x
    for c in worst:
        ratio = c.analytic / c.numerical
        assert ratio == pytest.approx(4.0 if c.name.startswith("b1") else 2.0, rel=1e-6)
    text = str(result)
    assert "b1 is wrong" in text and "W2 is wrong" in text
    assert "every other parameter is excellent" in text


def test_report_names_the_single_wrong_parameter():
    net = examples.demo_network()
    grad = net.grad(net.params)
    grad["W2"] = grad["W2"] * 2
    result = check_grad(net.loss, grad, net.params)
    text = str(result)
    assert "W2 is wrong" in text
    assert "every other parameter is excellent" in text
    assert "b1 is" not in text
    by_name = {p.name: p for p in result.parameters}
    assert by_name["W2"].verdict == "wrong"
    assert by_name["W2"].worst.startswith("W2[")
    assert {p.name for p in result.parameters if p.verdict != "excellent"} == {"W2"}


def test_demo_float32_network():
    net = examples.demo_network(1, np.float32)
    good = check_grad(net.loss, net.grad, net.params)
    bad = check_grad(net.loss, net.buggy_grad, net.params)
    assert good.passed, str(good)
    assert good.tiers.dtype == "float32"
    assert not bad.passed
    assert {p.name for p in bad.parameters if p.verdict in ("suspicious", "wrong")} == \
        {"W2", "b1"}


# ===================================================================== ranking


def test_ranking_uses_relative_not_absolute_difference():
    big = np.array([0.011, -0.02, 0.013, 0.017, -0.009])
    small = np.array([2e-5, -1e-5, 3e-5])

    def loss(p):
        return float(1e3 * np.sum(np.sin(p["big"])) + 0.5 * np.sum(p["small"] ** 2))

    grad = {
        "big": 1e3 * np.cos(big) * (1 + 5e-8),  # ~1e3, off by 5e-5: a rounding-level blip
        "small": small.copy(),
    }
    grad["small"][1] *= 1.5  # a real bug: 50 % off, but only 5e-6 in absolute terms
    params = {"big": big.copy(), "small": small.copy()}
    result = check_grad(loss, grad, params)
    worst = result.worst(3)
    assert worst[0].name == "small[1]"
    assert worst[0].status == "wrong"
    by_name = {c.name: c for c in result.worst(8)}
    # the big parameter's absolute differences are larger than the bug's ...
    assert max(by_name[f"big[{i}]"].abs_diff for i in range(5)) > worst[0].abs_diff
    # ... but relative to their size they are nothing, and they are not flagged
    assert all(by_name[f"big[{i}]"].status == "ok" for i in range(5))
    assert result.indices("wrong").tolist() == [6]
    assert not result.passed


def test_worst_components_are_named_by_parameter_and_index():
    W = np.asfortranarray(np.random.default_rng(7).standard_normal((3, 4)))
    params = {"W": W, "v": np.random.default_rng(8).standard_normal(5)}

    def loss(p):
        return float(np.sum(np.sin(p["W"])) + np.sum(p["v"] ** 3))

    grad = {"W": np.cos(W), "v": 3 * params["v"] ** 2}
    grad["W"][2, 1] += 0.5
    grad["v"][3] *= -1
    result = check_grad(loss, grad, params)
    names = [c.name for c in result.worst(2)]
    assert sorted(names) == ["W[2, 1]", "v[3]"]
    worst = {c.name: c for c in result.worst(2)}
    assert worst["W[2, 1]"].index == 2 * 4 + 1  # flat index, C order
    assert worst["v[3]"].index == 12 + 3
    assert worst["W[2, 1]"].numerical == pytest.approx(math.cos(W[2, 1]), rel=1e-8)
    assert worst["W[2, 1]"].analytic == math.cos(W[2, 1]) + 0.5
    assert result.n_wrong == 2


def test_worst_k_edge_cases():
    theta = np.array([0.1, 0.2, 0.3])
    result = check_grad(lambda t: float(np.sum(t**2)), 2 * theta, theta)
    assert result.worst(0) == []
    assert len(result.worst(10)) == 3
    with pytest.raises(ValueError):
        result.worst(-1)


@pytest.mark.parametrize("layout", ["F", "strided", "mixed-dtypes"])
def test_bug_is_located_in_non_contiguous_and_mixed_params(layout):
    rng = np.random.default_rng(21)
    if layout == "F":
        params = {"A": np.asfortranarray(rng.standard_normal((4, 5)))}
        bug = ("A", (3, 2))
    elif layout == "strided":
        big = rng.standard_normal((9, 12))
        params = {"A": big[1::2, ::-3]}
        bug = ("A", (1, 3))
    else:
        params = {"A": rng.standard_normal((3, 4)),
                  "B": np.asfortranarray(rng.standard_normal((4, 3)), dtype=np.float32)}
        bug = ("B", (2, 1))

    def loss(p):
        return float(sum(np.sum(np.tanh(a.astype(np.float64)) * (i + 1))
                         for i, a in enumerate(p.values())))

    def true(p):
        return {k: (i + 1) / np.cosh(a.astype(np.float64)) ** 2
                for i, (k, a) in enumerate(p.items())}

    grad = true(params)
    grad[bug[0]][bug[1]] *= 1.3
    result = check_grad(loss, grad, params)
    expected = f"{bug[0]}[{', '.join(map(str, bug[1]))}]"
    assert [result.layout.name_of(i) for i in result.indices("wrong")] == [expected]
    assert result.worst(1)[0].name == expected
    # the refined numerical value of the buggy component is the true derivative
    truth = true(params)[bug[0]][bug[1]]
    tol = 1e-7 if params[bug[0]].dtype == np.float64 else 1e-3
    assert result.worst(1)[0].numerical == pytest.approx(truth, rel=tol)


# ============================================================ special results


@pytest.mark.parametrize("value", [0.0, 5.0], ids=["loss-0", "loss-5"])
def test_both_gradients_exactly_zero(value):
    theta = np.array([0.5, -1.0, 2.0])
    result = check_grad(lambda t: value, np.zeros(3), theta)
    assert result.relative_error == 0.0
    assert result.passed and result.verdict == "excellent"
    np.testing.assert_array_equal(result.numerical, np.zeros(3))


def test_nan_from_the_loss_at_a_perturbed_point():
    # log(1e-12 - 1e-6) is NaN: theta[3] cannot be checked at that absolute step
    theta = np.array([0.5, 1.0, 2.0, 1e-12, 3.0])

    def loss(t):
        with np.errstate(invalid="ignore"):
            return float(np.sum(np.log(t)))

    result = check_grad(loss, 1 / theta, theta, eps=1e-6)
    assert not result.passed
    assert result.verdict in ("suspicious", "wrong")
    assert any("theta[3]" in note and "NaN" in note for note in result.notes)
    statuses = {c.name: c.status for c in result.worst(5)}
    assert statuses["theta[3]"] == "nonfinite loss"
    assert all(s == "ok" for n, s in statuses.items() if n != "theta[3]")
    assert result.worst(1)[0].name == "theta[3]"
    assert "theta[3]" in str(result)


def test_nan_in_the_analytic_gradient():
    theta = np.array([0.5, 1.0, 2.0, 3.0])
    grad = 2 * theta
    grad[2] = np.nan
    result = check_grad(lambda t: float(np.sum(t**2)), grad, theta)
    assert result.verdict == "wrong" and not result.passed
    assert result.indices("nonfinite gradient").tolist() == [2]
    top = result.worst(1)[0]
    assert top.name == "theta[2]" and top.status == "nonfinite gradient"
    assert any("theta[2]" in note for note in result.notes)
    assert "theta[2]" in str(result)


def test_loss_nan_at_the_point_itself_is_invalid():
    theta = np.array([-1.0, 2.0])

    def loss(t):
        with np.errstate(invalid="ignore"):
            return float(np.sum(np.sqrt(t)))

    result = check_grad(loss, np.zeros(2), theta)
    assert result.verdict == "invalid" and not result.passed
    assert math.isnan(result.relative_error)


def test_nondeterministic_loss_is_reported_as_such():
    net = examples.dropout_network()
    net.reseed(0)  # masks still change at every call; seeded so the probes always differ
    result = check_grad(net.loss, net.grad, net.params)
    assert result.verdict == "nondeterministic" and not result.passed
    assert any("dropout" in note for note in result.notes)
    assert result.evaluations == 2  # it stops after the two probes disagree


def test_loss_that_modifies_its_params_is_invalid_and_restored():
    theta = np.array([0.1, 1 / 3])
    before = theta.tobytes()

    def loss(t):
        t[0] += 1.0
        return float(np.sum(t))

    result = check_grad(loss, np.ones(2), theta)
    assert result.verdict == "invalid"
    assert theta.tobytes() == before


# ========================================================= plain data, counts


def test_to_dict_is_json_and_round_trips_key_fields():
    net = examples.demo_network()
    result = check_grad(net.loss, net.buggy_grad, net.params)
    d = result.to_dict()
    back = json.loads(json.dumps(d))
    assert back == json.loads(result.to_json())
    assert back["verdict"] == result.verdict == "wrong"
    assert back["passed"] is False
    assert back["relative_error"] == pytest.approx(result.relative_error, rel=1e-15)
    assert back["method"] == "central" and back["mode"] == "full"
    assert back["evaluations"] == result.evaluations
    assert back["components"] == 47
    assert back["wrong"] == result.n_wrong
    assert [p["name"] for p in back["parameters"]] == DEMO_KEYS
    assert [p["shape"] for p in back["parameters"]] == [list(net.params[k].shape)
                                                        for k in DEMO_KEYS]
    assert back["worst"][0]["name"] == result.worst(1)[0].name
    assert back["tiers"]["dtype"] == "float64"


def test_to_dict_with_nan_values_is_still_json():
    theta = np.array([0.5, 1.0])
    grad = np.array([np.nan, 2.0])
    result = check_grad(lambda t: float(np.sum(t**2)), grad, theta)
    text = json.dumps(result.to_dict(), allow_nan=False)  # NaN must not leak as a float
    assert json.loads(text)["verdict"] == "wrong"


@pytest.mark.parametrize("n", [1, 7, 47, 200])
def test_evaluations_for_a_correct_central_check(n):
    theta = np.linspace(-1, 1, n)
    calls = [0]

    def loss(t):
        calls[0] += 1
        return float(np.sum(np.sin(t)))

    result = check_grad(loss, np.cos, theta)
    assert result.passed
    assert result.evaluations == 2 * n + 1 + 3 == calls[0]


def test_evaluations_for_the_demo_network():
    net = examples.demo_network()
    result = check_grad(net.loss, net.grad, net.params)
    assert result.evaluations == 2 * 47 + 1 + 3


@pytest.mark.parametrize(("method", "per_component", "center"),
                         [("forward", 1, 1), ("backward", 1, 1), ("central4", 4, 1),
                          ("complex", 1, 0)])
def test_evaluations_for_other_methods(method, per_component, center):
    theta = np.linspace(-1, 1, 9)
    calls = [0]

    def loss(t):
        calls[0] += 1
        return np.sum(np.sin(t)) if method == "complex" else float(np.sum(np.sin(t)))

    result = check_grad(loss, np.cos, theta, method=method)
    assert result.passed, str(result)
    assert result.evaluations == per_component * 9 + center + 3 == calls[0]


def test_result_structures_follow_params():
    params = {"W": np.ones((2, 3)), "b": np.zeros(2)}
    result = check_grad(lambda p: float(np.sum(p["W"] ** 2) + np.sum(p["b"])),
                        {"W": 2 * np.ones((2, 3)), "b": np.ones(2)}, params)
    for attr in ("numerical", "analytic", "noise"):
        value = getattr(result, attr)
        assert list(value) == ["W", "b"]
        assert value["W"].shape == (2, 3) and value["b"].shape == (2,)
    np.testing.assert_allclose(result.numerical["W"], 2.0, rtol=1e-9)
    assert result.status.shape == (8,)


# ============================================================ fastcheck.testing


def test_assert_grad_ok_passes_and_returns_the_result():
    testing = pytest.importorskip("fastcheck.testing")
    theta = np.array([0.3, -0.7])
    result = testing.assert_grad_ok(lambda t: float(t @ t), lambda t: 2 * t, theta)
    assert isinstance(result, fastcheck.GradCheckResult)
    assert result.passed


def test_assert_grad_ok_raises_with_the_report():
    testing = pytest.importorskip("fastcheck.testing")
    net = examples.demo_network()
    with pytest.raises(AssertionError) as info:
        testing.assert_grad_ok(net.loss, net.buggy_grad, net.params)
    message = str(info.value)
    assert "W2 is wrong" in message and "b1 is wrong" in message
    assert "WRONG" in message


def test_assert_grad_ok_passes_kwargs_through():
    testing = pytest.importorskip("fastcheck.testing")
    theta = np.array([1.0])
    with pytest.raises(ValueError, match="unknown method"):
        testing.assert_grad_ok(lambda t: float(t[0] ** 3), lambda t: 3 * t**2, theta,
                               method="nope")
    result = testing.assert_grad_ok(lambda t: float(t[0] ** 3), lambda t: 3 * t**2, theta,
                                    method="forward")
    assert result.method == "forward"


# ================================================================ known bugs


def _float32_one_component_off():
    loss = lambda p: float(np.sum(np.sin(p)) + np.sum(p * p) / 2)  # noqa: E731
    theta = np.random.default_rng(0).standard_normal(50).astype(np.float32)
    grad = np.cos(theta.astype(np.float64)) + theta
    grad[7] += 0.1  # true value 1.5311; a plain float32 central difference is within 1e-4
    return loss, grad, theta


def test_float32_single_bug_is_flagged_by_the_first_look():
    loss, grad, theta = _float32_one_component_off()
    result = check_grad(loss, grad, theta, refine=False)
    assert not result.passed
    assert result.indices("wrong").tolist() == [7]


def test_float32_single_bug_is_not_cleared_by_refinement():
    loss, grad, theta = _float32_one_component_off()
    result = check_grad(loss, grad, theta)
    assert not result.passed, str(result)
    assert result.indices("wrong").tolist() == [7]


def test_eps_too_small_for_the_dtype_is_not_blamed_on_the_loss():
    theta = np.array([1.0, 2.0, 3.0], dtype=np.float32)

    def loss(p):
        return float(np.sum(p.astype(np.float64) ** 2))

    try:
        result = check_grad(loss, 2 * theta.astype(np.float64), theta, eps=1e-8)
    except ValueError as error:  # refusing the step up front is a fine fix too
        assert "eps" in str(error) or "step" in str(error)
    else:
        assert not any("loss returned NaN" in note for note in result.notes), result.notes
        assert any("step" in note for note in result.notes), result.notes
