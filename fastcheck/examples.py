"""Small pure-numpy models with hand-written gradients, for demos and tests.

Every model here looks like code a student writes while learning backpropagation: a forward
pass that keeps a cache of ``Z`` and ``A`` per layer, and a backward pass that walks the cache
in reverse.  Each model exposes

``params``
    a ``dict`` of C-contiguous arrays (``"W1"``, ``"b1"``, ...), the object a gradient checker
    perturbs in place;
``loss(params)``
    the cost, read from the arrays of the given ``params`` at call time;
``grad(params)``
    the hand-written gradient, a ``dict`` with the same keys and shapes;
``buggy_grad(params)``
    the same backward pass with known bugs injected (where the model has them).

The three factories are

- :func:`demo_network`: the product demo, LINEAR->RELU->LINEAR->RELU->LINEAR->SIGMOID, with
  data drawn so that no pre-activation is near the ReLU kink, and two injected bugs;
- :func:`relu_network`: a similar network with one pre-activation placed exactly on (or within
  ~1e-12 of) the ReLU kink, to exercise kink detection;
- :func:`dropout_network`: the demo network with inverted dropout driven by an RNG that is
  not reseeded between calls, so the loss is a different function at every call.

This module imports only numpy, so that it can be used without building the C extension.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

__all__ = [
    "DemoNetwork",
    "DropoutNetwork",
    "ReluNetwork",
    "demo_network",
    "dropout_network",
    "relu_network",
]

Params = dict[str, np.ndarray]

# Every pre-activation that is meant to be smooth stays at least this far from 0.  The brief
# asks for 1e-3; we ask for 50 times more because a float32 check uses steps of about 1e-3
# to 1e-2 per parameter, and a step moves a pre-activation by about step * |input| (inputs
# are O(1)), so a 1e-3 margin could still be crossed by a float32 check.
_SMOOTH_MARGIN = 0.05

# Output probabilities are kept inside [_P_LO, 1 - _P_LO] so that log(a) and log(1 - a)
# are well conditioned and the demo is not dominated by saturation effects.
_P_LO = 0.02

# Rejection sampling gives up after this many draws (it needs a handful in practice).
_MAX_DRAWS = 10_000


def _sigmoid(z: np.ndarray) -> np.ndarray:
    """Logistic function, computed without overflow for large |z| and in z's dtype."""
    # exp(-|z|) never overflows; the two branches are the same function.
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1 / (1 + e), e / (1 + e))


class _ReluSigmoidMLP:
    """An L-layer (LINEAR->RELU)*(L-1) -> LINEAR->SIGMOID network with cross-entropy cost.

    Columns are examples (``X`` is ``n_x x m``), as in the usual course notation, so that
    ``Z[l] = W[l] @ A[l-1] + b[l]`` with ``b[l]`` a column vector broadcast over examples.

    Parameters
    ----------
    params : dict of str to ndarray
        ``"W1"``, ``"b1"``, ..., ``"WL"``, ``"bL"``; ``W[l]`` is ``n_l x n_{l-1}`` and
        ``b[layer]`` is ``n_l x 1``.
    X : ndarray, shape (n_x, m)
        Inputs, one example per column.
    Y : ndarray, shape (1, m)
        Labels in {0, 1}.
    keep_prob : float, optional
        Probability of keeping a hidden unit under inverted dropout.  1.0 (the default)
        turns dropout off and then no random numbers are drawn at all.
    rng : numpy.random.Generator, optional
        Source of the dropout masks.  Only used when ``keep_prob < 1``.
    """

    # Per-block factors injected by ``buggy_grad``: {"dW2": 2.0} means dW2 is computed as
    # 2 * dZ2 @ A1.T / m.  Subclasses set this to describe their bugs.
    _bugs: ClassVar[dict[str, float]] = {}

    def __init__(
        self,
        params: Params,
        X: np.ndarray,
        Y: np.ndarray,
        keep_prob: float = 1.0,
        rng: np.random.Generator | None = None,
    ) -> None:
        self.params: Params = params
        self.X: np.ndarray = X
        self.Y: np.ndarray = Y
        self.keep_prob: float = float(keep_prob)
        self._rng: np.random.Generator | None = rng
        # Number of LINEAR layers, L.
        self.n_layers: int = len(params) // 2

    # ------------------------------------------------------------------ forward / cost
    def _forward(self, params: Params) -> tuple[np.ndarray, list[dict[str, np.ndarray]]]:
        """Forward pass; returns the output activation and a per-layer cache.

        ``cache[l-1]`` holds ``A_prev``, ``Z`` and, for dropped hidden layers, the mask
        ``D`` of layer ``l``: exactly what the backward pass of that layer needs.
        """
        L = self.n_layers
        A = self.X
        cache: list[dict[str, np.ndarray]] = []
        for layer in range(1, L + 1):
            W = params[f"W{layer}"]
            b = params[f"b{layer}"]
            Z = W @ A + b
            entry = {"A_prev": A, "Z": Z}
            if layer < L:
                A = np.maximum(Z, 0)
                if self.keep_prob < 1.0:
                    # Inverted dropout: drop with probability 1 - keep_prob and rescale the
                    # survivors so the expected activation is unchanged.  The mask is drawn
                    # from the instance RNG, which is *not* reset between calls: that is the
                    # nondeterminism a gradient checker has to notice.
                    assert self._rng is not None
                    D = self._rng.random(A.shape) < self.keep_prob
                    A = A * D / self.keep_prob
                    entry["D"] = D
            else:
                A = _sigmoid(Z)
            cache.append(entry)
        return A, cache

    def _cost(self, AL: np.ndarray) -> float:
        """Cross-entropy J = -(1/m) sum(y log a + (1 - y) log(1 - a))."""
        Y = self.Y
        m = Y.shape[1]
        cost = -(1 / m) * np.sum(Y * np.log(AL) + (1 - Y) * np.log(1 - AL))
        return float(cost)

    def loss(self, params: Params | None = None) -> float:
        """Forward pass and cross-entropy cost.

        Parameters
        ----------
        params : dict of str to ndarray, optional
            The parameters to read; ``self.params`` if omitted.  The arrays are read at
            call time, so a checker may perturb them in place between calls.

        Returns
        -------
        float
            The cost J.  It is computed in the dtype of the parameters and data (a float32
            model has a float32-resolution cost) and returned as a Python float.
        """
        params = self.params if params is None else params
        AL, _ = self._forward(params)
        return self._cost(AL)

    # ------------------------------------------------------------------ backward
    def _backward(self, params: Params, bugs: dict[str, float]) -> Params:
        """Hand-written backward pass, with optional per-block factors (the injected bugs)."""
        AL, cache = self._forward(params)
        L = self.n_layers
        Y = self.Y
        m = Y.shape[1]
        grads: Params = {}
        # Sigmoid output with cross-entropy: dJ/dZ_L = (A_L - Y) (per example; the 1/m comes
        # in dW and db).  Using the simplified form instead of dA * s * (1 - s) avoids
        # dividing by A_L and 1 - A_L, which lose precision when the output saturates.
        dZ = AL - Y
        for layer in range(L, 0, -1):
            A_prev = cache[layer - 1]["A_prev"]
            # bugs.get(...) is 1.0 for a correct gradient: a bug is a wrong factor written
            # into the formula, e.g. "4/m instead of 1/m" is the factor 4 on db.
            grads[f"W{layer}"] = bugs.get(f"dW{layer}", 1.0) * (dZ @ A_prev.T) / m
            grads[f"b{layer}"] = bugs.get(f"db{layer}", 1.0) * np.sum(dZ, axis=1, keepdims=True) / m
            if layer > 1:
                dA = params[f"W{layer}"].T @ dZ
                prev = cache[layer - 2]
                if "D" in prev:
                    # Dropout backward: the same mask and the same rescaling as forward.
                    dA = dA * prev["D"] / self.keep_prob
                # ReLU backward with the convention relu'(0) = 0 (the strict comparison).
                dZ = dA * (prev["Z"] > 0)
        # Return the blocks in the same order as params (W1, b1, W2, ...), not reversed.
        return {k: np.ascontiguousarray(grads[k]) for k in params}

    def grad(self, params: Params | None = None) -> Params:
        """Correct hand-written gradient of :meth:`loss`.

        Parameters
        ----------
        params : dict of str to ndarray, optional
            The parameters to read; ``self.params`` if omitted.

        Returns
        -------
        dict of str to ndarray
            ``dW1``, ``db1``, ... under the keys ``"W1"``, ``"b1"``, ..., same shapes and
            dtypes as the parameters.  With dropout on, the gradient is that of the loss
            with the masks drawn by this call's own forward pass.
        """
        params = self.params if params is None else params
        return self._backward(params, {})

    def buggy_grad(self, params: Params | None = None) -> Params:
        """The backward pass with this model's injected bugs (see the class docstring).

        Parameters
        ----------
        params : dict of str to ndarray, optional
            The parameters to read; ``self.params`` if omitted.

        Returns
        -------
        dict of str to ndarray
            Same structure as :meth:`grad`; only the bugged blocks differ.
        """
        params = self.params if params is None else params
        return self._backward(params, self._bugs)

    # ------------------------------------------------------------------ helpers
    def preactivations(self, params: Params | None = None) -> list[np.ndarray]:
        """The pre-activations ``Z1, ..., ZL`` (without dropout), e.g. to look for kinks."""
        params = self.params if params is None else params
        saved = self.keep_prob
        self.keep_prob = 1.0  # no masks: this must not advance the dropout RNG
        try:
            _, cache = self._forward(params)
        finally:
            self.keep_prob = saved
        return [c["Z"] for c in cache]


class DemoNetwork(_ReluSigmoidMLP):
    """The product demo: LINEAR->RELU->LINEAR->RELU->LINEAR->SIGMOID with cross-entropy.

    ``W1`` is 5x4, ``b1`` 5x1, ``W2`` 3x5, ``b2`` 3x1, ``W3`` 1x3, ``b3`` 1x1; ``X`` is 4x3
    (4 features, 3 examples) and ``Y`` is 1x3 with 0/1 labels.  Build it with
    :func:`demo_network`.

    :meth:`buggy_grad` has two injected bugs: ``dW2`` is multiplied by 2, and ``db1`` is
    computed with ``4/m`` instead of ``1/m``.  All other blocks are correct.

    Attributes
    ----------
    params : dict of str to ndarray
        C-contiguous arrays of the requested dtype.
    X, Y : ndarray
        The data, in the same dtype.
    """

    _bugs: ClassVar[dict[str, float]] = {"dW2": 2.0, "db1": 4.0}

    #: Layer sizes n_0 (features), n_1, n_2, n_3.
    layer_dims: tuple[int, ...] = (4, 5, 3, 1)
    #: Number of examples m.
    n_examples: int = 3


class ReluNetwork(_ReluSigmoidMLP):
    """A small ReLU network with one pre-activation on (or next to) the ReLU kink.

    Build it with :func:`relu_network`.  :meth:`grad` is correct with the convention
    relu'(0) = 0, so at the kink it is a valid one-sided derivative.  :meth:`buggy_grad`
    multiplies ``dW3`` by 1.5, a block whose components do not move the kinked unit.

    Attributes
    ----------
    kink : tuple of (int, int, int) or None
        ``(layer, unit, example)`` of the pre-activation placed on the kink, or ``None``
        when built with ``straddle=False``.
    kink_components : tuple of str
        Names such as ``"W1[2, 0]"`` and ``"b1[2, 0]"`` of the parameter components whose
        perturbation moves that pre-activation across the kink (empty without a kink).
    """

    _bugs: ClassVar[dict[str, float]] = {"dW3": 1.5}

    layer_dims: tuple[int, ...] = (3, 4, 3, 1)
    n_examples: int = 4

    kink: tuple[int, int, int] | None = None
    kink_components: tuple[str, ...] = ()


class DropoutNetwork(_ReluSigmoidMLP):
    """The demo network with inverted dropout on both hidden layers.

    The masks come from an RNG owned by the instance and created *without* a seed, so every
    call of :meth:`loss` (or :meth:`grad`) draws new masks and J is a different function at
    every call unless ``keep_prob == 1``.  :meth:`reseed` resets the RNG, which is what a
    ``before_eval`` hook would call to make the loss repeatable.
    """

    def reseed(self, seed: int) -> None:
        """Reset the dropout RNG so that the next calls draw a known sequence of masks.

        Parameters
        ----------
        seed : int
            Seed of the new generator.
        """
        self._rng = np.random.default_rng(seed)


# ---------------------------------------------------------------------- construction
def _draw(
    rng: np.random.Generator, dims: tuple[int, ...], m: int
) -> tuple[Params, np.ndarray, np.ndarray]:
    """Draw float64 data and He-initialised parameters for a network of the given sizes."""
    X = rng.standard_normal((dims[0], m))
    # Both classes present, so that the cost is not trivially minimised by saturation.
    Y = rng.integers(0, 2, size=(1, m)).astype(np.float64)
    while m > 1 and np.all(Y == Y[0, 0]):
        Y = rng.integers(0, 2, size=(1, m)).astype(np.float64)
    params: Params = {}
    for layer in range(1, len(dims)):
        # He initialisation keeps pre-activations O(1) through the ReLU layers.
        fan_in = dims[layer - 1]
        params[f"W{layer}"] = rng.standard_normal((dims[layer], fan_in)) * np.sqrt(2.0 / fan_in)
        params[f"b{layer}"] = 0.1 * rng.standard_normal((dims[layer], 1))
    return params, X, Y


def _cast(
    params: Params, X: np.ndarray, Y: np.ndarray, dtype
) -> tuple[Params, np.ndarray, np.ndarray]:
    """C-contiguous copies in the requested dtype (a checker wants plain, owned arrays)."""
    dt = np.dtype(dtype)
    if dt.kind != "f":
        raise TypeError(f"dtype must be a floating type, got {dt}")
    cast = {k: np.ascontiguousarray(v, dtype=dt) for k, v in params.items()}
    return cast, np.ascontiguousarray(X, dtype=dt), np.ascontiguousarray(Y, dtype=dt)


def _is_good(net: _ReluSigmoidMLP, skip: tuple[int, int, int] | None = None) -> bool:
    """Whether a drawn network makes a sound test model.

    Every pre-activation (except the deliberate kink ``skip``) is at least
    ``_SMOOTH_MARGIN`` from 0, the outputs are not saturated, and every gradient block is
    non-zero (a dead block would hide a bug injected into it).
    """
    Zs = net.preactivations()
    for layer, Z in enumerate(Zs, start=1):
        absZ = np.abs(Z).astype(np.float64)
        if skip is not None and skip[0] == layer:
            absZ[skip[1], skip[2]] = np.inf
        if np.min(absZ) < _SMOOTH_MARGIN:
            return False
    AL = _sigmoid(Zs[-1])
    if np.any(AL < _P_LO) or np.any(AL > 1 - _P_LO):
        return False
    g = net.grad()
    return all(np.max(np.abs(v)) > 1e-3 for v in g.values())


def demo_network(seed: int = 1, dtype=np.float64) -> DemoNetwork:
    """The product demo network with seeded data and parameters.

    Parameters and data are drawn from ``numpy.random.default_rng(seed)``; draws that put a
    pre-activation within 0.05 of the ReLU kink (or saturate the output, or leave a gradient
    block all zero) are rejected and drawn again, so the result depends only on ``seed``
    and has no kink issue for any seed.

    Parameters
    ----------
    seed : int, optional
        Seed of the data and parameters.
    dtype : numpy dtype, optional
        Floating dtype of the parameters and data; the loss is computed in it.

    Returns
    -------
    DemoNetwork
    """
    rng = np.random.default_rng(seed)
    for _ in range(_MAX_DRAWS):
        params, X, Y = _draw(rng, DemoNetwork.layer_dims, DemoNetwork.n_examples)
        net = DemoNetwork(*_cast(params, X, Y, dtype))
        if _is_good(net):
            return net
    raise RuntimeError("could not draw a demo network away from the ReLU kink")  # pragma: no cover


def relu_network(
    seed: int = 0, straddle: bool = True, offset: float = 0.0, dtype=np.float64
) -> ReluNetwork:
    """A small ReLU network (3 features, 4 examples, hidden 4 and 3) on the ReLU kink.

    With ``straddle=True`` one first-layer bias is set so that one unit's pre-activation for
    one example is ``offset`` (exactly 0 by default; ``offset`` of order 1e-12 puts it just
    beside the kink).  A central difference with any usual step then evaluates the loss on
    both sides of the kink for the components of that unit's weights and bias, and
    disagrees with :meth:`ReluNetwork.grad` although the latter is correct.  All other
    pre-activations stay at least 0.05 from 0.

    Parameters
    ----------
    seed : int, optional
        Seed of the data and parameters.
    straddle : bool, optional
        Place one pre-activation on the kink (True) or build a smooth network (False).
    offset : float, optional
        Value of the straddling pre-activation, ``|offset| <= 1e-9``.
    dtype : numpy dtype, optional
        Floating dtype of the parameters and data.

    Returns
    -------
    ReluNetwork
        With ``kink`` and ``kink_components`` describing where the kink is.
    """
    if abs(offset) > 1e-9:
        raise ValueError(f"offset must be within 1e-9 of 0 to straddle the kink, got {offset!r}")
    dims, m = ReluNetwork.layer_dims, ReluNetwork.n_examples
    rng = np.random.default_rng(seed)
    for _ in range(_MAX_DRAWS):
        params, X, Y = _draw(rng, dims, m)
        if not straddle:
            net = ReluNetwork(*_cast(params, X, Y, dtype))
            if _is_good(net):
                return net
            continue
        params, X, Y = _cast(params, X, Y, dtype)
        # P is computed by the very expression the forward pass uses (W1 @ X), so with
        # b1[k] = offset - P[k, j] the forward pass gets Z1[k, j] = P[k, j] + b1[k], which is
        # exactly 0 for offset 0 (x + (-x) is exact) and offset up to one rounding otherwise.
        P = params["W1"] @ X
        # Try units/examples in order of how much the kink matters downstream: the jump in
        # slope of J along b1[k] is |(W2.T @ dZ2)[k, j]| / m, and we want it clearly visible.
        candidates = [(k, j) for k in range(dims[1]) for j in range(m)]
        for k, j in candidates:
            trial = {name: v.copy() for name, v in params.items()}
            trial["b1"][k, 0] = offset - P[k, j]
            net = ReluNetwork(trial, X, Y)
            Z1 = net.preactivations()[0]
            eps = float(np.finfo(Z1.dtype).eps)
            if abs(float(Z1[k, j]) - offset) > 1e-15 + 4 * eps * abs(float(P[k, j])):
                continue  # pragma: no cover - rounding larger than expected; try another
            if not _is_good(net, skip=(1, k, j)):
                continue
            # Slope jump: gradient of J wrt A1[k, j] (the unit's output), times 1/m per unit
            # step of b1[k].  Computed by setting the unit "on" by hand.
            AL, cache = net._forward(trial)
            dZ = AL - Y
            dZ2 = (trial["W3"].T @ dZ) * (cache[1]["Z"] > 0)
            jump = abs(float((trial["W2"].T @ dZ2)[k, j])) / m
            if jump < 0.02:
                continue
            net.kink = (1, k, j)
            names = [f"W1[{k}, {i}]" for i in range(dims[0]) if X[i, j] != 0]
            net.kink_components = (*tuple(names), f"b1[{k}, 0]")
            return net
    raise RuntimeError("could not build a ReLU network on the kink")  # pragma: no cover


def dropout_network(seed: int = 1, keep_prob: float = 0.8, dtype=np.float64) -> DropoutNetwork:
    """The demo network with inverted dropout (keep probability ``keep_prob``) on hidden layers.

    The data and parameters are those of ``demo_network(seed, dtype)``.  The dropout RNG is
    created unseeded and advances at every call of ``loss`` or ``grad``, so two calls with
    the same parameters give different costs (unless ``keep_prob == 1``).  Call
    ``reseed(s)`` before each evaluation to make the loss a fixed function.

    Parameters
    ----------
    seed : int, optional
        Seed of the data and parameters (not of the dropout masks).
    keep_prob : float, optional
        Probability of keeping each hidden unit, in (0, 1].
    dtype : numpy dtype, optional
        Floating dtype of the parameters and data.

    Returns
    -------
    DropoutNetwork
    """
    if not 0.0 < keep_prob <= 1.0:
        raise ValueError(f"keep_prob must be in (0, 1], got {keep_prob!r}")
    base = demo_network(seed, dtype)
    params = {k: v.copy() for k, v in base.params.items()}
    return DropoutNetwork(params, base.X.copy(), base.Y.copy(), keep_prob=keep_prob,
                          rng=np.random.default_rng())
