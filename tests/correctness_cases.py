"""A library of gradient-checking cases with known verdicts, for the fastcheck tests.

This module holds data, not tests: a list :data:`CASES` of :class:`Case` objects, each a loss,
a hand-written gradient, a factory of fresh (seeded) parameters and the verdict a correct
checker must reach:

``"pass"``
    the analytic gradient is correct (verified below with a plain float64 central-difference
    loop; run ``python tests/correctness_cases.py``);
``"fail"``
    the analytic gradient has a real bug, located in the components / blocks named in
    ``wrong`` (``"W2"`` is a whole dict entry, ``"theta[17]"`` one component of a plain array);
``"kink"``
    the loss is not differentiable at the given parameters (a ReLU, abs, hinge or max sits
    exactly on, or within ~1e-12 of, its kink) and the analytic value is a valid one-sided
    derivative or subgradient, so a disagreement is the kink's fault, not a bug;
``"nondeterministic"``
    the loss is a different function at every call (dropout, noise, random minibatch).

Every ``make_params()`` call returns new arrays with the same values (seeded), so a test may
perturb them in place freely.  The losses read their parameters at call time.  Losses and
gradients follow the dtype of the parameters they are given: a "float32" case computes in
float32 with float32 parameters, and in float64 with a float64 copy (its data are stored in
float32 and promote), which is how the self-check verifies the maths.

Only numpy (and :mod:`fastcheck.examples`, which is pure numpy) is used.
"""

from __future__ import annotations

import importlib.util
import pathlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

try:  # the normal way, when the package is importable
    from fastcheck import examples
except ImportError:  # pragma: no cover - e.g. the C extension is not built yet
    # examples.py imports only numpy: load it by path so these cases never depend on the build.
    _path = pathlib.Path(__file__).resolve().parents[1] / "fastcheck" / "examples.py"
    _spec = importlib.util.spec_from_file_location("_fastcheck_examples", _path)
    examples = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(examples)

__all__ = ["CASES", "Case", "cases_by_name"]


@dataclass(frozen=True)
class Case:
    """One gradient-checking problem with a known verdict.

    Attributes
    ----------
    name : str
        Readable, unique id, e.g. ``"quadratic_form_f64"``.
    make_params : callable
        ``make_params()`` returns fresh parameters: an ndarray, a dict or a list of arrays.
    loss : callable
        ``loss(params) -> float``.
    grad : callable
        ``grad(params)``: the analytic gradient, with the same structure as ``params``.
    expected : str
        ``"pass"``, ``"fail"``, ``"kink"`` or ``"nondeterministic"``.
    dtype : str
        ``"float64"`` or ``"float32"``, the dtype of the parameters.
    wrong : tuple of str
        For ``"fail"``: the blocks (``"W2"``) or components (``"theta[17]"``) that are wrong.
    note : str
        What the case exercises.
    """

    name: str
    make_params: Callable[[], object]
    loss: Callable[[object], float]
    grad: Callable[[object], object]
    expected: str
    dtype: str
    wrong: tuple = ()
    note: str = ""


# ---------------------------------------------------------------------------- helpers
def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    # exp(-|z|) never overflows, and the result keeps z's dtype.
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1 / (1 + e), e / (1 + e))


def _map(f: Callable[[np.ndarray], np.ndarray], tree: Any) -> Any:
    """Apply f to every array of an ndarray / dict / list / tuple, keeping the structure."""
    if isinstance(tree, dict):
        return {k: f(v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(f(v) for v in tree)
    return f(tree)


def _scaled(loss: Callable, grad: Callable, c: float) -> tuple[Callable, Callable]:
    """The loss c * J and its gradient c * dJ (c a Python float, so no dtype promotion)."""
    return (lambda p: c * loss(p)), (lambda p: _map(lambda g: c * g, grad(p)))


def _copy(tree: Any) -> Any:
    return _map(lambda a: a.copy(), tree)


# Unseeded on purpose: the nondeterministic cases must not be repeatable.
_UNSEEDED = np.random.default_rng()


# ---------------------------------------------------------------------------- models
def _cube(dtype):
    dt = np.dtype(dtype)

    def make():
        return _rng(101).uniform(-2.0, 2.0, 10).astype(dt)

    def loss(t):
        return float(np.sum(t**3))

    def grad(t):
        return 3 * t**2

    return make, loss, grad


def _polynomial():
    # J = t0^2 t1 - 3 t1 t2^3 + t0 t3 + t3^4 - 2 t0 t1 t2 + 5: mixed terms, so every
    # component of the gradient depends on several others.
    def make():
        return _rng(102).uniform(-1.5, 1.5, 4)

    def loss(t):
        t0, t1, t2, t3 = t
        return float(t0**2 * t1 - 3 * t1 * t2**3 + t0 * t3 + t3**4 - 2 * t0 * t1 * t2 + 5)

    def grad(t):
        t0, t1, t2, t3 = t
        return np.array([
            2 * t0 * t1 + t3 - 2 * t1 * t2,
            t0**2 - 3 * t2**3 - 2 * t0 * t2,
            -9 * t1 * t2**2 - 2 * t0 * t1,
            t0 + 4 * t3**3,
        ])

    return make, loss, grad


def _quadratic_form(dtype, bug=None, n=20):
    # A deliberately non-symmetric: the gradient is (A + A^T) x, not 2 A x.
    dt = np.dtype(dtype)
    r = _rng(103)
    A = r.standard_normal((n, n)).astype(dt)

    def make():
        return _rng(104).standard_normal(n).astype(dt)

    def loss(x):
        return float(x @ A @ x)

    def grad(x):
        # A @ x + A.T @ x rather than (A + A.T) @ x: with float32 A and a float64 x the sum
        # A + A.T would be rounded in float32 before the product is promoted.
        g = A @ x + A.T @ x
        if bug == "sign_flip":
            g[7] = -g[7]  # |g[7]| is about 6 here: a sign error a checker cannot miss
        return g

    return make, loss, grad


def _logistic_l2(dtype, bug=None, minibatch=None, N=40, D=8, lam=0.1):
    # Mean log-loss of a logistic regression plus (lam/2)||w||^2 (the bias is not penalised).
    dt = np.dtype(dtype)
    r = _rng(105)
    X = r.standard_normal((N, D)).astype(dt)
    w_true = r.standard_normal(D)
    y = (r.random(N) < _sigmoid(X.astype(np.float64) @ w_true)).astype(dt)

    def make():
        rr = _rng(106)
        return {"w": (0.5 * rr.standard_normal(D)).astype(dt), "b": np.array([0.1], dtype=dt)}

    def loss(p):
        Xb, yb = X, y
        if minibatch is not None:
            # A new random minibatch at every call, from an unseeded generator.
            idx = _UNSEEDED.choice(N, size=minibatch, replace=False)
            Xb, yb = X[idx], y[idx]
        z = Xb @ p["w"] + p["b"][0]
        # log(1 + e^z) - y z is the stable form of -[y log s + (1 - y) log(1 - s)].
        data = np.mean(np.logaddexp(0, z) - yb * z)
        return float(data + 0.5 * lam * (p["w"] @ p["w"]))

    def grad(p):
        z = X @ p["w"] + p["b"][0]
        e = _sigmoid(z) - y
        dw = X.T @ e / N
        if bug != "missing_l2":
            dw = dw + lam * p["w"]
        if bug == "factor2_w":
            dw = 2 * dw
        db = np.array([np.mean(e)], dtype=e.dtype)
        return {"w": dw, "b": db}

    return make, loss, grad


def _softmax_xent(dtype, bug=None, N=20, D=6, K=4, lam=0.01):
    # Softmax regression: scores Z = X W^T + b, mean cross-entropy, (lam/2)||W||^2.
    dt = np.dtype(dtype)
    r = _rng(107)
    X = r.standard_normal((N, D)).astype(dt)
    labels = r.integers(0, K, N)
    Y = np.eye(K, dtype=dt)[labels]

    def make():
        rr = _rng(108)
        return {"W": (0.5 * rr.standard_normal((K, D))).astype(dt),
                "b": (0.1 * rr.standard_normal(K)).astype(dt)}

    def probs(p):
        Z = X @ p["W"].T + p["b"]
        Z = Z - Z.max(axis=1, keepdims=True)  # shift for stability; cancels in softmax
        E = np.exp(Z)
        return Z, E / E.sum(axis=1, keepdims=True)

    def loss(p):
        Z, _ = probs(p)
        logp = Z - np.log(np.exp(Z).sum(axis=1, keepdims=True))
        data = -np.sum(Y * logp) / N
        return float(data + 0.5 * lam * np.sum(p["W"] ** 2))

    def grad(p):
        _, P = probs(p)
        dZ = P - Y  # per example; the 1/N goes into dW and db
        dW = dZ.T @ X / N + lam * p["W"]
        if bug == "db_missing_1_over_m":
            db = dZ.sum(axis=0)  # forgot the 1/N: off by a factor N = 20
        else:
            db = dZ.sum(axis=0) / N
        if bug == "bias_offset":
            db = db + 0.01  # constant offset; |db| is ~0.05-0.15 here
        return {"W": dW, "b": db}

    return make, loss, grad


def _tanh_mlp(dtype, bug=None, N=16, D=5, H=8, O=2):  # noqa: E741 (N, D, H, O: sizes)
    # Two-layer tanh network with a linear output and mean squared error.
    dt = np.dtype(dtype)
    r = _rng(109)
    X = r.standard_normal((N, D)).astype(dt)
    Y = r.standard_normal((N, O)).astype(dt)

    def make():
        rr = _rng(110)
        return {"W1": (rr.standard_normal((H, D)) / np.sqrt(D)).astype(dt),
                "b1": (0.1 * rr.standard_normal(H)).astype(dt),
                "W2": (rr.standard_normal((O, H)) / np.sqrt(H)).astype(dt),
                "b2": (0.1 * rr.standard_normal(O)).astype(dt)}

    def loss(p):
        A1 = np.tanh(X @ p["W1"].T + p["b1"])
        Z2 = A1 @ p["W2"].T + p["b2"]
        return float(0.5 * np.sum((Z2 - Y) ** 2) / N)

    def grad(p):
        A1 = np.tanh(X @ p["W1"].T + p["b1"])
        Z2 = A1 @ p["W2"].T + p["b2"]
        dZ2 = Z2 - Y  # per example
        dW2 = dZ2.T @ A1 / N
        db2 = dZ2.sum(axis=0) / N
        dZ1 = (dZ2 @ p["W2"]) * (1 - A1**2)
        dW1 = dZ1.T @ X / N
        db1 = dZ1.sum(axis=0) / N
        if bug == "factor2_W2":
            dW2 = 2 * dW2
        elif bug == "factor2_W1":
            dW1 = 2 * dW1
        elif bug == "db2_missing_1_over_m":
            db2 = dZ2.sum(axis=0)  # off by a factor N = 16
        g = {"W1": dW1, "b1": db1, "W2": dW2, "b2": db2}
        if bug == "uniform_1e-4":
            g = {k: v * (1 + 1e-4) for k, v in g.items()}
        return g

    return make, loss, grad


def _square_tanh(bug=None, N=12, n=5):
    # One square layer, J = (1/2N) sum ||tanh(X W^T + b) - T||^2.  dW is not symmetric, so
    # returning its transpose is a real bug (only the diagonal stays right).
    r = _rng(111)
    X = r.standard_normal((N, n))
    T = 0.5 * r.standard_normal((N, n))

    def make():
        rr = _rng(112)
        return {"W": rr.standard_normal((n, n)) / np.sqrt(n), "b": 0.1 * rr.standard_normal(n)}

    def loss(p):
        A = np.tanh(X @ p["W"].T + p["b"])
        return float(0.5 * np.sum((A - T) ** 2) / N)

    def grad(p):
        A = np.tanh(X @ p["W"].T + p["b"])
        dU = (A - T) * (1 - A**2) / N
        dW = dU.T @ X
        if bug == "transpose":
            dW = dW.T.copy()
        return {"W": dW, "b": dU.sum(axis=0)}

    return make, loss, grad


def _logsumexp_large(n=50):
    # Inputs around 1e3: exp overflows, so J must be computed with the max shifted out.
    # |J| ~ 1e3 makes the absolute rounding noise of J ~ 1e-13, 1000x that of an O(1) loss.
    def make():
        return 1e3 + 3.0 * _rng(113).standard_normal(n)

    def loss(t):
        m = np.max(t)
        return float(m + np.log(np.sum(np.exp(t - m))))

    def grad(t):
        e = np.exp(t - np.max(t))
        return e / e.sum()

    return make, loss, grad


def _wide_scale(n=11):
    # One theta whose components span 1e-6 ... 1e4.  Each term c_i log(1 + (t_i/s_i)^2) is
    # O(1) in its own units s_i, so the gradient components span 1/s_i: 1e6 ... 1e-4, and a
    # fixed absolute step is 10% of the small components' scale.
    r = _rng(114)
    s = np.logspace(-6, 4, n)
    c = r.uniform(0.5, 2.0, n)
    u = r.uniform(0.5, 1.5, n) * np.where(r.random(n) < 0.5, -1.0, 1.0)

    def make():
        return s * u

    def loss(t):
        return float(np.sum(c * np.log1p((t / s) ** 2)))

    def grad(t):
        q = t / s
        return c * 2 * q / s / (1 + q**2)

    return make, loss, grad


def _rosenbrock(n=10):
    def make():
        return _rng(115).uniform(-1.5, 1.5, n)

    def loss(t):
        return float(np.sum(100 * (t[1:] - t[:-1] ** 2) ** 2 + (1 - t[:-1]) ** 2))

    def grad(t):
        g = np.zeros_like(t)
        d = t[1:] - t[:-1] ** 2
        g[:-1] += -400 * t[:-1] * d - 2 * (1 - t[:-1])
        g[1:] += 200 * d
        return g

    return make, loss, grad


def _sin_exp(n=15):
    # J = sum sin(exp(t/2)) + exp(0.3 sum c_i sin t_i): nested compositions, all components
    # coupled through the second term.
    c = _rng(116).uniform(-1, 1, n)

    def make():
        return 0.8 * _rng(117).standard_normal(n)

    def loss(t):
        return float(np.sum(np.sin(np.exp(0.5 * t))) + np.exp(0.3 * np.sum(c * np.sin(t))))

    def grad(t):
        e = np.exp(0.5 * t)
        outer = np.exp(0.3 * np.sum(c * np.sin(t)))
        return 0.5 * e * np.cos(e) + outer * 0.3 * c * np.cos(t)

    return make, loss, grad


def _fortran_matrix():
    # W is Fortran-ordered: memory order differs from the logical (C) order; the gradient is
    # returned C-ordered, so a checker must match components by index, not by memory.
    r = _rng(118)
    V = r.standard_normal((4, 10))
    T = r.standard_normal((6, 10))

    def make():
        return np.asfortranarray(_rng(119).standard_normal((6, 4)))

    def loss(W):
        R = W @ V - T
        return float(np.sum(np.log1p(R**2)) / 10)

    def grad(W):
        R = W @ V - T
        return np.ascontiguousarray((2 * R / (1 + R**2) / 10) @ V.T)

    return make, loss, grad


def _strided_1d(n=20):
    # theta is big[::2], a view with a stride of 2 elements into a larger array.
    def make():
        big = _rng(120).standard_normal(2 * n)
        return big[::2]

    def loss(t):
        return float(np.sum(t**2 * np.cos(t)))

    def grad(t):
        return 2 * t * np.cos(t) - t**2 * np.sin(t)

    return make, loss, grad


def _strided_2d():
    # theta is big[1::2, ::3], a 6x5 view with strides in both dimensions and an offset.
    def make():
        big = _rng(121).standard_normal((12, 15))
        return big[1::2, ::3]

    def loss(t):
        return float(np.sum(np.log1p(np.sum(t**2, axis=1))) + np.sum(np.exp(0.3 * t)))

    def grad(t):
        rows = 1 + np.sum(t**2, axis=1, keepdims=True)
        return 2 * t / rows + 0.3 * np.exp(0.3 * t)

    return make, loss, grad


def _list_of_arrays():
    # params = [W, b, v]: J = 1/2 ||tanh(W v + b) - t||^2, every block a parameter.
    tgt = 0.3 * _rng(122).standard_normal(3)

    def make():
        r = _rng(123)
        return [r.standard_normal((3, 4)) / 2, 0.1 * r.standard_normal(3), r.standard_normal(4)]

    def loss(p):
        W, b, v = p
        return float(0.5 * np.sum((np.tanh(W @ v + b) - tgt) ** 2))

    def grad(p):
        W, b, v = p
        a = np.tanh(W @ v + b)
        du = (a - tgt) * (1 - a**2)
        return [np.outer(du, v), du, W.T @ du]

    return make, loss, grad


def _size1():
    def make():
        return np.array([0.7])

    def loss(t):
        return float(np.sin(3 * t[0]) + t[0] ** 4)

    def grad(t):
        return np.array([3 * np.cos(3 * t[0]) + 4 * t[0] ** 3])

    return make, loss, grad


def _zero_d_in_dict():
    # A dict whose "s" entry is a 0-d array (shape ()): one component, no axes.
    def make():
        return {"w": np.array([0.3, -0.5, 0.8]), "s": np.array(0.7)}

    def loss(p):
        w, s = p["w"], p["s"]
        sw = np.sum(w)
        return float(np.exp(s) * np.sum(w**2) + np.cos(s * sw))

    def grad(p):
        w, s = p["w"], p["s"]
        sw = np.sum(w)
        dw = 2 * np.exp(s) * w - np.sin(s * sw) * s
        ds = np.exp(s) * np.sum(w**2) - np.sin(s * sw) * sw
        return {"w": dw, "s": np.array(ds)}

    return make, loss, grad


def _float32_return(n=10):
    # float64 parameters, but the loss hands back np.float32: J only has float32 resolution.
    def make():
        return _rng(124).standard_normal(n)

    def loss(t):
        return np.float32(np.mean(np.log(np.cosh(t)) + 0.1 * t**2))

    def grad(t):
        return (np.tanh(t) + 0.2 * t) / n

    return make, loss, grad


def _single_component(n=10_000, bad=1234):
    # n = 1e4 cheap polynomial terms, g_i = a_i t_i + 0.05 t_i^2 = O(1).  One component is
    # off by 1e-4 (absolute): the overall relative error is only ~5e-7 (looks "excellent"),
    # but per component it is >100x the central-difference noise in float64.
    r = _rng(125)
    a = r.uniform(0.5, 1.5, n)

    def make():
        return _rng(126).standard_normal(n)

    def loss(t):
        # t * t * (...) rather than t**3: numpy's power is ~3x slower, and this loss
        # runs 20,000 times per check.
        return float(np.sum(t * t * (0.5 * a + t / 60)))

    def grad(t):
        g = a * t + t**2 / 20
        g[bad] += 1e-4
        return g

    return make, loss, grad


def _demo(dtype, buggy=False):
    net = examples.demo_network(1, dtype)
    return (lambda: _copy(net.params)), net.loss, (net.buggy_grad if buggy else net.grad)


def _relu_net(offset=0.0, buggy=False):
    net = examples.relu_network(0, straddle=True, offset=offset)
    return (lambda: _copy(net.params)), net.loss, (net.buggy_grad if buggy else net.grad), net


def _abs_zeros(right_derivative=False, n=12):
    # J = sum |t_i| + 0.15 ||t||^2 with four t_i exactly 0.  At 0, sign(0) = 0 is a
    # subgradient; +1 (right_derivative=True) is the one-sided derivative from the right.
    def make():
        t = _rng(127).standard_normal(n)
        t[[1, 4, 7, 10]] = 0.0
        return t

    def loss(t):
        return float(np.sum(np.abs(t)) + 0.15 * np.sum(t**2))

    def grad(t):
        s = np.where(t >= 0, 1.0, -1.0) if right_derivative else np.sign(t)
        return s + 0.3 * t

    return make, loss, grad


def _lasso(n=8, N=15, lam=0.2):
    # Least squares + lam ||w||_1 with three weights exactly 0; analytic sign(0) = 0.
    r = _rng(128)
    X = r.standard_normal((N, n))
    y = r.standard_normal(N)

    def make():
        w = _rng(129).standard_normal(n)
        w[[0, 3, 6]] = 0.0
        return w

    def loss(w):
        return float(0.5 * np.sum((X @ w - y) ** 2) / N + lam * np.sum(np.abs(w)))

    def grad(w):
        return X.T @ (X @ w - y) / N + lam * np.sign(w)

    return make, loss, grad


def _hinge(D=5, N=10, lam=0.1, kink_sample=3):
    # Mean hinge loss max(0, 1 - y_i w.x_i) + (lam/2)||w||^2 with sample 3's margin exactly 1.
    # Exact in floating point whatever the summation order: w0 = 0.5, w1 = 0.25 and
    # x_3 = y_3 [1, 2, 0, 0, 0], so y_3 w.x_3 = 0.5 + 0.5 (+ exact zeros) = 1.
    # The analytic gradient counts a sample only when margin < 1: at margin == 1 that is the
    # one-sided derivative along directions that increase the margin.
    for seed in range(130, 200):  # first seed whose other margins are clear of 1
        r = _rng(seed)
        X = r.standard_normal((N, D))
        y = np.where(r.random(N) < 0.5, -1.0, 1.0)
        w0 = r.standard_normal(D)
        w0[0], w0[1] = 0.5, 0.25
        X[kink_sample] = y[kink_sample] * np.array([1.0, 2.0, 0.0, 0.0, 0.0])
        margins = y * (X @ w0)
        others = np.delete(margins, kink_sample)
        if margins[kink_sample] == 1.0 and np.min(np.abs(others - 1)) > 0.05 and np.any(others < 1):
            break
    else:  # pragma: no cover
        raise RuntimeError("no hinge configuration found")

    def make():
        return w0.copy()

    def loss(w):
        return float(np.mean(np.maximum(0.0, 1 - y * (X @ w))) + 0.5 * lam * (w @ w))

    def grad(w):
        active = (y * (X @ w)) < 1
        return -(X[active].T @ y[active]) / N + lam * w

    return make, loss, grad


def _max_ties(n=8):
    # J = max(t) + 0.1 ||t||^2 with t[2] == t[5] == the maximum (an exact tie).
    # The analytic gradient puts the 1 on np.argmax (t[2]): that is the right derivative for
    # component 2 and the left derivative for component 5, both valid one-sided values.
    def make():
        t = _rng(131).standard_normal(n)
        t[2] = t[5] = np.max(t) + 0.5
        return t

    def loss(t):
        return float(np.max(t) + 0.1 * np.sum(t**2))

    def grad(t):
        g = 0.2 * t
        g[np.argmax(t)] += 1.0
        return g

    return make, loss, grad


def _relu_elementwise(dtype, n=10):
    # J = sum c_i relu(t_i) + 0.05 ||t||^2 with three t_i exactly 0 and relu'(0) = 0.
    dt = np.dtype(dtype)
    c = _rng(132).uniform(0.5, 2.0, n).astype(dt)

    def make():
        t = _rng(133).standard_normal(n).astype(dt)
        t[[2, 5, 8]] = 0
        return t

    def loss(t):
        return float(np.sum(c * np.maximum(t, 0)) + 0.05 * np.sum(t**2))

    def grad(t):
        return c * (t > 0) + 0.1 * t

    return make, loss, grad


def _noisy(rel=1e-6):
    make, loss, grad = _tanh_mlp(np.float64)

    def noisy_loss(p):
        # Unseeded multiplicative noise: J * (1 + 1e-6 N(0, 1)) differs at every call.
        return loss(p) * (1 + rel * _UNSEEDED.standard_normal())

    return make, noisy_loss, grad


def _dropout(keep_prob, dtype):
    net = examples.dropout_network(1, keep_prob, dtype)
    return (lambda: _copy(net.params)), net.loss, net.grad


# ---------------------------------------------------------------------------- the cases
def _build() -> list[Case]:
    f64, f32 = "float64", "float32"
    cases: list[Case] = []

    def add(name, mlg, expected, dtype, wrong=(), note=""):
        make, loss, grad = mlg[:3]
        cases.append(Case(name, make, loss, grad, expected, dtype, tuple(wrong), note))

    # --- correct, float64 -------------------------------------------------------------
    add("cube_f64", _cube(np.float64), "pass", f64, note="sum t^3, n=10")
    add("multivariate_polynomial_f64", _polynomial(), "pass", f64, note="4 variables, mixed terms")
    add("quadratic_form_nonsym_f64", _quadratic_form(np.float64), "pass", f64,
        note="x^T A x, A non-symmetric, grad (A + A^T) x, n=20")
    add("logistic_l2_f64", _logistic_l2(np.float64), "pass", f64, note="dict w, b; L2 on w")
    add("softmax_xent_f64", _softmax_xent(np.float64), "pass", f64, note="dict W (4x6), b (4,)")
    add("tanh_mlp_f64", _tanh_mlp(np.float64), "pass", f64, note="2 layers, MSE, dict W1 b1 W2 b2")
    add("demo_network_f64", _demo(np.float64), "pass", f64,
        note="examples.demo_network(1): the product demo, no |Z| < 0.05")
    add("logsumexp_large_f64", _logsumexp_large(), "pass", f64,
        note="inputs ~1e3, stable LSE; |J| ~ 1e3 so absolute noise ~1e-13")
    mk, ls, gr = _logistic_l2(np.float64)
    add("tiny_scale_1e-8_f64", (mk, *_scaled(ls, gr, 1e-8)), "pass", f64,
        note="logistic L2 loss times 1e-8: |g| ~ 1e-9")
    mk, ls, gr = _sin_exp()
    add("huge_scale_1e8_f64", (mk, *_scaled(ls, gr, 1e8)), "pass", f64,
        note="sin/exp composition times 1e8: |g| ~ 1e8")
    add("wide_param_scale_f64", _wide_scale(), "pass", f64,
        note="|theta_i| from 1e-6 to 1e4 in one array; |g_i| from 1e6 to 1e-4")
    add("rosenbrock_f64", _rosenbrock(), "pass", f64, note="n=10, points in [-1.5, 1.5]")
    add("sin_exp_composition_f64", _sin_exp(), "pass", f64, note="n=15, all components coupled")
    add("fortran_order_matrix_f64", _fortran_matrix(), "pass", f64,
        note="W 6x4 Fortran-ordered; grad returned C-ordered")
    add("strided_view_1d_f64", _strided_1d(), "pass", f64, note="theta = big[::2], n=20")
    add("strided_view_2d_f64", _strided_2d(), "pass", f64, note="theta = big[1::2, ::3], 6x5")
    add("list_of_arrays_f64", _list_of_arrays(), "pass", f64, note="[W (3x4), b (3,), v (4,)]")
    add("size1_param_f64", _size1(), "pass", f64, note="theta of shape (1,)")
    add("zero_d_param_in_dict_f64", _zero_d_in_dict(), "pass", f64,
        note='dict with a 0-d array "s" (shape ())')
    add("loss_returns_float32_f64", _float32_return(), "pass", f64,
        note="float64 params, loss returns np.float32 (J has float32 resolution, |J| ~ 0.5)")

    # --- correct, float32 ---------------------------------------------------------------
    add("cube_f32", _cube(np.float32), "pass", f32, note="sum t^3 in float32")
    add("quadratic_form_nonsym_f32", _quadratic_form(np.float32), "pass", f32, note="n=20")
    add("logistic_l2_f32", _logistic_l2(np.float32), "pass", f32)
    add("tanh_mlp_f32", _tanh_mlp(np.float32), "pass", f32)
    add("softmax_xent_f32", _softmax_xent(np.float32), "pass", f32)
    add("demo_network_f32", _demo(np.float32), "pass", f32,
        note="examples.demo_network(1, float32)")

    # --- wrong ----------------------------------------------------------------------------
    add("factor2_block_f64", _tanh_mlp(np.float64, "factor2_W2"), "fail", f64, ("W2",),
        note="dW2 multiplied by 2")
    add("sign_flip_component_f64", _quadratic_form(np.float64, "sign_flip"), "fail", f64,
        ("theta[7]",), note="one component of (A + A^T) x negated")
    add("transposed_square_weight_f64", _square_tanh("transpose"), "fail", f64, ("W",),
        note="dW returned transposed (5x5); the diagonal is still right")
    add("missing_l2_in_grad_f64", _logistic_l2(np.float64, "missing_l2"), "fail", f64, ("w",),
        note="L2 term in J but not in dJ/dw (lam = 0.1)")
    add("single_component_of_10000_f64", _single_component(), "fail", f64, ("theta[1234]",),
        note="n=10_000, g[1234] += 1e-4 with |g| ~ 1: overall relative error only ~5e-7")
    add("uniform_relative_1e-4_f64", _tanh_mlp(np.float64, "uniform_1e-4"), "fail", f64,
        ("W1", "b1", "W2", "b2"), note="every component times (1 + 1e-4): relative error ~5e-5")
    add("demo_network_buggy_f64", _demo(np.float64, buggy=True), "fail", f64, ("W2", "b1"),
        note="examples DemoNetwork.buggy_grad: dW2 * 2, db1 with 4/m")
    add("db_missing_1_over_m_f64", _tanh_mlp(np.float64, "db2_missing_1_over_m"), "fail", f64,
        ("b2",), note="db2 = sum(dZ2) without the 1/m (m = 16)")
    add("bias_constant_offset_f64", _softmax_xent(np.float64, "bias_offset"), "fail", f64,
        ("b",), note="db + 0.01 on every entry")
    mk, ls, gr = _logistic_l2(np.float64, "factor2_w")
    add("tiny_scale_factor2_f64", (mk, *_scaled(ls, gr, 1e-8)), "fail", f64, ("w",),
        note="loss times 1e-8 and dw doubled: a bug at |g| ~ 1e-9 is still a bug")
    add("factor2_block_f32", _tanh_mlp(np.float32, "factor2_W1"), "fail", f32, ("W1",),
        note="float32 model, dW1 multiplied by 2")
    add("softmax_db_missing_1_over_m_f32", _softmax_xent(np.float32, "db_missing_1_over_m"),
        "fail", f32, ("b",), note="float32, db without the 1/m (m = 20)")
    add("demo_network_buggy_f32", _demo(np.float32, buggy=True), "fail", f32, ("W2", "b1"),
        note="float32 DemoNetwork.buggy_grad")
    relu_bug = _relu_net(buggy=True)
    add("relu_kink_and_bug_f64", relu_bug, "fail", f64, ("W3",),
        note="relu_network(0).buggy_grad: dW3 * 1.5, plus a kink at "
             + ", ".join(relu_bug[3].kink_components) + " (those are correct one-sided values)")

    # --- kinks ----------------------------------------------------------------------------
    # A kink where the analytic value (sign(0) = 0) equals the central difference is
    # a pass: fastcheck examines one-sided slopes only for components that look off,
    # so that correct components cost no extra evaluations.
    add("abs_exact_zeros_sign_f64", _abs_zeros(), "pass", f64,
        note="sum |t| with t[1,4,7,10] == 0, analytic sign(0) = 0 (central difference agrees "
             "there: only the one-sided slopes reveal the kink)")
    add("abs_exact_zeros_right_derivative_f64", _abs_zeros(right_derivative=True), "kink", f64,
        note="sum |t| with t[1,4,7,10] == 0, analytic +1 at 0 (right derivative)")
    relu0 = _relu_net()
    add("relu_network_kink_f64", relu0, "kink", f64,
        note="examples.relu_network(0): Z1 exactly 0; kink components "
             + ", ".join(relu0[3].kink_components))
    relup = _relu_net(offset=1e-12)
    add("relu_network_kink_plus_1e-12_f64", relup, "kink", f64,
        note="Z1 = +1e-12 (unit on, analytic = right derivative); kink components "
             + ", ".join(relup[3].kink_components))
    relum = _relu_net(offset=-1e-12)
    add("relu_network_kink_minus_1e-12_f64", relum, "kink", f64,
        note="Z1 = -1e-12 (unit off, analytic = left derivative); kink components "
             + ", ".join(relum[3].kink_components))
    add("hinge_margin_exactly_1_f64", _hinge(), "kink", f64,
        note="sample 3 has margin exactly 1; kink components theta[0], theta[1]")
    add("max_with_tie_f64", _max_ties(), "kink", f64,
        note="t[2] == t[5] == max; kink components theta[2], theta[5]")
    add("lasso_exact_zeros_f64", _lasso(), "pass", f64,
        note="least squares + 0.2 ||w||_1, w[0,3,6] == 0, analytic sign(0) = 0")
    add("relu_elementwise_zeros_f32", _relu_elementwise(np.float32), "kink", f32,
        note="sum c relu(t) with t[2,5,8] == 0, relu'(0) = 0")

    # --- nondeterministic -----------------------------------------------------------------
    add("dropout_keep_0.8_f64", _dropout(0.8, np.float64), "nondeterministic", f64,
        note="examples.dropout_network(1, 0.8), RNG never reseeded")
    add("dropout_keep_0.5_f32", _dropout(0.5, np.float32), "nondeterministic", f32,
        note="examples.dropout_network(1, 0.5, float32)")
    add("noisy_loss_rel_1e-6_f64", _noisy(), "nondeterministic", f64,
        note="tanh MLP loss times (1 + 1e-6 N(0,1)), unseeded")
    add("random_minibatch_f64", _logistic_l2(np.float64, minibatch=16), "nondeterministic", f64,
        note="logistic L2 on a random 16 of 40 samples per call; grad is the full-batch one")

    names = [c.name for c in cases]
    assert len(names) == len(set(names)), "case names must be unique"
    return cases


CASES: list[Case] = _build()


def cases_by_name() -> dict[str, Case]:
    """The cases keyed by name."""
    return {c.name: c for c in CASES}


# ---------------------------------------------------------------------------- self-check
def _leaves(tree: Any, prefix: str = "theta") -> list[tuple[str, np.ndarray]]:
    """(name, array) for every block, in order: "W2" for dicts, "[1]" for lists, "theta"."""
    if isinstance(tree, dict):
        return [(str(k), v) for k, v in tree.items()]
    if isinstance(tree, (list, tuple)):
        return [(f"[{i}]", v) for i, v in enumerate(tree)]
    return [(prefix, tree)]


def _component_names(tree: Any) -> list[str]:
    names = []
    for name, a in _leaves(tree):
        for idx in np.ndindex(np.shape(a)):
            names.append(f"{name}[{', '.join(map(str, idx))}]" if idx else name)
    return names


def _flat(tree: Any) -> np.ndarray:
    return np.concatenate(
        [np.asarray(a, dtype=np.float64).ravel(order="C") for _, a in _leaves(tree)])


def _central(
    loss: Callable, params: Any, eps: float, relative: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Plain central differences (and D+, D-) with per-component steps, in the caller's arrays."""
    J0 = float(loss(params))
    num, dplus, dminus = [], [], []
    for _, a in _leaves(params):
        for idx in np.ndindex(a.shape):
            x = a[idx]
            h = eps * (abs(x) if relative and x != 0 else 1.0)
            xp, xm = x + h, x - h
            a[idx] = xp
            Jp = float(loss(params))
            a[idx] = xm
            Jm = float(loss(params))
            a[idx] = x  # restore by assignment
            hp, hm = xp - x, x - xm  # the steps actually represented
            num.append((Jp - Jm) / (hp + hm))
            dplus.append((Jp - J0) / hp)
            dminus.append((J0 - Jm) / hm)
    return np.array(num), np.array(dplus), np.array(dminus)


def _relerr(num: np.ndarray, ana: np.ndarray) -> float:
    d = np.linalg.norm(num) + np.linalg.norm(ana)
    return float(np.linalg.norm(num - ana) / d) if d > 0 else 0.0


def _self_check() -> None:  # pragma: no cover - run by hand
    print(f"{len(CASES)} cases")
    print(f"{'case':42s} {'expected':16s} {'n':>6s} {'best relerr':>12s} {'(step)':>10s} "
          f"{'h=1e-6':>10s} {'kinks':>5s}  details")
    for case in CASES:
        p = _map(lambda a: np.array(a, dtype=np.float64), case.make_params())  # float64 copy
        ana = _flat(case.grad(p))
        names = _component_names(p)
        n = ana.size
        if n > 1000:
            steps = [(1e-5, False), (1e-6, False)]
        elif case.expected == "nondeterministic":
            steps = [(1e-6, False)]
        else:
            steps = [(e, r) for r in (False, True) for e in (1e-3, 1e-4, 1e-5, 1e-6, 1e-7, 1e-8)]
        results = {}
        for eps, rel in steps:
            num, dp, dm = _central(case.loss, p, eps, rel)
            results[(eps, rel)] = (_relerr(num, ana), num, dp, dm)
        best_key = min(results, key=lambda k: results[k][0])
        best, num, _, _ = results[best_key]
        std = results.get((1e-6, False), (float("nan"),))[0]
        label = f"{best_key[0]:.0e}{'r' if best_key[1] else 'a'}"

        # Kink probe: D+ - D- stays put as h shrinks at a kink, shrinks ~h where smooth.
        kinks = "-"
        probe_kinks = case.expected != "nondeterministic" and n <= 1000
        if probe_kinks and case.name != "loss_returns_float32_f64":
            _, dp1, dm1 = results[(1e-5, True)][1:]
            _, dp2, dm2 = results[(1e-6, True)][1:]
            j1, j2 = np.abs(dp1 - dm1), np.abs(dp2 - dm2)
            scale = np.max(np.abs(ana)) if np.any(ana) else 1.0
            hit = (j2 > 1e-4 * scale) & (j2 > 0.5 * j1) & (j2 < 2 * j1)
            kinks = str(int(hit.sum()))
            if hit.any():
                kinks_at = [names[i] for i in np.flatnonzero(hit)]

        details = ""
        if case.expected == "fail":
            # Judge the bug at a fixed, safe step (1e-5 absolute; every "pass" case is at
            # <= 2.5e-10 there), not at the step that happens to minimise the error.
            num = results[(1e-5, False)][1]
            diff = np.abs(num - ana)
            # Components whose error stands out, far above float64 central-difference noise.
            bad = np.flatnonzero(diff > 1e-6 * np.max(np.abs(ana)) + 1e-5 * np.abs(ana))
            if kinks not in ("-", "0"):  # a kink's disagreement is not the bug we look for
                bad = np.array([i for i in bad if names[i] not in kinks_at], dtype=int)
            blocks = {names[i].split("[")[0] if names[i].split("[")[0] in case.wrong else names[i]
                      for i in bad}
            ok = blocks <= set(case.wrong) and len(bad) > 0
            top = [names[i] for i in np.argsort(-diff)[:3]]
            verdict = "OK" if ok else "MISMATCH"
            details = f"bad={len(bad)} in {sorted(blocks)} ({verdict}); top {top}"
            if kinks not in ("-", "0"):
                details += f"; kinks at {kinks_at}"
        elif kinks not in ("-", "0"):
            details = f"kinks at {kinks_at}"
        print(f"{case.name:42s} {case.expected:16s} {n:6d} {best:12.2e} {label:>10s} {std:10.2e} "
              f"{kinks:>5s}  {details}")


if __name__ == "__main__":  # pragma: no cover
    _self_check()
