"""Cases from PyTorch's operator database for fastcheck.torch, with planted bugs.

Shared by tests/test_torch_opdb.py (a bounded slice) and bench/bench_opdb.py (the
full run, side by side with torch.autograd.gradcheck).  Needs torch and expecttest
(``torch.testing._internal`` imports it).

A case is one OpInfo sample input in float64 on the CPU, made the way PyTorch's own
gradient tests make it (``TestBwdGradients._check_helper``): the tensors that
require grad become the function's arguments, and the function recomposes the
sample and calls ``op.gradcheck_wrapper`` and ``sample.output_process_fn_grad``.
A bugged case puts one argument through an identity whose backward changes one
element of the gradient (BUG_KINDS): the element with the largest gradient for a
seeded random cotangent, so that the bug is there to find; or (``small=True``,
the bench) also the element with the smallest gradient that a difference can
still resolve (SMALL: |g_i| max(1, |x_i|) above 1e-6 of the outputs' scale, so
that a 1 % error is 1e-8 of it), where a tiny derivative could hide the bug.
Everything is seeded: the same cases every run.
"""

from __future__ import annotations

import itertools
import math
import time
import warnings
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch.testing._internal.common_methods_invocations import op_db

BUG_KINDS = ("x1.01", "x1.1", "flip", "drop")
# Samples whose checked tensors hold more elements are left out (gradcheck builds
# full Jacobians: the run must stay bounded).
MAX_ELEMENTS = 300
# The smallest gradient a bug is planted at (relative to the outputs' scale), and
# the floor below which a gradient is rounding, not a derivative.
SMALL, FLOOR = 1e-6, 1e-9


def differentiable_ops() -> list[Any]:
    """The OpInfos that support autograd in float64 on the CPU, in op_db order."""
    return [op for op in op_db if op.supports_autograd
            and torch.float64 in op.supported_backward_dtypes("cpu")]


def marked(op: Any) -> str:
    """How PyTorch marks its own float64 CPU gradcheck of `op`: "xfail", "skip" or ""."""
    for info in op.decorators:
        try:
            active = info.is_active("TestBwdGradients", "test_fn_grad", "cpu",
                                    torch.float64, {})
        except (AttributeError, TypeError):
            continue
        if active:
            names = [getattr(d, "__name__", "") for d in info.decorators]
            return "xfail" if "expectedFailure" in names else "skip"
    return ""


class _Plant(torch.autograd.Function):
    """Identity whose backward changes one element of the gradient (a planted bug)."""

    @staticmethod
    def forward(ctx: Any, x: Any, index: tuple, kind: str) -> Any:
        ctx.index, ctx.kind = index, kind
        return x.clone()

    @staticmethod
    def backward(ctx: Any, g: Any) -> tuple:
        g = g.clone()
        value = g[ctx.index]
        g[ctx.index] = {"x1.01": value * 1.01, "x1.1": value * 1.1, "flip": -value,
                        "drop": value * 0}[ctx.kind]
        return g, None, None


@dataclass
class Case:
    """One check to make: fn(*inputs), with or without a planted bug."""

    op: str
    sample: int
    fn: Callable
    inputs: tuple
    bug: str | None = None
    where: str | None = None  # the bugged element, e.g. "arg0[2, 1]"
    small: bool = False  # planted at the smallest resolvable gradient
    out_size: int = 0  # elements of the differentiable outputs (bugged cases)
    mark: str = ""
    nondet_tol: float = 0.0

    @property
    def id(self) -> str:
        return (f"{self.op}-s{self.sample}" + (f"-{self.bug}" if self.bug else "")
                + ("-small" if self.small else ""))


def _recompose(sample: Any, op: Any, plant: tuple | None) -> Callable:
    """fn(*grad_tensors) calling the op on the sample (PyTorch's own recomposition)."""

    def fn(*inputs: Any) -> Any:
        it = iter(inputs if plant is None else [
            _Plant.apply(t, plant[1], plant[2]) if j == plant[0] else t
            for j, t in enumerate(inputs)])

        def take(value: Any) -> Any:
            if isinstance(value, (list, tuple)) and value and all(
                    torch.is_tensor(v) for v in value):
                return [next(it) if v.requires_grad else v for v in value]
            return next(it) if torch.is_tensor(value) and value.requires_grad else value

        args = [take(sample.input), *(take(a) for a in sample.args)]
        kwargs = {k: take(v) for k, v in sample.kwargs.items()}
        out = op.gradcheck_wrapper(op.get_op(), *args, **kwargs)
        return sample.output_process_fn_grad(out) if sample.output_process_fn_grad else out
    return fn


def _grad_tensors(sample: Any) -> list[Any]:
    found = []
    for value in itertools.chain([sample.input], sample.args, sample.kwargs.values()):
        items = value if isinstance(value, (list, tuple)) else [value]
        found += [t for t in items if torch.is_tensor(t) and t.requires_grad]
    return found


def _target(fn: Callable, inputs: list[Any], seed: int, small: bool = False
            ) -> tuple[int, tuple, int] | None:
    """(argument, element) with the largest gradient along a seeded cotangent (with
    `small`, the smallest one above SMALL), and the number of output elements."""
    gen = torch.Generator().manual_seed(seed)
    with torch.enable_grad():
        out = fn(*inputs)
        outs = [o for o in (out if isinstance(out, (list, tuple)) else [out])
                if torch.is_tensor(o) and o.requires_grad]
        if not outs:
            return None
        cots = [torch.randn(o.shape, dtype=o.dtype, generator=gen) for o in outs]
        grads = torch.autograd.grad(outs, inputs, cots, allow_unused=True)
    # A gradient at the rounding level of the outputs is no derivative to plant a
    # bug in (corrcoef of two observations is ±1: its gradient is rounding): the
    # element's effect over a relative step must exceed 1e-9 of the outputs' scale.
    scale = max((float(o.detach().abs().nan_to_num(0, 0, 0).max()) for o in outs
                 if o.numel()), default=0.0)
    best, where = (math.inf, None) if small else (0.0, None)
    for j, g in enumerate(grads):
        if (g is None or g.numel() == 0 or g._is_zerotensor()
                or not torch.isfinite(g).all()):
            continue
        size = g.abs().reshape(-1)
        effect = size * inputs[j].detach().abs().reshape(-1).clamp(min=1.0)
        if small:
            size = torch.where(effect > SMALL * scale, size, math.inf)
            flat = int(size.argmin())
        else:
            flat = int(size.argmax())
        value = float(size[flat])
        if (value < best if small else value > best) and effect[flat] > FLOOR * scale:
            best, where = value, (j, tuple(int(i) for i in torch.unravel_index(
                torch.tensor(flat), g.shape)))
    return None if where is None else (*where, sum(o.numel() for o in outs))


def op_cases(op: Any, position: int, samples: int = 2, bugs: int = 1,
             small: bool = False) -> list[Case]:
    """Up to `samples` clean cases of one op and `bugs` bugged ones (the kind from a
    hash of the op's name), on its first float64 samples that are small enough; the
    op's `position` in op_db seeds its samples.  With `small`, each bugged case
    has a twin planted at the smallest resolvable gradient (a different kind)."""
    name = op.name + (f".{op.variant_test_name}" if op.variant_test_name else "")
    torch.manual_seed(position)
    clean: list[Case] = []
    bugged: list[Case] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        found = op.sample_inputs("cpu", torch.float64, requires_grad=True)
        for k, sample in enumerate(itertools.islice(found, 12)):
            inputs = _grad_tensors(sample)
            if (not 0 < sum(t.numel() for t in inputs) <= MAX_ELEMENTS
                    or any(t.dtype != torch.float64 or t.layout != torch.strided
                           for t in inputs)):
                continue
            common = {"op": name, "sample": k, "inputs": tuple(inputs), "mark": marked(op),
                      "nondet_tol": op.gradcheck_nondet_tol}
            if len(clean) < samples:
                clean.append(Case(fn=_recompose(sample, op, None), **common))
            if len(bugged) < bugs * (2 if small else 1):
                for at in (False, True) if small else (False,):
                    target = _target(_recompose(sample, op, None), inputs, position, at)
                    if target is None:
                        continue
                    kind = BUG_KINDS[(zlib.crc32(name.encode()) + len(bugged))
                                     % len(BUG_KINDS)]
                    j, index, size = target
                    where = f"arg{j}" + (f"[{', '.join(map(str, index))}]" if index else "")
                    bugged.append(Case(fn=_recompose(sample, op, (j, index, kind)),
                                       bug=kind, where=where, out_size=size, small=at,
                                       **common))
            if len(clean) >= samples and len(bugged) >= bugs * (2 if small else 1):
                break
    return clean + bugged


# ---------------------------------------------------------------------- checkers
def run_fastcheck(case: Case) -> dict:
    """fastcheck.torch.check_function with its defaults."""
    import fastcheck.torch as fct

    return _timed(lambda: fct.check_function(case.fn, *case.inputs),
                  lambda r: (r.passed, r.verdict, [c.name for c in r.worst(5)]))


def run_gradcheck(case: Case, fast: bool) -> dict:
    """torch.autograd.gradcheck with its defaults (slow or fast mode)."""
    def call() -> bool:
        return torch.autograd.gradcheck(case.fn, case.inputs, raise_exception=False,
                                        fast_mode=fast, nondet_tol=case.nondet_tol)
    return _timed(call, lambda ok: (bool(ok), "pass" if ok else "fail", []))


def _timed(call: Callable, read: Callable) -> dict:
    started = time.perf_counter()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            passed, verdict, top5 = read(call())
        error = None
    except Exception as exc:  # a crash of the checker is a result to count
        passed, verdict, top5 = None, "crash", []
        error = f"{type(exc).__name__}: {exc}"[:300]
    return {"passed": passed, "verdict": verdict, "error": error, "top5": top5,
            "seconds": time.perf_counter() - started}


def outcome(case: Case, run: dict) -> str:
    """"right", "false positive" (a correct op failed), "false negative" (a planted
    bug passed) or "crash"."""
    if run["passed"] is None:
        return "crash"
    if run["passed"] == (case.bug is None):
        return "right"
    return "false negative" if case.bug else "false positive"
