"""No leaks: thousands of checks through every exit path leave reference counts,
RSS and traced allocations flat.

One loop cycles through the success and failure paths of numerical_grad and
check_grad (a correct gradient, a wrong one that triggers refinement, a loss that
raises, a nondeterministic loss, a loss returning a bad value, a gradient callable
that raises, complex step, and a many-block strided view that makes the kernel
allocate its block and offset tables).  After a warm-up, it asserts that
``sys.getrefcount`` of the parameter arrays, the losses and two sentinel objects (one
returned by a loss, one carried by the exceptions) does not move, and that the
process's RSS grows by less than a few MB.
"""

from __future__ import annotations

import gc
import sys
import tracemalloc

import numpy as np
import pytest

from fastcheck import check_grad, numerical_grad

psutil = pytest.importorskip("psutil")


class Boom(Exception):
    pass


SENTINEL_RETURN = np.array(0.25)  # a 0-d array a loss returns, the same object every time
SENTINEL_PAYLOAD = object()  # carried by every exception a loss raises


def make_world():
    """Everything the loop uses, built once so that reference counts can be compared."""
    rng = np.random.default_rng(0)
    params = {"W": rng.standard_normal((4, 3)), "b": rng.standard_normal(4)}
    big = np.zeros((400, 3))
    # 400 runs of 2: the bridge mallocs a 9.6 kB block table and the kernel a 3.2 kB
    # offset table per call, so a leak of either would show in RSS within the loop
    many_blocks = big[:, :2]
    theta = np.array([0.1, 1 / 3, -0.5])
    state = {"calls": 0, "noise": 0.0}

    def loss(p):
        return float(np.sum(np.sin(p["W"])) + np.sum(p["b"] ** 2))

    def grad(p):
        return {"W": np.cos(p["W"]), "b": 2 * p["b"]}

    def wrong_grad(p):
        g = grad(p)
        g["W"][1, 2] *= 3.0
        return g

    def raising_loss(p):
        state["calls"] += 1
        if state["calls"] % 7 == 0:
            raise Boom(SENTINEL_PAYLOAD)
        return loss(p)

    def noisy_loss(p):
        state["noise"] += 1e-3
        return loss(p) + state["noise"]

    def sentinel_loss(p):
        return SENTINEL_RETURN

    def bad_loss(p):
        return [1.0, 2.0]

    def raising_grad(p):
        raise Boom(SENTINEL_PAYLOAD)

    def complex_loss(t):
        return np.sum(np.sin(t) * t)

    def cheap_loss(p):
        return 1.5

    return {
        "params": params, "many_blocks": many_blocks, "big": big, "theta": theta,
        "state": state, "loss": loss, "grad": grad, "wrong_grad": wrong_grad,
        "raising_loss": raising_loss, "noisy_loss": noisy_loss,
        "sentinel_loss": sentinel_loss, "bad_loss": bad_loss, "raising_grad": raising_grad,
        "complex_loss": complex_loss, "cheap_loss": cheap_loss,
    }


def one_round(w, i):
    """One pass through a rotating selection of the paths; returns nothing."""
    p = w["params"]
    path = i % 9
    if path == 0:
        r = check_grad(w["loss"], w["grad"], p)
        assert r.passed
        str(r)
    elif path == 1:
        r = check_grad(w["loss"], w["wrong_grad"], p)
        assert not r.passed
        r.to_dict()
        str(r)
    elif path == 2:
        try:
            check_grad(w["raising_loss"], w["grad"], p)
        except Boom as e:
            assert e.args[0] is SENTINEL_PAYLOAD
        try:
            numerical_grad(w["raising_loss"], p, method="central4")
        except Boom:
            pass
    elif path == 3:
        r = check_grad(w["noisy_loss"], w["grad"], p)
        assert r.verdict == "nondeterministic"
    elif path == 4:
        g = numerical_grad(w["sentinel_loss"], p)
        assert not np.any(g["W"])
        r = check_grad(w["sentinel_loss"], {"W": np.zeros((4, 3)), "b": np.zeros(4)}, p)
        assert r.passed
    elif path == 5:
        try:
            numerical_grad(w["bad_loss"], p)
        except TypeError:
            pass
        try:
            check_grad(w["loss"], w["raising_grad"], p)
        except Boom:
            pass
    elif path == 6:
        t = w["theta"]
        numerical_grad(w["complex_loss"], t, method="complex")
        check_grad(w["complex_loss"], np.sin(t) + t * np.cos(t), t, method="complex")
    elif path == 7:
        numerical_grad(w["cheap_loss"], w["many_blocks"])
        numerical_grad(w["cheap_loss"], w["many_blocks"], method="forward")
    else:
        mb = w["many_blocks"]
        g = np.zeros(mb.shape)
        g[5, 1] = 1.0  # wrong in one component: refinement uses an index list over blocks
        r = check_grad(w["cheap_loss"], g, mb)
        assert not r.passed


def refcounts(w):
    gc.collect()
    watched = [w["params"], w["params"]["W"], w["params"]["b"], w["many_blocks"], w["big"],
               w["theta"], SENTINEL_RETURN, SENTINEL_PAYLOAD]
    watched += [w[k] for k in ("loss", "grad", "wrong_grad", "raising_loss", "noisy_loss",
                               "sentinel_loss", "bad_loss", "raising_grad", "complex_loss",
                               "cheap_loss")]
    return [sys.getrefcount(obj) for obj in watched]


@pytest.mark.slow
def test_thousands_of_checks_do_not_leak():
    w = make_world()
    snapshot = {k: v.tobytes() for k, v in w["params"].items()}
    big_before = w["big"].tobytes()
    process = psutil.Process()
    for i in range(450):  # warm-up: caches, arenas, numpy's small-array cache
        one_round(w, i)
    counts = refcounts(w)
    gc.collect()
    rss0 = process.memory_info().rss
    for i in range(3600):
        one_round(w, i)
    gc.collect()
    rss1 = process.memory_info().rss
    assert refcounts(w) == counts
    growth_mb = (rss1 - rss0) / 2**20
    assert growth_mb < 3.0, f"RSS grew by {growth_mb:.1f} MB over 3600 rounds"
    assert {k: v.tobytes() for k, v in w["params"].items()} == snapshot
    assert w["big"].tobytes() == big_before


@pytest.mark.slow
def test_traced_allocations_stay_flat():
    w = make_world()
    tracemalloc.start()
    try:
        # warm-up, traced: small caches fill up (6 kB, then 2 kB, then nothing)
        for i in range(720):
            one_round(w, i)
        gc.collect()
        before, _ = tracemalloc.get_traced_memory()
        for i in range(720):
            one_round(w, i)
        gc.collect()
        after, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # keeping one small copy of the parameters per check would add ~600 kB here
    assert after - before < 64 * 1024, f"traced memory grew by {after - before} bytes"


def test_exception_from_the_loss_is_released():
    # the exception (and whatever it carries) is not kept alive by the library
    w = make_world()
    payload = object()
    base = sys.getrefcount(payload)

    def loss(p):
        raise Boom(payload)

    for _ in range(50):
        try:
            numerical_grad(loss, w["theta"])
        except Boom:
            pass
        try:
            check_grad(loss, np.zeros(3), w["theta"])
        except Boom:
            pass
    gc.collect()
    assert sys.getrefcount(payload) == base


def test_results_do_not_keep_the_loss_alive():
    import weakref

    theta = np.array([0.1, 0.2])

    class Loss:
        def __call__(self, p):
            return float(np.sum(p**2))

    loss = Loss()
    ref = weakref.ref(loss)
    result = check_grad(loss, 2 * theta, theta)
    g = numerical_grad(loss, theta)
    del loss
    gc.collect()
    assert ref() is None
    assert result.passed and g.shape == (2,)
