"""Gradients that are approximate by design, with the loss computed exactly.

Each factory returns ``(loss, grad, params)`` where ``loss`` is exact to rounding
(a known closed form) and ``grad`` is accurate only to a solver tolerance: the
situation of an adjoint ODE gradient or an implicit gradient through an
iterative solver.  ``bug=`` plants a relative error in one component of the
gradient, so a declared accuracy can be shown not to hide a real bug.

Run ``python tests/accuracy_cases.py`` to print how far each gradient is from
the exact one (the figures the declared accuracies in the tests rest on).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy.integrate import solve_ivp
from scipy.linalg import expm
from scipy.sparse.linalg import cg

__all__ = ["adjoint_ode", "implicit_cg"]

_T = 1.0
_X0 = np.array([1.0, -0.5, 0.25])


def _stable_matrix() -> np.ndarray:
    rng = np.random.default_rng(7)
    return rng.standard_normal((3, 3)) * 0.5 - np.eye(3)


def _adjoint_rhs(A: np.ndarray) -> Callable:
    """Backward-in-time system for (x, lambda, G) of J = |x(T)|^2 / 2, x' = A x."""
    def rhs(_t: float, z: np.ndarray) -> np.ndarray:
        x, lam = z[:3], z[3:6]
        # G(0) = integral over [0, T] of lambda x^T; integrating from T down to 0
        # with G(T) = 0 the derivative is -lambda x^T.
        return np.concatenate([A @ x, -A.T @ lam, -np.outer(lam, x).ravel()])
    return rhs


def exact_ode_gradient(A: np.ndarray) -> np.ndarray:
    """dJ/dA for J = |expm(A T) x0|^2 / 2, from the closed form (for the self-check)."""
    # Van Loan's block exponential gives the integral of expm(A^T s) xT x0^T expm(A^T ...)
    # exactly; a dense quadrature of the exact adjoint is simpler and accurate enough.
    xT = expm(A * _T) @ _X0
    t, w = np.polynomial.legendre.leggauss(40)
    t, w = (t + 1) * _T / 2, w * _T / 2
    return sum(wi * np.outer(expm(A.T * (_T - ti)) @ xT, expm(A * ti) @ _X0)
               for ti, wi in zip(t, w))


def adjoint_ode(rtol: float, bug: float = 0.0, bug_at: tuple = (1, 2)
                ) -> tuple[Callable, Callable, np.ndarray]:
    """J(A) = |x(T)|^2 / 2 for x' = A x, x(0) = x0; gradient by the adjoint method.

    The loss uses the known solution x(T) = expm(A T) x0; the gradient integrates
    the state and the adjoint backward with ``solve_ivp(rtol=rtol)``.
    """
    def loss(A: np.ndarray) -> float:
        x = expm(A * _T) @ _X0
        return 0.5 * float(x @ x)

    def grad(A: np.ndarray) -> np.ndarray:
        xT = expm(A * _T) @ _X0
        z0 = np.concatenate([xT, xT, np.zeros(9)])
        sol = solve_ivp(_adjoint_rhs(A), (_T, 0.0), z0, method="RK45", rtol=rtol,
                        atol=rtol * 1e-3)
        g = sol.y[6:, -1].reshape(3, 3)
        g[bug_at] *= 1 + bug
        return g

    return loss, grad, _stable_matrix()


def implicit_cg(rtol: float, bug: float = 0.0, bug_at: int = 3, n: int = 12
                ) -> tuple[Callable, Callable, np.ndarray]:
    """J(theta) = c^T x with (M + diag(theta)) x = b; implicit gradient by CG.

    dJ/dtheta_i = -lambda_i x_i where (M + diag(theta)) lambda = c (the matrix is
    symmetric).  The loss solves exactly; the gradient solves both systems with
    conjugate gradients stopped at ``rtol``.
    """
    rng = np.random.default_rng(11)
    R = rng.standard_normal((n, n))
    M = R @ R.T / n + np.eye(n)
    b, c = rng.standard_normal(n), rng.standard_normal(n)

    def loss(theta: np.ndarray) -> float:
        return float(c @ np.linalg.solve(M + np.diag(theta), b))

    def grad(theta: np.ndarray) -> np.ndarray:
        A = M + np.diag(theta)
        x, info_x = cg(A, b, rtol=rtol, atol=0.0)
        lam, info_l = cg(A, c, rtol=rtol, atol=0.0)
        assert info_x == 0 and info_l == 0, "CG did not converge"
        g = -lam * x
        g[bug_at] *= 1 + bug
        return g

    return loss, grad, np.linspace(0.5, 1.5, n)


def _self_check() -> None:  # pragma: no cover - run by hand
    for rtol in (1e-5, 1e-6, 1e-8):
        _, grad, A = adjoint_ode(rtol)
        exact = exact_ode_gradient(A)
        err = np.abs(grad(A) - exact)
        print(f"adjoint ODE rtol={rtol:.0e}: max abs error {err.max():.2e}, "
              f"max rel error {(err / np.abs(exact)).max():.2e}, |g| max {np.abs(exact).max():.2f}")
    for rtol in (1e-4, 1e-6, 1e-8):
        _, grad, theta = implicit_cg(rtol)
        _, exact_grad, _ = implicit_cg(1e-14)
        exact = exact_grad(theta)
        err = np.abs(grad(theta) - exact)
        print(f"implicit CG rtol={rtol:.0e}: max abs error {err.max():.2e}, "
              f"max rel error {(err / np.abs(exact)).max():.2e}")


if __name__ == "__main__":  # pragma: no cover
    _self_check()
