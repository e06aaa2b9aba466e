"""Kinks: non-differentiable points are reported as such and kept out of the verdict."""

from __future__ import annotations

import numpy as np
import pytest

import fastcheck
from fastcheck.examples import relu_network


def kink_names(result):
    return set(result.layout.names_of(result.indices("kink")))


@pytest.mark.parametrize("offset", [0.0, 1e-12, -1e-12])
def test_correct_relu_network_on_the_kink_passes_with_kinks_counted(offset):
    net = relu_network(0, straddle=True, offset=offset)
    result = fastcheck.check_grad(net.loss, net.grad, net.params)
    assert result.passed, result.report()
    assert result.n_wrong == 0
    assert result.n_kinks == len(net.kink_components)
    assert kink_names(result) == set(net.kink_components)
    # said in the report, and kept out of the metric
    assert any("kink" in note for note in result.notes)
    assert f"{result.n_kinks} at kinks" in result.summary()
    assert result.to_dict()["kinks"] == result.n_kinks
    assert result.relative_error < 1e-7


def test_kink_and_bug_names_the_bug_and_counts_the_kinks():
    net = relu_network(0, straddle=True)
    result = fastcheck.check_grad(net.loss, net.buggy_grad, net.params)
    assert not result.passed
    wrong = result.layout.names_of(result.indices("wrong"))
    assert wrong and {name.split("[")[0] for name in wrong} == {"W3"}
    assert kink_names(result) == set(net.kink_components)
    assert result.worst(1)[0].name.startswith("W3")
    per = {p.name: p for p in result.parameters}
    assert per["W3"].wrong == len(wrong) and per["W1"].kinks + per["b1"].kinks == 4


@pytest.mark.parametrize("method", ["central4", "richardson"])
def test_kinks_with_higher_order_methods(method):
    net = relu_network(0, straddle=True)
    result = fastcheck.check_grad(net.loss, net.grad, net.params, method=method)
    assert result.passed and kink_names(result) == set(net.kink_components)
    bad = fastcheck.check_grad(net.loss, net.buggy_grad, net.params, method=method)
    assert not bad.passed
    assert {n.split("[")[0] for n in bad.layout.names_of(bad.indices("wrong"))} == {"W3"}


def abs_loss(t):
    return float(np.sum(np.abs(t)) + 0.15 * np.sum(t**2))


def abs_theta():
    t = np.random.default_rng(127).standard_normal(12)
    t[[1, 4, 7, 10]] = 0.0
    return t


def test_a_valid_one_sided_derivative_is_a_kink_not_a_bug():
    # analytic +1 at |t| = 0: the right derivative
    theta = abs_theta()
    result = fastcheck.check_grad(abs_loss, lambda t: np.where(t >= 0, 1.0, -1.0) + 0.3 * t,
                                  theta)
    assert result.passed
    assert set(result.indices("kink")) == {1, 4, 7, 10}


def test_a_value_outside_the_one_sided_slopes_is_a_bug_even_at_a_kink():
    # analytic 2 at |t| = 0, outside [-1, 1]: wrong, not excused as a kink
    theta = abs_theta()

    def grad(t):
        g = np.sign(t) + 0.3 * t
        g[4] = 2.0
        return g

    result = fastcheck.check_grad(abs_loss, grad, theta)
    assert not result.passed
    assert list(result.indices("wrong")) == [4]


def test_subgradient_inside_the_slopes_passes_without_a_kink_flag():
    # sign(0) = 0 equals the central difference: nothing looks off, nothing costs more
    theta = abs_theta()
    result = fastcheck.check_grad(abs_loss, lambda t: np.sign(t) + 0.3 * t, theta)
    assert result.verdict == "excellent" and result.n_kinks == 0
    assert result.evaluations == 2 * 12 + 1 + 3


def test_hinge_and_max_kinks():
    # max(t) with a tie: the analytic 1 on np.argmax is one of the one-sided slopes
    t = np.random.default_rng(131).standard_normal(8)
    t[2] = t[5] = np.max(t) + 0.5

    def grad(x):
        g = 0.2 * x
        g[np.argmax(x)] += 1.0
        return g

    result = fastcheck.check_grad(lambda x: float(np.max(x) + 0.1 * np.sum(x**2)), grad, t)
    assert result.passed and set(result.indices("kink")) == {2, 5}


def test_refine_false_reports_kinks_as_wrong():
    # without the second look there is no kink test: the check says so by failing
    net = relu_network(0, straddle=True)
    result = fastcheck.check_grad(net.loss, net.grad, net.params, refine=False)
    assert not result.passed and result.n_kinks == 0
    assert result.evaluations == 2 * sum(a.size for a in net.params.values()) + 1 + 3


@pytest.mark.parametrize("seed", [0, 3, 12, 23, 25])
@pytest.mark.parametrize("method", ["central", "central4", "richardson"])
def test_float32_relu_network_on_the_kink(seed, method):
    # float32 rounding at the refined steps hides part of the jump in slope: a
    # correct component must still not be called wrong (_verdict note 7), and the
    # planted bug must still be found
    net = relu_network(seed, straddle=True, dtype=np.float32)
    result = fastcheck.check_grad(net.loss, net.grad, net.params, method=method)
    assert result.passed and result.n_wrong == 0, result.report()
    assert kink_names(result) <= set(net.kink_components)
    bad = fastcheck.check_grad(net.loss, net.buggy_grad, net.params, method=method)
    assert not bad.passed
    assert {n.split("[")[0] for n in bad.layout.names_of(bad.indices("wrong"))} == {"W3"}
