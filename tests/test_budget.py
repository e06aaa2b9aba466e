"""check_grad(budget=...): the plan it chooses, what it reports it bought, and
validation before any evaluation.  How close to the budget a check ends is measured
in bench/bench_budget.py, not asserted here (a timed test would be flaky)."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

from fastcheck import check_grad
from fastcheck._budget import merge_steps, run_steps

N_LARGE = 20_000
SLEEP = 2e-4   # seconds per evaluation: a full check of N_LARGE would take ~8 s


class Quadratic:
    """0.5 * sum(d * theta**2), optionally slowed down, counting its calls."""

    def __init__(self, n: int, sleep: float = 0.0) -> None:
        self.d = np.linspace(1.0, 2.0, n)
        self.sleep = sleep
        self.calls = 0

    def __call__(self, theta: np.ndarray) -> float:
        self.calls += 1
        if self.sleep:
            time.sleep(self.sleep)
        return float(0.5 * np.sum(self.d * theta**2))

    def grad(self, theta: np.ndarray) -> np.ndarray:
        return self.d * theta


def test_a_budget_that_fits_a_full_check_runs_one():
    loss = Quadratic(50)
    theta = np.linspace(-1, 1, 50)
    result = check_grad(loss, loss.grad, theta, budget=5.0, seed=0)
    assert result.mode == "full" and result.passed
    assert result.n_checked == 50
    info = result.extra["budget"]
    assert info["steps"] == [{"mode": "full"}]
    assert info["components_checked"] == 50
    assert "a larger budget would add nothing" in result.notes[0]
    assert math.isfinite(info["detection_limit"]) and 0 < info["detection_limit"] < 1e-3


def test_a_small_budget_on_a_large_model_checks_part_and_says_so():
    loss = Quadratic(N_LARGE, SLEEP)
    theta = np.random.default_rng(0).standard_normal(N_LARGE)
    before = theta.copy()
    result = check_grad(loss, loss.grad, theta, budget=0.6, seed=1)
    assert result.passed
    assert theta.tobytes() == before.tobytes()
    # one account of the coverage (the budget's), not one per step
    assert not [n for n in result.notes if n.startswith(("sample mode:", "directional mode:"))]
    info = result.extra["budget"]
    assert result.mode != "full"
    assert 0 < info["components_checked"] < N_LARGE
    assert info["components_checked"] == result.n_checked
    # a full check would cost 2n evaluations of >= SLEEP seconds each
    assert info["full_seconds_estimate"] >= 2 * N_LARGE * SLEEP
    assert info["eval_seconds"] >= SLEEP
    assert "a larger budget would add" in result.notes[0]
    assert f"{info['components_checked']:,} of {N_LARGE:,} components" in result.notes[0]
    assert loss.calls < 2 * N_LARGE
    # first the directional test with the fewest evaluations (3 + 4 per parameter)
    assert info["steps"][0] == {"mode": "directional", "seed": 1, "max_evals": 7}
    modes = [s["mode"] for s in info["steps"]]
    assert "full" not in modes and modes[1:] == ["sample"] * (len(modes) - 1)
    assert math.isfinite(info["directional_limit"])


def test_without_central_differences_the_first_step_samples():
    loss = Quadratic(N_LARGE, SLEEP)
    theta = np.random.default_rng(0).standard_normal(N_LARGE)
    result = check_grad(loss, loss.grad, theta, budget=0.3, seed=1, method="forward")
    steps = result.extra["budget"]["steps"]
    assert steps[0] == {"mode": "sample", "seed": 1, "k": 1}
    assert result.passed and result.method == "forward"


def test_the_directional_step_finds_one_wrong_component_of_many():
    loss = Quadratic(N_LARGE, SLEEP)
    theta = np.random.default_rng(0).standard_normal(N_LARGE)

    def grad(t):
        g = loss.grad(t)
        g[12345] += 0.5
        return g

    result = check_grad(loss, grad, theta, budget=1.5, seed=2)
    assert not result.passed
    assert "directional" in [s["mode"] for s in result.extra["budget"]["steps"]]
    assert list(result.layout.names_of(result.indices("wrong"))) == ["theta[12345]"]


def test_a_larger_budget_checks_more_components():
    loss = Quadratic(N_LARGE, SLEEP)
    theta = np.random.default_rng(0).standard_normal(N_LARGE)
    small = check_grad(loss, loss.grad, theta, budget=0.3, seed=0)
    large = check_grad(loss, loss.grad, theta, budget=1.2, seed=0)
    assert (large.extra["budget"]["components_checked"]
            > small.extra["budget"]["components_checked"])


def test_the_steps_replay_to_the_same_components():
    loss = Quadratic(N_LARGE, SLEEP)
    theta = np.random.default_rng(0).standard_normal(N_LARGE)
    result = check_grad(loss, loss.grad, theta, budget=0.4, seed=3)
    steps = result.extra["budget"]["steps"]
    again = merge_steps(run_steps(check_grad, loss, loss.grad, theta, steps, {}))
    np.testing.assert_array_equal(again.status, result.status)
    np.testing.assert_array_equal(again.numerical_flat, result.numerical_flat)


def test_budget_with_points_splits_it():
    loss = Quadratic(30)
    theta = np.linspace(-1, 1, 30)
    result = check_grad(loss, loss.grad, theta, budget=3.0, points=3, seed=0)
    assert [r.extra["budget"]["seconds"] for r in result.points] == [1.0, 1.0, 1.0]
    assert result.passed


@pytest.mark.parametrize(("kwargs", "error", "match"), [
    ({"budget": 0}, ValueError, "budget must be a finite number of seconds > 0"),
    ({"budget": -1.0}, ValueError, "budget must be a finite number"),
    ({"budget": float("nan")}, ValueError, "budget must be a finite number"),
    ({"budget": float("inf")}, ValueError, "budget must be a finite number"),
    ({"budget": "2s"}, TypeError, "budget must be a number of seconds"),
    ({"budget": True}, TypeError, "budget must be a number of seconds"),
    ({"budget": 1.0, "mode": "sample"}, ValueError, "budget= chooses the mode"),
    ({"budget": 1.0, "k": 3}, ValueError, "budget= chooses the mode"),
    ({"budget": 1.0, "max_evals": 100}, ValueError, "budget= chooses the mode"),
], ids=["zero", "negative", "nan", "inf", "str", "bool", "mode", "k", "max_evals"])
def test_bad_budget_is_refused_before_any_evaluation(kwargs, error, match):
    loss = Quadratic(5)
    theta = np.ones(5)
    with pytest.raises(error, match=match):
        check_grad(loss, loss.grad, theta, **kwargs)
    assert loss.calls == 0
