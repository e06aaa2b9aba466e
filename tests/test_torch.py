"""fastcheck.torch: custom autograd Functions and nn.Modules (skipped without torch)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import fastcheck.torch as fct  # noqa: E402  (after the importorskip)


class Cube(torch.autograd.Function):
    """x**3 * w with a hand-written backward; `factor` plants a bug in dL/dx."""

    factor = 1.0

    @staticmethod
    def forward(ctx, x, w):
        ctx.save_for_backward(x, w)
        return x ** 3 * w

    @staticmethod
    def backward(ctx, g):
        x, w = ctx.saved_tensors
        return g * 3 * x ** 2 * w * Cube.factor, g * x ** 3


class WrongW(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w):
        ctx.save_for_backward(x, w)
        return (x @ w).tanh()

    @staticmethod
    def backward(ctx, g):
        x, w = ctx.saved_tensors
        y = (x @ w).tanh()
        dz = g * (1 - y * y)
        return dz @ w.T, x.T @ dz * 1.01  # the bug: 1 % off in dL/dw


def tensors(*shapes, dtype=torch.float64, seed=0, scale=1.0):
    gen = torch.Generator().manual_seed(seed)
    return [(torch.randn(*s, dtype=dtype, generator=gen) * scale).requires_grad_()
            for s in shapes]


def raw(*ts):
    return [t.detach().numpy().tobytes() for t in ts]


@pytest.fixture(autouse=True)
def _reset_cube():
    Cube.factor = 1.0
    yield
    Cube.factor = 1.0


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
def test_correct_function_passes(dtype):
    x, w = tensors((4, 3), (4, 3), dtype=dtype)
    before = raw(x, w)
    r = fct.check_function(Cube, x, w)
    assert r.passed, r.report()
    assert [p.name for p in r.parameters] == ["arg0", "arg1"]
    assert r.mode == "torch function" and r.notes[0].startswith("check_function:")
    assert raw(x, w) == before


def test_wrong_backward_is_caught_and_named():
    x, w = tensors((5, 3), (3, 2))
    r = fct.check_function(WrongW.apply, x, w)
    assert not r.passed
    assert {p.name for p in r.parameters if p.wrong} == {"arg1"}
    assert r.worst(1)[0].name.startswith("arg1[")


def test_uniform_1e4_error_caught_where_gradcheck_passes():
    x, w = tensors((6,), (6,))
    Cube.factor = 1 + 1e-4
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert torch.autograd.gradcheck(Cube.apply, (x, w))
    r = fct.check_function(Cube, x, w)
    assert not r.passed and r.verdict == "suspicious"
    assert {p.name for p in r.parameters if p.wrong} == {"arg0"}


def test_badly_scaled_input_passes_where_gradcheck_fails():
    x = ((torch.rand(4, dtype=torch.float64) + 1) * 1e8).requires_grad_()

    def linear(t):
        return 2.5 * t

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert not torch.autograd.gradcheck(linear, (x,), raise_exception=False)
    r = fct.check_function(linear, x)
    assert r.passed, r.report()


def test_relu_kink_is_not_a_bug():
    x = torch.tensor([0.0, 1.5, -0.5, 2.0], dtype=torch.float64, requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert not torch.autograd.gradcheck(torch.relu, (x,), raise_exception=False)
    r = fct.check_function(torch.relu, x)
    assert r.passed and r.n_kinks == 1, r.report()
    assert "kink" in r.report() and "arg0[0]" in r.report()


def test_dropout_left_on_is_reported():
    x = tensors((10,))[0]
    r = fct.check_function(lambda t: torch.nn.functional.dropout(t, 0.5, training=True), x)
    assert r.verdict == "nondeterministic" and "dropout" in r.report()
    seeded = fct.check_function(lambda t: torch.nn.functional.dropout(t, 0.5, training=True),
                                x, before_eval=lambda: torch.manual_seed(0))
    assert seeded.verdict != "nondeterministic"


def test_non_contiguous_and_non_tensor_arguments():
    base = torch.randn(3, 4, dtype=torch.float64)
    x = base.t().requires_grad_()  # a non-contiguous view (leaf, after requires_grad_)
    assert not x.is_contiguous()
    before = raw(base)
    r = fct.check_function(lambda t, k: (t * k).sin().sum(dim=0), x, 3.0)
    assert r.passed, r.report()
    assert raw(base) == before


def test_scalar_output_uses_one_cotangent():
    x = tensors((5,))[0]
    r = fct.check_function(lambda t: (t ** 2).sum(), x)
    assert r.passed and len(r.extra["vectors"]) == 1


def test_multiple_outputs():
    x, w = tensors((3,), (3,))
    r = fct.check_function(lambda a, b: (a * b, a.exp(), torch.arange(3)), x, w)
    assert r.passed, r.report()


def test_bad_input():
    x = torch.randn(3, dtype=torch.float64)
    with pytest.raises(ValueError, match="requires_grad=True"):
        fct.check_function(torch.sin, x)
    with pytest.raises(TypeError, match="float64 or float32"):
        fct.check_function(torch.sin, torch.randn(3).half().requires_grad_())
    with pytest.raises(ValueError, match="expanded"):
        fct.check_function(torch.sin, torch.randn(3, dtype=torch.float64).expand(2, 3)
                           .clone().expand(2, 2, 3).requires_grad_())
    with pytest.raises(TypeError, match="must return a tensor"):
        fct.check_function(lambda t: t.sum().item(), x.clone().requires_grad_())


# ------------------------------------------------------------------------ check_module
class Net(torch.nn.Module):
    def __init__(self, dropout: float = 0.0, bug: float = 1.0):
        super().__init__()
        self.fc1 = torch.nn.Linear(4, 6)
        self.norm = torch.nn.BatchNorm1d(6)
        self.fc2 = torch.nn.Linear(6, 2)
        self.drop = torch.nn.Dropout(dropout)
        self.bug = bug

    def forward(self, x):
        h = torch.tanh(self.norm(self.fc1(x)))
        h = self.drop(h)
        if self.bug != 1.0:
            h = ScaleGrad.apply(h, self.bug)
        return self.fc2(h)


class ScaleGrad(torch.autograd.Function):
    """Identity forward, backward scaled by s: a planted bug upstream of fc2."""

    @staticmethod
    def forward(ctx, h, s):
        ctx.s = s
        return h.clone()

    @staticmethod
    def backward(ctx, g):
        return g * ctx.s, None


def _data(dtype=torch.float64):
    gen = torch.Generator().manual_seed(1)
    return (torch.randn(8, 4, dtype=dtype, generator=gen),
            torch.randn(8, 2, dtype=dtype, generator=gen))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
def test_module_passes_and_names_parameters(dtype):
    torch.manual_seed(0)
    net = Net().to(dtype)
    x, y = _data(dtype)
    state = {k: v.clone() for k, v in net.state_dict().items()}
    r = fct.check_module(net, x, lambda out: torch.nn.functional.mse_loss(out, y))
    assert r.passed, r.report()
    names = [p.name for p in r.parameters]
    assert names == ["fc1.weight", "fc1.bias", "norm.weight", "norm.bias", "fc2.weight",
                     "fc2.bias"]
    for k, v in net.state_dict().items():  # parameters and running stats, bit for bit
        assert torch.equal(v, state[k]), k
    assert all(p.grad is None for p in net.parameters())


def test_module_with_wrong_backward_names_the_parameters():
    torch.manual_seed(0)
    net = Net(bug=1.02).double()
    x, y = _data()
    r = fct.check_module(net, (x,), lambda out: torch.nn.functional.mse_loss(out, y))
    assert not r.passed
    wrong = {p.name for p in r.parameters if p.wrong}
    assert wrong and wrong <= {"fc1.weight", "fc1.bias", "norm.weight", "norm.bias"}
    assert "fc2.weight" not in wrong and "fc2.bias" not in wrong


def test_module_dropout_left_on():
    torch.manual_seed(0)
    net = Net(dropout=0.3).double().train()
    x, y = _data()
    r = fct.check_module(net, x, lambda out: torch.nn.functional.mse_loss(out, y))
    assert r.verdict == "nondeterministic"
    assert any("module.eval()" in n for n in r.notes)
    seeded = fct.check_module(net, x, lambda out: torch.nn.functional.mse_loss(out, y),
                              before_eval=lambda: torch.manual_seed(0))
    assert seeded.passed, seeded.report()
    assert fct.check_module(net.eval(), x,
                            lambda out: torch.nn.functional.mse_loss(out, y)).passed


def test_module_bad_input():
    net = Net().double()
    x, _ = _data()
    with pytest.raises(TypeError, match="scalar tensor"):
        fct.check_module(net, x, lambda out: out)
    with pytest.raises(TypeError, match=r"torch\.nn\.Module"):
        fct.check_module(lambda t: t, x, lambda out: out.sum())
    frozen = Net().double().requires_grad_(False)
    with pytest.raises(ValueError, match="no parameter with requires_grad"):
        fct.check_module(frozen, x, lambda out: out.sum())


def test_module_name_does_not_shadow_torch():
    import fastcheck

    assert fct.torch is torch
    assert fastcheck.torch is fct
    assert np.isfinite(torch.ones(1).numpy()[0])
