"""mode="sample", and bad input for the partial modes (issue 6)."""

from __future__ import annotations

import ctypes
import json

import numpy as np
import pytest
from conftest import assert_bitwise, counting, snapshot

from fastcheck import check_grad, examples


def make_model(seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    shapes = {"W1": (40, 30), "b1": (40,), "W2": (5, 40), "b2": (5,)}
    params = {k: rng.standard_normal(s).astype(dtype) for k, s in shapes.items()}
    d = {k: rng.uniform(0.5, 2.0, s) for k, s in shapes.items()}

    def loss(p):
        return sum(0.5 * float(np.sum(d[k] * p[k].astype(np.float64) ** 2)) for k in p)

    def grad(p):
        return {k: d[k] * p[k] for k in p}

    return params, loss, grad


# ----------------------------------------------------------------------- sample mode


def test_sample_is_stratified_seeded_and_counted():
    params, loss, grad = make_model()
    loss = counting(loss)
    r = check_grad(loss, grad, params, mode="sample", k=5, seed=3)
    assert r.mode == "sample" and r.passed
    assert [p.checked for p in r.parameters] == [5, 5, 5, 5]
    assert r.n_checked == 20
    # 2 probes + 2 per component + 1 final probe
    assert r.evaluations == loss.calls[0] == 2 + 40 + 1
    assert np.isnan(r.numerical_flat[r.status == 5]).all()
    again = check_grad(loss, grad, params, mode="sample", k=5, seed=3)
    other = check_grad(loss, grad, params, mode="sample", k=5, seed=4)
    checked = np.flatnonzero(r.status != 5)
    assert np.array_equal(checked, np.flatnonzero(again.status != 5))
    assert not np.array_equal(checked, np.flatnonzero(other.status != 5))
    assert r.extra["seed"] == 3 and r.extra["sampled"] == {"W1": 5, "b1": 5, "W2": 5,
                                                            "b2": 5}
    assert any("sample mode: 20 of 1,445 components" in n for n in r.notes)
    assert any("mode='directional' covers every component" in n for n in r.notes)
    json.dumps(r.to_dict())


def test_sample_fraction_and_default():
    params, loss, grad = make_model()
    r = check_grad(loss, grad, params, mode="sample", k=0.1, seed=0)
    assert [p.checked for p in r.parameters] == [120, 4, 20, 1]
    r = check_grad(loss, grad, params, mode="sample", seed=0)
    assert [p.checked for p in r.parameters] == [32, 32, 32, 5]


def test_sample_finds_a_wrong_sampled_component_and_names_it():
    params, loss, grad = make_model()
    g = grad(params)
    g["b1"] *= 1.5   # every component of b1 is wrong: any sample of it sees that
    r = check_grad(loss, g, params, mode="sample", k=4, seed=1)
    assert not r.passed
    b1 = next(p for p in r.parameters if p.name == "b1")
    assert b1.wrong == 4 and b1.checked == 4
    assert r.worst(1)[0].name.startswith("b1[")
    assert all(p.wrong == 0 for p in r.parameters if p.name != "b1")


def test_sample_whole_parameter_when_k_is_its_size_and_other_methods():
    params, loss, grad = make_model(2, np.float32)
    saved = snapshot(params)
    r = check_grad(loss, grad, params, mode="sample", k=5, method="forward", seed=0)
    assert r.passed and r.method == "forward"
    assert next(p for p in r.parameters if p.name == "b2").checked == 5
    assert_bitwise(params, saved)


def test_sample_restores_after_an_exception():
    params, loss, grad = make_model(1, np.float32)
    saved = snapshot(params)
    calls = [0]

    def failing(p):
        calls[0] += 1
        if calls[0] == 7:
            raise KeyboardInterrupt
        return loss(p)

    with pytest.raises(KeyboardInterrupt):
        check_grad(failing, grad, params, mode="sample", k=4, seed=0)
    assert_bitwise(params, saved)


# ------------------------------------------------------------------------ bad input


def never_called(p):  # pragma: no cover - the point is that it is not called
    raise AssertionError("the loss must not be evaluated for bad input")


BAD = [
    (dict(mode="sample", k=41), ValueError,
     r"k=41 is larger than a parameter block: 'b1' has 40, 'b2' has 5 component\(s\)"),
    (dict(mode="sample", k=6), ValueError, r"'b2' has 5 component"),
    (dict(mode="sample", k=0), ValueError, r"k must be >= 1"),
    (dict(mode="sample", k=1.5), ValueError, r"fraction .* \(0, 1\)"),
    (dict(mode="sample", k=1.0), ValueError, r"k=1\.0 is ambiguous"),
    (dict(mode="sample", k="3"), TypeError, r"k must be a number"),
    (dict(mode="full", k=3), ValueError, r"k= is the number of components per parameter "
                                          r"for mode='sample'"),
    (dict(mode="directional", k=3), ValueError, r"mode='sample'"),
    (dict(mode="directional", max_evals=10), ValueError,
     r"max_evals=10 is too small to do anything useful: mode='directional' needs at least "
     r"19 loss evaluations for 4 parameter block"),
    (dict(mode="directional", max_evals=0), ValueError, r"too small to do anything useful"),
    (dict(mode="directional", max_evals=100.0), TypeError, r"max_evals must be an int"),
    (dict(mode="sample", max_evals=100), ValueError, r"max_evals= bounds "
                                                     r"mode='directional'"),
    (dict(mode="directional", method="forward"), ValueError,
     r"mode='directional' uses central differences"),
    (dict(mode="directional", seed=-1), TypeError, r"seed must be a non-negative int"),
    (dict(mode="sample", seed=1.5), TypeError, r"seed must be a non-negative int"),
    (dict(seed=-1), TypeError, r"seed must be a non-negative int"),  # also in mode="full"
    (dict(mode="random"), ValueError, r"unknown mode 'random'; expected one of full, "
                                      r"directional, sample"),
    (dict(mode=None), ValueError, r"unknown mode None"),
    (dict(mode="directional", progress="yes"), TypeError, r"progress must be None"),
    (dict(mode="directional", warn_seconds=-1), ValueError, r"warn_seconds must be >= 0"),
    (dict(mode="sample", warn_seconds="60"), TypeError, r"warn_seconds must be a number"),
]


@pytest.mark.parametrize(("kwargs", "error", "message"), BAD,
                         ids=[str(b[0]) for b in BAD])
def test_bad_input_is_refused_before_any_evaluation(kwargs, error, message):
    params, _, grad = make_model(0, np.float32)
    saved = snapshot(params)
    with pytest.raises(error, match=message):
        check_grad(never_called, grad(params), params, **kwargs)
    assert_bitwise(params, saved)


def test_max_evals_error_says_how_much_is_needed():
    params, _, grad = make_model()
    with pytest.raises(ValueError, match=r"Pass max_evals >= \d+") as info:
        check_grad(never_called, grad(params), params, mode="directional", max_evals=18)
    assert "to localise one wrong component" in str(info.value)


def _c_loss():
    scipy = pytest.importorskip("scipy")
    proto = ctypes.CFUNCTYPE(ctypes.c_double, ctypes.POINTER(ctypes.c_double),
                             ctypes.c_ssize_t, ctypes.c_void_p)

    @proto
    def loss(theta, n, user):  # pragma: no cover - must not be called
        raise AssertionError("the C loss must not be called for bad input")

    return scipy.LowLevelCallable(loss), loss   # keep the ctypes object alive


@pytest.mark.parametrize("layout", ["strided", "fortran", "dict"])
def test_directional_with_c_loss_on_non_contiguous_theta(layout):
    c_loss, _keep = _c_loss()
    base = np.arange(40, dtype=np.float64).reshape(5, 8)
    theta = {"strided": base[:, ::2], "fortran": np.asfortranarray(base),
             "dict": {"w": base}}[layout]
    saved = base.copy()
    expected = TypeError if layout == "dict" else ValueError
    with pytest.raises(expected, match=r"mode='directional' with a C loss .* needs theta as "
                                       r"one C-contiguous"):
        check_grad(c_loss, np.zeros((5, 4 if layout == "strided" else 8)) if layout != "dict"
                   else {"w": np.zeros((5, 8))}, theta, mode="directional")
    assert base.tobytes() == saved.tobytes()


def test_gradient_mismatch_is_still_refused_first():
    params, _, grad = make_model()
    g = grad(params)
    g["b2"] = np.zeros(4)
    with pytest.raises(ValueError, match=r"grad for parameter 'b2' has shape \(4,\)"):
        check_grad(never_called, g, params, mode="directional")


def test_examples_network_in_sample_mode():
    net = examples.demo_network(1)
    r = check_grad(net.loss, net.buggy_grad, net.params, mode="sample", k=1, seed=0)
    assert r.n_checked == 6
    assert r.extra["sampled"] == dict.fromkeys(net.params, 1)
