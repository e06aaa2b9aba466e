"""The demo behind ``fastcheck demo``: the worked example, then real checks.

Each section prints what a user would see and checks that fastcheck reached the
expected conclusion, so the demo doubles as a smoke test (exit status 1 if not).
"""

from __future__ import annotations

import math

import numpy as np

from fastcheck import examples
from fastcheck._check import check_grad
from fastcheck._numerical import numerical_grad


def _title(text: str) -> None:
    print()
    print(text)
    print("=" * len(text))


def worked_example() -> bool:
    """f(θ) = θ³ at θ = 1: central versus forward differences, and their orders."""
    _title("1. The worked example: f(θ) = θ³ at θ = 1, true derivative 3")

    def cube(t: np.ndarray) -> float:
        return float(t[0] ** 3)

    theta = np.array([1.0])
    central = float(numerical_grad(cube, theta, eps=0.01)[0])
    forward = float(numerical_grad(cube, theta, eps=0.01, method="forward")[0])
    print(f"ε = 0.01: central {central:.10g} (error {abs(central - 3):.2e}), "
          f"forward {forward:.10g} (error {abs(forward - 3):.2e})")
    print()
    print("   ε        central error   forward error   central order   forward order")
    previous = None
    for eps in (1e-1, 1e-2, 1e-3, 1e-4):
        ce = abs(float(numerical_grad(cube, theta, eps=eps)[0]) - 3)
        fe = abs(float(numerical_grad(cube, theta, eps=eps, method="forward")[0]) - 3)
        orders = "      -               -"
        if previous is not None:
            pc, pf = previous
            orders = (f"{math.log10(pc / ce):13.2f}   {math.log10(pf / fe):13.2f}")
        print(f"  {eps:7.0e}   {ce:13.3e}   {fe:13.3e}   {orders}")
        previous = (ce, fe)
    print("Central error shrinks 100× per 10× smaller ε (order 2, two evaluations per")
    print("component); forward only 10× (order 1, one evaluation plus a shared J(θ)).")
    return abs(central - 3.0001) < 1e-12 and abs(forward - 3.0301) < 1e-12


def demo_network_checks() -> bool:
    """The seed's network: a correct backward pass, then one with two bugs."""
    net = examples.demo_network()
    _title("2. A hand-written network: LINEAR→RELU→LINEAR→RELU→LINEAR→SIGMOID")
    print("check_grad(net.loss, net.grad, net.params)  # the correct backward pass")
    good = check_grad(net.loss, net.grad, net.params)
    print(good)

    _title("3. The same network with two bugs: dW2 × 2 and db1 computed with 4/m")
    print("check_grad(net.loss, net.buggy_grad, net.params)")
    bad = check_grad(net.loss, net.buggy_grad, net.params)
    print(bad)
    blamed = {p.name for p in bad.parameters if p.wrong}
    return good.verdict == "excellent" and not bad.passed and blamed == {"W2", "b1"}


def trust_checks() -> bool:
    """Kinks and dropout: where other checkers raise false alarms."""
    _title("4. A ReLU network whose pre-activation sits exactly on the kink")
    relu = examples.relu_network()
    kinked = check_grad(relu.loss, relu.grad, relu.params)
    print(kinked.report(k=4))

    _title("5. Dropout left on: the loss changes at every call")
    drop = examples.dropout_network(keep_prob=0.8)
    noisy = check_grad(drop.loss, drop.grad, drop.params)
    print(noisy)
    print()
    print("With before_eval resetting the dropout seed before every evaluation:")
    drop.reseed(0)
    grad_same_masks = drop.grad()
    fixed = check_grad(drop.loss, grad_same_masks, drop.params,
                       before_eval=lambda: drop.reseed(0))
    print(fixed.summary())
    return (kinked.passed and kinked.n_kinks > 0 and noisy.verdict == "nondeterministic"
            and fixed.passed)


def run(quick: bool = False) -> int:
    """Run the demo; 0 when every check reached the expected conclusion."""
    ok = worked_example()
    ok = demo_network_checks() and ok
    if not quick:
        ok = trust_checks() and ok
    print()
    print("demo: all checks reached the expected conclusion" if ok else
          "demo: UNEXPECTED RESULT (see above)")
    return 0 if ok else 1
