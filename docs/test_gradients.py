"""Hand-written gradients, tested with fastcheck's pytest plugin.

Three backward passes a project might write by hand: a numpy MLP, a loss in C,
and a torch.autograd.Function.  Run:  pytest docs/test_gradients.py -v
"""

import ctypes
import shutil
import subprocess

import numpy as np
import pytest

import fastcheck

# ---------------------------------------------------------------- a numpy MLP
rng = np.random.default_rng(0)
X = rng.standard_normal((4, 16))          # 4 features, 16 examples
Y = rng.standard_normal((2, 16))


def mlp_params():
    r = np.random.default_rng(1)
    return {"W1": 0.5 * r.standard_normal((8, 4)), "b1": 0.1 * r.standard_normal(8),
            "W2": 0.5 * r.standard_normal((2, 8)), "b2": 0.1 * r.standard_normal(2)}


def mlp_loss(p):
    H = np.tanh(p["W1"] @ X + p["b1"][:, None])
    out = p["W2"] @ H + p["b2"][:, None]
    return 0.5 / X.shape[1] * float(np.sum((out - Y) ** 2))


def mlp_grad(p):
    H = np.tanh(p["W1"] @ X + p["b1"][:, None])
    d_out = (p["W2"] @ H + p["b2"][:, None] - Y) / X.shape[1]
    dZ = (p["W2"].T @ d_out) * (1 - H**2)
    return {"W1": dZ @ X.T, "b1": dZ.sum(axis=1), "W2": d_out @ H.T, "b2": d_out.sum(axis=1)}


def test_mlp_backward(gradcheck):
    gradcheck(mlp_loss, mlp_grad, mlp_params(), points=3, budget=1.0)


# ------------------------------------------------------------- a loss in C
C_SOURCE = r"""
#include <math.h>
#include <stddef.h>
/* J(w) = sum_k log(1 + exp(-x_k . w)); user_data: K, then K rows of n features */
int softplus_loss(const double *w, ptrdiff_t n, double *out, void *user_data)
{
    const double *data = user_data;
    ptrdiff_t K = (ptrdiff_t)data[0];
    double total = 0.0;
    for (ptrdiff_t k = 0; k < K; k++) {
        double z = 0.0;
        for (ptrdiff_t i = 0; i < n; i++) z += data[1 + k * n + i] * w[i];
        total += log1p(exp(-z));
    }
    *out = total;
    return 0;
}
"""
XC = np.random.default_rng(2).standard_normal((32, 10))   # 32 examples, 10 features


def build_c_loss(folder):
    """Compile the C loss and wrap it for fastcheck (a real project links its own)."""
    (folder / "loss.c").write_text(C_SOURCE)
    library = folder / "libloss.so"
    subprocess.run(["cc", "-O2", "-shared", "-fPIC", str(folder / "loss.c"), "-o",
                    str(library), "-lm"], check=True)
    f = ctypes.CDLL(str(library)).softplus_loss
    f.restype = ctypes.c_int
    f.argtypes = [ctypes.POINTER(ctypes.c_double), ctypes.c_ssize_t,
                  ctypes.POINTER(ctypes.c_double), ctypes.c_void_p]
    data = np.concatenate([[XC.shape[0]], XC.ravel()])
    return fastcheck.CLoss(f, user_data=data)


def c_loss_grad(w):
    z = XC @ w
    return XC.T @ (-1.0 / (1.0 + np.exp(z)))


@pytest.fixture(scope="module")
def c_loss(tmp_path_factory):
    if shutil.which("cc") is None:
        pytest.skip("needs a C compiler")
    return build_c_loss(tmp_path_factory.mktemp("closs"))


def test_c_loss_gradient(gradcheck, c_loss):
    w = np.random.default_rng(3).standard_normal(10)
    gradcheck(c_loss, c_loss_grad, w, points=3, budget=1.0)


# ------------------------------------------------- a torch.autograd.Function
try:
    import torch
except ImportError:
    torch = None

if torch is not None:
    class Swish(torch.autograd.Function):
        """x * sigmoid(x), with its derivative written by hand."""

        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return x * torch.sigmoid(x)

        @staticmethod
        def backward(ctx, grad_out):
            (x,) = ctx.saved_tensors
            s = torch.sigmoid(x)
            return grad_out * s * (1 + x * (1 - s))

V = np.random.default_rng(4).standard_normal(6)


def swish_loss(x):
    # torch.from_numpy shares memory: fastcheck perturbs x in place, torch sees it
    return float(Swish.apply(torch.from_numpy(x)) @ torch.from_numpy(V))


def swish_grad(x):
    t = torch.tensor(x, requires_grad=True)
    (Swish.apply(t) @ torch.from_numpy(V)).backward()
    return t.grad.numpy()


@pytest.mark.skipif(torch is None, reason="needs PyTorch")
def test_swish_backward(gradcheck):
    x = np.random.default_rng(5).standard_normal(6)
    gradcheck(swish_loss, swish_grad, x, points=3, budget=1.0)
