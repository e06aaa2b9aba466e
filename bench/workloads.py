"""Seeded benchmark workloads for fastcheck and its peers.

Every workload is a differentiable scalar loss with a correct, hand-written
analytic gradient, so a benchmark can time a numerical gradient check and also
measure how far each checker's numerical gradient lands from the truth.

Each workload offers the same surface:

``name``, ``n``
    A short label and the number of scalar parameters.
``params`` / ``make_params()``
    The reference parameters (never mutate them) and a fresh deep copy of
    them: a flat float64 array, or a dict of float64 arrays for :class:`MLP`.
``loss(params)`` / ``grad(params)``
    The loss (a Python ``float``) and its analytic gradient, with the same
    structure as ``params``.
``theta0()``, ``flat_loss(theta)``, ``flat_grad(theta)``
    The same on one flat vector, for peers that only accept a flat vector.
    ``flat_loss`` reads the parameters through views of ``theta``, so a
    checker that perturbs ``theta`` in place is seen by the loss.
``torch_loss(t)`` / ``jax_loss(x)``
    The same loss on a flat float64 torch tensor / jax array. torch and jax
    are imported only inside these methods, so this module needs only numpy.

Run ``python bench/workloads.py`` for a self-check of every analytic gradient
against central differences.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

Params = np.ndarray | dict[str, np.ndarray]

__all__ = [
    "MLP",
    "Logistic",
    "Quadratic",
    "Workload",
    "numerical_gradient",
    "relative_error",
    "self_check",
    "small_workloads",
    "standard_workloads",
]


def _enable_jax_x64() -> Any:
    """Import jax with 64-bit floats enabled and return ``jax.numpy``.

    Every workload is float64; without ``jax_enable_x64`` jax silently casts
    float64 inputs to float32, which would make its loss a different (and
    much noisier) function from the numpy one.
    """
    import jax

    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp

    return jnp


class Workload:
    """Base class: a scalar loss on a flat float64 parameter vector.

    Subclasses whose parameters are a single flat array only need to set
    ``name``, ``n`` and ``params`` and implement :meth:`loss` and
    :meth:`grad`; the flat-vector interface then comes for free.

    Attributes
    ----------
    name : str
        Short label used in benchmark tables, e.g. ``"quadratic_n1000"``.
    n : int
        Number of scalar parameters.
    params : numpy.ndarray or dict of numpy.ndarray
        The reference parameter values. Treat as read-only; use
        :meth:`make_params` or :meth:`theta0` to get arrays to perturb.
    check_eps : float
        A step at which central differences of this loss are accurate to
        well below 1e-6 relative error (used by :func:`self_check`).
    """

    name: str
    n: int
    params: Params
    check_eps: float = 1e-6

    # -- structured interface ------------------------------------------------
    def make_params(self) -> Params:
        """Return a fresh deep copy of the reference parameters."""
        if isinstance(self.params, dict):
            return {k: v.copy() for k, v in self.params.items()}
        return self.params.copy()

    def loss(self, params: Params) -> float:
        """Return the loss at ``params``."""
        raise NotImplementedError

    def grad(self, params: Params) -> Params:
        """Return the analytic gradient at ``params`` (same structure)."""
        raise NotImplementedError

    # -- flat interface --------------------------------------------------------
    def flatten(self, params: Params) -> np.ndarray:
        """Concatenate ``params`` into one new flat float64 vector."""
        if isinstance(params, dict):
            return np.concatenate([np.ravel(v) for v in params.values()])
        return np.array(params, dtype=np.float64).ravel()

    def unflatten(self, theta: np.ndarray) -> Params:
        """Return the parameter structure as *views* of ``theta`` (no copy)."""
        return theta

    def theta0(self) -> np.ndarray:
        """Return a fresh flat copy of the reference parameters."""
        return self.flatten(self.params)

    def flat_loss(self, theta: np.ndarray) -> float:
        """Return the loss at the flat vector ``theta``."""
        return self.loss(self.unflatten(theta))

    def flat_grad(self, theta: np.ndarray) -> np.ndarray:
        """Return the analytic gradient at ``theta`` as a flat vector."""
        return self.flatten(self.grad(self.unflatten(theta)))

    # -- framework equivalents -------------------------------------------------
    def torch_loss(self, t: Any) -> Any:
        """Return the loss of a flat float64 torch tensor as a 0-d tensor."""
        raise NotImplementedError(f"{type(self).__name__} has no torch equivalent")

    def jax_loss(self, x: Any) -> Any:
        """Return the loss of a flat float64 jax array as a 0-d array."""
        raise NotImplementedError(f"{type(self).__name__} has no jax equivalent")

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} n={self.n}>"


# ---------------------------------------------------------------------------
# Quadratic
# ---------------------------------------------------------------------------
class Quadratic(Workload):
    """Separable quadratic ``J(θ) = 0.5 · Σ d_i θ_i²`` with a seeded diagonal.

    The cheapest meaningful loss, O(n) per evaluation: it measures a
    checker's own overhead per component rather than the cost of the model.

    Parameters
    ----------
    n : int
        Number of parameters (1e3 … 1e6 in the benchmarks).
    seed : int, optional
        Seed for the diagonal ``d`` (uniform in [0.5, 2]) and for θ
        (standard normal).

    Notes
    -----
    The third derivative is zero, so central differences have no truncation
    error and any step works up to rounding. Rounding does matter at large
    ``n``: ``|J|`` grows like ``n``, so the noise of one evaluation, about
    ``u·|J|``, grows too, and a step of 1e-6…1e-7 loses several digits at
    n = 1e6. The self-check therefore uses a larger step (``check_eps``).

    From n ≈ 1e5 on, the loss is memory-bound and sensitive to OpenBLAS
    threading: on 2 cores, ``OPENBLAS_NUM_THREADS=1`` made it about 2.3x
    faster than the default (two threads) in our runs, because the dot then
    reads the temporary ``d * θ`` from the other core's cache. Benchmarks
    should pin the thread count and report it.
    """

    check_eps = 1e-2

    def __init__(self, n: int, seed: int = 0) -> None:
        n = int(n)
        if n < 1:
            raise ValueError(f"Quadratic: n must be >= 1, got {n}")
        rng = np.random.default_rng(seed)
        self.n = n
        self.name = f"quadratic_n{n}"
        self.d = rng.uniform(0.5, 2.0, size=n)
        self.params = rng.standard_normal(n)

    def loss(self, params: np.ndarray) -> float:
        # d * θ allocates one temporary; np.dot then reduces with BLAS.
        return 0.5 * float(np.dot(self.d * params, params))

    def grad(self, params: np.ndarray) -> np.ndarray:
        return self.d * params

    def torch_loss(self, t: Any) -> Any:
        import torch

        d = torch.from_numpy(self.d)  # shares memory, no copy
        return 0.5 * torch.dot(d * t, t)

    def jax_loss(self, x: Any) -> Any:
        jnp = _enable_jax_x64()
        return 0.5 * jnp.dot(jnp.asarray(self.d) * x, x)


# ---------------------------------------------------------------------------
# Logistic regression
# ---------------------------------------------------------------------------
class Logistic(Workload):
    """L2-regularised logistic regression on seeded synthetic data.

    ``J(θ) = mean_k log(1 + exp(-y_k x_kᵀθ)) + 0.5·λ·‖θ‖²`` with labels
    ``y_k ∈ {−1, +1}``; one evaluation costs one (m × n) matrix-vector
    product, so it is a "real model" loss whose cost still grows with n.

    Parameters
    ----------
    n_features : int
        Number of weights (the parameters), 1e3 or 1e4 in the benchmarks.
    n_samples : int, optional
        Number of data rows ``m``. Kept small (default 100) so that a full
        check at n = 1e4 (2e4 evaluations) stays in the seconds.
    lam : float, optional
        L2 regularisation strength, present in both J and its gradient.
    seed : int, optional
        Seed for the data, the labels and θ.

    Notes
    -----
    The gradient components are small (about 1e-3, as the rows are scaled by
    1/√n) while J is O(1), so the relative rounding noise of a difference
    quotient is larger than for the other workloads. The third derivative is
    tiny, so the self-check uses a larger step (``check_eps``).
    """

    check_eps = 1e-4

    def __init__(
        self,
        n_features: int,
        n_samples: int = 100,
        lam: float = 1e-3,
        seed: int = 0,
    ) -> None:
        n, m = int(n_features), int(n_samples)
        if n < 1 or m < 1:
            raise ValueError(f"Logistic: need n_features, n_samples >= 1, got {n}, {m}")
        rng = np.random.default_rng(seed)
        self.n = n
        self.m = m
        self.lam = float(lam)
        self.name = f"logistic_n{n}_m{m}"
        # Scale rows by 1/sqrt(n) so that the margins x_kᵀθ are O(1) for any
        # n: the loss then neither saturates nor overflows.
        self.X = rng.standard_normal((m, n)) / math.sqrt(n)
        # Labels from a hidden "true" weight vector plus label noise, so the
        # problem is neither separable nor pure noise.
        w_true = rng.standard_normal(n)
        logits = self.X @ w_true + 0.5 * rng.standard_normal(m)
        self.y = np.where(logits >= 0.0, 1.0, -1.0)
        self.params = rng.standard_normal(n)

    def loss(self, params: np.ndarray) -> float:
        margins = self.y * (self.X @ params)
        # logaddexp(0, -t) = log(1 + exp(-t)) without overflow for t << 0.
        data = float(np.mean(np.logaddexp(0.0, -margins)))
        return data + 0.5 * self.lam * float(np.dot(params, params))

    def grad(self, params: np.ndarray) -> np.ndarray:
        margins = self.y * (self.X @ params)
        # d/dt log(1 + exp(-t)) = -sigmoid(-t) = -0.5·(1 - tanh(t/2)); the
        # tanh form is stable for both signs of t.
        s = -0.5 * (1.0 - np.tanh(0.5 * margins))
        return self.X.T @ (self.y * s) / self.m + self.lam * params

    def torch_loss(self, t: Any) -> Any:
        import torch

        X = torch.from_numpy(self.X)
        y = torch.from_numpy(self.y)
        margins = y * (X @ t)
        data = torch.nn.functional.softplus(-margins).mean()
        return data + 0.5 * self.lam * torch.dot(t, t)

    def jax_loss(self, x: Any) -> Any:
        jnp = _enable_jax_x64()
        margins = jnp.asarray(self.y) * (jnp.asarray(self.X) @ x)
        data = jnp.mean(jnp.logaddexp(0.0, -margins))
        return data + 0.5 * self.lam * jnp.dot(x, x)


# ---------------------------------------------------------------------------
# Multi-layer perceptron
# ---------------------------------------------------------------------------
class MLP(Workload):
    """A small fully connected network written by hand in numpy.

    Parameters are a dict ``{"W1", "b1", "W2", "b2", ...}`` with ``Wk`` of
    shape ``(sizes[k-1], sizes[k])`` and ``bk`` of shape ``(sizes[k],)``,
    flattened in that order (W1, b1, W2, b2, ...), each array in C order.

    Parameters
    ----------
    sizes : sequence of int
        Layer widths, input first, output last, e.g. ``(20, 32, 10)``
        (1,002 parameters) or ``(100, 150, 30, 10)`` (19,990 parameters).
    n_samples : int, optional
        Size of the fixed, seeded batch the loss is evaluated on.
    activation : {"tanh", "relu"}, optional
        Hidden-layer activation. ``"relu"`` has kinks, where numerical
        derivatives are unreliable; the self-check uses ``"tanh"``.
    output : {"softmax", "mse"}, optional
        ``"softmax"``: mean softmax cross-entropy against seeded integer
        labels. ``"mse"``: ``0.5 · mean_k ‖z_k − Y_k‖²`` against seeded
        real targets.
    lam : float, optional
        L2 regularisation ``0.5·λ·Σ‖Wk‖²`` on the weights (not the biases),
        present in both J and its gradient.
    seed : int, optional
        Seed for the data, the targets and the initial parameters.
    """

    def __init__(
        self,
        sizes: Sequence[int],
        n_samples: int = 32,
        activation: str = "tanh",
        output: str = "softmax",
        lam: float = 1e-3,
        seed: int = 0,
    ) -> None:
        sizes = tuple(int(s) for s in sizes)
        if len(sizes) < 2 or min(sizes) < 1:
            raise ValueError(f"MLP: need at least two positive layer sizes, got {sizes}")
        if activation not in ("tanh", "relu"):
            raise ValueError(f"MLP: activation must be 'tanh' or 'relu', got {activation!r}")
        if output not in ("softmax", "mse"):
            raise ValueError(f"MLP: output must be 'softmax' or 'mse', got {output!r}")
        rng = np.random.default_rng(seed)
        self.sizes = sizes
        self.m = int(n_samples)
        self.activation = activation
        self.output = output
        self.lam = float(lam)
        self.n_layers = len(sizes) - 1
        self.name = f"mlp_{'-'.join(map(str, sizes))}"
        if activation != "tanh" or output != "softmax":
            self.name += f"_{activation}_{output}"

        self.X = rng.standard_normal((self.m, sizes[0]))
        if output == "softmax":
            self.labels = rng.integers(0, sizes[-1], size=self.m)
            self.Y = None
        else:
            self.labels = None
            self.Y = rng.standard_normal((self.m, sizes[-1]))

        params: dict[str, np.ndarray] = {}
        for k in range(1, len(sizes)):
            fan_in, fan_out = sizes[k - 1], sizes[k]
            # 1/sqrt(fan_in) scaling keeps tanh out of saturation; non-zero
            # biases make the check exercise the bias gradients too.
            params[f"W{k}"] = rng.standard_normal((fan_in, fan_out)) / math.sqrt(fan_in)
            params[f"b{k}"] = 0.1 * rng.standard_normal(fan_out)
        self.params = params
        self.shapes = {k: v.shape for k, v in params.items()}
        self.n = int(sum(v.size for v in params.values()))

    # Ready-made sizes used by the benchmark suite.
    @classmethod
    def small(cls, **kwargs: Any) -> MLP:
        """About 1e3 parameters: sizes (20, 32, 10) → 1,002."""
        return cls((20, 32, 10), **kwargs)

    @classmethod
    def medium(cls, **kwargs: Any) -> MLP:
        """About 2e4 parameters: sizes (100, 150, 30, 10) → 19,990."""
        return cls((100, 150, 30, 10), **kwargs)

    # -- flat layout -------------------------------------------------------------
    def unflatten(self, theta: np.ndarray) -> dict[str, np.ndarray]:
        """Return a dict of *views* into ``theta`` (which must be contiguous)."""
        theta = np.asarray(theta)
        if theta.shape != (self.n,):
            raise ValueError(f"{self.name}: expected a flat vector of {self.n}, got {theta.shape}")
        out: dict[str, np.ndarray] = {}
        start = 0
        for key, shape in self.shapes.items():
            size = math.prod(shape)
            # A slice of a contiguous 1-D array reshapes without copying, so
            # in-place perturbations of theta are seen through these views.
            out[key] = theta[start:start + size].reshape(shape)
            start += size
        return out

    def flatten(self, params: Params) -> np.ndarray:
        if not isinstance(params, dict):
            return np.array(params, dtype=np.float64).ravel()
        # Use our own key order, not the caller's dict order.
        return np.concatenate([np.ravel(params[k]) for k in self.shapes])

    # -- numpy forward / backward --------------------------------------------------
    def _act(self, z: np.ndarray) -> np.ndarray:
        return np.tanh(z) if self.activation == "tanh" else np.maximum(z, 0.0)

    def _forward(self, params: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Return the activations [h0 = X, h1, ..., h_{L-1}, z_L (logits)]."""
        hs = [self.X]
        h = self.X
        for k in range(1, self.n_layers + 1):
            z = h @ params[f"W{k}"] + params[f"b{k}"]
            h = self._act(z) if k < self.n_layers else z
            hs.append(h)
        return hs

    def _data_loss_and_dz(self, z: np.ndarray, need_dz: bool):
        """Return the data term of the loss and, optionally, dJ/dz_L."""
        m = self.m
        if self.output == "softmax":
            zmax = z.max(axis=1, keepdims=True)
            e = np.exp(z - zmax)
            s = e.sum(axis=1, keepdims=True)
            logp_true = (z - zmax)[np.arange(m), self.labels] - np.log(s[:, 0])
            value = -float(np.mean(logp_true))
            if not need_dz:
                return value, None
            dz = e / s
            dz[np.arange(m), self.labels] -= 1.0
            return value, dz / m
        r = z - self.Y
        value = 0.5 * float(np.sum(r * r)) / m
        return value, (r / m if need_dz else None)

    def _reg(self, params: dict[str, np.ndarray]) -> float:
        total = 0.0
        for k in range(1, self.n_layers + 1):
            w = params[f"W{k}"].ravel()
            total += float(np.dot(w, w))
        return 0.5 * self.lam * total

    def loss(self, params: dict[str, np.ndarray]) -> float:
        hs = self._forward(params)
        value, _ = self._data_loss_and_dz(hs[-1], need_dz=False)
        return value + self._reg(params)

    def grad(self, params: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        hs = self._forward(params)
        _, dz = self._data_loss_and_dz(hs[-1], need_dz=True)
        grads: dict[str, np.ndarray] = {}
        for k in range(self.n_layers, 0, -1):
            h_prev = hs[k - 1]
            grads[f"W{k}"] = h_prev.T @ dz + self.lam * params[f"W{k}"]
            grads[f"b{k}"] = dz.sum(axis=0)
            if k > 1:
                dh = dz @ params[f"W{k}"].T
                if self.activation == "tanh":
                    dz = dh * (1.0 - h_prev * h_prev)  # tanh' = 1 - tanh²
                else:
                    dz = dh * (h_prev > 0.0)
        # Return in the canonical order W1, b1, W2, ...
        return {key: grads[key] for key in self.shapes}

    # -- framework equivalents -----------------------------------------------------
    def _split(self, flat: Any) -> dict[str, Any]:
        """Slice a flat torch/jax vector into reshaped parameter blocks."""
        out: dict[str, Any] = {}
        start = 0
        for key, shape in self.shapes.items():
            size = math.prod(shape)
            out[key] = flat[start:start + size].reshape(shape)
            start += size
        return out

    def torch_loss(self, t: Any) -> Any:
        import torch

        p = self._split(t)
        h = torch.from_numpy(self.X)
        for k in range(1, self.n_layers + 1):
            z = h @ p[f"W{k}"] + p[f"b{k}"]
            if k < self.n_layers:
                h = torch.tanh(z) if self.activation == "tanh" else torch.relu(z)
        if self.output == "softmax":
            labels = torch.from_numpy(self.labels)
            data = torch.nn.functional.cross_entropy(z, labels)  # mean over rows
        else:
            data = 0.5 * ((z - torch.from_numpy(self.Y)) ** 2).sum() / self.m
        reg = sum((p[f"W{k}"] ** 2).sum() for k in range(1, self.n_layers + 1))
        return data + 0.5 * self.lam * reg

    def jax_loss(self, x: Any) -> Any:
        jnp = _enable_jax_x64()
        import jax

        p = self._split(x)
        h = jnp.asarray(self.X)
        for k in range(1, self.n_layers + 1):
            z = h @ p[f"W{k}"] + p[f"b{k}"]
            if k < self.n_layers:
                h = jnp.tanh(z) if self.activation == "tanh" else jnp.maximum(z, 0.0)
        if self.output == "softmax":
            logp = jax.nn.log_softmax(z, axis=1)
            data = -jnp.mean(logp[jnp.arange(self.m), jnp.asarray(self.labels)])
        else:
            data = 0.5 * jnp.sum((z - jnp.asarray(self.Y)) ** 2) / self.m
        reg = sum(jnp.sum(p[f"W{k}"] ** 2) for k in range(1, self.n_layers + 1))
        return data + 0.5 * self.lam * reg


# ---------------------------------------------------------------------------
# Suites
# ---------------------------------------------------------------------------
def standard_workloads(seed: int = 0) -> list[Workload]:
    """Return the benchmark suite: every workload at every size.

    Full central-difference checks are O(n) evaluations of an O(n) loss, so
    the largest sizes (Quadratic 1e5, 1e6) are meant for per-component timing
    on a subset of components, not for full checks.
    """
    return [
        Quadratic(1_000, seed=seed),
        Quadratic(10_000, seed=seed),
        Quadratic(100_000, seed=seed),
        Quadratic(1_000_000, seed=seed),
        Logistic(1_000, seed=seed),
        Logistic(10_000, seed=seed),
        MLP.small(seed=seed),
        MLP.medium(seed=seed),
    ]


def small_workloads(seed: int = 0) -> list[Workload]:
    """Return one small instance of each kind (quick runs, sanity checks)."""
    return [Quadratic(1_000, seed=seed), Logistic(1_000, seed=seed), MLP.small(seed=seed)]


# ---------------------------------------------------------------------------
# Self-check helpers
# ---------------------------------------------------------------------------
def numerical_gradient(
    f: Callable[[np.ndarray], float],
    theta: np.ndarray,
    eps: float = 1e-6,
    components: np.ndarray | None = None,
) -> np.ndarray:
    """Central differences of ``f`` at ``theta``, perturbing in place.

    Parameters
    ----------
    f : callable
        Loss on the flat vector.
    theta : numpy.ndarray
        Flat float64 vector; perturbed in place and restored bit for bit.
    eps : float, optional
        Nominal step. The divisor is the represented step ``(x+ε) − (x−ε)``.
    components : numpy.ndarray of int, optional
        Indices to difference; all when omitted.

    Returns
    -------
    numpy.ndarray
        The numerical derivatives, one per requested component.
    """
    idx = np.arange(theta.size) if components is None else np.asarray(components)
    out = np.empty(idx.size)
    for j, i in enumerate(idx):
        x = theta[i]
        xp, xm = x + eps, x - eps
        theta[i] = xp
        fp = f(theta)
        theta[i] = xm
        fm = f(theta)
        theta[i] = x  # restore by assignment: x + ε − ε need not equal x
        out[j] = (fp - fm) / (xp - xm)
    return out


def relative_error(approx: np.ndarray, exact: np.ndarray) -> float:
    """``‖approx − exact‖₂ / (‖approx‖₂ + ‖exact‖₂)``, 0 when both are 0."""
    denom = float(np.linalg.norm(approx) + np.linalg.norm(exact))
    return float(np.linalg.norm(approx - exact)) / denom if denom > 0 else 0.0


def self_check(
    workloads: Sequence[Workload] | None = None,
    max_components: int = 2000,
    seed: int = 1,
    stream=sys.stdout,
) -> bool:
    """Check every analytic gradient against central differences.

    Workloads with more than ``max_components`` parameters are checked on a
    seeded random subset of components, plus a random-direction check
    ``(J(θ+hv) − J(θ−hv)) / 2h ≈ ⟨∇J, v⟩`` that involves every component.

    Returns
    -------
    bool
        True when every relative error is below 1e-6.
    """
    workloads = standard_workloads() if workloads is None else workloads
    rng = np.random.default_rng(seed)
    ok = True
    print(f"{'workload':<26}{'n':>9}{'checked':>9}{'rel.err':>11}{'dir.err':>11}{'s':>7}",
          file=stream)
    for w in workloads:
        t0 = time.perf_counter()
        theta = w.theta0()
        before = theta.copy()
        g = w.flat_grad(theta)
        if w.n <= max_components:
            idx = None
            exact = g
        else:
            idx = np.sort(rng.choice(w.n, size=max_components, replace=False))
            exact = g[idx]
        approx = numerical_gradient(w.flat_loss, theta, eps=w.check_eps, components=idx)
        err = relative_error(approx, exact)

        # Random direction over all components (unit norm so h is a distance).
        v = rng.standard_normal(w.n)
        v /= np.linalg.norm(v)
        h = w.check_eps
        dd = (w.flat_loss(theta + h * v) - w.flat_loss(theta - h * v)) / (2 * h)
        dir_err = relative_error(np.array([dd]), np.array([float(np.dot(g, v))]))

        # The structured and the flat interfaces must agree.
        p = w.make_params()
        assert np.array_equal(w.flatten(p), before), "flatten(make_params()) != theta0()"
        assert w.loss(p) == w.flat_loss(before), "loss(params) != flat_loss(theta)"
        assert np.array_equal(theta, before), "theta was not restored bit for bit"

        passed = err < 1e-6 and dir_err < 1e-6
        ok &= passed
        checked = w.n if idx is None else idx.size
        print(f"{w.name:<26}{w.n:>9}{checked:>9}{err:>11.2e}{dir_err:>11.2e}"
              f"{time.perf_counter() - t0:>7.2f}{'' if passed else '  FAIL'}", file=stream)
    return ok


if __name__ == "__main__":
    suite = [*standard_workloads(), MLP((8, 16, 12, 4), activation="tanh", output="mse")]
    all_ok = self_check(suite)
    print("all gradients OK (< 1e-6)" if all_ok else "SOME GRADIENTS ARE WRONG")
    sys.exit(0 if all_ok else 1)
