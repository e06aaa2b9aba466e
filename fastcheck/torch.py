"""fastcheck.torch: check PyTorch autograd code (custom Functions, nn.Modules).

Needs PyTorch (``pip install fastcheck[torch]``); import it explicitly::

    import fastcheck.torch
    result = fastcheck.torch.check_function(MyFunction, x, w)
    print(result)                      # ranked report, components named arg1[3, 2]
    result = fastcheck.torch.check_module(net, (x,), lambda out: loss(out, y))
    print(result)                      # components named fc1.weight[3, 2]

How it works.  The tensors are perturbed in place, in their own storage, through
numpy views (``t.detach().numpy()`` shares memory with a CPU tensor, strided or
not), by fastcheck's C kernel; every evaluation runs under ``torch.no_grad()``;
every exit restores the tensors bit for bit (and an nn.Module's buffers, e.g.
BatchNorm running statistics, too).  The analytic side is ``torch.autograd.grad``
at the unperturbed point.  A function with a non-scalar output is checked along a
few seeded random cotangents u, as :func:`fastcheck.check_vjp` does: the scalar
⟨u, fn(x)⟩ has the gradient your backward computes for ``grad_output = u``.

How it differs from ``torch.autograd.gradcheck``, and where it wins:

- **Badly scaled inputs.**  gradcheck uses one absolute step (eps = 1e-6) for
  every element and divides by it, not by the step actually represented: at
  |x| ~ 1e8 the step spans only 67 ulps of x, its rounding alone is a 1.6e-3
  relative error, and ``gradcheck(lambda x: 2.5 * x, (x,))`` fails for a correct
  gradient (at |x| ~ 1e7 already).  fastcheck's step is relative to each
  element (4.8e-6 · max(1, |x|) in float64, 3.9e-3 in float32) and it divides by
  the represented step.
- **Small uniform errors.**  gradcheck passes when |numerical − analytic| ≤
  atol + rtol·|analytic| with atol = 1e-5, rtol = 1e-3, element by element: a
  backward that is off by a uniform relative 1e-4 (a wrong constant, a float32
  intermediate) passes.  fastcheck compares each element with its own noise
  estimate and reports it as "suspicious", naming the parameter.
- **Kinks.**  At a ReLU exactly at 0 the central difference averages the two
  one-sided slopes, so gradcheck reports a Jacobian mismatch for a correct
  backward.  fastcheck sees that the one-sided slopes differ by an amount that
  does not shrink with the step, accepts a valid one-sided derivative, and keeps
  the element out of the verdict (with a note).
- **Dropout left on** (or any randomness): gradcheck reports a Jacobian
  mismatch, blaming the gradient.  fastcheck evaluates the function repeatedly at
  the same point and says that it is not deterministic (pass ``before_eval=
  lambda: torch.manual_seed(0)``, or call ``module.eval()``).
- **The report.**  A verdict from the dtype's tiers, a per-tensor (per-parameter)
  breakdown and the worst elements by name, instead of two full Jacobians.
- **Cost.**  gradcheck builds the full numerical Jacobian (2 evaluations per input
  element) and the analytic one (one backward per output element).  fastcheck
  needs 2 evaluations per input element per cotangent (3 by default, 1 for a
  scalar output) and one backward per cotangent.

What this adapter does with what PyTorch functions return and take (details in
``fastcheck/_torch_tensors.py``):

1. Complex inputs and outputs are checked as their real and imaginary parts, as
   gradcheck does (``arg0[3, 0]`` is the real part of element 3).
2. An input element (or a parameter element, check_module) that is ±inf or NaN
   cannot be perturbed: it is left out and named in the report
   (``aten._safe_softmax`` of a row with -inf).
3. Outputs that autograd declares non-differentiable (integer outputs, outputs
   marked with ``ctx.mark_non_differentiable``, the mean and rstd of
   ``native_layer_norm``) are left out of both sides and named.
4. With several differentiable outputs, each output's cotangent is also given
   alone (the other outputs' gradients left undefined, as in gradcheck's
   Jacobian rows): a backward that only works when every output has a gradient
   (``native_group_norm`` returns None for the mean alone) is caught.  One random
   cotangent per output, on top of the `n_cotangents` over all outputs.
5. float16 / bfloat16 outputs are checked at their own resolution (the step and
   the tiers follow the coarsest output; bfloat16 is stated as float16, the
   nearest numpy resolution); such inputs are refused (a difference step in half
   precision cannot resolve a derivative).  Gradients that autograd knows to be
   zero (ZeroTensor, e.g. of ``torch.sgn``) and None gradients are zeros.

What gradcheck checks and this does not: sparse inputs, forward-mode AD
(``check_forward_ad``), batched gradients, backward reentrancy, GPU tensors (copy
to the CPU first).  This adapter checks the values of first derivatives of CPU
tensors; ``executor=`` is not offered (the tensors are read by the function
through captured references, which do not survive pickling to another process).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

try:
    import torch  # the top-level PyTorch (absolute import), not this module
except ImportError as exc:  # pragma: no cover - exercised only without torch
    raise ImportError("fastcheck.torch needs PyTorch: pip install 'fastcheck[torch]' "
                      "(or pip install torch)") from exc

from fastcheck._accuracy import check_accuracy
from fastcheck._check import check_grad
from fastcheck._params import as_layout
from fastcheck._progress import DEFAULT_WARN_SECONDS
from fastcheck._result import GradCheckResult, build_result
from fastcheck._torch_tensors import (
    Inputs,
    OutputSpec,
    cotangents,
    flat_outputs,
    refuse_shared_storage,
)
from fastcheck._validate import (
    check_before_eval,
    check_eps,
    check_flag,
    check_method,
    check_n_vectors,
    check_progress,
    resolve_seed,
)
from fastcheck._verdict import ComponentStatus, tiers_for
from fastcheck._vjp import _worst, check_vjp

__all__ = ["check_function", "check_module"]


class _Forward:
    """fn(*args) under no_grad, as one flat array: the chosen outputs, in the dtype
    that states their resolution (see _torch_tensors, rules 3-5)."""

    def __init__(self, fn: Callable, args: tuple, inputs: Inputs, spec: OutputSpec,
                 which: list[int], dtype: np.dtype) -> None:
        self.fn, self.args, self.inputs = fn, args, inputs
        self.spec, self.which, self.dtype = spec, which, dtype

    def __call__(self, params: Any) -> np.ndarray:
        self.inputs.sync(params)
        with torch.no_grad():
            outs = self.spec.select(self.fn(*self.args), self.which)
        return flat_outputs(outs).astype(self.dtype)


class _Backward:
    """The vjp of the chosen outputs through torch.autograd.grad, shaped like params.

    Only the chosen outputs are given to autograd: with one of several chosen, the
    others' gradients stay undefined, as in gradcheck's Jacobian rows.
    """

    def __init__(self, fn: Callable, args: tuple, inputs: Inputs, spec: OutputSpec,
                 which: list[int]) -> None:
        self.fn, self.args, self.inputs = fn, args, inputs
        self.spec, self.which = spec, which
        self.unused: set[str] = set()  # inputs autograd gave no gradient (None)

    def __call__(self, params: Any, u: np.ndarray) -> dict[str, np.ndarray]:
        self.inputs.sync(params)
        with torch.enable_grad():
            outs = self.spec.select(self.fn(*self.args), self.which)
            grads = torch.autograd.grad(outs, self.inputs.tensors,
                                        grad_outputs=cotangents(u, outs), allow_unused=True)
        self.unused.update(n for n, g in zip(self.inputs.names, grads, strict=True)
                           if g is None)
        return self.inputs.gradients(list(grads))


def check_function(
    fn: Any,
    *args: Any,
    n_vectors: int | None = None,
    seed: int | None = 0,
    eps: float | None = None,
    method: str = "central",
    before_eval: Callable[[], Any] | None = None,
    refine: bool = True,
    progress: bool | Callable[[int, int], Any] | None = None,
    rtol: float | None = None,
    atol: float | None = None,
    n_cotangents: int | None = None,
) -> GradCheckResult:
    """Check a custom ``torch.autograd.Function`` (or any function of tensors).

    The backward of ``fn(*args)`` -- through ``torch.autograd.grad`` -- is checked
    against fastcheck's numerical derivatives of its forward, with respect to every
    argument that is a tensor with ``requires_grad=True``.  See the module
    docstring for how this differs from ``torch.autograd.gradcheck``.

    Parameters
    ----------
    fn : callable or torch.autograd.Function subclass
        Called as ``fn(*args)``; a Function subclass is called through ``.apply``.
        Returns a tensor, or a (nested) tuple / list of tensors: the ones autograd
        can differentiate (floating-point or complex, with a grad_fn) are checked,
        the others are named in a note and left out.
    *args
        Its arguments.  Tensors with ``requires_grad=True`` are checked (float64,
        float32, complex128 or complex64, on the CPU); they are perturbed in place
        and restored bit for bit; elements that are inf or NaN are left out.
        Other arguments are passed unchanged.  Components are named by position:
        ``arg1[3, 2]`` is element (3, 2) of the second argument.
    n_vectors : int
        For a non-scalar output, the number of seeded random cotangents over all
        outputs (>= 1, default 3); a scalar output needs one.  With several outputs, one more
        cotangent per output is given alone (module note 4).
    seed, eps, method, before_eval, refine, progress, rtol, atol
        As for :func:`fastcheck.check_vjp` / :func:`fastcheck.check_grad` (rtol /
        atol: the declared accuracy of the backward, element by element).
    n_cotangents : int, optional
        Deprecated name of `n_vectors`.

    Returns
    -------
    GradCheckResult
    """
    if isinstance(fn, type) and issubclass(fn, torch.autograd.Function):
        fn = fn.apply
    if not callable(fn):
        raise TypeError(f"fn must be callable as fn(*args), got {type(fn).__name__}")
    n_cotangents = check_n_vectors(n_vectors, n_cotangents, "n_cotangents")
    seed = resolve_seed(seed)
    check_method(method)
    check_eps(eps)
    check_before_eval(before_eval)
    check_flag(refine, "refine")
    check_progress(progress)
    check_accuracy(rtol, atol)
    checked = [i for i, a in enumerate(args) if torch.is_tensor(a) and a.requires_grad]
    if not checked:
        raise ValueError("no argument is a tensor with requires_grad=True: mark the "
                         "tensors to check, e.g. x.requires_grad_() (as for gradcheck)")
    inputs = Inputs([args[i] for i in checked], [f"arg{i}" for i in checked],
                    [f"argument {i}" for i in checked])
    refuse_shared_storage(dict(zip(inputs.names, inputs.views)), "arguments")
    spec, values = _probe(fn, args, before_eval)
    if not spec.kept:
        return _check_empty(fn, args, inputs, spec)
    groups = _groups(spec, values, n_cotangents)
    del values  # the probe's graph
    units = sum(count for _, _, count, _ in groups)
    stages, done = [], 0
    try:
        for label, which, count, dtype in groups:
            backward = _Backward(fn, args, inputs, spec, which)
            result = check_vjp(
                _Forward(fn, args, inputs, spec, which, dtype), backward, inputs.params,
                n_vectors=count, seed=seed, eps=eps, method=method,
                before_eval=before_eval, refine=refine,
                progress=_stage_progress(progress, done, count, units), rtol=rtol, atol=atol)
            _note_unused(result, backward, label)
            stages.append((label, result))
            done += count
    finally:
        inputs.restore()
    result = _combine(stages)
    if inputs.compact:
        _expand(result, inputs)
    _add_notes(result, inputs, spec)
    return result


def _probe(fn: Callable, args: tuple,
           before_eval: Callable[[], Any] | None) -> tuple[OutputSpec, Any]:
    """Call fn once with grad enabled: which outputs are differentiable (module note 3)."""
    if before_eval is not None:
        before_eval()
    with torch.enable_grad():
        values = fn(*args)
    spec = OutputSpec(values)
    if not spec.kept and not spec.empty:
        raise ValueError("no output of the function is differentiable with respect to the "
                         "tensors that require grad: nothing to check ("
                         f"{spec.excluded_note()})")
    return spec, values


def _groups(spec: OutputSpec, values: Any, n_cotangents: int
            ) -> list[tuple[str, list[int], int, np.dtype]]:
    """The checks to make: (label, outputs, cotangents, resolution dtype); all the
    differentiable outputs together, then each alone if there are several (note 4)."""
    kept = spec.kept
    plan = [("all outputs" if len(kept) > 1 else spec.name(kept[0]), kept, n_cotangents)]
    if len(kept) > 1:
        plan += [(spec.name(i), [i], 1) for i in kept]
    groups = []
    for label, which, count in plan:
        flat = flat_outputs(spec.select(values, which))
        groups.append((label, which, 1 if flat.size == 1 else count,
                       spec.resolution(which, flat)))
    return groups


def _check_empty(fn: Callable, args: tuple, inputs: Inputs,
                 spec: OutputSpec) -> GradCheckResult:
    """Every differentiable output is empty: ⟨u, fn(x)⟩ is identically 0, so the
    backward must return exactly zero, and no evaluation can say more."""
    started = time.perf_counter()
    with torch.enable_grad():
        outs = spec.select(fn(*args), spec.empty)
        grads = torch.autograd.grad(outs, inputs.tensors, [torch.zeros_like(o) for o in outs],
                                    allow_unused=True)
    layout = as_layout(inputs.params)
    analytic = layout.flatten(inputs.gradients(list(grads)), what="the gradient")
    status = np.where(analytic == 0, ComponentStatus.OK, ComponentStatus.WRONG)
    zeros = np.zeros(layout.size)
    names = ", ".join(spec.name(i) for i in spec.empty)
    result = build_result(
        layout, zeros, analytic, zeros, status.astype(np.int8),
        tiers_for(layout.lowest_precision), evaluations=0,
        seconds=time.perf_counter() - started, eps="none", method="central",
        mode="torch function",
        notes=[f"every differentiable output is empty ({names}): the gradient of ⟨u, f⟩ "
               "is exactly zero, and the backward was compared with zero, without "
               "evaluations"])
    _add_notes(result, inputs, spec, outputs=False)
    return result


def _stage_progress(progress: Callable[[int, int], Any] | None, start: int, count: int,
                    units: int) -> Callable[[int, int], Any] | None:
    """progress(done, total) over all stages, from one stage's own counts."""
    if not callable(progress) or isinstance(progress, bool):
        return progress  # None (automatic), True or False: check_grad's own bar

    def report(done: int, total: int) -> None:
        per = total // count  # one cotangent's components
        progress(start * per + done, units * per)
    return report


def _note_unused(result: GradCheckResult, backward: _Backward, label: str) -> None:
    """Say where autograd returned None, when that stage failed (module note 4)."""
    if backward.unused and not result.passed:
        names = ", ".join(sorted(backward.unused))
        result.notes.append(f"torch.autograd.grad returned no gradient (None) for {names} "
                            f"with {label}'s cotangent; it was taken as zero")


def _combine(stages: list[tuple[str, GradCheckResult]]) -> GradCheckResult:
    """The worst stage's result, with every stage's cotangents summarised."""
    results = [r for _, r in stages]
    k = _worst(results)
    label, worst = stages[k]
    worst.extra = {**worst.extra, "shown_outputs": label, "vectors": [
        {**v, "outputs": lab} for lab, r in stages for v in r.extra.get("vectors", [])]}
    worst.evaluations = sum(r.evaluations for r in results)
    worst.seconds = sum(r.seconds for r in results)
    worst.mode = "torch function"
    worst.notes = [n.replace("check_vjp:", "check_function:", 1) for n in worst.notes]
    if len(stages) > 1:
        alone = ", ".join(f"{lab} {r.verdict}" for lab, r in stages[1:])
        worst.notes.insert(0, f"check_function: all outputs' cotangents together "
                              f"{stages[0][1].verdict}; each output's cotangent also given "
                              f"alone, the other outputs' gradients left undefined (as "
                              f"gradcheck does): {alone}. Shown: {label}, the worst")
    return worst


def _expand(result: GradCheckResult, inputs: Inputs) -> None:
    """Put a check made on the finite elements back onto the whole tensors; the
    elements left out are "not checked" (module note 2).  The verdict stands: the
    same components were counted."""
    full = as_layout(dict(zip(inputs.names, inputs.views, strict=True)))
    n = full.size
    numerical, analytic, noise = np.full(n, np.nan), np.full(n, np.nan), np.full(n, np.nan)
    status = np.full(n, ComponentStatus.NOT_CHECKED, dtype=np.int8)
    for p, mask in enumerate(inputs.masks):
        lo, hi = int(full.offsets[p]), int(full.offsets[p + 1])
        clo, chi = int(result.layout.offsets[p]), int(result.layout.offsets[p + 1])
        where = np.arange(lo, hi) if mask is None else lo + np.flatnonzero(mask.ravel())
        numerical[where] = result.numerical_flat[clo:chi]
        analytic[where] = result.analytic_flat[clo:chi]
        noise[where] = result.noise_flat[clo:chi]
        status[where] = result.status[clo:chi]
    rebuilt = build_result(full, numerical, analytic, noise, status,
                           result.tiers or tiers_for(np.dtype(np.float64)),
                           evaluations=result.evaluations, seconds=result.seconds,
                           eps=result.eps, method=result.method, mode=result.mode,
                           accuracy=result.accuracy)
    result.layout, result.parameters = full, rebuilt.parameters
    result.numerical_flat, result.analytic_flat = numerical, analytic
    result.noise_flat, result.status = noise, status


def _add_notes(result: GradCheckResult, inputs: Inputs, spec: OutputSpec | None,
               outputs: bool = True) -> None:
    """What was left out or recast, named (module notes 1-3), in result.notes and
    result.extra; `outputs`: whether to say which outputs were left out (`spec`
    None: there are none, check_module)."""
    notes = [spec.excluded_note() if outputs and spec else None, inputs.excluded_note()]
    for name in inputs.complex:
        notes.append(f"complex input {name} checked as real and imaginary parts: "
                     f"{name}[..., 0] is the real part, {name}[..., 1] the imaginary part")
    if spec is not None and any(spec.dtypes[i].is_complex for i in spec.kept):
        notes.append("complex output(s) checked as real and imaginary parts, as gradcheck "
                     "does")
    result.notes.extend(n for n in notes if n)
    if spec is not None:
        result.extra["excluded_outputs"] = [{"output": i, "reason": why}
                                            for i, why in spec.excluded]
    result.extra["excluded_elements"] = [name for name, _ in inputs.excluded()]


def check_module(
    module: Any,
    inputs: Any,
    loss_fn: Callable[[Any], Any],
    *,
    eps: float | None = None,
    method: str = "central",
    mode: str = "full",
    k: int | float | None = None,
    max_evals: int | None = None,
    seed: int | None = 0,
    before_eval: Callable[[], Any] | None = None,
    refine: bool = True,
    progress: bool | Callable[[int, int], Any] | None = None,
    warn_seconds: float | None = DEFAULT_WARN_SECONDS,
    noise: str | float = "auto",
    rtol: float | None = None,
    atol: float | None = None,
) -> GradCheckResult:
    """Check the gradient of an ``nn.Module``'s parameters, by name.

    The loss is ``loss_fn(module(*inputs))``; its gradient with respect to every
    parameter with ``requires_grad`` (``module.named_parameters()``), computed by
    ``torch.autograd.grad`` (``.grad`` fields are left alone), is checked against
    fastcheck's numerical derivatives.  Parameters are perturbed in place in their
    storage and restored bit for bit; buffers (BatchNorm running statistics, ...)
    are restored after the check too.

    Parameters
    ----------
    module : torch.nn.Module
        Its parameters must be float64 or float32 CPU tensors; elements that
        are inf or NaN are left out and named (as by check_function).  Leave it in the
        mode you want checked: with dropout active (training mode) the loss is
        random and the check says so; ``module.eval()`` turns dropout off.
    inputs : tensor or tuple of tensors
        Passed as ``module(*inputs)``.
    loss_fn : callable
        ``loss_fn(output) -> scalar tensor``, e.g. ``lambda out: F.mse_loss(out, y)``.
    eps, method, mode, k, max_evals, seed, before_eval, refine, progress, warn_seconds, noise
        As for :func:`fastcheck.check_grad`: ``mode="directional"`` checks a large
        model in a few hundred evaluations and localises the wrong components.
    rtol, atol
        As for :func:`fastcheck.check_grad`.

    Returns
    -------
    GradCheckResult
        Components are named by parameter: ``fc1.weight[3, 2]``.
    """
    if not isinstance(module, torch.nn.Module):
        raise TypeError(f"module must be a torch.nn.Module, got {type(module).__name__}")
    if not callable(loss_fn):
        raise TypeError("loss_fn must be callable as loss_fn(output) -> scalar tensor, "
                        f"got {type(loss_fn).__name__}")
    check_accuracy(rtol, atol)
    inputs = tuple(inputs) if isinstance(inputs, (tuple, list)) else (inputs,)
    named = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
    if not named:
        raise ValueError("the module has no parameter with requires_grad=True: nothing "
                         "to check")
    tensors = [p for _, p in named]
    params = Inputs(tensors, [n for n, _ in named], [f"parameter {n!r}" for n, _ in named])
    refuse_shared_storage(dict(zip(params.names, params.views)), "parameters")

    def scalar(value: Any) -> Any:
        if not torch.is_tensor(value) or value.numel() != 1:
            shape = tuple(value.shape) if torch.is_tensor(value) else type(value).__name__
            raise TypeError(f"loss_fn must return a scalar tensor, got {shape}")
        return value.reshape(())

    def loss(values: Any) -> Any:
        params.sync(values)
        with torch.no_grad():
            value = scalar(loss_fn(module(*inputs)))
        number = value.item()
        # A float32 model's loss has float32 resolution: tell the noise model.
        return np.float32(number) if value.dtype != torch.float64 else number

    def grad(values: Any) -> dict[str, np.ndarray]:
        params.sync(values)
        # check_grad calls before_eval just before (the evaluations' random state)
        with torch.enable_grad():
            value = scalar(loss_fn(module(*inputs)))
            grads = torch.autograd.grad(value, tensors, allow_unused=True)
        return params.gradients(list(grads))

    buffers = [(b, b.detach().clone()) for b in module.buffers()]
    try:
        result = check_grad(loss, grad, params.params, eps=eps, method=method, mode=mode,
                            k=k, max_evals=max_evals, seed=seed, before_eval=before_eval,
                            refine=refine, progress=progress, warn_seconds=warn_seconds,
                            noise=noise, rtol=rtol, atol=atol)
    finally:
        params.restore()
        with torch.no_grad():
            for b, saved in buffers:
                b.copy_(saved)
    if params.compact:
        # Parameters with inf or NaN elements: those are left out and named, as
        # check_function does with its arguments (module note 2).
        _expand(result, params)
    _add_notes(result, params, None, outputs=False)
    if result.verdict == "nondeterministic" and module.training:
        result.notes.append("the module is in training mode (module.training is True): "
                            "module.eval() turns dropout off")
    return result

