"""Fault injection over every public entry point (issue 13).

At call number k of the loss (the function that is differenced), of the analytic
side (`grad`, `vjp`, `jvp`, `hvp`) or of `before_eval`, a fault is injected:

- ``raise``: an exception of the test's own (the very object must come back out);
- ``interrupt``: KeyboardInterrupt (what Ctrl-C raises inside Python code);
- ``nan`` / ``inf``: a non-finite value instead of the result;
- ``write``: the callable adds 0.5 to a parameter in place;
- ``rebind``: the callable replaces the params dict's entry "b" with a copy.

Invariants, whatever k and whether the fault fired:

1. the parameters and the user's container are exactly as before: the same
   objects under the same keys, bit for bit;
2. a fault that fired is named: the injected exception comes back unchanged; a
   write or a rebinding gives an error or an "invalid" verdict saying the
   parameters were modified (naming before_eval when it is the culprit and is
   caught at its first call); a NaN / inf is not passed off as a clean check;
3. nothing hangs: each run is under faulthandler's watchdog, which kills the
   process (with every thread's traceback) after WATCHDOG seconds, even when the
   main thread is stuck in C;
4. nothing is kept: the faulty callables are freed once the run's outcome is.

Allocation failure in the kernel is injected elsewhere: csrc/tests/alloc_test.c
(each allocation in turn, under ASan and TSan) and test_faults.py (an
address-space limit in a subprocess).

Profiles: FASTCHECK_FAULTS=ci (default; a few values of k per combination, about
a minute) or FASTCHECK_FAULTS=full (many values of k).
"""

from __future__ import annotations

import ctypes
import faulthandler
import gc
import math
import os
import weakref
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastcheck

WATCHDOG = 60.0  # seconds per run; any run here takes well under one
PROFILE = os.environ.get("FASTCHECK_FAULTS", "ci")
EXAMPLES = {"ci": 3, "full": 40}[PROFILE]
# k is drawn below the calls a run makes (most land) and sometimes past them
MAX_K = 60


class Injected(Exception):
    """The test's own exception."""


# -------------------------------------------------------------- the problem
def make_params() -> dict:
    return {"W": np.asfortranarray(np.linspace(-1.0, 1.5, 6).reshape(2, 3)),
            "b": np.array([0.3, -0.7])}


def _weights(a: np.ndarray, i: int) -> np.ndarray:
    return 1.0 + 0.1 * i + 0.05 * np.arange(a.size).reshape(a.shape)


def loss_value(p: dict) -> float:
    return float(sum(np.sum(_weights(a, i) * np.sin(a)) + 0.5 * np.sum(a * a)
                     for i, a in enumerate(p.values())))


def grad_value(p: dict) -> dict:
    return {k: _weights(a, i) * np.cos(a) + a for i, (k, a) in enumerate(p.items())}


def hvp_value(p: dict, v: dict) -> dict:
    return {k: (1.0 - _weights(a, i) * np.sin(a)) * v[k] for i, (k, a) in enumerate(p.items())}


def _dot(g: dict, v: dict) -> float:
    return float(sum(np.sum(g[k] * v[k]) for k in g))


# ------------------------------------------------------------ faulty callables
_COUNTS: dict[int, list[int]] = {}  # shared by pickled copies (thread executors)


class Faulty:
    """`function(*args)`, with `fault` injected at its call number `k` (0-based).

    `nan_like` turns a result into the non-finite value of the same shape.
    """

    def __init__(self, function, fault: str | None, k: int, params_of=None) -> None:
        self.function, self.fault, self.k = function, fault, k
        self.params_of = params_of  # how to reach the params from the arguments
        self.token = id(self)
        _COUNTS[self.token] = [0, 0]  # calls, fired
        self.raised: BaseException | None = None

    @property
    def fired(self) -> bool:
        return bool(_COUNTS[self.token][1])

    def __call__(self, *args):
        state = _COUNTS[self.token]
        call, state[0] = state[0], state[0] + 1
        if call != self.k or self.fault is None:
            return self.function(*args)
        state[1] = 1
        params = self.params_of(args) if self.params_of else None
        if self.fault == "raise":
            self.raised = Injected(f"injected at call {call}")
            raise self.raised
        if self.fault == "interrupt":
            self.raised = KeyboardInterrupt()
            raise self.raised
        if self.fault == "write":
            params["W"][0, 1] += 0.5
        elif self.fault == "rebind":
            params["b"] = params["b"].copy()
        value = self.function(*args)
        if self.fault in ("nan", "inf"):
            bad = math.nan if self.fault == "nan" else math.inf
            if isinstance(value, dict):
                return {key: np.full(np.shape(v), bad) for key, v in value.items()}
            if isinstance(value, np.ndarray):
                return np.full(value.shape, bad)
            return bad
        return value

    def __del__(self) -> None:
        if id(self) == self.token:  # the original, not a copy an executor unpickled
            _COUNTS.pop(self.token, None)


def _first(args):
    return args[0]


# -------------------------------------------------------------- entry points
def _check_grad(mode, **extra):
    seed = {} if mode == "full" else {"seed": 0}

    def run(params, loss, grad, before_eval):
        return fastcheck.check_grad(loss, grad, params, mode=mode, before_eval=before_eval,
                                    warn_seconds=None, **seed, **extra)
    return run


def _numerical_grad(params, loss, grad, before_eval):
    return fastcheck.numerical_grad(loss, params)


def _eps_sweep(params, loss, grad, before_eval):
    return fastcheck.eps_sweep(loss, grad, params, eps=[1e-3, 1e-6], methods="central",
                               before_eval=before_eval)


def _check_vjp(params, f, vjp, before_eval):
    return fastcheck.check_vjp(f, vjp, params, n_vectors=2, before_eval=before_eval)


def _check_jvp(params, f, jvp, before_eval):
    return fastcheck.check_jvp(f, jvp, params, n_vectors=2, before_eval=before_eval)


def _check_hvp(params, grad, hvp, before_eval):
    return fastcheck.check_hvp(grad, hvp, params, n_vectors=2, before_eval=before_eval)


_POOL = ThreadPoolExecutor(2)


def _check_grad_executor(params, loss, grad, before_eval):
    return fastcheck.check_grad(loss, grad, params, executor=_POOL, warn_seconds=None,
                                before_eval=before_eval)


# name: (run, (loss function, analytic function), sites and their faults)
ALL = ("raise", "interrupt", "nan", "inf", "write", "rebind")
PY_ENTRIES = {
    "check_grad-full": (_check_grad("full"), "grad"),
    "check_grad-sample": (_check_grad("sample", k=2), "grad"),
    "check_grad-directional": (_check_grad("directional"), "grad"),
    "check_grad-forward": (_check_grad("full", method="forward"), "grad"),
    "check_grad-executor": (_check_grad_executor, "grad"),
    "numerical_grad": (_numerical_grad, None),
    "eps_sweep": (_eps_sweep, "grad"),
    "check_vjp": (_check_vjp, "vjp"),
    "check_jvp": (_check_jvp, "jvp"),
    "check_hvp": (_check_hvp, "hvp"),
}
BEFORE_EVAL = {"check_grad-full", "check_grad-sample", "check_grad-directional",
               "check_grad-forward", "check_grad-executor", "eps_sweep", "check_vjp",
               "check_jvp", "check_hvp"}


def _functions(entry: str):
    """(differenced function, analytic function) of an entry point, plain."""
    analytic = PY_ENTRIES[entry][1]
    if analytic == "vjp":
        return (lambda p: np.array([loss_value(p), 2 * loss_value(p)]),
                lambda p, u: {k: (u[0] + 2 * u[1]) * g for k, g in grad_value(p).items()})
    if analytic == "jvp":
        return (lambda p: np.array([loss_value(p)]),
                lambda p, v: np.array([_dot(grad_value(p), v)]))
    if analytic == "hvp":
        return grad_value, hvp_value
    return loss_value, grad_value


def _cases():
    for entry in PY_ENTRIES:
        for fault in ALL:
            yield entry, "loss", fault
        if PY_ENTRIES[entry][1] is not None:
            for fault in ALL:
                yield entry, "grad", fault
        if entry in BEFORE_EVAL:
            for fault in ("raise", "interrupt", "write", "rebind"):
                yield entry, "before_eval", fault


CASES = list(_cases())


# ------------------------------------------------------------------ checking
def _entries(params: dict) -> list:
    return [(k, v, v.tobytes()) for k, v in params.items()]


def _assert_exactly_as_before(params: dict, before: list) -> None:
    assert list(params) == [k for k, _, _ in before]
    for (key, array, raw), now in zip(before, params.values(), strict=True):
        assert now is array, f"params[{key!r}] is another object"
        assert now.tobytes() == raw, f"params[{key!r}] changed"


def _text(outcome) -> str:
    if isinstance(outcome, BaseException):
        return " ".join([str(outcome), *getattr(outcome, "__notes__", [])])
    if hasattr(outcome, "notes"):
        return " ".join(outcome.notes)
    return ""


def _assert_named(outcome, site: str, fault: str, faulty: Faulty) -> None:
    if fault in ("raise", "interrupt"):
        if entry_crosses_pickle(faulty):
            # an executor's worker raised it: the same type and message, annotated
            assert type(outcome) is (Injected if fault == "raise" else KeyboardInterrupt)
            assert fault == "interrupt" or "injected at call" in str(outcome)
            return
        assert outcome is faulty.raised, f"expected the injected exception, got {outcome!r}"
        return
    text = _text(outcome)
    if fault in ("write", "rebind"):
        modified = ("modified" in text or "changed" in text)
        verdict = getattr(outcome, "verdict", None)
        assert modified and (isinstance(outcome, ValueError) or verdict == "invalid"), \
            f"a {fault} by {site} was not reported: {outcome!r} {text}"
        if site == "before_eval" and faulty.k == 0:
            assert "before_eval" in text
        if fault == "rebind":
            assert "b (the dict entry" in text
        return
    # nan / inf: never a clean pass
    if isinstance(outcome, BaseException):
        assert isinstance(outcome, (ValueError, FloatingPointError, TypeError)), outcome
        return
    if hasattr(outcome, "passed"):
        assert not (outcome.passed and outcome.verdict == "excellent" and not outcome.notes), \
            f"a {fault} from {site} went unnoticed: {outcome!r}"


def entry_crosses_pickle(faulty: Faulty) -> bool:
    """Whether the faulty callable ran as a pickled copy (executor workers)."""
    return faulty.raised is None


def _run_with_watchdog(function, *args):
    faulthandler.dump_traceback_later(WATCHDOG, exit=True)
    try:
        return function(*args)
    except BaseException as exc:  # KeyboardInterrupt included: it is a fault here
        return exc
    finally:
        faulthandler.cancel_dump_traceback_later()


@pytest.mark.parametrize(("entry", "site", "fault"), CASES,
                         ids=["-".join(c) for c in CASES])
@settings(max_examples=EXAMPLES, deadline=None, derandomize=PROFILE == "ci",
          suppress_health_check=[HealthCheck.too_slow])
@given(k=st.integers(0, MAX_K))
def test_python_entry_points(entry, site, fault, k):
    run = PY_ENTRIES[entry][0]
    function, analytic = _functions(entry)
    params = make_params()
    before = _entries(params)
    faulty = None
    pick = {"loss": (function, _first), "grad": (analytic, _first),
            "before_eval": (lambda: None, None)}[site]
    faulty = Faulty(pick[0], fault, k, pick[1] or (lambda args: params))
    loss = faulty if site == "loss" else function
    grad = faulty if site == "grad" else analytic
    before_eval = faulty if site == "before_eval" else None
    outcome = _run_with_watchdog(run, params, loss, grad, before_eval)
    _assert_exactly_as_before(params, before)
    if faulty.fired:
        _assert_named(outcome, site, fault, faulty)
    else:
        assert not isinstance(outcome, BaseException), repr(outcome)
    alive = weakref.ref(faulty)
    del faulty, loss, grad, before_eval, outcome, pick
    gc.collect()
    assert alive() is None, "the faulty callable is still referenced after the run"


# ------------------------------------------- C losses (ctypes callbacks), threads
_C_STATUS = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_double), ctypes.c_ssize_t,
                             ctypes.POINTER(ctypes.c_double), ctypes.c_void_p)


def _c_quadratic(theta, n, out, user_data):
    out[0] = sum((1.0 + 0.1 * i) * theta[i] * theta[i] for i in range(n))
    return 0


class _CWriter(Faulty):
    """A C-loss body (theta pointer, n, out, user data) with a fault at call k."""

    def __call__(self, theta, n, out, user_data):
        state = _COUNTS[self.token]
        call, state[0] = state[0], state[0] + 1
        if call != self.k:
            return _c_quadratic(theta, n, out, user_data)
        state[1] = 1
        if self.fault in ("raise", "interrupt"):
            self.raised = Injected(f"injected at call {call}") if self.fault == "raise" \
                else KeyboardInterrupt()
            raise self.raised
        if self.fault == "write":
            theta[1] += 0.5
        status = _c_quadratic(theta, n, out, user_data)
        if self.fault in ("nan", "inf"):
            out[0] = math.nan if self.fault == "nan" else math.inf
        return status


C_ENTRIES = {
    "numerical_grad": lambda loss, theta, threads: fastcheck.numerical_grad(
        loss, theta, threads=threads),
    "check_grad": lambda loss, theta, threads: fastcheck.check_grad(
        loss, lambda t: 2 * (1.0 + 0.1 * np.arange(t.size)) * t, theta, threads=threads,
        warn_seconds=None),
    "check_grad-sample": lambda loss, theta, threads: fastcheck.check_grad(
        loss, lambda t: 2 * (1.0 + 0.1 * np.arange(t.size)) * t, theta, threads=threads,
        mode="sample", k=3, seed=0, warn_seconds=None),
}
C_CASES = [(entry, fault, threads) for entry in C_ENTRIES
           for fault in ("raise", "interrupt", "nan", "inf", "write") for threads in (1, 2)]


@pytest.mark.parametrize(("entry", "fault", "threads"), C_CASES,
                         ids=[f"{e}-{f}-threads{t}" for e, f, t in C_CASES])
@settings(max_examples=EXAMPLES, deadline=None, derandomize=PROFILE == "ci",
          suppress_health_check=[HealthCheck.too_slow])
@given(k=st.integers(0, 30))
def test_c_losses(entry, fault, threads, k):
    theta = np.linspace(-1.0, 2.0, 7)
    raw = theta.tobytes()
    body = _CWriter(None, fault, k)
    function = _C_STATUS(body)
    loss = fastcheck.CLoss(function, thread_safe=True)
    outcome = _run_with_watchdog(C_ENTRIES[entry], loss, theta, threads)
    assert theta.tobytes() == raw
    if body.fired:
        if fault in ("raise", "interrupt") and threads == 1:
            assert outcome is body.raised, repr(outcome)
        elif fault in ("raise", "interrupt"):  # another thread may have raised first
            assert type(outcome) is type(body.raised), repr(outcome)
        elif fault == "write":
            assert (isinstance(outcome, ValueError) and "modified" in str(outcome)) or (
                getattr(outcome, "verdict", None) == "invalid"), repr(outcome)
        else:
            _assert_named(outcome, "loss", fault, body)
    else:
        assert not isinstance(outcome, BaseException), repr(outcome)
    alive = weakref.ref(body)
    del body, function, loss, outcome
    gc.collect()
    assert alive() is None


# ------------------------------------------------------------ fastcheck.torch
TORCH_CASES = [("loss", f) for f in ("raise", "interrupt", "nan", "write")] + [
    ("before_eval", f) for f in ("raise", "interrupt", "write")]


@pytest.mark.parametrize(("site", "fault"), TORCH_CASES, ids=["-".join(c) for c in TORCH_CASES])
@settings(max_examples=EXAMPLES, deadline=None, derandomize=PROFILE == "ci",
          suppress_health_check=[HealthCheck.too_slow])
@given(k=st.integers(0, 40))
def test_torch_check_module(site, fault, k):
    torch = pytest.importorskip("torch")
    from fastcheck import torch as fct

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Tanh()).double()
    inputs = torch.randn(4, 3, dtype=torch.float64)
    before = {n: (p, p.detach().numpy().tobytes()) for n, p in model.named_parameters()}

    def plain_loss(out):
        return (out ** 2).sum()

    def loss_fn(out):
        return faulty_loss(out)

    def write(_args):  # the parameters are the module's: write into its weight
        return {"W": model[0].weight.data.numpy(), "b": model[0].bias.data.numpy()}

    faulty_loss = Faulty(plain_loss, fault if site == "loss" else None, k, write)
    faulty_before = Faulty(lambda: None, fault if site == "before_eval" else None, k, write)
    faulty = faulty_loss if site == "loss" else faulty_before
    outcome = _run_with_watchdog(lambda: fct.check_module(
        model, inputs, loss_fn, before_eval=faulty_before if site == "before_eval" else None))
    for name, param in model.named_parameters():
        assert param is before[name][0]
        assert param.detach().numpy().tobytes() == before[name][1], name
    if faulty.fired and fault in ("raise", "interrupt"):
        assert outcome is faulty.raised, repr(outcome)
    elif faulty.fired and fault == "write":
        text = _text(outcome)
        assert "modified" in text or "changed" in text, repr(outcome)
    elif faulty.fired:
        _assert_named(outcome, site, fault, faulty)
    else:
        assert not isinstance(outcome, BaseException), repr(outcome)
