"""fastcheck.torch: custom autograd Functions and nn.Modules (skipped without torch)."""

from __future__ import annotations

import itertools
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
    ScaleOne.index, ScaleOne.factor = (0,), 1.1


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


# ------------------------------------------- what PyTorch functions return and take
F64 = torch.float64


def _norm_inputs(shape=(4, 5), seed=3):
    return tensors(shape, shape[1:2], shape[1:2], seed=seed)


NORMS = {
    "native_layer_norm": lambda x, w, b: torch.native_layer_norm(x, [5], w, b, 1e-5),
    "native_batch_norm": lambda x, w, b: torch.native_batch_norm(
        x, w, b, None, None, True, 0.1, 1e-5),
    "_native_batch_norm_legit": lambda x, w, b: torch._native_batch_norm_legit(
        x, w, b, True, 0.1, 1e-5),
    "_batch_norm_with_update": lambda x, w, b: torch.ops.aten._batch_norm_with_update(
        x, w, b, torch.zeros(5, dtype=F64), torch.ones(5, dtype=F64), 0.1, 1e-5),
}


@pytest.mark.parametrize("name", sorted(NORMS))
def test_non_differentiable_outputs_are_left_out_and_named(name):
    x, w, b = _norm_inputs()
    r = fct.check_function(NORMS[name], x, w, b)
    assert r.passed, r.report()
    left_out = [e["output"] for e in r.extra["excluded_outputs"]]
    assert 1 in left_out and 2 in left_out
    assert "output 1" in r.report() and "left out of both sides" in r.report()


class MarkedOutput(torch.autograd.Function):
    """Two outputs, the second marked non-differentiable; its backward ignores it."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        extra = x * 2
        ctx.mark_non_differentiable(extra)
        return x.sin(), extra

    @staticmethod
    def backward(ctx, g, _unused):
        (x,) = ctx.saved_tensors
        return g * x.cos()


def test_mark_non_differentiable_output_is_left_out():
    r = fct.check_function(MarkedOutput, tensors((5,))[0])
    assert r.passed, r.report()
    assert r.extra["excluded_outputs"][0]["output"] == 1
    assert "mark_non_differentiable" in r.report()


class NoneWhenAlone(torch.autograd.Function):
    """(x², 3x) whose backward returns None unless both outputs have a gradient."""

    @staticmethod
    def forward(ctx, x):
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(x)
        return x * x, 3 * x

    @staticmethod
    def backward(ctx, g0, g1):
        (x,) = ctx.saved_tensors
        if g0 is None or g1 is None:
            return None  # the bug: a missing cotangent is not zero
        return 2 * x * g0 + 3 * g1


def test_each_output_cotangent_alone_catches_a_missing_gradient():
    r = fct.check_function(NoneWhenAlone, tensors((4,))[0])
    assert r.verdict == "wrong", r.report()
    vectors = r.extra["vectors"]
    together = [v for v in vectors if v["outputs"] == "all outputs"]
    assert len(together) == 3 and all(v["verdict"] == "excellent" for v in together)
    alone = {v["outputs"]: v["verdict"] for v in vectors if v["outputs"] != "all outputs"}
    assert alone == {"output 0": "wrong", "output 1": "wrong"}
    assert "returned no gradient (None) for arg0" in r.report()


def test_native_group_norm_missing_gradient_is_wrong():
    # PyTorch marks its gradcheck an expected failure: autograd returns None for the
    # mean (output 1) or rstd (output 2) alone, although both depend on the input.
    x, w, b = tensors((4, 3), (3,), (3,))
    r = fct.check_function(lambda *a: torch.native_group_norm(*a, 4, 3, 1, 1, 1e-5), x, w, b)
    assert r.verdict == "wrong"
    assert r.extra["shown_outputs"] in ("output 1", "output 2")
    assert {p.name for p in r.parameters if p.wrong} == {"arg0"}


def test_several_correct_outputs_pass_with_each_alone():
    x, w = tensors((3,), (3,))
    r = fct.check_function(lambda a, b: (a * b, a.exp()), x, w)
    assert r.passed, r.report()
    assert [v["outputs"] for v in r.extra["vectors"]] == ["all outputs"] * 3 + [
        "output 0", "output 1"]


def test_non_finite_input_elements_are_left_out_and_named():
    x = tensors((3, 5), seed=4)[0].detach()
    x[0, 1] = -torch.inf
    x.requires_grad_()
    before = raw(x)
    r = fct.check_function(lambda t: torch.ops.aten._safe_softmax(t, -1), x)
    assert r.passed, r.report()
    assert r.extra["excluded_elements"] == ["arg0[0, 1]"]
    assert "arg0[0, 1] = -inf" in r.report()
    assert r.status[1] == 5 and r.n_checked == 14  # ComponentStatus.NOT_CHECKED
    assert r.numerical["arg0"].shape == (3, 5) and np.isnan(r.numerical["arg0"][0, 1])
    assert raw(x) == before


class ScaleOne(torch.autograd.Function):
    """Identity with one element of the gradient scaled: a planted bug at `index`."""

    index, factor = (0,), 1.1

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, g):
        g = g.clone()
        g[ScaleOne.index] *= ScaleOne.factor
        return g


def test_bug_next_to_a_non_finite_input_is_named_at_its_own_index():
    x = tensors((3, 5), seed=4)[0].detach()
    x[0, 1] = torch.inf
    x[2, 0] = torch.nan
    x.requires_grad_()
    ScaleOne.index = (1, 3)
    r = fct.check_function(lambda t: ScaleOne.apply(t).sin().nan_to_num(), x)
    assert not r.passed
    assert r.worst(1)[0].name == "arg0[1, 3]"
    assert set(r.extra["excluded_elements"]) == {"arg0[0, 1]", "arg0[2, 0]"}


def test_zero_tensor_gradient_sgn():
    r = fct.check_function(torch.sgn, tensors((5,))[0])
    assert r.verdict == "excellent" and np.all(r.analytic["arg0"] == 0), r.report()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "f16"])
def test_half_precision_outputs_get_a_verdict(dtype):
    x = tensors((6,))[0]
    r = fct.check_function(lambda t: (t.sin() * 2).to(dtype), x)
    # A correct backward: passed, or (with a judge that says where float16 cannot
    # resolve the derivative) "unresolved"; never called wrong.
    assert r.passed or r.verdict == "unresolved", r.report()
    assert r.tiers.dtype == "float16"


def test_half_precision_input_is_refused_naming_it():
    x = tensors((3,))[0]
    with pytest.raises(TypeError, match=r"argument 1 has dtype torch\.bfloat16"):
        fct.check_function(lambda a, b: a * b.double(), x,
                           torch.ones(3, dtype=torch.bfloat16, requires_grad=True))


def test_complex_output_checked_as_real_and_imaginary_parts():
    x = tensors((6,))[0]
    r = fct.check_function(torch.fft.fft, x)
    assert r.passed, r.report()
    assert "complex output" in r.report()
    ScaleOne.index = (2,)
    bugged = fct.check_function(lambda t: torch.fft.fft(ScaleOne.apply(t)), x)
    assert not bugged.passed and bugged.worst(1)[0].name == "arg0[2]"


class IgnoresComplex(torch.autograd.Function):
    """(fft(x), sin x) whose backward forgets the complex output's contribution."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return torch.fft.fft(x), x.sin()

    @staticmethod
    def backward(ctx, g_fft, g_sin):
        (x,) = ctx.saved_tensors
        return g_sin * x.cos()


def test_complex_output_next_to_a_real_one_is_not_dropped():
    r = fct.check_function(IgnoresComplex, tensors((5,))[0])
    assert r.verdict == "wrong", r.report()
    alone = {v["outputs"]: v["verdict"] for v in r.extra["vectors"]}
    assert alone["output 0"] == "wrong" and alone["output 1"] == "excellent"


def test_complex_input_checked_as_real_and_imaginary_parts():
    gen = torch.Generator().manual_seed(5)
    z = torch.randn(3, dtype=torch.complex128, generator=gen).requires_grad_()
    before = raw(z)
    r = fct.check_function(lambda t: (t.exp() * t.conj()).abs(), z)
    assert r.passed, r.report()
    assert r.numerical["arg0"].shape == (3, 2) and "arg0[..., 1] the imaginary part" in r.report()
    ScaleOne.index = (1,)
    bugged = fct.check_function(lambda t: ScaleOne.apply(t).exp(), z)
    assert not bugged.passed
    assert {c.name for c in bugged.worst(2)} == {"arg0[1, 0]", "arg0[1, 1]"}
    assert raw(z) == before


class EmptyOut(torch.autograd.Function):
    """An empty output whose backward returns `value` (the right answer is 0)."""

    value = 0.0

    @staticmethod
    def forward(ctx, x):
        return x[:0] * 2

    @staticmethod
    def backward(ctx, g):
        return torch.full((3,), EmptyOut.value, dtype=g.dtype)


@pytest.mark.parametrize("value, verdict", [(0.0, "excellent"), (1.0, "wrong")])
def test_empty_output_needs_an_exactly_zero_gradient(value, verdict):
    EmptyOut.value = value
    r = fct.check_function(EmptyOut, tensors((3,))[0])
    assert r.verdict == verdict and r.evaluations == 0, r.report()
    assert "empty" in r.notes[0]


def test_complex32_output_gets_a_verdict():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ComplexHalf is experimental
        r = fct.check_function(lambda t: (t * 2).chalf(), tensors((4,))[0])
    assert r.passed and r.tiers.dtype == "float16", r.report()


def test_progress_spans_every_stage():
    calls = []
    x = tensors((4,))[0]
    r = fct.check_function(lambda t: (t.sin(), t * t), x,
                           progress=lambda done, total: calls.append((done, total)))
    assert r.passed
    totals = {n for _, n in calls}
    assert len(totals) == 1  # one total over the 3 joint and 2 single-output cotangents
    total = totals.pop()
    assert total == 5 * 4 and calls[-1][0] == total
    assert all(a[0] <= b[0] for a, b in itertools.pairwise(calls))


class Flip(torch.autograd.Function):
    """Identity with a sign-flipped backward (issue 16, snippet 1)."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, g):
        return -g


@pytest.mark.parametrize("value", [-4.8, -1.5, -2.0, 4.83, -4.827])
def test_sign_flip_of_a_one_element_function_is_wrong(value):
    # With u·f < 0, check_vjp's offset used to make J_u(θ₀) exactly 0, and the flip
    # passed as "not resolvable" at -4.8 and -1.5.
    x = torch.tensor(value, dtype=F64, requires_grad=True)
    r = fct.check_function(Flip, x)
    assert r.verdict == "wrong", r.report()


class Masked(torch.nn.Module):
    """sin of the finite weights times x (the non-finite ones contribute 0)."""

    def __init__(self, scale_at=None):
        super().__init__()
        self.w = torch.nn.Parameter(torch.linspace(-1.0, 1.0, 6, dtype=torch.float64))
        self.scale_at = scale_at

    def forward(self, x):
        w = self.w
        if self.scale_at is not None:
            ScaleOne.index, ScaleOne.factor = self.scale_at, 1.1
            w = ScaleOne.apply(w)
        return torch.where(torch.isfinite(w), w, 0.0).sin() * x


@pytest.mark.parametrize("bad", [torch.inf, torch.nan])
def test_module_non_finite_parameter_elements_are_left_out_and_named(bad):
    x = torch.linspace(0.5, 1.5, 6, dtype=torch.float64)
    net = Masked()
    with torch.no_grad():
        net.w[2] = bad
    before = raw(net.w)
    r = fct.check_module(net, x, lambda out: out.sum())
    assert r.passed, r.report()
    assert r.extra["excluded_elements"] == ["w[2]"]
    assert f"w[2] = {float(bad):g}" in r.report()
    assert r.status[2] == 5 and r.n_checked == 5  # ComponentStatus.NOT_CHECKED
    assert r.numerical["w"].shape == (6,) and np.isnan(r.numerical["w"][2])
    assert raw(net.w) == before
    # a bug next to it is still found, at its own index
    net.scale_at = (4,)
    r = fct.check_module(net, x, lambda out: out.sum())
    assert not r.passed and r.worst(1)[0].name == "w[4]", r.report()
    assert raw(net.w) == before


@pytest.mark.parametrize("factor", [1.0, 1.01, 1.1, -1.0, 0.0])
def test_erfc_tiny_derivative_at_the_opdb_sample(factor):
    # op_db's erfc sample s2 (issue 16 item 2): erfc' = -8.7e-11 under erfc = 2;
    # every planted bug (x1.01, x1.1, sign flip, dropped) must be caught
    ScaleOne.index, ScaleOne.factor = (), factor
    x = torch.tensor(-4.826984902407649, dtype=F64, requires_grad=True)
    r = fct.check_function(lambda t: torch.erfc(ScaleOne.apply(t)), x)
    assert r.passed == (factor == 1.0), r.report()
