"""Nondeterministic losses and losses that modify their parameters: no gradient verdict."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import snapshot

import fastcheck
from fastcheck.examples import dropout_network


def bitwise_equal(a, b):
    return all(a[k].tobytes() == b[k].tobytes() for k in a)


@pytest.mark.parametrize(("keep_prob", "dtype"), [(0.8, np.float64), (0.5, np.float32)])
def test_dropout_left_on_is_nondeterministic_with_advice(keep_prob, dtype):
    net = dropout_network(1, keep_prob, dtype)
    # A seeded mask sequence (still a new mask at every call): unseeded, the two probes
    # draw the same mask a few percent of the time and the check finds it only later.
    net.reseed(0)
    before = snapshot(net.params)
    result = fastcheck.check_grad(net.loss, net.grad, net.params)
    assert result.verdict == "nondeterministic"
    assert not result.passed and result.n_wrong == 0
    text = str(result)
    assert "not deterministic" in text
    assert "keep_prob" in text and "before_eval" in text and "seed" in text
    assert "NONDETERMINISTIC" in result.summary()
    assert result.to_dict()["verdict"] == "nondeterministic"
    # found by the probes, before the expensive part
    assert result.evaluations == 2
    assert bitwise_equal(net.params, before)


def test_before_eval_reseeding_makes_the_dropout_network_checkable():
    net = dropout_network(1, 0.8)
    net.reseed(0)
    grad = net.grad()  # the gradient for the mask that seed 0 draws
    result = fastcheck.check_grad(net.loss, grad, net.params,
                                  before_eval=lambda: net.reseed(0))
    assert result.passed, result.report()
    assert result.verdict == "excellent"


def test_before_eval_is_called_before_every_evaluation():
    calls = []
    theta = np.array([0.3, -1.2, 2.0])
    result = fastcheck.check_grad(lambda t: float(np.sum(t**2)), lambda t: 2 * t, theta,
                                  before_eval=lambda: calls.append(1))
    # every evaluation, and once before the grad callable (same state as the loss)
    assert result.evaluations == 2 * 3 + 1 + 3
    assert len(calls) == result.evaluations + 1
    # with a gradient array too: once before the first evaluation, under a
    # snapshot, to catch a before_eval that writes into the parameters
    fastcheck.check_grad(lambda t: float(np.sum(t**2)), 2 * theta, theta,
                         before_eval=lambda: calls.append(1))
    assert len(calls) == 2 * result.evaluations + 2


def test_before_eval_must_be_callable():
    with pytest.raises(TypeError, match="before_eval"):
        fastcheck.check_grad(lambda t: 0.0, lambda t: t, np.zeros(2), before_eval=3)


def test_small_noise_is_still_caught():
    # relative noise of 1e-9 is small, but far above float64 rounding: reported
    rng = np.random.default_rng()
    theta = np.random.default_rng(0).standard_normal(5)

    def loss(t):
        return float(np.sum(t**2)) * (1 + 1e-9 * rng.standard_normal())

    result = fastcheck.check_grad(loss, lambda t: 2 * t, theta)
    assert result.verdict == "nondeterministic"


def test_nondeterminism_that_starts_during_the_check_is_caught_at_the_end():
    # deterministic for the first probes, then drifting: the probe after the run
    # differs from the ones before
    calls = [0]
    theta = np.random.default_rng(0).standard_normal(6)

    def loss(t):
        calls[0] += 1
        drift = 1e-6 * (calls[0] > 5)
        return float(np.sum(t**2)) + drift

    result = fastcheck.check_grad(loss, lambda t: 2 * t, theta)
    assert result.verdict == "nondeterministic"
    assert "before, during and after" in " ".join(result.notes)


def test_loss_that_modifies_its_parameters_is_invalid_and_restored():
    rng = np.random.default_rng(0)
    params = {"w": rng.standard_normal(4), "b": rng.standard_normal(2)}
    before = snapshot(params)

    def loss(p):
        value = float(np.sum(p["w"] ** 2) + np.sum(p["b"]))
        p["w"] *= 0.99  # e.g. a weight-decay step left in the loss
        return value

    result = fastcheck.check_grad(loss, lambda p: {"w": 2 * p["w"], "b": np.ones(2)}, params)
    assert result.verdict == "invalid" and not result.passed
    assert "modified the parameters ['w']" in " ".join(result.notes)
    assert bitwise_equal(params, before)


def test_loss_that_modifies_its_parameters_later_is_caught_after_the_run():
    rng = np.random.default_rng(0)
    params = {"w": rng.standard_normal(4)}
    before = snapshot(params)
    calls = [0]

    def loss(p):
        calls[0] += 1
        if calls[0] == 6:  # once, in the middle of the kernel run
            p["w"][3] += 1.0
        return float(np.sum(p["w"] ** 2))

    result = fastcheck.check_grad(loss, lambda p: {"w": 2 * p["w"]}, params)
    assert result.verdict == "invalid"
    assert bitwise_equal(params, before)


def test_non_finite_loss_at_the_point_is_invalid():
    result = fastcheck.check_grad(lambda t: float("nan"), lambda t: t, np.ones(3))
    assert result.verdict == "invalid" and result.evaluations == 2
