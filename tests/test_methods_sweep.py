"""fastcheck.eps_sweep: the V-shaped error curve, its table, data, plot and bad input."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

import fastcheck
from fastcheck import ComplexStepError, EpsSweep
from fastcheck._sweep import DEFAULT_SWEEP_EPS


def network(seed: int = 0):
    """A small complex-safe tanh network (50 parameters)."""
    r = np.random.default_rng(seed)
    X, Y = r.standard_normal((16, 3)), r.standard_normal((16, 2))
    params = {"W1": r.standard_normal((8, 3)) / 2, "b1": 0.1 * r.standard_normal(8),
              "W2": r.standard_normal((2, 8)) / 3, "b2": 0.1 * r.standard_normal(2)}

    def loss(p):
        A = np.tanh(X @ p["W1"].T + p["b1"])
        return 0.5 * np.sum((A @ p["W2"].T + p["b2"] - Y) ** 2) / 16

    def grad(p):
        A = np.tanh(X @ p["W1"].T + p["b1"])
        dZ2 = (A @ p["W2"].T + p["b2"] - Y) / 16
        dZ1 = (dZ2 @ p["W2"]) * (1 - A**2)
        return {"W1": dZ1.T @ X, "b1": dZ1.sum(0), "W2": dZ2.T @ A, "b2": dZ2.sum(0)}

    return loss, grad, params


@pytest.fixture(scope="module")
def sweep() -> EpsSweep:
    loss, grad, params = network()
    return fastcheck.eps_sweep(loss, grad, params,
                               methods=("forward", "central", "richardson", "complex"))


def test_default_grid():
    assert len(DEFAULT_SWEEP_EPS) == 23
    assert DEFAULT_SWEEP_EPS[0] == pytest.approx(1e-1)
    assert DEFAULT_SWEEP_EPS[-1] == pytest.approx(1e-12)


def test_the_curves_are_v_shaped_with_the_best_step_where_theory_puts_it(sweep):
    assert sweep.eps.size == 23 and sweep.size == 50 and sweep.dtype == "float64"
    windows = {"forward": (1e-10, 1e-6), "central": (1e-7, 1e-4), "richardson": (1e-4, 1e-2)}
    for method, (lo, hi) in windows.items():
        err, best = sweep.errors[method], sweep.best[method]
        assert lo <= best.eps <= hi, (method, best)
        # truncation on the left, rounding on the right: both ends far above the bottom
        assert err[0] > 100 * best.error and err[-1] > 100 * best.error, method
        assert best.error == np.nanmin(err)
    assert sweep.best["richardson"].error < sweep.best["central"].error \
        < sweep.best["forward"].error
    # complex step: no subtractive cancellation, no rise at small steps
    cx = sweep.errors["complex"]
    assert sweep.best["complex"].error < 1e-15 and np.all(cx[-8:] < 1e-15)


def test_evaluations_are_counted(sweep):
    n, steps = 50, 23
    per = {"forward": n, "central": 2 * n, "richardson": 4 * n, "complex": n}
    centers = {"forward": 1, "central": 1, "richardson": 1, "complex": 0}
    assert sweep.evaluations == sum(steps * (per[m] + centers[m]) for m in per)


def test_table_and_summary(sweep):
    text = str(sweep)
    lines = sweep.table().splitlines()
    assert lines[0].split() == ["eps", "forward", "central", "richardson", "complex"]
    assert len(lines) == 1 + 23
    assert sum(line.count("*") for line in lines) == 4  # one best per method
    assert "best eps" in text and "default" in text
    central_row = next(line for line in lines[1:] if line.split()[2].endswith("*"))
    assert float(central_row.split()[0]) == pytest.approx(sweep.best["central"].eps, rel=0.1)


def test_to_dict_is_plain_data(sweep):
    d = sweep.to_dict()
    json.dumps(d)
    assert set(d["errors"]) == {"forward", "central", "richardson", "complex"}
    assert d["best"]["central"]["eps"] == sweep.best["central"].eps
    assert len(d["eps"]) == 23


def test_parameters_are_restored_bitwise():
    loss, grad, params = network(1)
    before = {k: v.copy() for k, v in params.items()}
    fastcheck.eps_sweep(loss, grad, params, eps=[1e-3, 1e-7], methods=("central", "complex"))
    assert all(params[k].tobytes() == before[k].tobytes() for k in params)


def test_steps_too_small_to_be_represented_give_nan():
    theta = np.array([1e6, 0.5])
    s = fastcheck.eps_sweep(lambda t: float(np.sum(t**2)), lambda t: 2 * t, theta,
                            eps=[1e-3, 1e-12], methods="central")
    assert np.isfinite(s.errors["central"][0]) and np.isnan(s.errors["central"][1])
    assert "nan" in s.table()
    assert s.to_dict()["errors"]["central"][1] is None
    assert s.best["central"].eps == 1e-3


def test_a_single_step_and_a_float32_model():
    theta = np.linspace(-1, 1, 5).astype(np.float32)
    s = fastcheck.eps_sweep(lambda t: float(np.sum(t**3)), lambda t: 3 * t**2, theta,
                            eps=1e-2, methods="central")
    assert s.eps.tolist() == [1e-2] and s.dtype == "float32"
    assert s.default_eps["central"] == pytest.approx(2.0 ** (-24 / 3))


@pytest.mark.parametrize(("eps", "error", "match"), [
    ([], ValueError, "at least one step"),
    (np.array([]), ValueError, "at least one step"),
    ([1e-3, 0.0], ValueError, "finite number > 0"),
    ([-1e-3], ValueError, "finite number > 0"),
    ([float("nan")], ValueError, "finite number > 0"),
    ([float("inf"), 1e-3], ValueError, "finite number > 0"),
    ("1e-3", TypeError, "sequence of positive numbers"),
    ([1e-3, "x"], TypeError, "must contain numbers"),
    ([True], TypeError, "must contain numbers"),
])
def test_bad_eps_lists_are_refused_before_any_evaluation(eps, error, match):
    calls = []

    def loss(t):
        calls.append(1)
        return float(np.sum(t**2))

    with pytest.raises(error, match=match):
        fastcheck.eps_sweep(loss, lambda t: 2 * t, np.ones(3), eps=eps)
    assert calls == []


@pytest.mark.parametrize(("methods", "match"), [
    ((), "at least one"), ("nope", "unknown method"), (("central", "zz"), "unknown method")])
def test_bad_methods_are_refused(methods, match):
    with pytest.raises(ValueError, match=match):
        fastcheck.eps_sweep(lambda t: 0.0, lambda t: t, np.ones(2), methods=methods)


def test_complex_with_a_real_only_loss_names_the_method():
    with pytest.raises(ComplexStepError, match="method='complex'"):
        fastcheck.eps_sweep(lambda t: float(np.sum(np.logaddexp(0, t))), lambda t: t,
                            np.ones(2), eps=[1e-3], methods=("central", "complex"))


def test_plot_draws_one_line_per_method_and_saves(sweep, tmp_path):
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = tmp_path / "sweep.png"
    ax = sweep.plot(path=str(path))
    try:
        assert path.exists() and path.stat().st_size > 10_000
        labels = [line.get_label() for line in ax.get_lines()
                  if not line.get_label().startswith("_")]
        assert labels == ["forward", "central", "richardson", "complex"]
        assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    finally:
        plt.close(ax.figure)
    fig, given = plt.subplots()
    try:
        assert sweep.plot(ax=given) is given
    finally:
        plt.close(fig)


def test_plot_without_matplotlib_says_how_to_install_it(sweep, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    with pytest.raises(ImportError, match="pip install matplotlib"):
        sweep.plot()
