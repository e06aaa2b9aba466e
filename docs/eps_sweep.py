"""Regenerate docs/eps_sweep.png: python docs/eps_sweep.py (needs matplotlib).

A small tanh network (3 -> 8 -> 2, 50 parameters, mean squared error over 16
examples, float64),
written so that it also accepts complex parameters, checked with four methods
over the default grid of absolute steps 1e-1 ... 1e-12.
"""

from __future__ import annotations

import pathlib

import matplotlib

matplotlib.use("Agg")

import numpy as np

import fastcheck


def tanh_network(seed: int = 0):
    r = np.random.default_rng(seed)
    X, Y = r.standard_normal((16, 3)), r.standard_normal((16, 2))
    params = {"W1": r.standard_normal((8, 3)) / np.sqrt(3), "b1": 0.1 * r.standard_normal(8),
              "W2": r.standard_normal((2, 8)) / np.sqrt(8), "b2": 0.1 * r.standard_normal(2)}

    def loss(p):
        # no float() and no abs(): complex parameters flow through (complex step)
        A = np.tanh(X @ p["W1"].T + p["b1"])
        return 0.5 * np.sum((A @ p["W2"].T + p["b2"] - Y) ** 2) / len(X)

    def grad(p):
        A = np.tanh(X @ p["W1"].T + p["b1"])
        dZ2 = (A @ p["W2"].T + p["b2"] - Y) / len(X)
        dZ1 = (dZ2 @ p["W2"]) * (1 - A**2)
        return {"W1": dZ1.T @ X, "b1": dZ1.sum(0), "W2": dZ2.T @ A, "b2": dZ2.sum(0)}

    return loss, grad, params


def main() -> None:
    loss, grad, params = tanh_network()
    sweep = fastcheck.eps_sweep(loss, grad, params,
                                methods=("forward", "central", "richardson", "complex"))
    print(sweep)
    out = pathlib.Path(__file__).with_name("eps_sweep.png")
    sweep.plot(path=str(out), title=f"ε sweep: tanh network, {sweep.size} parameters, float64")
    print(f"wrote {out} ({out.stat().st_size // 1024} KB)")


if __name__ == "__main__":
    main()
