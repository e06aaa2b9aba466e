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

What gradcheck checks and this does not: complex and sparse inputs, forward-mode
AD (``check_forward_ad``), batched gradients, backward reentrancy, undefined
gradients, GPU tensors (copy to the CPU first).  This adapter checks the values of
first derivatives of float64 / float32 CPU tensors; ``executor=`` is not offered
(the tensors are read by the function through captured references, which do not
survive pickling to another process).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

try:
    import torch  # the top-level PyTorch (absolute import), not this module
except ImportError as exc:  # pragma: no cover - exercised only without torch
    raise ImportError("fastcheck.torch needs PyTorch: pip install 'fastcheck[torch]' "
                      "(or pip install torch)") from exc

from fastcheck._check import check_grad
from fastcheck._result import GradCheckResult
from fastcheck._vjp import check_vjp

__all__ = ["check_function", "check_module"]

_DTYPES = (torch.float64, torch.float32)


def _numpy_view(t: Any, name: str) -> np.ndarray:
    """A writeable numpy view of a tensor's storage (validated)."""
    if t.device.type != "cpu":
        raise ValueError(f"{name} is on {t.device}; fastcheck perturbs tensors in place "
                         "through numpy, on the CPU: check a CPU copy (.cpu())")
    if t.layout != torch.strided:
        raise TypeError(f"{name} has layout {t.layout}; fastcheck checks dense tensors "
                        "(.to_dense())")
    if t.dtype not in _DTYPES:
        raise TypeError(f"{name} has dtype {t.dtype}; fastcheck needs float64 or float32 "
                        "tensors (half precision is too coarse for finite differences): "
                        "convert with .double()")
    if any(s == 0 and n > 1 for s, n in zip(t.stride(), t.shape, strict=True)):
        raise ValueError(f"{name} is an expanded tensor (a stride of 0): its elements share "
                         "memory, so perturbing one moves the others. Pass .clone()")
    if t.is_conj() or t.is_neg():
        raise TypeError(f"{name} is a lazily conjugated/negated view: pass .resolve_conj()")
    return t.detach().numpy()


def _refuse_shared_storage(views: dict[str, np.ndarray], what: str) -> None:
    """Tied weights, or one tensor passed twice, share storage: perturbing one
    would move the other.  Said in torch's terms, before any evaluation."""
    names = list(views)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            if np.may_share_memory(views[a], views[b]) and np.shares_memory(
                    views[a], views[b], max_work=10**6):
                raise ValueError(
                    f"{what} {a!r} and {b!r} share storage (tied weights, or the same "
                    "tensor passed twice): perturbing one would move the other, so their "
                    "gradients cannot be checked apart. Check with the weights untied "
                    "(a .clone() of one, as a separate Parameter), or pass the tensor once")


def _outputs(value: Any) -> list:
    """The floating-point tensors a function returned, in order."""
    items = list(value) if isinstance(value, (tuple, list)) else [value]
    if not items or not all(torch.is_tensor(o) for o in items):
        raise TypeError("the function must return a tensor or a tuple of tensors, got "
                        f"{type(value).__name__}")
    return [o for o in items if o.is_floating_point()]


def _zeros_like(a: np.ndarray) -> np.ndarray:
    return np.zeros(a.shape, dtype=a.dtype)


class _Forward:
    """fn(*args) under no_grad, as one flat numpy array (the outputs concatenated)."""

    def __init__(self, fn: Callable, args: tuple) -> None:
        self.fn, self.args = fn, args

    def __call__(self, params: Any) -> np.ndarray:
        with torch.no_grad():
            outs = _outputs(self.fn(*self.args))
        pieces = [o.detach().cpu().numpy().ravel() for o in outs]
        if not pieces:
            raise TypeError("the function returned no floating-point tensor: nothing to "
                            "differentiate")
        return np.concatenate(pieces)


class _Backward:
    """The vjp of fn through torch.autograd.grad, as a dict like the checked tensors."""

    def __init__(self, fn: Callable, args: tuple, checked: list[int], names: list[str],
                 views: dict[str, np.ndarray]) -> None:
        self.fn, self.args, self.checked, self.names, self.views = fn, args, checked, names, views

    def __call__(self, params: Any, u: np.ndarray) -> dict[str, np.ndarray]:
        inputs = [self.args[i] for i in self.checked]
        with torch.enable_grad():
            outs = _outputs(self.fn(*self.args))
            cotangents, start = [], 0
            for o in outs:
                piece = u[start:start + o.numel()].reshape(tuple(o.shape))
                cotangents.append(torch.from_numpy(piece.copy()).to(o.dtype))  # 0-d stays 0-d
                start += o.numel()
            used = [(o, c) for o, c in zip(outs, cotangents, strict=True) if o.requires_grad]
            if not used:
                raise ValueError("no output of the function depends on the inputs that "
                                 "require grad: nothing to check")
            grads = torch.autograd.grad([o for o, _ in used], inputs,
                                        grad_outputs=[c for _, c in used],
                                        allow_unused=True)
        return {name: (_zeros_like(self.views[name]) if g is None
                       else g.detach().cpu().numpy().astype(self.views[name].dtype))
                for name, g in zip(self.names, grads, strict=True)}


def check_function(
    fn: Any,
    *args: Any,
    n_cotangents: int = 3,
    seed: int | None = 0,
    eps: float | None = None,
    method: str = "central",
    before_eval: Callable[[], Any] | None = None,
    refine: bool = True,
    progress: Callable[[int, int], Any] | None = None,
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
        Returns a tensor, or a tuple of tensors (the floating-point ones are
        checked).
    *args
        Its arguments.  Tensors with ``requires_grad=True`` are checked (float64 or
        float32, on the CPU); they are perturbed in place and restored bit for bit.
        Other arguments are passed unchanged.  Components are named by position:
        ``arg1[3, 2]`` is element (3, 2) of the second argument.
    n_cotangents : int
        For a non-scalar output, the number of seeded random cotangents (>= 1);
        a scalar output needs one.
    seed, eps, method, before_eval, refine, progress
        As for :func:`fastcheck.check_vjp` / :func:`fastcheck.check_grad`.

    Returns
    -------
    GradCheckResult
    """
    if isinstance(fn, type) and issubclass(fn, torch.autograd.Function):
        fn = fn.apply
    if not callable(fn):
        raise TypeError(f"fn must be callable as fn(*args), got {type(fn).__name__}")
    checked = [i for i, a in enumerate(args) if torch.is_tensor(a) and a.requires_grad]
    if not checked:
        raise ValueError("no argument is a tensor with requires_grad=True: mark the "
                         "tensors to check, e.g. x.requires_grad_() (as for gradcheck)")
    names = [f"arg{i}" for i in checked]
    views = {name: _numpy_view(args[i], f"argument {i}") for name, i in
             zip(names, checked, strict=True)}
    _refuse_shared_storage(views, "arguments")
    forward = _Forward(fn, args)
    with torch.no_grad():
        size = sum(o.numel() for o in _outputs(fn(*args)))
    if size == 1:
        n_cotangents = 1
    result = check_vjp(forward, _Backward(fn, args, checked, names, views), views,
                       n_cotangents=n_cotangents, seed=seed, eps=eps, method=method,
                       before_eval=before_eval, refine=refine, progress=progress)
    result.mode = "torch function"
    result.notes = [n.replace("check_vjp:", "check_function:", 1) for n in result.notes]
    return result


def check_module(
    module: Any,
    inputs: Any,
    loss_fn: Callable[[Any], Any],
    *,
    eps: float | None = None,
    method: str = "central",
    before_eval: Callable[[], Any] | None = None,
    refine: bool = True,
    progress: Callable[[int, int], Any] | None = None,
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
        Its parameters must be float64 or float32 CPU tensors.  Leave it in the
        mode you want checked: with dropout active (training mode) the loss is
        random and the check says so; ``module.eval()`` turns dropout off.
    inputs : tensor or tuple of tensors
        Passed as ``module(*inputs)``.
    loss_fn : callable
        ``loss_fn(output) -> scalar tensor``, e.g. ``lambda out: F.mse_loss(out, y)``.
    eps, method, before_eval, refine, progress
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
    inputs = tuple(inputs) if isinstance(inputs, (tuple, list)) else (inputs,)
    named = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
    if not named:
        raise ValueError("the module has no parameter with requires_grad=True: nothing "
                         "to check")
    views = {n: _numpy_view(p, f"parameter {n!r}") for n, p in named}
    _refuse_shared_storage(views, "parameters")
    tensors = [p for _, p in named]

    def scalar(value: Any) -> Any:
        if not torch.is_tensor(value) or value.numel() != 1:
            shape = tuple(value.shape) if torch.is_tensor(value) else type(value).__name__
            raise TypeError(f"loss_fn must return a scalar tensor, got {shape}")
        return value.reshape(())

    def loss(params: Any) -> Any:
        with torch.no_grad():
            value = scalar(loss_fn(module(*inputs)))
        number = value.item()
        # A float32 model's loss has float32 resolution: tell the noise model.
        return np.float32(number) if value.dtype != torch.float64 else number

    def grad(params: Any) -> dict[str, np.ndarray]:
        if before_eval is not None:  # the same random state as the evaluations
            before_eval()
        with torch.enable_grad():
            value = scalar(loss_fn(module(*inputs)))
            grads = torch.autograd.grad(value, tensors, allow_unused=True)
        return {n: (_zeros_like(views[n]) if g is None else g.detach().cpu().numpy())
                for (n, _), g in zip(named, grads, strict=True)}

    buffers = [(b, b.detach().clone()) for b in module.buffers()]
    try:
        result = check_grad(loss, grad, views, eps=eps, method=method,
                            before_eval=before_eval, refine=refine, progress=progress)
    finally:
        with torch.no_grad():
            for b, saved in buffers:
                b.copy_(saved)
    if result.verdict == "nondeterministic" and module.training:
        result.notes.append("the module is in training mode (module.training is True): "
                            "module.eval() turns dropout off")
    return result

