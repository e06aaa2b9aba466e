"""Invariants: the parameters come back bit for bit on every exit, exceptions come
through unchanged, and the loss sees the user's own object, perturbed in place.

"Bit for bit" is checked with ``.tobytes()`` (it tells -0.0 from 0.0 and one NaN
payload from another) and with ``np.array_equal(..., equal_nan=True)``.  The values
include 0.1 and 1/3, for which ``(x + h) - h != x``: a kernel that restored by
subtracting the step would be caught.
"""

from __future__ import annotations

import traceback

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastcheck import check_grad, numerical_grad

METHODS = ("central", "forward", "backward", "central4", "complex")
DTYPES = (np.float64, np.float32)
FUNCTIONS = ("numerical_grad", "check_grad")
HERE = __file__


class Boom(Exception):
    """Raised by the test losses."""


# ------------------------------------------------------------------- helpers


def arrays_of(params):
    if isinstance(params, np.ndarray):
        return [params]
    if isinstance(params, dict):
        return list(params.values())
    return list(params)


def snapshot(params, extra=()):
    """Bytes and copies of every array (and of the bases of views, `extra`)."""
    return [(a.tobytes(), a.copy()) for a in [*arrays_of(params), *extra]]


def assert_unchanged(params, snap, extra=()):
    for a, (raw, copy) in zip([*arrays_of(params), *extra], snap, strict=True):
        assert a.tobytes() == raw
        assert np.array_equal(a, copy, equal_nan=True)


def value_loss(params, complex_ok=False):
    """A smooth loss over any structure (analytic: works for complex step)."""
    total = 0.0
    for i, a in enumerate(arrays_of(params)):
        w = 1.0 + 0.1 * i + 0.01 * np.arange(a.size).reshape(a.shape)
        total = total + np.sum(w * np.sin(a)) + 0.5 * np.sum(a * a)
    return total if complex_ok else float(total)


def zero_grad(params):
    if isinstance(params, np.ndarray):
        return np.zeros(params.shape)
    if isinstance(params, dict):
        return {k: np.zeros(v.shape) for k, v in params.items()}
    return type(params)(np.zeros(a.shape) for a in params)


def true_grad(params):
    def one(i, a):
        w = 1.0 + 0.1 * i + 0.01 * np.arange(a.size).reshape(a.shape)
        return w * np.cos(a.astype(np.float64)) + a

    if isinstance(params, np.ndarray):
        return one(0, params)
    if isinstance(params, dict):
        return {k: one(i, v) for i, (k, v) in enumerate(params.items())}
    return type(params)(one(i, a) for i, a in enumerate(params))


def run(function, loss, params, method, grad=None, eps=None):
    if function == "numerical_grad":
        return numerical_grad(loss, params, method=method, eps=eps)
    return check_grad(loss, zero_grad(params) if grad is None else grad, params, method=method,
                      eps=eps)


class FailingLoss:
    """Evaluates `value_loss`; raises `exc_type` at call number `fail_at` (0-based).

    It also checks, at every call, that at most one component of the parameters
    differs from the original: the kernel restores each component before moving on.
    """

    def __init__(self, params, fail_at, exc_type=Boom, complex_ok=False):
        self.fail_at = fail_at
        self.exc_type = exc_type
        self.complex_ok = complex_ok
        self.calls = 0
        self.raised = None
        self.original = [a.copy() for a in arrays_of(params)]
        self.max_perturbed = 0

    def __call__(self, params):
        call = self.calls
        self.calls += 1
        if not self.complex_ok:
            differing = sum(
                int(np.count_nonzero(~((a == o) | (np.isnan(a) & np.isnan(o)))))
                for a, o in zip(arrays_of(params), self.original))
            self.max_perturbed = max(self.max_perturbed, differing)
        if call == self.fail_at:
            self.raised = self.exc_type(f"raised at call {call}")
            raise self.raised
        return value_loss(params, complex_ok=self.complex_ok)


# ---------------------------------------------------- parameter structures


def special_values(dtype):
    tiny = float(np.finfo(dtype).smallest_subnormal) * 3
    return [0.1, 1 / 3, -0.0, 0.0, 2.5, -7.25, 1e3 + 0.1, tiny, -1 / 3]


@st.composite
def one_array(draw, dtype=None):
    """(array, base-or-None): C, Fortran, strided, negative-strided or 0-d."""
    dtype = dtype or draw(st.sampled_from(DTYPES))
    kind = draw(st.sampled_from(["C", "F", "strided", "negative", "0d"]))
    ndim = 0 if kind == "0d" else draw(st.integers(1, 3))
    shape = tuple(draw(st.lists(st.integers(1, 3), min_size=ndim, max_size=ndim)))
    size = int(np.prod(shape, dtype=np.int64))
    values = draw(st.lists(st.sampled_from(special_values(dtype)), min_size=size,
                           max_size=size))
    data = np.array(values, dtype=dtype).reshape(shape)
    if kind in ("C", "0d"):
        return data, None
    if kind == "F":
        return np.asfortranarray(data), None
    base = np.full(tuple(2 * n + 1 for n in shape), 42.0, dtype=dtype)
    if kind == "strided":
        view = base[tuple(slice(1, None, 2) for _ in shape)]
    else:
        view = base[tuple(slice(None, None, -2) for _ in shape)]
    view = view[tuple(slice(0, n) for n in shape)]
    view[...] = data
    return view, base


@st.composite
def structures(draw):
    container = draw(st.sampled_from(["array", "dict", "list", "tuple"]))
    count = 1 if container == "array" else draw(st.integers(1, 3))
    pairs = [draw(one_array()) for _ in range(count)]
    arrays = [a for a, _ in pairs]
    bases = [b for _, b in pairs if b is not None]
    if container == "array":
        params = arrays[0]
    elif container == "dict":
        params = {f"p{i}": a for i, a in enumerate(arrays)}
    elif container == "list":
        params = arrays
    else:
        params = tuple(arrays)
    return params, bases


# ===================================================================== tests


@pytest.mark.parametrize("eps", [None, 0.1, 0.3], ids=["eps-default", "eps-0.1", "eps-0.3"])
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("function", FUNCTIONS)
def test_values_that_do_not_round_trip_are_restored_exactly(function, method, eps):
    theta = np.array([0.1, 1 / 3, -0.0, 2.0 / 3, 1e-310, 123.456, -5e-324])
    if eps is not None:
        # the point of these values: adding and subtracting the step back would
        # not restore them ((1/3 + 0.1) - 0.1 and (0.1 + 0.3) - 0.3 are off by an ulp)
        assert any((x + eps) - eps != x for x in theta[:4])
    snap = snapshot(theta)
    loss = (lambda p: value_loss(p, complex_ok=True)) if method == "complex" else value_loss
    result = run(function, loss, theta, method, grad=true_grad(theta), eps=eps)
    assert_unchanged(theta, snap)
    if function == "check_grad" and eps is None:
        assert result.passed, str(result)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("function", FUNCTIONS)
def test_nan_inf_and_signed_zero_are_restored(function, dtype):
    theta = np.array([np.nan, -np.inf, np.inf, -0.0, 0.1], dtype=dtype)
    # a NaN with a payload: restoring by assignment keeps it; arithmetic might not
    raw = theta.view(np.uint64 if dtype == np.float64 else np.uint32)
    raw[0] |= 0x5
    snap = snapshot(theta)

    def loss(p):
        with np.errstate(invalid="ignore", over="ignore"):
            return float(np.sum(np.where(np.isfinite(p), p, 0.0) ** 2))

    run(function, loss, theta, "central", grad=np.zeros(5))
    assert_unchanged(theta, snap)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=structures(), method=st.sampled_from(METHODS),
       function=st.sampled_from(FUNCTIONS), exc_type=st.sampled_from([Boom, KeyboardInterrupt]),
       data=st.data())
def test_params_restored_when_the_loss_raises_at_any_call(case, method, function, exc_type,
                                                          data):
    params, bases = case
    snap = snapshot(params, bases)
    complex_ok = method == "complex"

    # a dry run counts the calls (and must itself leave everything unchanged)
    counter = FailingLoss(params, fail_at=-1, complex_ok=complex_ok)
    result = run(function, counter, params, method)
    assert_unchanged(params, snap, bases)
    # one component at a time, restored between -- except the noise measurement
    # (_noise), which moves theta along one direction, all components at once
    if not complex_ok and "noise" not in getattr(result, "extra", {}):
        assert counter.max_perturbed <= 1
    fail_at = data.draw(st.integers(0, counter.calls - 1), label="fail_at")

    loss = FailingLoss(params, fail_at=fail_at, exc_type=exc_type, complex_ok=complex_ok)
    with pytest.raises(exc_type) as info:
        run(function, loss, params, method)
    assert info.value is loss.raised
    assert loss.calls == fail_at + 1  # it stopped at once
    frames = traceback.extract_tb(info.value.__traceback__)
    assert any(f.name == "__call__" and f.filename == HERE for f in frames)
    assert_unchanged(params, snap, bases)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("function", FUNCTIONS)
def test_exception_object_and_traceback_come_through(function, method):
    params = {"W": np.array([[0.1, 1 / 3], [0.5, -2.0]]), "b": np.array([1 / 3])}
    snap = snapshot(params)
    raised = []
    calls = [0]

    def my_failing_loss(p):
        calls[0] += 1
        if calls[0] == 4:
            err = Boom("the very object")
            raised.append(err)
            raise err
        return value_loss(p, complex_ok=method == "complex")

    with pytest.raises(Boom) as info:
        run(function, my_failing_loss, params, method)
    assert info.value is raised[0]
    assert type(info.value) is Boom and str(info.value) == "the very object"
    frames = traceback.extract_tb(info.value.__traceback__)
    assert frames[-1].name == "my_failing_loss"  # raised right there, nothing wrapped
    assert frames[-1].filename == HERE
    assert info.value.__cause__ is None
    assert_unchanged(params, snap)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("function", FUNCTIONS)
def test_keyboard_interrupt_from_the_loss(function, method):
    rng = np.random.default_rng(3)
    params = [rng.uniform(-1, 1, (4, 3)), np.asfortranarray(rng.uniform(-1, 1, (3, 2)),
                                                            dtype=np.float32)]
    params[0][0, :2] = (0.1, 1 / 3)
    snap = snapshot(params)
    loss = FailingLoss(params, fail_at=9, exc_type=KeyboardInterrupt,
                       complex_ok=method == "complex")
    with pytest.raises(KeyboardInterrupt) as info:
        run(function, loss, params, method)
    assert info.value is loss.raised
    assert_unchanged(params, snap)


# ------------------------------------------------- what the loss gets to see


@pytest.mark.parametrize("method", ["central", "forward", "backward", "central4"])
@pytest.mark.parametrize("container", ["array", "dict", "list", "tuple"])
def test_loss_gets_the_users_object_perturbed_in_place(container, method):
    W = np.array([[0.1, 1 / 3, 2.0], [-1.5, 0.25, 3.0]])
    b = np.asfortranarray(np.array([[0.5, -0.5], [1.0, 4.0]], dtype=np.float32))
    if container == "array":
        params, arrays, names = W, [W], ["W"]
    elif container == "dict":
        params, arrays, names = {"W": W, "b": b}, [W, b], ["W", "b"]
    elif container == "list":
        params, arrays, names = [W, b], [W, b], ["W", "b"]
    else:
        params, arrays, names = (W, b), [W, b], ["W", "b"]
    originals = [a.copy() for a in arrays]
    seen = []  # per call: the object, and which (array, index) differs by how much

    def loss(p):
        assert p is params
        for a, q in zip(arrays, arrays_of(p)):
            assert q is a  # the user's own arrays, not copies
        diffs = [(names[i], idx, float(a[idx]) - float(o[idx]))
                 for i, (a, o) in enumerate(zip(arrays, originals))
                 for idx in zip(*np.nonzero(a != o))]
        seen.append(diffs)
        return value_loss(p)

    numerical_grad(loss, params, method=method)
    # J(theta) once, unperturbed, then one component at a time in flat (C) order
    assert seen[0] == []
    per_component = {"central": 2, "forward": 1, "backward": 1, "central4": 4}[method]
    order = [(names[i], tuple(int(k) for k in idx)) for i, a in enumerate(arrays)
             for idx in np.ndindex(a.shape)]
    assert len(seen) == 1 + per_component * len(order)
    for c, (name, idx) in enumerate(order):
        calls = seen[1 + per_component * c: 1 + per_component * (c + 1)]
        signs = []
        for diffs in calls:
            assert len(diffs) == 1  # exactly one component perturbed
            got_name, got_idx, delta = diffs[0]
            assert (got_name, tuple(int(k) for k in got_idx)) == (name, idx)
            signs.append(np.sign(delta))
        expected_signs = {"central": [1, -1], "forward": [1], "backward": [-1],
                          "central4": [1, -1, 1, -1]}[method]
        assert signs == expected_signs
    for a, o in zip(arrays, originals):
        assert a.tobytes() == o.tobytes()


def test_central_perturbation_values_are_x_plus_and_minus_represented_step():
    theta = np.array([0.1, 1 / 3, 250.0])
    seen = []
    numerical_grad(lambda p: seen.append(p.copy()) or float(np.sum(p)), theta)
    seen = seen[1:]
    for i, x in enumerate(theta):
        plus, minus = seen[2 * i][i], seen[2 * i + 1][i]
        h = (x + 4.806217383937354e-06 * max(1.0, abs(x))) - x
        assert plus == x + h and minus == x - h


@pytest.mark.parametrize("container", ["array", "dict", "list", "tuple"])
def test_complex_step_calls_the_loss_with_complex_copies(container):
    # documented: complex step runs on complex copies of the parameters (same
    # structure); the user's arrays are never written
    W = np.array([[0.1, 1 / 3], [2.0, -1.0]])
    b = np.array([0.5], dtype=np.float32)
    params = {"array": W, "dict": {"W": W, "b": b}, "list": [W, b], "tuple": (W, b)}[container]
    snap = snapshot(params)
    seen = []

    def loss(p):
        seen.append(p)
        assert type(p) is type(params)
        if isinstance(p, dict):
            assert list(p) == list(params)
        for q, a in zip(arrays_of(p), arrays_of(params)):
            assert q.dtype == (np.complex128 if a.dtype == np.float64 else np.complex64)
            assert q.shape == a.shape and not np.shares_memory(q, a)
            np.testing.assert_array_equal(q.real, a)
        return value_loss(p, complex_ok=True)

    numerical_grad(loss, params, method="complex")
    assert len(seen) == sum(a.size for a in arrays_of(params))
    assert_unchanged(params, snap)


@pytest.mark.parametrize("method", ["central", "forward", "central4"])
def test_check_grad_calls_the_loss_with_the_users_object(method):
    params = {"W": np.array([[0.1, 1 / 3], [2.0, -1.0]]), "b": np.array([0.5])}
    snap = snapshot(params)
    objects = set()

    def loss(p):
        objects.add(id(p))
        assert p["W"] is params["W"] and p["b"] is params["b"]
        return value_loss(p)

    result = check_grad(loss, true_grad(params), params, method=method)
    assert objects == {id(params)}
    assert result.passed, str(result)
    assert_unchanged(params, snap)


def test_grad_callable_gets_the_users_object_unperturbed():
    params = {"W": np.array([[0.1, 1 / 3], [2.0, -1.0]]), "b": np.array([0.5])}
    snap = snapshot(params)
    seen = []

    def grad(p):
        seen.append(p)
        assert_unchanged(p, snap)
        return true_grad(p)

    check_grad(value_loss, grad, params)
    assert len(seen) == 1 and seen[0] is params
