"""check_grad(points=...): several points, the worst verdict, where each finding was
made, the user's arrays restored, and validation before any evaluation."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import cube_grad

import fastcheck
from fastcheck import MultiPointResult, check_grad


class Counted:
    """A cubic loss that counts its calls and records the points it saw."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, p: np.ndarray) -> float:
        self.calls += 1
        return float(np.sum(p**3))


def grad_wrong_above(limit: float):
    """The right gradient, except for a branch taken when theta[0] > limit."""
    def grad(p: np.ndarray) -> np.ndarray:
        g = 3 * p**2
        if p[0] > limit:
            g[0] *= 2
        return g
    return grad


THETA = np.array([1.0, 2.0, -0.5])


def test_the_verdict_is_the_worst_point_and_findings_name_it():
    points = [THETA.copy(), np.array([3.0, 2.0, -0.5]), np.array([0.5, 1.0, 1.5])]
    theta = THETA.copy()
    result = check_grad(Counted(), grad_wrong_above(2.0), theta, points=points)
    assert isinstance(result, MultiPointResult)
    assert [r.verdict for r in result.points] == ["excellent", "wrong", "excellent"]
    assert result.verdict == "wrong" and not result.passed
    assert result.point == 1
    assert result.findings() == [{"point": 1, "component": "theta[0]", "status": "wrong",
                                  "numerical": pytest.approx(27.0),
                                  "analytic": pytest.approx(54.0)}]
    report = result.report()
    assert "worst of 3 points: point 1" in report
    assert "theta[0]" in report
    # the given values are back, bit for bit
    assert theta.tobytes() == THETA.tobytes()


def test_rows_of_an_array_are_points():
    rows = np.stack([THETA, THETA + 1.0, 3.0 * THETA])
    result = check_grad(Counted(), grad_wrong_above(2.5), THETA.copy(), points=rows)
    assert [r.verdict for r in result.points] == ["excellent", "excellent", "wrong"]
    assert result.point == 2


def test_all_points_pass():
    result = check_grad(Counted(), cube_grad, THETA.copy(), points=4, seed=3)
    assert result.passed and len(result.points) == 4
    assert result.findings() == []
    data = json.loads(json.dumps(result.to_dict()))
    assert data["worst_point"] == result.point
    assert [p["verdict"] for p in data["points"]] == [r.verdict for r in result.points]


def test_int_points_start_at_the_given_point_and_are_reproducible():
    seen = []

    def grad(p):
        seen.append(p.copy())
        return cube_grad(p)

    theta = THETA.copy()
    check_grad(Counted(), grad, theta, points=3, seed=7)
    first = list(seen)
    seen.clear()
    check_grad(Counted(), grad, theta, points=3, seed=7)
    assert len(first) == 3
    np.testing.assert_array_equal(first[0], THETA)
    assert not np.array_equal(first[1], THETA) and not np.array_equal(first[1], first[2])
    # moved by about DRAW_SCALE x the RMS value
    rms = np.sqrt(np.mean(THETA**2))
    assert 0 < np.max(np.abs(first[1] - THETA)) < 5 * 0.1 * rms
    for a, b in zip(first, seen):
        np.testing.assert_array_equal(a, b)
    seen.clear()
    check_grad(Counted(), grad, theta, points=3, seed=8)
    assert not np.array_equal(first[1], seen[1])


def test_callable_points_get_the_seed():
    got = []

    def draw(seed):
        got.append(seed)
        rng = np.random.default_rng(seed)
        return [rng.standard_normal(3) for _ in range(2)]

    result = check_grad(Counted(), cube_grad, THETA.copy(), points=draw, seed=11)
    assert got == [11]
    assert len(result.points) == 2 and result.extra["points_seed"] == 11


def test_dict_params_and_float32_points():
    params = {"w": np.array([1.0, 2.0], dtype=np.float32), "b": np.array([0.5])}
    before = {k: v.copy() for k, v in params.items()}

    def loss(p):
        return float(np.sum(p["w"].astype(np.float64) ** 2) + 3 * p["b"][0])

    def grad(p):
        return {"w": 2 * p["w"].astype(np.float64), "b": np.array([3.0])}

    result = check_grad(loss, grad, params, points=[{"w": np.array([1.5, -1.0]),
                                                     "b": np.array([0.0])},
                                                    {"w": np.array([0.1, 0.2]),
                                                     "b": np.array([2.0])}])
    assert result.passed and len(result.points) == 2
    for key in params:
        assert params[key].tobytes() == before[key].tobytes()
        assert params[key].dtype == before[key].dtype


def test_parameters_restored_when_the_loss_raises_at_a_later_point():
    theta = THETA.copy()
    state = {"calls": 0}

    def loss(p):
        state["calls"] += 1
        if p[0] > 2.5:
            raise RuntimeError("boom")
        return float(np.sum(p**3))

    with pytest.raises(RuntimeError, match="boom"):
        check_grad(loss, cube_grad, theta, points=[THETA.copy(), np.array([3.0, 1.0, 1.0])])
    assert state["calls"] > 0
    assert theta.tobytes() == THETA.tobytes()


def test_a_directional_check_at_points_seeds_each_point():
    result = check_grad(Counted(), cube_grad, THETA.copy(), points=3, seed=5,
                        mode="directional")
    assert [r.extra["seed"] for r in result.points] == [5, 6, 7]


@pytest.mark.parametrize(("points", "kwargs", "error", "match"), [
    (0, {}, ValueError, "between 1 and"),
    (-2, {}, ValueError, "between 1 and"),
    (True, {}, TypeError, "got a bool"),
    ("three", {}, TypeError, "points must be an int"),
    (2.5, {}, TypeError, "points must be an int"),
    ([], {}, ValueError, "between 1 and"),
    ([np.zeros(4)], {}, ValueError, r"points\[0\].*shape \(4,\)"),
    ([THETA, np.array([1.0, np.nan, 0.0])], {}, ValueError, r"points\[1\] is not finite at "
                                                            r"theta\[1\]"),
    (lambda seed: 5, {}, TypeError, r"points\(seed\) must be a list"),
    (3, {"seed": -1}, TypeError, "seed must be a non-negative int"),
    (3, {"grad": cube_grad(THETA)}, TypeError, "needs the analytic gradient as a callable"),
], ids=["zero", "negative", "bool", "str", "float", "empty", "shape", "nan", "callable-bad",
        "seed", "fixed-grad"])
def test_bad_points_are_refused_before_any_evaluation(points, kwargs, error, match):
    loss = Counted()
    theta = THETA.copy()
    grad = kwargs.pop("grad", cube_grad)
    with pytest.raises(error, match=match):
        check_grad(loss, grad, theta, points=points, **kwargs)
    assert loss.calls == 0
    assert theta.tobytes() == THETA.tobytes()


def test_other_bad_arguments_are_still_refused_before_any_evaluation():
    loss = Counted()
    with pytest.raises(ValueError, match="unknown method"):
        check_grad(loss, cube_grad, THETA.copy(), points=[THETA, THETA + 1], method="nope")
    assert loss.calls == 0


def test_multipoint_result_is_exported():
    assert fastcheck.MultiPointResult is MultiPointResult
