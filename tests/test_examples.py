"""Plain tests of fastcheck.examples (numpy only: no checker involved)."""

from __future__ import annotations

import importlib.util
import pathlib

import numpy as np
import pytest

try:
    from fastcheck import examples
except ImportError:  # pragma: no cover - the package's C extension may not be built yet
    _path = pathlib.Path(__file__).resolve().parents[1] / "fastcheck" / "examples.py"
    _spec = importlib.util.spec_from_file_location("_fastcheck_examples", _path)
    examples = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(examples)


DEMO_SHAPES = {"W1": (5, 4), "b1": (5, 1), "W2": (3, 5), "b2": (3, 1), "W3": (1, 3), "b3": (1, 1)}


def central_diff(loss, params, h=1e-6):
    """Plain float64 central differences, perturbing params in place and restoring."""
    out = {}
    for k, a in params.items():
        g = np.empty(a.shape)
        for idx in np.ndindex(a.shape):
            x = a[idx]
            a[idx] = x + h
            jp = loss(params)
            a[idx] = x - h
            jm = loss(params)
            a[idx] = x
            g[idx] = (jp - jm) / (2 * h)
        out[k] = g
    return out


def relerr(a, b):
    a = np.concatenate([v.ravel() for v in a.values()])
    b = np.concatenate([v.ravel() for v in b.values()])
    return np.linalg.norm(a - b) / (np.linalg.norm(a) + np.linalg.norm(b))


@pytest.mark.parametrize("seed", [0, 1, 2, 7])
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
def test_demo_network_shapes_and_dtypes(seed, dtype):
    net = examples.demo_network(seed, dtype)
    assert {k: v.shape for k, v in net.params.items()} == DEMO_SHAPES
    assert net.X.shape == (4, 3) and net.Y.shape == (1, 3)
    assert set(np.unique(net.Y)) <= {0.0, 1.0}
    for v in net.params.values():
        assert v.dtype == dtype and v.flags.c_contiguous
    J = net.loss(net.params)
    assert isinstance(J, float) and np.isfinite(J) and J > 0
    for g in (net.grad(net.params), net.buggy_grad(net.params)):
        assert list(g) == list(net.params)
        for k in g:
            assert g[k].shape == net.params[k].shape and g[k].dtype == dtype


def test_demo_network_is_seeded():
    a, b = examples.demo_network(3), examples.demo_network(3)
    for k in a.params:
        np.testing.assert_array_equal(a.params[k], b.params[k])
    np.testing.assert_array_equal(a.X, b.X)
    assert a.loss(a.params) == b.loss(b.params)
    c = examples.demo_network(4)
    assert not np.array_equal(a.params["W1"], c.params["W1"])


@pytest.mark.parametrize("seed", range(10))
def test_demo_network_has_no_preactivation_near_kink(seed):
    net = examples.demo_network(seed)
    Zs = net.preactivations()
    assert [Z.shape for Z in Zs] == [(5, 3), (3, 3), (1, 3)]
    for Z in Zs:
        assert np.min(np.abs(Z)) >= 1e-3


def test_demo_grad_matches_central_differences():
    net = examples.demo_network(1)
    num = central_diff(net.loss, net.params)
    assert relerr(num, net.grad(net.params)) < 1e-8


def test_demo_buggy_grad_differs_only_in_W2_and_b1():
    net = examples.demo_network(1)
    good, bad = net.grad(net.params), net.buggy_grad(net.params)
    for k in good:
        if k == "W2":
            np.testing.assert_allclose(bad[k], 2 * good[k], rtol=1e-15)
            assert not np.allclose(bad[k], good[k])
        elif k == "b1":
            np.testing.assert_allclose(bad[k], 4 * good[k], rtol=1e-15)
            assert not np.allclose(bad[k], good[k])
        else:
            np.testing.assert_array_equal(bad[k], good[k])


def test_loss_reads_the_given_params_and_does_not_modify_them():
    net = examples.demo_network(1)
    before = {k: v.copy() for k, v in net.params.items()}
    J0 = net.loss(net.params)
    other = {k: v.copy() for k, v in net.params.items()}
    other["b3"][0, 0] += 0.5
    assert net.loss(other) != J0
    net.params["b3"][0, 0] += 0.5  # in-place perturbation is seen by the next call
    assert net.loss(net.params) == net.loss(other)
    net.params["b3"][0, 0] = before["b3"][0, 0]
    net.grad(net.params)
    for k in before:
        np.testing.assert_array_equal(net.params[k], before[k])


@pytest.mark.parametrize("offset", [0.0, 1e-12, -1e-12])
def test_relu_network_straddles_the_kink(offset):
    net = examples.relu_network(0, straddle=True, offset=offset)
    layer, unit, example = net.kink
    Zs = net.preactivations()
    z = Zs[layer - 1][unit, example]
    assert abs(z) <= 1e-9
    if offset == 0.0:
        assert z == 0.0
    # every other pre-activation is well away from 0
    for index, Z in enumerate(Zs, start=1):
        absZ = np.abs(Z)
        if index == layer:
            absZ[unit, example] = np.inf
        assert np.min(absZ) >= 1e-3
    assert f"b{layer}[{unit}, 0]" in net.kink_components
    J = net.loss(net.params)
    assert np.isfinite(J)
    for k, g in net.grad(net.params).items():
        assert g.shape == net.params[k].shape


def test_relu_network_kink_shows_in_one_sided_differences():
    net = examples.relu_network(0)
    _, unit, _ = net.kink
    b = net.params["b1"]
    x, h = b[unit, 0], 1e-7
    J0 = net.loss(net.params)
    b[unit, 0] = x + h
    Jp = net.loss(net.params)
    b[unit, 0] = x - h
    Jm = net.loss(net.params)
    b[unit, 0] = x
    d_plus, d_minus = (Jp - J0) / h, (J0 - Jm) / h
    # relu'(0) = 0 makes the analytic value the left derivative (the unit is off below 0).
    g = net.grad(net.params)["b1"][unit, 0]
    assert abs(d_plus - d_minus) > 1e-2
    assert abs(d_minus - g) < 1e-6
    assert abs(d_plus - g) > 1e-2


def test_relu_network_smooth_and_buggy():
    smooth = examples.relu_network(0, straddle=False)
    assert smooth.kink is None and smooth.kink_components == ()
    for Z in smooth.preactivations():
        assert np.min(np.abs(Z)) >= 1e-3
    assert relerr(central_diff(smooth.loss, smooth.params), smooth.grad()) < 1e-8
    net = examples.relu_network(0)
    good, bad = net.grad(), net.buggy_grad()
    for k in good:
        if k == "W3":
            np.testing.assert_allclose(bad[k], 1.5 * good[k], rtol=1e-15)
        else:
            np.testing.assert_array_equal(bad[k], good[k])
    assert not any(name.startswith("W3") for name in net.kink_components)


def test_relu_network_rejects_large_offset():
    with pytest.raises(ValueError, match="offset"):
        examples.relu_network(0, offset=1e-3)


def test_dropout_loss_differs_between_calls_and_repeats_after_reseed():
    net = examples.dropout_network(1, keep_prob=0.8)
    net.reseed(123)
    values = [net.loss(net.params) for _ in range(8)]
    assert all(np.isfinite(values))
    assert len(set(values)) > 1  # the RNG advances at every call
    net.reseed(5)
    a = net.loss(net.params)
    net.reseed(5)
    b = net.loss(net.params)
    assert a == b
    net.reseed(5)
    ga = net.grad(net.params)
    net.reseed(5)
    gb = net.grad(net.params)
    for k in ga:
        np.testing.assert_array_equal(ga[k], gb[k])


def test_dropout_grad_is_correct_for_fixed_masks():
    net = examples.dropout_network(1, keep_prob=0.8)

    def fixed_loss(p):
        net.reseed(11)  # what a before_eval hook does: the same masks at every evaluation
        return net.loss(p)

    net.reseed(11)
    g = net.grad(net.params)
    assert relerr(central_diff(fixed_loss, net.params), g) < 1e-7


def test_dropout_keep_prob_one_is_deterministic():
    net = examples.dropout_network(1, keep_prob=1.0)
    demo = examples.demo_network(1)
    assert net.loss(net.params) == net.loss(net.params) == demo.loss(demo.params)


def test_dropout_rejects_bad_keep_prob():
    with pytest.raises(ValueError, match="keep_prob"):
        examples.dropout_network(1, keep_prob=0.0)
