"""fastcheck.testing.parameter_points: a Hypothesis strategy for points inside bounds
and away from kinks; Hypothesis stays optional."""

from __future__ import annotations

import pathlib
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

import fastcheck
from fastcheck import check_grad, examples
from fastcheck.testing import assert_grad_ok, parameter_points

NET = examples.relu_network(straddle=False)
LIKE = {"w": np.zeros((3, 2)), "b": np.zeros(2, dtype=np.float32)}


@settings(max_examples=25, deadline=None)
@given(parameter_points(LIKE, bounds={"w": (0.5, 2.0), "b": (-3.0, -1.0)}))
def test_points_have_the_structure_and_stay_in_bounds(p):
    assert set(p) == {"w", "b"}
    assert p["w"].shape == (3, 2) and p["w"].dtype == np.float64
    assert p["b"].shape == (2,) and p["b"].dtype == np.float32
    assert np.all((p["w"] >= 0.5) & (p["w"] <= 2.0))
    assert np.all((p["b"] >= -3.0) & (p["b"] <= -1.0))
    assert not np.any(LIKE["w"])   # `like` is left alone


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(parameter_points(np.zeros(4), kinks=lambda t: [t - 0.5, t + 0.5], distance=0.2))
def test_points_stay_away_from_kinks(theta):
    assert np.all(np.abs(theta - 0.5) >= 0.2) and np.all(np.abs(theta + 0.5) >= 0.2)


@settings(max_examples=10, deadline=None)
@given(parameter_points(NET.params, kinks=NET.preactivations, distance=1e-4))
def test_a_relu_network_away_from_its_kinks_checks_clean(params):
    result = assert_grad_ok(NET.loss, NET.grad, params)
    assert result.n_kinks == 0
    assert min(np.min(np.abs(z)) for z in NET.preactivations(params)) >= 1e-4


def test_without_a_distance_the_kink_is_reached_and_reported():
    """The check the strategy protects: at a point on the kink, the result is not clean."""
    net = examples.relu_network(straddle=True)
    result = check_grad(net.loss, net.grad, net.params)
    assert result.n_kinks > 0


@pytest.mark.parametrize(("kwargs", "error", "match"), [
    ({"bounds": (1.0, 1.0)}, ValueError, "low < high"),
    ({"bounds": (0.0, float("inf"))}, ValueError, "finite"),
    ({"bounds": "wide"}, TypeError, "must be a pair"),
    ({"bounds": {"nope": (0, 1)}}, ValueError, "not parameters"),
    ({"kinks": 3}, TypeError, "kinks must be callable"),
    ({"distance": -1.0}, ValueError, "distance must be"),
    ({"distance": float("nan")}, ValueError, "distance must be"),
], ids=["empty", "inf", "str", "name", "kinks", "negative", "nan"])
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        parameter_points(LIKE, **kwargs)


def test_hypothesis_is_optional(monkeypatch):
    monkeypatch.setitem(sys.modules, "hypothesis", None)
    with pytest.raises(ImportError, match="needs Hypothesis: pip install hypothesis"):
        parameter_points(LIKE)


def test_importing_fastcheck_testing_does_not_import_hypothesis(tmp_path):
    # The package under test, from another directory (a source tree must not shadow it).
    root = str(pathlib.Path(fastcheck.__file__).parents[1])
    code = (f"import sys; sys.path.insert(0, {root!r}); import fastcheck.testing; "
            "sys.exit(1 if 'hypothesis' in sys.modules else 0)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=False, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
