"""executor=: sharded checks on process pools (and dask) equal serial runs bit for bit."""

from __future__ import annotations

import ctypes
import itertools
import pickle
import threading
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

import numpy as np
import pytest

import fastcheck
from fastcheck import _executor
from fastcheck._evaluate import run_kernel
from fastcheck._executor import check_executor, default_shards, run_sharded
from fastcheck._params import as_layout
from fastcheck.examples import demo_network

# ------------------------------------------------------------------ module-level losses
# (module-level so that a ProcessPoolExecutor pickles them by reference)

_A = np.random.default_rng(0).standard_normal((7, 7))


def smooth_loss(p):
    """A loss with some arithmetic in it (rounding differs per component)."""
    total = 0.0
    for v in p.values():
        x = v.astype(np.float64).ravel()
        total += float(np.sum(np.sin(x) * x ** 2) + 0.5 * np.sum(np.exp(0.1 * x)))
    w = p["W"].astype(np.float64)
    return total + float(np.sum(np.tanh(w @ _A[: w.shape[1], :3])))


def smooth_grad(p):
    out = {}
    for k, v in p.items():
        x = v.astype(np.float64)
        out[k] = np.cos(x) * x ** 2 + 2 * x * np.sin(x) + 0.05 * np.exp(0.1 * x)
    w = p["W"].astype(np.float64)
    a = _A[: w.shape[1], :3]
    out["W"] = out["W"] + (1 - np.tanh(w @ a) ** 2) @ a.T
    return out


def complex_loss(p):
    return np.sum(np.sin(p["W"]) * p["W"]) + np.sum(p["b"] ** 3)


def make_params(dtype_b=np.float64):
    rng = np.random.default_rng(3)
    return {"W": rng.standard_normal((6, 7)), "b": rng.standard_normal(5).astype(dtype_b)}


class FailsAt:
    """Raises ValueError when component `flat` of W is perturbed (in whatever process)."""

    def __init__(self, value: float, flat: int, exc: type = ValueError):
        self.value, self.flat, self.exc = value, flat, exc

    def __call__(self, p):
        if p["W"].ravel()[self.flat] != self.value:
            raise self.exc("the model blew up")
        return smooth_loss(p)


class NeedsTwoArgs(Exception):
    def __init__(self, a, b):
        super().__init__(f"{a} and {b}")


class RaisesUnpicklable:
    def __call__(self, p):
        if p["W"][0, 0] != make_params()["W"][0, 0]:
            raise NeedsTwoArgs("x", "y")
        return smooth_loss(p)


class HoldsLock:
    def __init__(self):
        self.lock = threading.Lock()

    def __call__(self, p):
        return smooth_loss(p)


class Counting:
    def __init__(self):
        self.calls = 0

    def __call__(self, p):
        self.calls += 1
        return smooth_loss(p)


class ModifiesParams:
    def __call__(self, p):
        p["b"][0] += 1.0
        return smooth_loss(p)


@pytest.fixture(scope="module")
def pool():
    with ProcessPoolExecutor(2) as ex:
        yield ex


def _same_raw(a, b):
    assert a.center == b.center
    for key in ("plus", "minus", "plus2", "minus2", "step"):
        x, y = getattr(a, key), getattr(b, key)
        assert (x is None) == (y is None), key
        if x is not None:
            assert np.array_equal(x, y), key
    assert a.calls == b.calls
    assert (a.indices is None) == (b.indices is None)


# ----------------------------------------------------------------------- bit for bit
@pytest.mark.parametrize("method", ["central", "forward", "central4"])
def test_sharded_raw_evaluations_equal_serial(pool, method):
    params = make_params(np.float32)  # mixed dtypes: two kernel groups
    layout = as_layout(params)
    serial = run_kernel(smooth_loss, layout, method)
    for shards in (1, 3, 7):
        sharded = run_kernel(smooth_loss, layout, method, executor=pool, shards=shards)
        _same_raw(serial, sharded)
        assert sharded.extra["shards"] == shards


def test_sharded_complex_step_equals_serial(pool):
    layout = as_layout(make_params())
    serial = run_kernel(complex_loss, layout, "complex")
    _same_raw(serial, run_kernel(complex_loss, layout, "complex", executor=pool, shards=4))


def test_sharded_subset_and_steps_equal_serial(pool):
    """What a sampled check asks for: some components, with steps of their own."""
    layout = as_layout(make_params())
    idx = np.array([40, 3, 17, 44, 0, 29, 8], dtype=np.intp)
    steps = np.linspace(1e-6, 1e-5, idx.size)
    serial = run_kernel(smooth_loss, layout, "central", indices=idx, eps_each=steps,
                        eps=1.0, relative=False, with_center=False)
    sharded = run_kernel(smooth_loss, layout, "central", indices=idx, eps_each=steps,
                         eps=1.0, relative=False, with_center=False, executor=pool, shards=3)
    _same_raw(serial, sharded)
    assert np.array_equal(sharded.indices, idx)


def test_check_grad_with_executor_equals_serial_and_names_the_bug(pool):
    net = demo_network()
    before = {k: v.copy() for k, v in net.params.items()}
    serial = fastcheck.check_grad(net.loss, net.buggy_grad, net.params)
    sharded = fastcheck.check_grad(net.loss, net.buggy_grad, net.params, executor=pool)
    assert np.array_equal(serial.numerical_flat, sharded.numerical_flat)
    assert np.array_equal(serial.noise_flat, sharded.noise_flat)
    assert np.array_equal(serial.status, sharded.status)
    assert serial.verdict == sharded.verdict == "wrong"
    assert [c.name for c in serial.worst(5)] == [c.name for c in sharded.worst(5)]
    assert {p.name for p in sharded.parameters if p.wrong} == {"W2", "b1"}
    for k, v in net.params.items():
        assert v.tobytes() == before[k].tobytes()
    good = fastcheck.check_grad(net.loss, net.grad, net.params, executor=pool)
    assert good.passed and good.verdict == "excellent"


def test_numerical_grad_with_executor_equals_serial(pool):
    params = make_params()
    serial = fastcheck.numerical_grad(smooth_loss, params)
    sharded = fastcheck.numerical_grad(smooth_loss, params, executor=pool)
    for k in params:
        assert np.array_equal(serial[k], sharded[k])
    ref = smooth_grad(params)
    assert np.allclose(sharded["W"], ref["W"], rtol=1e-7, atol=1e-8)


def test_thread_pool_workers_keep_private_copies():
    """Threads of one process must not share a perturbed copy."""
    params = make_params()
    serial = run_kernel(smooth_loss, as_layout(params), "central")
    with ThreadPoolExecutor(3) as ex:
        sharded = run_kernel(smooth_loss, as_layout(params), "central", executor=ex, shards=9)
    _same_raw(serial, sharded)


def test_before_eval_and_progress_with_executor(pool):
    net = demo_network()
    seen = []
    r = fastcheck.check_grad(net.loss, net.grad, net.params, executor=pool,
                             before_eval=_noop, progress=lambda d, t: seen.append((d, t)))
    assert r.passed
    assert seen and seen[-1] == (47, 47)
    assert all(b[0] >= a[0] for a, b in itertools.pairwise(seen))


def _noop():
    return None


def test_lambda_crosses_processes_through_cloudpickle(pool):
    pytest.importorskip("cloudpickle")
    params = make_params()
    serial = run_kernel(smooth_loss, as_layout(params), "central")
    sharded = run_kernel(lambda p: smooth_loss(p), as_layout(params), "central",
                         executor=pool, shards=2)
    _same_raw(serial, sharded)


def test_default_shards():
    with ThreadPoolExecutor(2) as ex:
        assert default_shards(ex, 20_000) == 8
        assert default_shards(ex, 40) == 3
        assert default_shards(ex, 1) == 1


# -------------------------------------------------------------------------- bad input
def test_failing_shard_names_its_range_and_leaves_params_untouched(pool):
    params = make_params()
    before = {k: v.tobytes() for k, v in params.items()}
    loss = FailsAt(params["W"].ravel()[25], 25)
    with pytest.raises(ValueError, match="the model blew up") as info:
        run_kernel(loss, as_layout(params), "central", executor=pool, shards=4)
    msg = str(info.value)
    assert "shard 3 of 4" in msg and "components 24..34 of the 47 checked" in msg
    assert "W[3, 3] .. W[4, 6]" in msg and "not modified" in msg
    assert info.value.fastcheck_shard == (24, 35)
    assert {k: v.tobytes() for k, v in params.items()} == before
    # the same through check_grad: the error propagates, params bit for bit intact
    with pytest.raises(ValueError, match=r"shard 2 of 3 .*components 16\.\.30"):
        fastcheck.check_grad(loss, smooth_grad, params, executor=pool)
    assert {k: v.tobytes() for k, v in params.items()} == before


def test_failing_shard_keeps_exception_type(pool):
    params = make_params()
    loss = FailsAt(params["W"].ravel()[2], 2, exc=KeyError)
    with pytest.raises(KeyError, match="shard 1 of 2"):
        run_kernel(loss, as_layout(params), "central", executor=pool, shards=2)


def test_unpicklable_exception_comes_back_as_runtime_error(pool):
    with pytest.raises(RuntimeError, match=r"NeedsTwoArgs: x and y.*shard 1 of 2"):
        run_kernel(RaisesUnpicklable(), as_layout(make_params()), "central",
                   executor=pool, shards=2)


def test_loss_that_modifies_params_in_a_worker(pool):
    # whichever shard reports first: the one perturbing b[0] sees the write while
    # that component is perturbed (issue 13), the other one by its snapshot
    with pytest.raises(ValueError, match=r"modified the parameters .*b.*executor worker"):
        run_kernel(ModifiesParams(), as_layout(make_params()), "central", executor=pool,
                   shards=2)


def test_unpicklable_loss_is_refused_before_any_evaluation(pool):
    params = make_params()
    loss = HoldsLock()
    counting = Counting()
    loss.inner = counting
    with pytest.raises(TypeError, match=r"cannot be pickled.*module-level function"):
        fastcheck.check_grad(loss, smooth_grad, params, executor=pool)
    assert counting.calls == 0


def test_unpicklable_lambda_without_cloudpickle(pool, monkeypatch):
    monkeypatch.setattr(_executor, "_cloudpickle", lambda: None)
    with pytest.raises(TypeError, match="pip install cloudpickle"):
        fastcheck.check_grad(lambda p: smooth_loss(p), smooth_grad, make_params(),
                             executor=pool)


def _c_loss():
    from scipy import LowLevelCallable

    proto = ctypes.CFUNCTYPE(ctypes.c_double, ctypes.c_double)
    func = proto(lambda x: x)
    return LowLevelCallable(func), func


def test_c_loss_cannot_cross_processes(pool):
    llc, _keep = _c_loss()
    with pytest.raises(TypeError, match=r"C loss.*threads=N"):
        check_executor(pool, llc)
    with pytest.raises(TypeError, match=r"cannot cross|C loss"):
        run_sharded(pool, llc, as_layout(make_params()), "central")


def test_executor_argument_validation(pool):
    params = make_params()
    with pytest.raises(TypeError, match=r"concurrent.futures.Executor"):
        fastcheck.check_grad(smooth_loss, smooth_grad, params, executor=4)
    with pytest.raises(ValueError, match="either executor= or threads=2"):
        fastcheck.check_grad(smooth_loss, smooth_grad, params, executor=pool, threads=2)
    with pytest.raises(ValueError, match="shards must be"):
        run_kernel(smooth_loss, as_layout(params), executor=pool, shards=0)


def test_private_copy_cache_is_bounded():
    payload = pickle.dumps((smooth_loss, make_params()))
    for token in "abcd":
        _executor._private_copy(token, payload)
    assert list(_executor._local.cache) == ["c", "d"]
    _executor._forget("d")
    assert list(_executor._local.cache) == ["c"]


# ------------------------------------------------------------------------------- dask
@pytest.fixture(scope="module")
def dask_executor():
    distributed = pytest.importorskip("distributed")
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                       dashboard_address=":0")  # any free port
    client = distributed.Client(cluster)
    try:
        yield client.get_executor()
    finally:
        client.close()
        cluster.close()


def test_dask_executor_equals_serial(dask_executor):
    net = demo_network()
    serial = fastcheck.check_grad(net.loss, net.buggy_grad, net.params)
    sharded = fastcheck.check_grad(net.loss, net.buggy_grad, net.params,
                                   executor=dask_executor)
    assert np.array_equal(serial.numerical_flat, sharded.numerical_flat)
    assert np.array_equal(serial.status, sharded.status)
    assert sharded.verdict == "wrong"
    layout = as_layout(make_params())
    _same_raw(run_kernel(smooth_loss, layout, "central"),
              run_kernel(lambda p: smooth_loss(p), layout, "central", executor=dask_executor))


def test_dask_failing_shard(dask_executor):
    params = make_params()
    before = {k: v.tobytes() for k, v in params.items()}
    loss = FailsAt(params["W"].ravel()[25], 25)
    with pytest.raises(ValueError, match=r"the model blew up.*components 24..34"):
        run_kernel(loss, as_layout(params), "central", executor=dask_executor, shards=4)
    assert {k: v.tobytes() for k, v in params.items()} == before
