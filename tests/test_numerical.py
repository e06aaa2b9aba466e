"""numerical_grad: the seed's worked example, orders of convergence, default steps,
and agreement with a slow pure-Python reference across structures, dtypes, memory
layouts and methods.

The reference (``slow_numerical_grad``) is deliberately naive, in the spirit of
bottleneck's "slow" functions: a Python loop over ``np.ndindex`` that perturbs each
element in place in the user's own array, calls the loss, and puts the saved value
back.  It reproduces the library's documented step rule (the represented step
``h = (x + eps) - x`` computed in the parameter's dtype, ``eps = eps0 * max(1, |x|)``
by default), so the two must agree to the last bits.
"""

from __future__ import annotations

import math
from collections import OrderedDict

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastcheck
from fastcheck import numerical_grad

METHODS = ("central", "forward", "backward", "central4", "complex")
REAL_METHODS = ("central", "forward", "backward", "central4")
DTYPES = (np.float64, np.float32)
DTYPE_IDS = ("f64", "f32")

# ----------------------------------------------------------------- the reference

# Default relative step exponents and the complex step, as documented in
# numerical_grad's docstring: u**(1/3) central, u**(1/2) one-sided, u**(1/5) central4.
STEP_EXPONENT = {"central": 1 / 3, "forward": 1 / 2, "backward": 1 / 2, "central4": 1 / 5}
UNIT = {np.dtype(np.float64): 2.0**-53, np.dtype(np.float32): 2.0**-24}


def reference_eps0(dtype, method):
    if method == "complex":
        return 1e-20
    return UNIT[np.dtype(dtype)] ** STEP_EXPONENT[method]


def represented_step(x, eps, dtype, relative):
    """h = (x + eps) - x in the parameter's dtype (docs/design.md: the step that counts
    is the step represented)."""
    t = np.dtype(dtype).type
    x = t(x)
    nominal = eps * max(1.0, abs(float(x))) if relative else eps
    shifted = t(x + t(nominal))
    return t(shifted - x)


def slow_numerical_grad(loss, params, eps=None, method="central"):
    """A plain Python loop; returns float64 arrays in the structure of `params`."""
    if isinstance(params, np.ndarray):
        arrays, rebuild = [params], lambda pieces: pieces[0]
    elif isinstance(params, dict):
        keys = list(params)
        arrays, rebuild = [params[k] for k in keys], lambda pieces: dict(zip(keys, pieces))
    else:
        arrays = list(params)
        rebuild = list if isinstance(params, list) else tuple
    if method == "complex":
        return rebuild([_slow_complex(loss, params, arrays, i, eps) for i in range(len(arrays))])
    center = float(loss(params))
    out = []
    for a in arrays:
        t = a.dtype.type
        g = np.empty(a.shape, dtype=np.float64)
        relative = eps is None
        nominal = reference_eps0(a.dtype, method) if relative else eps
        for idx in np.ndindex(a.shape):
            x = a[idx]
            h = represented_step(x, nominal, a.dtype, relative)

            def at(value, a=a, idx=idx, x=x):
                a[idx] = value
                try:
                    return float(loss(params))
                finally:
                    a[idx] = x

            hd = float(h)
            if method == "central":
                g[idx] = (at(t(x + h)) - at(t(x - h))) / (2 * hd)
            elif method == "forward":
                g[idx] = (at(t(x + h)) - center) / hd
            elif method == "backward":
                g[idx] = (center - at(t(x - h))) / hd
            elif method == "central4":
                p, m = at(t(x + h)), at(t(x - h))
                p2, m2 = at(t(x + t(2) * h)), at(t(x - t(2) * h))
                g[idx] = (8 * (p - m) - (p2 - m2)) / (12 * hd)
            else:  # pragma: no cover
                raise ValueError(method)
        out.append(g)
    return rebuild(out)


def _slow_complex(loss, params, arrays, which, eps):
    """Complex step for array `which`: Im J(theta + i h e_k) / h on complex copies."""
    twins = [a.astype(np.complex128 if a.dtype == np.float64 else np.complex64)
             for a in arrays]
    if isinstance(params, np.ndarray):
        twin_params = twins[0]
    elif isinstance(params, dict):
        twin_params = dict(zip(params, twins))
    else:
        twin_params = type(params)(twins)
    a = twins[which]
    real_t = np.float64 if a.dtype == np.complex128 else np.float32
    h = represented_step(0.0, 1e-20 if eps is None else eps, real_t, False)
    g = np.empty(a.shape, dtype=np.float64)
    for idx in np.ndindex(a.shape):
        x = a[idx]
        a[idx] = x + 1j * h
        value = loss(twin_params)
        a[idx] = x
        g[idx] = float(np.imag(value)) / float(h)
    return g


# ------------------------------------------------------------------ test losses


def _weights(shape, salt=0.0):
    size = int(np.prod(shape, dtype=np.int64))
    return 1.0 + salt + 0.1 * np.arange(size, dtype=np.float64).reshape(shape)


def smooth_loss(p, salt=0.0):
    """sum(w * sin(p)) + (sum p*p)**2 / 4: analytic, so it also works for complex step.

    Returns a numpy scalar (complex when p is complex)."""
    w = _weights(p.shape, salt)
    return np.sum(w * np.sin(p)) + 0.25 * np.sum(p * p) ** 2


def smooth_grad(p, salt=0.0):
    p = np.asarray(p, dtype=np.float64)
    return _weights(p.shape, salt) * np.cos(p) + np.sum(p * p) * p


def structure_loss(params):
    arrays = params.values() if isinstance(params, dict) else params
    return sum(smooth_loss(a, salt=i) for i, a in enumerate(arrays))


# --------------------------------------------------------------- memory layouts


def make_layout(kind, dtype, seed=0):
    """(array, keepalive) for one memory layout; values include 0.1 and 1/3."""
    rng = np.random.default_rng(seed)

    def fill(shape):
        a = rng.uniform(-1.5, 1.5, size=shape).astype(dtype)
        flat = a.reshape(-1)
        flat[:2] = (0.1, 1 / 3)[: flat.size]
        return a

    if kind == "C":
        a = fill((3, 4))
        return a, None
    if kind == "F":
        a = np.asfortranarray(fill((3, 4)))
        assert a.flags.f_contiguous and not a.flags.c_contiguous
        return a, None
    if kind == "strided":
        big = fill((9, 10))
        return big[::2, 1::3], big
    if kind == "negative":
        base = fill((7,))
        return base[::-1], base
    if kind == "negative2d":
        big = fill((5, 8))
        return big[::-1, ::-3], big
    if kind == "transposed3d":
        base = fill((2, 3, 4))
        return base.transpose(2, 0, 1), base
    if kind == "unit_axes":
        big = fill((6, 5))
        return big[1:2, None, ::2], big
    if kind == "0d":
        return np.array(fill((1,))[0], dtype=dtype), None
    raise ValueError(kind)


# How far each method may be from the analytic derivative, relative to max |g|
# (truncation + rounding at the default step; the losses here are computed in float64).
ANALYTIC_TOL = {
    "float64": {"central": 1e-8, "forward": 1e-6, "backward": 1e-6, "central4": 1e-9,
                "complex": 1e-14},
    "float32": {"central": 3e-4, "forward": 1e-2, "backward": 1e-2, "central4": 1e-4,
                "complex": 1e-6},
}

LAYOUTS = ("C", "F", "strided", "negative", "negative2d", "transposed3d", "unit_axes", "0d")


def real_loss(p):
    return float(smooth_loss(p))


# ======================================================================= tests


class TestSeedFacts:
    """docs/design.md, "Facts": f(θ) = θ³ at θ = 1, ε = 0.01."""

    @pytest.mark.parametrize(
        ("method", "expected"),
        [("central", 3.0001), ("forward", 3.0301), ("backward", 2.9701)],
        ids=["central-3.0001", "forward-3.0301", "backward-2.9701"],
    )
    def test_cube_at_one(self, method, expected):
        theta = np.array([1.0])
        g = numerical_grad(lambda t: float(t[0] ** 3), theta, eps=0.01, method=method)
        assert isinstance(g, np.ndarray) and g.shape == (1,) and g.dtype == np.float64
        assert abs(g[0] - expected) < 1e-12
        assert theta[0] == 1.0

    def test_central_error_is_1e4_and_forward_3e2(self):
        theta = np.array([1.0])
        c = numerical_grad(lambda t: float(t[0] ** 3), theta, eps=0.01)[0]
        f = numerical_grad(lambda t: float(t[0] ** 3), theta, eps=0.01, method="forward")[0]
        assert c - 3 == pytest.approx(1e-4, rel=1e-8)
        assert f - 3 == pytest.approx(3.01e-2, rel=1e-10)

    def test_central4_and_complex_on_the_cube(self):
        # Five-point stencil is exact for a cubic; complex step is exact to rounding.
        theta = np.array([1.0])
        g4 = numerical_grad(lambda t: float(t[0] ** 3), theta, eps=0.01, method="central4")
        gc = numerical_grad(lambda t: t[0] ** 3, theta, method="complex")
        assert abs(g4[0] - 3.0) < 1e-12
        assert abs(gc[0] - 3.0) < 1e-15


# ---------------------------------------------------------------- convergence

X0 = 0.7


def _composite(t):
    return np.sin(np.exp(t[0]))


TRUE_DERIV = math.cos(math.exp(X0)) * math.exp(X0)


@pytest.mark.parametrize(
    ("method", "order", "log_lo", "log_hi"),
    [
        ("central", 2, -1.0, -4.0),
        ("forward", 1, -1.0, -4.0),
        ("backward", 1, -1.0, -4.0),
        # h**4 reaches rounding (1e-16 / h) near h = 1e-3: stop before.
        ("central4", 4, -1.0, -2.5),
    ],
    ids=["central-order2", "forward-order1", "backward-order1", "central4-order4"],
)
def test_measured_order_of_convergence(method, order, log_lo, log_hi):
    eps_values = np.logspace(log_lo, log_hi, 7)
    errors = []
    for eps in eps_values:
        theta = np.array([X0])
        g = numerical_grad(lambda t: float(_composite(t)), theta, eps=float(eps), method=method)
        errors.append(abs(g[0] - TRUE_DERIV))
    slope = np.polyfit(np.log(eps_values), np.log(errors), 1)[0]
    assert slope == pytest.approx(order, abs=0.15)


def test_complex_step_is_exact_to_rounding():
    theta = np.array([X0])
    g = numerical_grad(_composite, theta, eps=1e-20, method="complex")
    assert abs(g[0] - TRUE_DERIV) <= 1e-15 * abs(TRUE_DERIV)
    # default step is the same 1e-20
    g_default = numerical_grad(_composite, theta, method="complex")
    assert g_default[0] == g[0]


# ----------------------------------------------------------------- step rules


def _seen_steps(dtype, method, x, eps=None):
    """The perturbations the loss actually sees for one component at value x."""
    theta = np.array([x], dtype=dtype)
    seen = []

    def loss(t):
        seen.append(t[0])
        return t[0] * 1.0 if method == "complex" else float(t[0])

    numerical_grad(loss, theta, eps=eps, method=method)
    x_t = np.dtype(dtype).type(x)
    if method == "complex":
        return sorted({float(np.imag(v)) for v in seen} - {0.0})
    return sorted({float(abs(np.float64(v) - np.float64(x_t))) for v in seen} - {0.0})


@pytest.mark.parametrize(
    ("dtype", "method", "documented"),
    [
        (np.float64, "central", "4.8e-06"),
        (np.float64, "forward", "1.1e-08"),
        (np.float64, "backward", "1.1e-08"),
        # (the default_eps docstring says 6.9e-4 here; u**(1/5) is 6.4e-4)
        (np.float64, "central4", "0.00064"),
        (np.float32, "central", "0.0039"),
        (np.float32, "forward", "0.00024"),
        (np.float32, "backward", "0.00024"),
        (np.float32, "central4", "0.036"),
    ],
    ids=lambda v: v.__name__ if isinstance(v, type) else str(v),
)
def test_default_step_per_dtype_and_method(dtype, method, documented):
    x = 0.5  # |x| < 1: the step is eps0 itself
    steps = _seen_steps(dtype, method, x)
    h = steps[0]
    expected = float(represented_step(x, reference_eps0(dtype, method), dtype, True))
    assert h == expected
    # the represented step is eps0 up to the rounding of x + eps0
    rtol = 1e-9 if dtype is np.float64 else 1e-4
    assert h == pytest.approx(reference_eps0(dtype, method), rel=rtol)
    assert f"{h:.2g}" == documented
    if method == "central4":
        assert steps == pytest.approx([h, 2 * h], rel=1e-6)
    else:
        assert steps == [h]


def test_default_step_differs_between_float32_and_float64():
    h64 = _seen_steps(np.float64, "central", 0.5)[0]
    h32 = _seen_steps(np.float32, "central", 0.5)[0]
    assert h64 == pytest.approx(4.806e-6, rel=1e-3)
    assert h32 == pytest.approx(3.906e-3, rel=1e-3)
    assert h32 / h64 == pytest.approx(2.0 ** (29 / 3), rel=1e-3)  # (2**-24 / 2**-53)**(1/3)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_default_step_is_relative_to_magnitude(dtype):
    for x in (100.0, -250.0):
        h = _seen_steps(dtype, "central", x)[0]
        assert h == pytest.approx(reference_eps0(dtype, "central") * abs(x), rel=1e-3)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_complex_default_step_is_1e20(dtype):
    h = _seen_steps(dtype, "complex", 0.5)[0]
    assert h == pytest.approx(1e-20, rel=1e-6)


@pytest.mark.parametrize("method", REAL_METHODS)
def test_given_eps_is_absolute(method):
    h = _seen_steps(np.float64, method, 100.0, eps=1e-3)[0]
    assert h == pytest.approx(1e-3, rel=1e-9)  # not 100 * 1e-3


@pytest.mark.parametrize("method", REAL_METHODS)
@pytest.mark.parametrize(("dtype", "x"), [(np.float64, 1e8), (np.float32, 1000.0)],
                         ids=["f64-1e8", "f32-1e3"])
def test_divides_by_the_represented_step(method, dtype, x):
    # d/dx of x is exactly 1 when the quotient uses h = (x + eps) - x; the nominal
    # eps = 1e-3 is not representable next to x and would give 0.99998... instead.
    theta = np.array([x], dtype=dtype)
    g = numerical_grad(lambda t: float(t[0]), theta, eps=1e-3, method=method)
    assert g[0] == 1.0


# ----------------------------------------------------- layouts vs the reference


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("kind", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_matches_slow_reference_on_layout(dtype, kind, method):
    a, keep = make_layout(kind, dtype)
    before = a.copy()
    loss = smooth_loss if method == "complex" else real_loss
    expected = slow_numerical_grad(loss, a, method=method)
    got = numerical_grad(loss, a, method=method)
    assert isinstance(got, np.ndarray)
    assert got.shape == a.shape and got.dtype == np.float64
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-300)
    # and it is a derivative: close to the analytic one at the dtype's precision
    truth = smooth_grad(a)
    tol = ANALYTIC_TOL[np.dtype(dtype).name][method] * np.max(np.abs(truth))
    np.testing.assert_allclose(got, truth, rtol=0, atol=tol)
    assert a.tobytes() == before.tobytes()
    del keep


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("container", ["dict", "OrderedDict", "list", "tuple"])
def test_structures_come_back_alike(container, method):
    W, _ = make_layout("F", np.float64, seed=1)
    v, keep = make_layout("strided", np.float64, seed=2)
    b, _ = make_layout("0d", np.float64, seed=3)
    r, keep2 = make_layout("negative", np.float64, seed=4)
    arrays = [W, v, b, r]
    if container == "dict":
        params = {"W": W, "v": v, "b": b, "r": r}
    elif container == "OrderedDict":
        params = OrderedDict([("W", W), ("v", v), ("b", b), ("r", r)])
    elif container == "list":
        params = arrays
    else:
        params = tuple(arrays)
    loss = structure_loss if method == "complex" else (lambda p: float(structure_loss(p)))
    expected = slow_numerical_grad(loss, params, method=method)
    got = numerical_grad(loss, params, method=method)
    if container in ("dict", "OrderedDict"):
        assert isinstance(got, dict)
        assert list(got) == ["W", "v", "b", "r"]
        got_arrays = list(got.values())
        exp_arrays = list(expected.values())
    else:
        assert type(got) is type(params)
        assert len(got) == 4
        got_arrays, exp_arrays = list(got), list(expected)
    for g, e, a in zip(got_arrays, exp_arrays, arrays):
        assert isinstance(g, np.ndarray) and g.dtype == np.float64 and g.shape == a.shape
        assert not np.shares_memory(g, a)
        np.testing.assert_allclose(g, e, rtol=1e-12, atol=1e-300)
    del keep, keep2


@pytest.mark.parametrize("method", METHODS)
def test_mixed_float32_float64_dict(method):
    params = {
        "W": np.random.default_rng(5).uniform(-1, 1, (3, 2)).astype(np.float32),
        "b": np.array([0.1, 1 / 3, -0.25]),
        "c": np.asfortranarray(np.random.default_rng(6).uniform(-1, 1, (2, 3)),
                               dtype=np.float32),
    }
    loss = structure_loss if method == "complex" else (lambda p: float(structure_loss(p)))
    expected = slow_numerical_grad(loss, params, method=method)
    got = numerical_grad(loss, params, method=method)
    assert list(got) == ["W", "b", "c"]
    for k in params:
        assert got[k].dtype == np.float64 and got[k].shape == params[k].shape
        np.testing.assert_allclose(got[k], expected[k], rtol=1e-12, atol=1e-300)
    if method != "central4":
        # each array got its own dtype's default step: float32 entries are coarser
        tol32 = 5e-2 if method in ("forward", "backward") else 1e-2
        np.testing.assert_allclose(got["W"], smooth_grad(params["W"], 0.0), rtol=tol32,
                                   atol=tol32)
        np.testing.assert_allclose(got["b"], smooth_grad(params["b"], 1.0), rtol=1e-5,
                                   atol=1e-7)


def test_numerical_grad_result_is_float64_for_float32_params():
    theta = np.linspace(-1, 1, 5, dtype=np.float32)
    g = numerical_grad(lambda t: float(np.sum(t.astype(np.float64) ** 2)), theta)
    assert g.dtype == np.float64
    np.testing.assert_allclose(g, 2 * theta.astype(np.float64), rtol=1e-2, atol=1e-2)


# ------------------------------------------------------ hypothesis: any layout


@st.composite
def strided_views(draw):
    """A view with arbitrary (positive or negative) strides into a larger base array."""
    dtype = draw(st.sampled_from(DTYPES))
    ndim = draw(st.integers(0, 3))
    shape = tuple(draw(st.lists(st.integers(1, 4), min_size=ndim, max_size=ndim)))
    steps = [draw(st.sampled_from([1, 2, 3, -1, -2])) for _ in range(ndim)]
    base_shape = tuple(n * abs(s) + 1 for n, s in zip(shape, steps))
    seed = draw(st.integers(0, 2**16))
    base = np.random.default_rng(seed).uniform(-2, 2, base_shape).astype(dtype)
    offsets = [draw(st.integers(0, 1)) for _ in range(ndim)]
    view = base[tuple(slice(o, None, s) if s > 0 else slice(-1 - o, None, s)
                      for o, s in zip(offsets, steps))]
    view = view[tuple(slice(0, n) for n in shape)] if ndim else base[...]
    assert view.shape == shape and np.shares_memory(view, base)
    if ndim >= 2 and draw(st.booleans()):
        view = view.transpose(np.random.default_rng(seed).permutation(ndim))
    return view, base


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=strided_views(), method=st.sampled_from(METHODS))
def test_any_strided_view_matches_reference(case, method):
    view, base = case
    base_before = base.tobytes()
    loss = smooth_loss if method == "complex" else real_loss
    expected = slow_numerical_grad(loss, view, method=method)
    got = numerical_grad(loss, view, method=method)
    assert got.shape == view.shape and got.dtype == np.float64
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-300)
    assert base.tobytes() == base_before


def test_interleaved_views_of_one_array_are_separate_parameters():
    # even and odd elements share a buffer but no element: allowed, and correct
    big = np.linspace(-1.0, 1.0, 10)
    params = {"even": big[::2], "odd": big[1::2]}
    loss = lambda p: float(np.sum(p["even"] ** 2) + 3 * np.sum(p["odd"] ** 3))  # noqa: E731
    g = numerical_grad(loss, params, eps=1e-4)
    np.testing.assert_allclose(g["even"], 2 * big[::2], rtol=1e-7, atol=1e-9)
    # central truncation: h**2 * f'''/6 = 1e-8 * 18 / 6
    np.testing.assert_allclose(g["odd"], 9 * big[1::2] ** 2, rtol=0, atol=4e-8)


def test_public_api_exports():
    assert fastcheck.numerical_grad is numerical_grad
    assert callable(fastcheck.check_grad)


@pytest.mark.parametrize(("dtype", "x", "eps"), [(np.float64, 1e20, 1e-3),
                                                 (np.float32, 1.0, 1e-8)],
                         ids=["f64-1e20", "f32-1"])
def test_eps_that_vanishes_next_to_x_is_an_error(dtype, x, eps):
    theta = np.array([x, 0.5], dtype=dtype)
    with pytest.raises(ValueError, match=r"eps|step"):
        numerical_grad(lambda t: float(np.sum(t.astype(np.float64))), theta, eps=eps)


@pytest.mark.parametrize("method", ["central", "forward", "complex"])
def test_zero_size_entry_among_others_of_the_same_dtype(method):
    params = {"empty": np.zeros((0, 3)), "w": np.array([0.5, -1.0])}
    g = numerical_grad(lambda p: np.sum(p["w"] ** 3) + np.sum(p["empty"]), params,
                       method=method)
    assert g["empty"].shape == (0, 3) and g["empty"].dtype == np.float64
    np.testing.assert_allclose(g["w"], 3 * params["w"] ** 2, rtol=1e-6)


@pytest.mark.parametrize("function", ["numerical_grad", "check_grad"])
def test_zero_size_entry_of_another_dtype(function):
    params = {"empty": np.zeros(0, dtype=np.float32), "w": np.array([0.5, -1.0])}
    loss = lambda p: float(np.sum(p["w"] ** 3))  # noqa: E731
    if function == "numerical_grad":
        g = numerical_grad(loss, params)
        assert g["empty"].shape == (0,)
        np.testing.assert_allclose(g["w"], 3 * params["w"] ** 2, rtol=1e-6)
    else:
        result = fastcheck.check_grad(loss, {"empty": np.zeros(0), "w": 3 * params["w"] ** 2},
                                      params)
        assert result.passed
