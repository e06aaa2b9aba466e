"""Bad input: a clear error that names the parameter and what was expected, raised
before the loss is evaluated once, with nothing modified (docs/design.md, "Principles").

Every case uses a counting loss and asserts it was never called, and that every
array involved is bitwise unchanged.  Losses that return something that is not a
real scalar can only be caught at the first evaluation: those assert exactly one
call, and unchanged parameters.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest

from fastcheck import check_grad, numerical_grad

FUNCTIONS = ("numerical_grad", "check_grad")
METHOD_NAMES = ("central", "forward", "backward", "central4", "complex")


class CountingLoss:
    def __init__(self, value=1.0):
        self.calls = 0
        self.value = value

    def __call__(self, params):
        self.calls += 1
        return self.value


def arrays_in(obj):
    if isinstance(obj, np.ndarray):
        return [obj]
    if isinstance(obj, dict):
        return [v for v in obj.values() if isinstance(v, np.ndarray)]
    if isinstance(obj, (list, tuple)):
        return [v for v in obj if isinstance(v, np.ndarray)]
    return []


def grad_like(params):
    """A float64 gradient with the structure of params (best effort for bad params)."""
    if isinstance(params, np.ndarray):
        return np.zeros(params.shape)
    if isinstance(params, dict):
        return {k: np.zeros(np.shape(v)) for k, v in params.items()}
    if isinstance(params, (list, tuple)):
        return type(params)(np.zeros(np.shape(v)) for v in params)
    return np.zeros(1)


_LIKE_PARAMS = object()


def call(function, loss, params, grad=_LIKE_PARAMS, **kwargs):
    if function == "numerical_grad":
        return numerical_grad(loss, params, **kwargs)
    return check_grad(loss, grad_like(params) if grad is _LIKE_PARAMS else grad, params,
                      **kwargs)


def assert_rejected(function, params, exc_type, *fragments, loss=None, grad=_LIKE_PARAMS,
                    keep=(), **kwargs):
    """Call `function`; assert it raises `exc_type` whose message contains every
    fragment, that the loss was never called and that no array changed."""
    loss = CountingLoss() if loss is None else loss
    watched = [*arrays_in(params), *keep]
    before = [a.tobytes() for a in watched]
    with pytest.raises(exc_type) as info:
        call(function, loss, params, grad=grad, **kwargs)
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    assert loss.calls == 0, "the loss was evaluated before the input was validated"
    assert [a.tobytes() for a in watched] == before
    return info.value


# ============================================================ parameter dtypes


@pytest.mark.parametrize("function", FUNCTIONS)
@pytest.mark.parametrize(
    "dtype",
    [np.int64, np.int32, np.uint8, np.bool_, np.object_, np.complex128, np.complex64,
     np.float16, np.longdouble],
    ids=lambda d: np.dtype(d).name,
)
def test_unsupported_dtype_is_a_type_error_naming_parameter_and_dtype(function, dtype):
    bad = np.ones((2, 3), dtype=dtype)
    good = np.ones(3)
    params = {"good": good, "W_bad": bad}
    assert_rejected(function, params, TypeError, "'W_bad'", np.dtype(dtype).name,
                    "float64", "float32")


@pytest.mark.parametrize("function", FUNCTIONS)
def test_non_native_byte_order_is_a_type_error(function):
    params = [np.ones(3), np.ones(3, dtype=">f8" if sys.byteorder == "little" else "<f8")]
    assert_rejected(function, params, TypeError, "'params[1]'", "byte order")


@pytest.mark.parametrize("function", FUNCTIONS)
def test_lone_array_is_named_theta(function):
    assert_rejected(function, np.arange(4), TypeError, "'theta'", "int64")


# ======================================================== writeable, layout


@pytest.mark.parametrize("function", FUNCTIONS)
def test_read_only_array_is_a_value_error_mentioning_writeable(function):
    ro = np.ones((2, 2))
    ro.flags.writeable = False
    assert_rejected(function, {"W": np.ones(2), "frozen": ro}, ValueError, "'frozen'",
                    "writeable")


@pytest.mark.parametrize("function", FUNCTIONS)
def test_broadcast_to_view_is_rejected(function):
    # np.broadcast_to gives a read-only, stride-0 view: either reason will do
    view = np.broadcast_to(np.ones((1, 3)), (4, 3))
    error = assert_rejected(function, {"b": view}, ValueError, "'b'")
    assert "writeable" in str(error) or "stride" in str(error)


def _writeable_stride0():
    base = np.ones(3)
    view = np.lib.stride_tricks.as_strided(base, shape=(4, 3), strides=(0, 8))
    assert view.flags.writeable
    return view, base


def _unaligned():
    buffer = bytearray(8 * 6 + 1)
    view = np.frombuffer(buffer, dtype=np.float64, count=6, offset=1)
    view[...] = 1.5
    assert view.flags.writeable and not view.flags.aligned
    return view, buffer


@pytest.mark.parametrize(
    "function",
    ["numerical_grad", "check_grad"],
)
def test_writeable_stride0_view_is_rejected_before_any_evaluation(function):
    view, base = _writeable_stride0()
    assert_rejected(function, {"W": np.ones(2), "bc": view}, ValueError, "'bc'", "stride",
                    keep=[base])


@pytest.mark.parametrize(
    "function",
    ["numerical_grad", "check_grad"],
)
def test_unaligned_array_is_rejected_before_any_evaluation(function):
    view, _ = _unaligned()
    assert_rejected(function, {"u": view}, ValueError, "'u'", "aligned")


@pytest.mark.parametrize("function", FUNCTIONS)
def test_stride0_and_unaligned_are_value_errors(function):
    view, base = _writeable_stride0()
    before = base.tobytes()
    with pytest.raises(ValueError, match="stride of 0"):
        call(function, CountingLoss(), {"bc": view})
    assert base.tobytes() == before
    unaligned, _ = _unaligned()
    before = unaligned.tobytes()
    with pytest.raises(ValueError, match="not aligned"):
        call(function, CountingLoss(), unaligned)
    assert unaligned.tobytes() == before


@pytest.mark.parametrize("function", FUNCTIONS)
def test_self_overlapping_strided_view_is_rejected(function):
    base = np.array([1.0, 2.0, 3.0, 4.0])
    view = np.lib.stride_tricks.as_strided(base, shape=(3, 2), strides=(8, 8))
    assert view.flags.writeable and view[0, 1] is not None
    assert_rejected(function, {"win": view}, ValueError, "'win'", keep=[base])


# ============================================================= containers


@pytest.mark.parametrize("function", FUNCTIONS)
@pytest.mark.parametrize(
    "params",
    [{}, [], (), [np.zeros(0)], {"a": np.zeros((0, 3)), "b": np.zeros(0)}, np.zeros((2, 0))],
    ids=["empty-dict", "empty-list", "empty-tuple", "list-of-empty", "dict-of-empty",
         "zero-size-array"],
)
def test_nothing_to_check_is_a_value_error(function, params):
    assert_rejected(function, params, ValueError)


@pytest.mark.parametrize("function", FUNCTIONS)
@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ([[1.0, 2.0], [3.0, 4.0]], "got list"),
        (1.5, "got float"),
        (None, "got NoneType"),
        ("theta", "got str"),
        ({"W": [1.0, 2.0]}, "'W'"),
        ({"W": np.ones(2), "b": 0.5}, "'b'"),
    ],
    ids=["list-of-lists", "float", "None", "str", "dict-of-list", "dict-with-float"],
)
def test_params_of_a_wrong_type_are_a_type_error(function, params, fragment):
    assert_rejected(function, params, TypeError, fragment, "numpy array")


@pytest.mark.parametrize("function", FUNCTIONS)
def test_same_array_twice_names_both(function):
    W = np.ones((2, 2))
    assert_rejected(function, {"W1": W, "W2": W}, ValueError, "'W1'", "'W2'", "same array")


@pytest.mark.parametrize("function", FUNCTIONS)
@pytest.mark.parametrize(
    "make",
    [
        lambda big: (big[:4], big[3:]),
        lambda big: (big.reshape(2, 4), big.reshape(2, 4).T),
        lambda big: (big[::2], big[2::4]),
    ],
    ids=["sliced-ranges", "transpose", "strided-subset"],
)
def test_overlapping_views_name_both(function, make):
    big = np.linspace(0, 1, 8)
    a, b = make(big)
    assert_rejected(function, [np.ones(1), a, b], ValueError, "'params[1]'", "'params[2]'",
                    "overlap", keep=[big])


# =================================================== method, eps, loss, mode


@pytest.mark.parametrize("function", FUNCTIONS)
@pytest.mark.parametrize("method", ["centre", "Central", "", None, 2],
                         ids=["centre", "Central", "empty", "None", "int"])
def test_unknown_method_lists_the_methods(function, method):
    error = assert_rejected(function, np.ones(3), ValueError, method=method)
    for name in METHOD_NAMES:
        assert name in str(error)


@pytest.mark.parametrize("function", FUNCTIONS)
@pytest.mark.parametrize(
    ("eps", "exc_type"),
    [(0, ValueError), (0.0, ValueError), (-1e-6, ValueError), (float("nan"), ValueError),
     (float("inf"), ValueError), (-float("inf"), ValueError), ("1e-6", TypeError),
     (True, TypeError), ([1e-6], TypeError), (1e-6 + 0j, TypeError)],
    ids=["zero-int", "zero", "negative", "nan", "inf", "-inf", "string", "bool", "list",
         "complex"],
)
def test_bad_eps(function, eps, exc_type):
    error = assert_rejected(function, np.ones(3), exc_type, eps=eps)
    assert "eps" in str(error)


@pytest.mark.parametrize("function", FUNCTIONS)
@pytest.mark.parametrize("loss", [None, 3.0, "loss", np.ones(3)],
                         ids=["None", "float", "str", "array"])
def test_loss_not_callable_is_a_type_error(function, loss):
    theta = np.ones(3)
    before = theta.tobytes()
    with pytest.raises(TypeError, match="loss must be callable"):
        call(function, loss, theta)
    assert theta.tobytes() == before


def test_unknown_mode_is_a_value_error():
    error = assert_rejected("check_grad", np.ones(3), ValueError, "'fast'", mode="fast")
    assert "full" in str(error)


def test_before_eval_not_callable_is_a_type_error():
    assert_rejected("check_grad", np.ones(3), TypeError, "before_eval", before_eval=42)


def test_threads_with_python_loss_rejected_before_any_evaluation():
    assert_rejected("check_grad", np.ones(3), ValueError, "thread", threads=2)


def test_threads_2_with_python_loss_is_a_value_error_with_the_reason():
    theta = np.ones(3)
    before = theta.tobytes()
    with pytest.raises(ValueError, match="GIL"):
        check_grad(CountingLoss(), np.zeros(3), theta, threads=2)
    assert theta.tobytes() == before


# ================================================================ gradients

PARAMS_DICT = {"W": (2, 3), "b": (2,)}


def make_dict():
    return {k: np.ones(s) for k, s in PARAMS_DICT.items()}


@pytest.mark.parametrize(
    ("grad", "exc_type", "fragments"),
    [
        ({"W": np.zeros((2, 3))}, ValueError, ["'b'"]),
        ({"W": np.zeros((2, 3)), "b": np.zeros(2), "c": np.zeros(1)}, ValueError, ["'c'"]),
        ({"W": np.zeros((3, 2)), "b": np.zeros(2)}, ValueError, ["'W'", "(3, 2)", "(2, 3)"]),
        ({"W": np.zeros((2, 3)), "b": np.zeros((2, 1))}, ValueError,
         ["'b'", "(2, 1)", "(2,)"]),
        ({"W": np.zeros((2, 3)), "b": np.zeros(2, dtype=bool)}, TypeError, ["'b'", "bool"]),
        ({"W": np.zeros((2, 3), dtype=complex), "b": np.zeros(2)}, TypeError,
         ["'W'", "complex128"]),
        ({"W": np.zeros((2, 3), dtype=object), "b": np.zeros(2)}, TypeError,
         ["'W'", "object"]),
        ({"W": np.zeros((2, 3)), "b": np.array(["a", "b"])}, TypeError, ["'b'"]),
        ({"W": [[0.0] * 3] * 2, "b": np.zeros(2)}, TypeError, ["'W'", "(2, 3)"]),
        ([np.zeros((2, 3)), np.zeros(2)], TypeError, ["dict"]),
        (None, TypeError, ["dict"]),
    ],
    ids=["missing-key", "extra-key", "wrong-shape", "column-for-vector", "bool-dtype",
         "complex-dtype", "object-dtype", "str-dtype", "nested-list", "list-for-dict",
         "None"],
)
def test_grad_not_matching_params_dict(grad, exc_type, fragments):
    assert_rejected("check_grad", make_dict(), exc_type, *fragments, grad=grad)


def test_integer_grad_is_rejected():
    grad = {"W": np.zeros((2, 3), dtype=np.int64), "b": np.zeros(2)}
    assert_rejected("check_grad", make_dict(), TypeError, "'W'", "int64", grad=grad)


@pytest.mark.parametrize(
    ("params", "grad", "fragments"),
    [
        ([np.ones(2), np.ones(3)], [np.zeros(2)], ["1", "2"]),
        ([np.ones(2), np.ones(3)], [np.zeros(2), np.zeros(3), np.zeros(1)], ["3", "2"]),
        ([np.ones(2), np.ones(3)], [np.zeros(2), np.zeros(4)],
         ["'params[1]'", "(4,)", "(3,)"]),
        ((np.ones(2),), np.zeros(2), ["tuple"]),
        (np.ones((2, 2)), np.zeros((4,)), ["'theta'", "(4,)", "(2, 2)"]),
        (np.ones(3), {"theta": np.zeros(3)}, ["array"]),
    ],
    ids=["list-too-short", "list-too-long", "list-wrong-shape", "array-for-tuple",
         "array-wrong-shape", "dict-for-array"],
)
def test_grad_not_matching_params_list_and_array(params, grad, fragments):
    assert_rejected("check_grad", params, (TypeError, ValueError), *fragments, grad=grad)


class GradError(Exception):
    pass


def test_grad_callable_that_raises_propagates_its_own_exception():
    params = make_dict()
    raised = []

    def grad(p):
        raised.append(GradError("backward pass failed"))
        raise raised[0]

    error = assert_rejected("check_grad", params, GradError, "backward pass failed", grad=grad)
    assert error is raised[0]
    if sys.version_info >= (3, 11):
        assert any("grad(params)" in note for note in error.__notes__)


@pytest.mark.parametrize(
    ("returned", "fragments"),
    [
        (lambda p: {"W": np.zeros((2, 3))}, ["grad(params)", "'b'"]),
        (lambda p: [np.zeros((2, 3)), np.zeros(2)], ["grad(params)"]),
        (lambda p: None, ["grad(params)"]),
        (lambda p: {"W": np.zeros((2, 3)), "b": np.zeros(3)}, ["grad(params)", "'b'", "(3,)"]),
    ],
    ids=["missing-key", "list", "None", "wrong-shape"],
)
def test_grad_callable_returning_the_wrong_structure_names_grad_params(returned, fragments):
    assert_rejected("check_grad", make_dict(), (TypeError, ValueError), *fragments,
                    grad=returned)


def test_grad_callable_that_modifies_params_is_refused_and_restored():
    params = make_dict()
    before = {k: v.tobytes() for k, v in params.items()}
    loss = CountingLoss()

    def grad(p):
        p["W"][0, 0] = 99.0
        return {k: np.zeros(v.shape) for k, v in p.items()}

    with pytest.raises(ValueError, match="modified"):
        check_grad(loss, grad, params)
    assert loss.calls == 0
    assert {k: v.tobytes() for k, v in params.items()} == before


# ======================================================== what the loss returns


@pytest.mark.parametrize("function", FUNCTIONS)
@pytest.mark.parametrize(
    ("value", "fragments"),
    [
        (np.ones(3), ["array", "(3,)"]),
        (np.ones((2, 2)), ["array", "(2, 2)"]),
        (None, ["None"]),
        ("0.5", ["str", "'0.5'"]),
        ([0.5], ["list"]),
        ([0.5, 1.0], ["list"]),
        (1 + 2j, ["complex"]),
        (np.complex128(1.0), ["complex"]),
        (np.array([1 + 1j]), ["complex"]),
        (True, ["bool"]),
        (object(), ["object"]),
    ],
    ids=["vector", "matrix", "None", "str", "list1", "list2", "complex", "np-complex",
         "complex-array", "bool", "object"],
)
def test_loss_returning_a_non_scalar_is_a_type_error_naming_it(function, value, fragments):
    theta = np.array([0.1, 1 / 3, 2.0])
    before = theta.tobytes()
    loss = CountingLoss(value)
    with pytest.raises(TypeError) as info:
        call(function, loss, theta)
    message = str(info.value)
    assert "real scalar" in message
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    assert loss.calls == 1  # caught at the first evaluation
    assert theta.tobytes() == before


@pytest.mark.parametrize("method", ["central", "forward", "central4"])
@pytest.mark.parametrize("function", FUNCTIONS)
def test_loss_returning_none_at_a_perturbed_point(function, method):
    theta = np.array([[0.1, 1 / 3], [2.0, -1.0]])
    before = theta.tobytes()
    calls = [0]

    def loss(p):
        calls[0] += 1
        return None if calls[0] == 4 else float(np.sum(p**2))

    with pytest.raises(TypeError, match="returned None"):
        call(function, loss, theta, grad=2 * theta, method=method)
    assert calls[0] == 4
    assert theta.tobytes() == before


@pytest.mark.parametrize("function", FUNCTIONS)
@pytest.mark.parametrize(
    "value",
    [0.5, np.float64(0.5), np.float32(0.5), np.array(0.5), np.array([[0.5]]), 1, np.int64(1)],
    ids=["float", "np-float64", "np-float32", "0d", "1x1", "int", "np-int64"],
)
def test_scalar_like_return_values_are_accepted(function, value):
    theta = np.array([0.1, 1 / 3])
    result = call(function, CountingLoss(value), theta)
    if function == "numerical_grad":
        np.testing.assert_array_equal(result, [0.0, 0.0])
    else:
        assert result.passed and result.relative_error == 0.0


def test_complex_method_with_a_loss_that_drops_the_imaginary_part():
    theta = np.array([0.1, 1 / 3])
    before = theta.tobytes()
    with pytest.raises(TypeError, match="complex"):
        numerical_grad(lambda p: float(np.sum(np.abs(p))), theta, method="complex")
    assert theta.tobytes() == before
