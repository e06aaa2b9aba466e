"""A declared accuracy (rtol= / atol=) for gradients approximate by design (issue 15).

The cases (tests/accuracy_cases.py) have exact losses and gradients accurate only
to a solver tolerance: an adjoint ODE gradient and an implicit gradient through
CG.  Declared at the accuracy the solver gives, the correct gradient passes; a
1 % error planted in one component is still WRONG and ranked first.  Without a
declaration nothing changes.
"""

from __future__ import annotations

import functools
import json
from typing import NamedTuple

import numpy as np
import pytest
from accuracy_cases import adjoint_ode, implicit_cg

import fastcheck
from fastcheck.testing import assert_grad_ok


class Declared(NamedTuple):
    make: object          # bug -> (loss, grad, params)
    rtol: float           # the accuracy declared for it
    bug_name: str         # the component the planted bug sits in


# The solver tolerance and the declared accuracy: python tests/accuracy_cases.py
# prints the gradients' true errors (adjoint rtol 1e-5: max rel 3.3e-5; rtol 1e-8:
# max abs 3.9e-11; CG rtol 1e-6: max rel 7.4e-6).
CASES = {
    "adjoint-ode-rtol1e-5": Declared(lambda bug: adjoint_ode(1e-5, bug=bug), 1e-4,
                                     "theta[1, 2]"),
    "adjoint-ode-rtol1e-8": Declared(lambda bug: adjoint_ode(1e-8, bug=bug), 1e-7,
                                     "theta[1, 2]"),
    "implicit-cg-rtol1e-6": Declared(lambda bug: implicit_cg(1e-6, bug=bug), 1e-5,
                                     "theta[3]"),
}


@functools.cache
def run(name: str, bug: float, declared: bool, mode: str = "full") -> fastcheck.GradCheckResult:
    case = CASES[name]
    loss, grad, params = case.make(bug)
    rtol = case.rtol if declared else None
    seed = None if mode == "full" else 0
    return fastcheck.check_grad(loss, grad, params, rtol=rtol, mode=mode, seed=seed)


@pytest.mark.parametrize("name", CASES)
def test_the_correct_approximate_gradient_passes_at_its_declared_accuracy(name):
    result = run(name, 0.0, True)
    assert result.passed, result.report()
    assert result.n_wrong == 0
    assert result.accuracy == fastcheck._accuracy.Accuracy(CASES[name].rtol, 0.0)


@pytest.mark.parametrize("name", CASES)
def test_a_one_percent_bug_in_one_component_is_still_wrong_and_ranked_first(name):
    result = run(name, 0.01, True)
    assert result.verdict == "wrong", result.report()
    assert not result.passed
    assert result.worst(1)[0].name == CASES[name].bug_name
    assert result.worst(1)[0].status == "wrong"
    assert result.n_wrong == 1


@pytest.mark.parametrize("name", ["adjoint-ode-rtol1e-5", "implicit-cg-rtol1e-6"])
def test_sample_mode_follows_the_declared_accuracy(name):
    assert run(name, 0.0, True, "sample").passed
    buggy = run(name, 0.01, True, "sample")
    assert buggy.verdict == "wrong"
    assert buggy.worst(1)[0].name == CASES[name].bug_name


def test_the_report_says_the_declared_accuracy_in_one_line():
    result = run("adjoint-ode-rtol1e-5", 0.0, True)
    lines = str(result).splitlines()
    assert "declared rtol=1e-4" in lines[0]
    assert lines[1].strip().startswith("declared accuracy rtol=1e-4: 0 of 9 components "
                                       "outside; largest difference ")
    assert "at theta[2, 2]" in lines[1]   # the smallest component: the largest relative
    buggy = run("adjoint-ode-rtol1e-5", 0.01, True)
    assert "1 of 9 components outside" in str(buggy)
    data = json.loads(buggy.to_json())
    assert data["accuracy"] == {"rtol": 1e-4, "atol": 0.0, "outside": 1}
    assert run("adjoint-ode-rtol1e-5", 0.0, False).to_dict()["accuracy"] is None


def test_without_a_declaration_the_verdict_is_unchanged_and_a_hint_says_what_would_pass():
    # The approximate gradients are SUSPICIOUS (not passed), as before this issue.
    for name in ("adjoint-ode-rtol1e-5", "implicit-cg-rtol1e-6"):
        result = run(name, 0.0, False)
        assert result.verdict == "suspicious"
        assert result.accuracy is None
        hint = [n for n in result.notes if "would pass with a declared accuracy" in n]
        assert len(hint) == 1 and "not a pass" in hint[0]
    # The hint's number is honest: declaring it passes.
    text = next(n for n in run("implicit-cg-rtol1e-6", 0.0, False).notes
                if "would pass" in n)
    rtol = float(text.split("declared accuracy rtol=")[1].split(" ")[0])
    loss, grad, params = implicit_cg(1e-6)
    assert fastcheck.check_grad(loss, grad, params, rtol=rtol).passed
    assert any("would pass with a declared accuracy rtol=1e-5" in n
               for n in run("implicit-cg-rtol1e-6", 0.0, False, "sample").notes)
    # No hint on a declared check, nor on a wrong one.
    assert not any("would pass" in n for n in run("implicit-cg-rtol1e-6", 0.0, True).notes)
    assert not any("would pass" in n for n in run("implicit-cg-rtol1e-6", 0.01, False).notes)


def test_a_declared_accuracy_does_not_hide_an_error_beyond_it():
    # 0.1 % in one CG component: 100x the declared rtol of 1e-5.
    loss, grad, params = implicit_cg(1e-6, bug=1e-3)
    result = fastcheck.check_grad(loss, grad, params, rtol=1e-5)
    assert result.verdict == "wrong"
    assert result.worst(1)[0].name == "theta[3]"
    # atol alone works the same way.
    loss, grad, params = adjoint_ode(1e-5, bug=0.01)
    result = fastcheck.check_grad(loss, grad, params, atol=1e-7)
    assert result.verdict == "wrong" and result.worst(1)[0].name == "theta[1, 2]"
    loss, grad, params = adjoint_ode(1e-5)
    assert fastcheck.check_grad(loss, grad, params, atol=1e-7).passed


def test_a_declared_accuracy_finer_than_the_loss_resolves_is_said_so():
    loss, grad, params = adjoint_ode(1e-8)
    result = fastcheck.check_grad(loss, grad, params, rtol=1e-13)
    notes = [n for n in result.notes if "cannot resolve below" in n]
    assert len(notes) == 1
    assert "declared accuracy rtol=1e-13 is finer than what the loss resolves" in notes[0]
    # A declaration the loss resolves says nothing of the kind.
    for name in ("adjoint-ode-rtol1e-5", "implicit-cg-rtol1e-6"):
        assert not any("cannot resolve" in n for n in run(name, 0.0, True).notes)


# ------------------------------------------------------------------ validation
class Counting:
    def __init__(self):
        self.calls = 0

    def __call__(self, p):
        self.calls += 1
        return float(np.sum(p**2))


BAD = [
    ({"rtol": -1e-5}, ValueError, "rtol=-1e-05"),
    ({"atol": float("nan")}, ValueError, "atol=nan"),
    ({"rtol": float("inf")}, ValueError, "rtol=inf"),
    ({"rtol": "1e-5"}, TypeError, "rtol must be a non-negative finite number"),
    ({"atol": True}, TypeError, "atol must be a non-negative finite number"),
    ({"atol": [1e-8]}, TypeError, "atol must be"),
]


@pytest.mark.parametrize("kwargs, error, message", BAD, ids=lambda v: str(v)[:20])
@pytest.mark.parametrize("mode", ["full", "directional", "sample"])
def test_bad_accuracy_is_refused_before_any_evaluation(kwargs, error, message, mode):
    loss, params = Counting(), np.array([1.0, 2.0])
    before = params.copy()
    with pytest.raises(error, match=message.replace("[", r"\[").replace("(", r"\(")):
        fastcheck.check_grad(loss, lambda p: 2 * p, params, mode=mode, **kwargs)
    assert loss.calls == 0
    assert np.array_equal(params, before)


@pytest.mark.parametrize("kwargs, error, message", BAD[:2], ids=["rtol", "atol"])
def test_bad_accuracy_is_refused_by_every_entry_point(kwargs, error, message):
    f, params = Counting(), np.array([1.0, 2.0])

    def vec(p):
        f.calls += 1
        return np.sin(p)

    checks = [
        lambda: fastcheck.check_vjp(vec, lambda p, u: np.cos(p) * u, params, **kwargs),
        lambda: fastcheck.check_jvp(vec, lambda p, v: np.cos(p) * v, params, **kwargs),
        lambda: fastcheck.check_hvp(lambda p: np.cos(p), lambda p, v: -np.sin(p) * v,
                                    params, **kwargs),
        lambda: assert_grad_ok(f, lambda p: 2 * p, params, **kwargs),
        lambda: fastcheck.check_grad(f, lambda p: 2 * p, params, points=2, **kwargs),
    ]
    for check in checks:
        with pytest.raises(error, match=message.replace("[", r"\[")):
            check()
    assert f.calls == 0


def test_zero_is_a_valid_declaration_and_only_makes_a_wrong_component_decisive():
    # rtol=0, atol=0: the usual noise rule, but a component outside is "wrong".
    loss, grad, params = adjoint_ode(1e-5)
    result = fastcheck.check_grad(loss, grad, params, rtol=0, atol=0.0)
    assert result.verdict == "wrong"
    assert result.n_wrong == run("adjoint-ode-rtol1e-5", 0.0, False).n_wrong


# -------------------------------------------------------- the other entry points
def _approx(rel: float, bug: float = 0.0):
    """f = sin(theta) (outputs), with a forward / backward derivative carrying a
    smooth relative error `rel` (a truncated series, say) and a bug in entry 2."""
    def scale(p):
        s = 1 + rel * np.cos(3 * p)
        s[2] *= 1 + bug
        return s
    return scale


@pytest.mark.parametrize("bug, passed", [(0.0, True), (0.01, False)])
def test_check_jvp_and_check_hvp_follow_the_declared_accuracy(bug, passed):
    theta = np.linspace(0.3, 1.4, 6)
    scale = _approx(3e-6, bug)
    jvp = fastcheck.check_jvp(np.sin, lambda p, v: np.cos(p) * v * scale(p), theta.copy(),
                              rtol=1e-5)
    assert jvp.passed is passed, jvp.report()
    hvp = fastcheck.check_hvp(np.cos, lambda p, v: -np.sin(p) * v * scale(p), theta.copy(),
                              rtol=1e-5)
    assert hvp.passed is passed, hvp.report()
    if not passed:
        assert jvp.verdict == "wrong" and hvp.verdict == "wrong"
        assert hvp.worst(1)[0].name == "theta[2]"
    assert "declared accuracy rtol=1e-5" in jvp.report()


def test_check_jvp_without_a_declaration_does_not_pass_the_approximate_jvp():
    theta = np.linspace(0.3, 1.4, 6)
    scale = _approx(3e-6)
    result = fastcheck.check_jvp(np.sin, lambda p, v: np.cos(p) * v * scale(p), theta)
    assert not result.passed


@pytest.mark.parametrize("bug, passed", [(0.0, True), (0.01, False)])
def test_check_vjp_and_assert_grad_ok_forward_the_declared_accuracy(bug, passed):
    theta = np.linspace(0.3, 1.4, 6)
    scale = _approx(3e-6, bug)
    result = fastcheck.check_vjp(np.sin, lambda p, u: np.cos(p) * u * scale(p), theta,
                                 rtol=1e-5)
    assert result.passed is passed, result.report()
    assert result.accuracy is not None and result.accuracy.rtol == 1e-5
    loss, grad, params = CASES["implicit-cg-rtol1e-6"].make(bug)
    if passed:
        assert assert_grad_ok(loss, grad, params, rtol=1e-5).passed
    else:
        with pytest.raises(AssertionError, match="declared accuracy rtol=1e-5: 1 of 12"):
            assert_grad_ok(loss, grad, params, rtol=1e-5)


def test_points_and_the_replay_file_keep_the_declared_accuracy(tmp_path):
    loss, grad, params = implicit_cg(1e-6, bug=0.01)
    path = tmp_path / "cg.npz"
    result = fastcheck.check_grad(loss, grad, params, rtol=1e-5, points=2, save=path)
    assert result.verdict == "wrong" and result.accuracy.rtol == 1e-5
    again = fastcheck.replay(path, loss, grad)
    assert again.accuracy is not None and again.accuracy.rtol == 1e-5
    assert again.extra["replay"]["reproduced"]
    # The correct gradient passes the replayed (declared) check.
    _, fixed, _ = implicit_cg(1e-6)
    assert fastcheck.replay(path, loss, fixed).passed


def test_directional_mode_follows_the_declared_accuracy_and_says_its_limit():
    result = run("implicit-cg-rtol1e-6", 0.0, True, "directional")
    assert result.passed
    assert "can go unseen" in result.accuracy_line()
    buggy = run("implicit-cg-rtol1e-6", 0.01, True, "directional")
    assert buggy.verdict == "wrong" and buggy.worst(1)[0].name == "theta[3]"


def test_fastcheck_torch_forwards_the_declared_accuracy():
    torch = pytest.importorskip("torch")
    import fastcheck.torch as fct

    class ApproxExp(torch.autograd.Function):
        """exp, with a backward accurate to ~3e-6 relative (a truncated series)."""

        bug = 0.0

        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return torch.exp(x)

        @staticmethod
        def backward(ctx, g):
            (x,) = ctx.saved_tensors
            scale = 1 + 3e-6 * torch.cos(3 * x)
            scale[2] = scale[2] * (1 + ApproxExp.bug)
            return g * torch.exp(x) * scale

    x = torch.linspace(-1.0, 1.0, 6, dtype=torch.float64, requires_grad=True)
    assert fct.check_function(ApproxExp, x, rtol=1e-5).passed
    ApproxExp.bug = 0.01
    result = fct.check_function(ApproxExp, x, rtol=1e-5)
    assert result.verdict == "wrong" and result.worst(1)[0].name == "arg0[2]"

    torch.manual_seed(0)
    module = torch.nn.Linear(3, 2).double()
    inputs = torch.randn(4, 3, dtype=torch.float64)
    result = fct.check_module(module, inputs, lambda out: (out**2).mean(), atol=1e-9)
    assert result.passed and result.accuracy.atol == 1e-9
    with pytest.raises(ValueError, match="atol=-1"):
        fct.check_module(module, inputs, lambda out: (out**2).mean(), atol=-1)
