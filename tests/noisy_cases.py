"""Noisy losses with known gradients, for the measured-noise judge (tests and bench).

Data, not tests, built like :mod:`correctness_cases`: :data:`NOISY_CASES` holds
:class:`NoisyCase` objects, each a loss whose evaluations carry more (or less)
noise than the rounding model assumes, an exact gradient, fresh parameters, and a
category.  Every correct case has a buggy twin (``"<name>+bug"``) with one planted
error well above what the loss resolves: a check must not call the correct one
WRONG (a pass or an honest "unresolved" are both fine), and must fail the buggy
one with the planted component ranked first.  A solver's tolerance is a
systematic error of the computed J, not only noise: its derivative differs from
the exact one by about the tolerance (solve_ivp with rtol 1e-6: 2e-7 relative), and
a check may flag that as "suspicious" -- it is never to be called "wrong".

Categories: float32 / float16 internals behind float64 (numpy, and a torch model's
``.item()`` when torch is importable), cancellation against offsets up to 1e12,
exact large offsets, log and exp near 1, iterative solvers with a tolerance
(conjugate gradients, Newton, an inner scipy.optimize), adaptive ODE integration
(scipy solve_ivp, rtol 1e-6 ... 1e-9, known solution), quadrature with a tolerance,
table lookup (np.interp).  scipy is required for the solver, ODE and quadrature
cases (they are left out without it).
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

__all__ = ["NOISY_CASES", "NoisyCase"]

HAVE_SCIPY = importlib.util.find_spec("scipy") is not None
HAVE_TORCH = importlib.util.find_spec("torch") is not None


@dataclass(frozen=True)
class NoisyCase:
    """One noisy loss with an exact gradient.

    Attributes
    ----------
    name : str
    category : str
    make_params : callable
        Fresh float64 (or float32) parameters, seeded.
    loss : callable
    grad : callable
        The gradient; for a "+bug" case it has the planted error.
    expected : str
        "pass" (must not be WRONG) or "fail" (must not pass; `wrong` ranked first).
    wrong : str
        The planted component, e.g. ``"theta[3]"``.
    """

    name: str
    category: str
    make_params: Callable[[], np.ndarray]
    loss: Callable[[np.ndarray], float]
    grad: Callable[[np.ndarray], np.ndarray]
    expected: str = "pass"
    wrong: str = ""


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


# --------------------------------------------------------------- low precision inside
def _logistic(dtype, seed=1, n=64, d=20):
    r = _rng(seed)
    X = r.standard_normal((n, d))
    y = r.integers(0, 2, n).astype(float)

    def make():
        return _rng(seed + 100).standard_normal(d) * 0.3

    def loss(w):
        z = X.astype(dtype) @ w.astype(dtype)
        return float(np.mean(np.logaddexp(0, z) - y * z))

    def grad(w):
        return X.T @ (1 / (1 + np.exp(-(X @ w))) - y) / n

    return make, loss, grad


def _mlp(dtype, seed=2, n_in=8, n_h=16, m=32):
    r = _rng(seed)
    X = r.standard_normal((n_in, m))
    Y = r.standard_normal((1, m))
    shapes = [(n_h, n_in), (1, n_h)]
    sizes = [a * b for a, b in shapes]

    def unpack(t):
        return t[:sizes[0]].reshape(shapes[0]), t[sizes[0]:].reshape(shapes[1])

    def make():
        return _rng(seed + 100).standard_normal(sum(sizes)) * 0.4

    def loss(t):
        W1, W2 = (a.astype(dtype) for a in unpack(t))
        H = np.tanh(W1 @ X.astype(dtype))
        E = W2 @ H - Y.astype(dtype)
        return float(0.5 * np.mean(E * E))

    def grad(t):
        W1, W2 = unpack(t)
        H = np.tanh(W1 @ X)
        E = (W2 @ H - Y) / m
        dW2 = E @ H.T
        dW1 = ((W2.T @ E) * (1 - H * H)) @ X.T
        return np.concatenate([dW1.ravel(), dW2.ravel()])

    return make, loss, grad


def _torch_model(seed=3):
    import torch

    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(6, 10), torch.nn.Tanh(),
                                torch.nn.Linear(10, 1))   # float32 inside
    r = _rng(seed)
    X = torch.tensor(r.standard_normal((24, 6)), dtype=torch.float32)
    Y = torch.tensor(r.standard_normal((24, 1)), dtype=torch.float32)
    params = list(model.parameters())
    sizes = [p.numel() for p in params]
    start = torch.nn.utils.parameters_to_vector(params).detach().double().numpy().copy()

    def load(t, requires_grad=False):
        with torch.no_grad():
            torch.nn.utils.vector_to_parameters(torch.tensor(t, dtype=torch.float32), params)
        for p in params:
            p.requires_grad_(requires_grad)

    def make():
        return start.copy()

    def loss(t):
        load(t)
        with torch.no_grad():
            return torch.mean((model(X) - Y) ** 2).item()

    def grad(t):
        # the exact gradient of the float64 model: the same maths in float64
        model64 = [p.detach().double().requires_grad_() for p in params]
        off = 0
        for p, k in zip(model64, sizes, strict=True):
            with torch.no_grad():
                p.copy_(torch.tensor(t[off:off + k]).reshape(p.shape))
            off += k
        h = torch.tanh(X.double() @ model64[0].T + model64[1])
        out = h @ model64[2].T + model64[3]
        value = torch.mean((out - Y.double()) ** 2)
        gs = torch.autograd.grad(value, model64)
        return np.concatenate([g.numpy().ravel() for g in gs])

    return make, loss, grad


def _float16_sum(seed=4, n=12):
    def make():
        return _rng(seed).uniform(-1, 1, n)

    def loss(t):
        return float(np.sum(np.sin(t.astype(np.float16)).astype(np.float16)))

    return make, loss, np.cos


# --------------------------------------------------------------- offsets, logs, exps
def _cancellation(offset, seed=5, n=12):
    def make():
        return _rng(seed).standard_normal(n)

    def loss(t):
        return float((offset + t @ t + np.sum(np.sin(t))) - offset)

    def grad(t):
        return 2 * t + np.cos(t)

    return make, loss, grad


def _exact_offset(offset, seed=6, n=6):
    def make():
        return _rng(seed).uniform(1, 4, n)

    def loss(t):
        return offset + float(t @ t)

    def grad(t):
        return 2 * t

    return make, loss, grad


def _confident_softmax(seed=7, n=16, c=10, margin=17.0):
    r = _rng(seed)
    Y = np.eye(c)[r.integers(0, c, n)]
    Z0 = r.standard_normal((n, c)) + margin * Y

    def sm(z):
        e = np.exp(z - z.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)

    def make():
        return Z0.ravel().copy()

    def loss(z):
        return float(-np.sum(Y * np.log(sm(z.reshape(n, c)) + 2.2e-16)))

    def grad(z):
        return (sm(z.reshape(n, c)) - Y).ravel()

    return make, loss, grad


def _log_near_one(seed=8, n=10):
    # log(1 + x) with x ~ 1e-6 computed as log(1 + x), not log1p: cancellation in 1 + x
    def make():
        return _rng(seed).uniform(0.5, 1.5, n)

    def loss(t):
        return float(np.sum(np.log(1.0 + 1e-6 * t * t)))

    def grad(t):
        return 2e-6 * t / (1.0 + 1e-6 * t * t)

    return make, loss, grad


def _exp_near_one(seed=9, n=10):
    # exp(x) - 1 with x ~ 1e-7 computed as exp(x) - 1, not expm1
    def make():
        return _rng(seed).uniform(0.5, 1.5, n)

    def loss(t):
        return float(np.sum(np.exp(1e-7 * t) - 1.0)) * 1e7

    def grad(t):
        return np.exp(1e-7 * t)

    return make, loss, grad


# --------------------------------------------------------------- solvers, ODE, quad
def _cg(tol, seed=10, n=12):
    from scipy.sparse.linalg import cg

    r = _rng(seed)
    M = r.standard_normal((n, n))
    A = M @ M.T + n * np.eye(n)
    c = r.standard_normal(n)

    def make():
        return _rng(seed + 100).standard_normal(n)

    def loss(b):
        x, _ = cg(A, b, rtol=tol, atol=0.0)
        return float(c @ x)

    def grad(b):
        return np.linalg.solve(A, c)   # A symmetric: d(c^T A^-1 b)/db = A^-1 c

    return make, loss, grad


def _newton(tol, seed=11, n=8):
    # x(theta) solves x^3 + x = theta; J = sum x, dJ/dtheta = 1 / (3 x^2 + 1)
    def solve(theta):
        x = np.cbrt(theta)
        for _ in range(50):
            step = (x**3 + x - theta) / (3 * x**2 + 1)
            x = x - step
            if np.all(np.abs(step) <= tol * (1 + np.abs(x))):
                break
        return x

    def make():
        return _rng(seed).uniform(-3, 3, n)

    def loss(theta):
        return float(np.sum(solve(theta)))

    def grad(theta):
        x = np.array([_exact_root(v) for v in theta])
        return 1 / (3 * x**2 + 1)

    return make, loss, grad


def _exact_root(v):
    x = math.copysign(abs(v) ** (1 / 3), v)
    for _ in range(100):
        x -= (x**3 + x - v) / (3 * x * x + 1)
    return x


def _inner_minimize(seed=12, n=4):
    # J(theta) = min_x sum (x - theta)^4 / 4 + (x - 1)^2 / 2 ... per component, solved
    # by scipy.optimize.minimize_scalar; by the envelope theorem dJ/dtheta_i =
    # -(x_i* - theta_i)^3.
    from scipy.optimize import minimize_scalar

    def inner(v):
        res = minimize_scalar(lambda x: (x - v) ** 4 / 4 + (x - 1) ** 2 / 2,
                              bracket=(v - 2, v + 2), method="brent",
                              options={"xtol": 1e-10})
        return res

    def make():
        return _rng(seed).uniform(-2, 3, n)

    def loss(theta):
        return float(sum(inner(v).fun for v in theta))

    def grad(theta):
        xs = np.array([_exact_inner(v) for v in theta])
        return -((xs - theta) ** 3)

    return make, loss, grad


def _exact_inner(v):
    # stationary point of (x - v)^4 / 4 + (x - 1)^2 / 2: (x - v)^3 + (x - 1) = 0
    x = 1.0
    for _ in range(200):
        f = (x - v) ** 3 + (x - 1)
        x -= f / (3 * (x - v) ** 2 + 1)
    return x


def _ode(rtol, seed=13):
    # y' = -k y, y(0) = a: y(T) = a exp(-k T); theta = (k, a), J = y(T)
    from scipy.integrate import solve_ivp

    T = 2.0

    def make():
        return np.array([0.7, 1.3]) + 0.1 * _rng(seed).standard_normal(2)

    def loss(t):
        sol = solve_ivp(lambda _, y: -t[0] * y, (0, T), [t[1]], rtol=rtol, atol=rtol * 1e-3)
        return float(sol.y[0, -1])

    def grad(t):
        e = math.exp(-t[0] * T)
        return np.array([-T * t[1] * e, e])

    return make, loss, grad


def _quad(tol, seed=14):
    # J(a, b) = int_0^1 exp(-a x^2) sin(b x) dx
    from scipy.integrate import quad

    def make():
        return np.array([1.2, 2.0]) + 0.1 * _rng(seed).standard_normal(2)

    def loss(t):
        return quad(lambda x: math.exp(-t[0] * x * x) * math.sin(t[1] * x), 0, 1,
                    epsabs=tol, epsrel=tol)[0]

    def grad(t):
        da = quad(lambda x: -x * x * math.exp(-t[0] * x * x) * math.sin(t[1] * x), 0, 1,
                  epsabs=1e-14, epsrel=1e-14)[0]
        db = quad(lambda x: x * math.exp(-t[0] * x * x) * math.cos(t[1] * x), 0, 1,
                  epsabs=1e-14, epsrel=1e-14)[0]
        return np.array([da, db])

    return make, loss, grad


def _interp(seed=15, n=8):
    # J = sum interp(theta_i) on a table of sin: piecewise linear, exact slope of the
    # segment each theta_i is in (theta never on a knot)
    xp = np.linspace(-3, 3, 601)
    fp = np.sin(xp)

    def make():
        t = _rng(seed).uniform(-2.5, 2.5, n)
        return np.round(t, 2) + 0.0037   # well inside a segment

    def loss(t):
        return float(np.sum(np.interp(t, xp, fp)))

    def grad(t):
        k = np.searchsorted(xp, t) - 1
        return (fp[k + 1] - fp[k]) / (xp[k + 1] - xp[k])

    return make, loss, grad


# --------------------------------------------------------------------- the list
def _with_bug(grad, index, kind):
    def bad(t):
        g = np.array(grad(t), dtype=np.float64, copy=True)
        g[index] = -g[index] if kind == "flip" else g[index] * kind
        return g
    return bad


def _cases() -> list[NoisyCase]:
    spec = [
        ("logistic_float32_inside", "float32/16 inside", _logistic(np.float32), 7, 1.3),
        ("mlp_float32_inside", "float32/16 inside", _mlp(np.float32), 20, 1.5),
        ("sum_sin_float16_inside", "float32/16 inside", _float16_sum(), 3, "flip"),
        ("cancellation_1e4", "cancellation", _cancellation(1e4), 2, 1.05),
        ("cancellation_1e8", "cancellation", _cancellation(1e8), 2, 1.2),
        ("cancellation_1e12", "cancellation", _cancellation(1e12), 2, "flip"),
        ("exact_offset_1e6", "exact offset", _exact_offset(1e6), 1, 1.2),
        ("exact_offset_1e12", "exact offset", _exact_offset(1e12), 1, "flip"),
        ("confident_softmax", "log/exp near 1", _confident_softmax(), 3, 1.5),
        ("log_near_one", "log/exp near 1", _log_near_one(), 4, 1.2),
        ("exp_near_one", "log/exp near 1", _exp_near_one(), 4, 1.05),
        ("interp_table", "table lookup", _interp(), 5, 1.2),
    ]
    if HAVE_TORCH:
        spec.insert(2, ("torch_mlp_item", "float32/16 inside", _torch_model(), 9, 1.5))
    if HAVE_SCIPY:
        spec += [
            ("cg_rtol_1e-10", "iterative solver", _cg(1e-10), 3, 1.05),
            ("newton_tol_1e-8", "iterative solver", _newton(1e-8), 2, 1.1),
            ("inner_minimize_scalar", "iterative solver", _inner_minimize(), 1, 1.3),
            ("solve_ivp_rtol_1e-6", "ODE", _ode(1e-6), 0, 1.3),
            ("solve_ivp_rtol_1e-9", "ODE", _ode(1e-9), 1, 1.05),
            ("quad_tol_1e-8", "quadrature", _quad(1e-8), 0, 1.2),
        ]
    out = []
    for name, category, (make, loss, grad), index, kind in spec:
        out.append(NoisyCase(name, category, make, loss, grad))
        out.append(NoisyCase(f"{name}+bug", category, make, loss,
                             _with_bug(grad, index, kind), "fail", f"theta[{index}]"))
    return out


NOISY_CASES = _cases()


def _self_check() -> None:
    """Each correct gradient against a plain central difference at a wide step."""
    for case in NOISY_CASES:
        if case.expected != "pass":
            continue
        t = case.make_params()
        g = case.grad(t)
        h = 1e-3 * np.maximum(1, np.abs(t))
        num = np.array([(case.loss(t + h[i] * e) - case.loss(t - h[i] * e)) / (2 * h[i])
                        for i, e in enumerate(np.eye(t.size))])
        err = np.max(np.abs(num - g)) / (np.max(np.abs(g)) + 1e-300)
        print(f"{case.name:32s} {case.category:20s} max rel diff {err:.1e}")


if __name__ == "__main__":
    _self_check()
