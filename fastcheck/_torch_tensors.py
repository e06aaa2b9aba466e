"""The boundary between PyTorch tensors and fastcheck's numpy arrays (fastcheck.torch).

fastcheck's checks see numpy arrays: the parameters it perturbs in place, one flat
output vector, one flat cotangent, gradients shaped like the parameters.  This
module turns a function of tensors into those, and back.  The rules, each with its
reason (fastcheck.torch refers to them):

1. Inputs.  A checked argument is perturbed in place through a numpy view of its
   storage.  A complex tensor is seen through ``torch.view_as_real``: its real and
   imaginary parts are two real components (``arg0[3, 0]``, ``arg0[3, 1]``).  For a
   real loss L, autograd's gradient with respect to a complex tensor is
   ∂L/∂Re + i·∂L/∂Im, so ``view_as_real`` of it is the gradient of those components.
   float16 / bfloat16 inputs are refused: the kernel perturbs float32 and float64,
   and a difference step in half precision cannot resolve a derivative anyway.
2. Non-finite inputs.  An element that is ±inf or NaN cannot be perturbed (inf + h
   is inf, the step represented is NaN): it is left out of the check and named.
   The checks then work on a compact copy of the finite elements, which is written
   into the tensor before every call (O(n) per call, only when there are such
   elements); the tensor is restored bit for bit afterwards.
3. Outputs.  Which outputs are differentiable is decided once, at the unperturbed
   point with grad enabled, as autograd says: a floating or complex tensor that
   requires grad (has a grad_fn).  Integer outputs, and outputs marked with
   ``ctx.mark_non_differentiable`` or otherwise detached (the mean and rstd of
   ``native_layer_norm``), have no gradient to check: they are left out of both
   sides and named, as ``gradcheck`` leaves them out of its Jacobians.
4. Complex outputs are checked as their real and imaginary parts, as gradcheck
   does: the cotangent u_re + i·u_im given to autograd is the gradient of
   Σ u_re·Re y + u_im·Im y, the projection check_vjp differences.
5. Resolution.  The flat output vector's dtype tells the check what resolution the
   outputs have: the coarsest of them.  bfloat16 has no numpy dtype: its values
   (8 significant bits) are exact in float16 within float16's range, and are
   presented as float16, the nearest resolution numpy can state.  Where the values
   do not fit the coarse dtype, the next finer one is used.
6. Gradients.  None (no path to the input) and autograd's ZeroTensor (a gradient
   known to be zero, e.g. of ``torch.sgn`` of a real tensor, which has no numpy
   view) are zeros.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

__all__ = ["Inputs", "OutputSpec", "cotangents", "flat_outputs", "grad_array", "leaves",
           "refuse_shared_storage"]

_REAL = (torch.float64, torch.float32)
_COMPLEX = (torch.complex128, torch.complex64)
_HALF = (torch.float16, torch.bfloat16)
# The numpy dtype that states each output dtype's resolution (rule 5).
_RESOLUTION = {torch.float64: np.float64, torch.float32: np.float32,
               torch.float16: np.float16, torch.bfloat16: np.float16,
               torch.complex128: np.float64, torch.complex64: np.float32,
               torch.complex32: np.float16}
_REAL_PART = {torch.complex128: torch.float64, torch.complex64: torch.float32,
              torch.complex32: torch.float16}
_COARSE_FIRST = (np.float16, np.float32, np.float64)
_SHOWN = 6  # non-finite elements named in a note


# ----------------------------------------------------------------------- inputs
def input_view(t: Any, name: str) -> np.ndarray:
    """A writeable numpy view of a tensor's storage, real parts for complex (rule 1)."""
    if t.device.type != "cpu":
        raise ValueError(f"{name} is on {t.device}; fastcheck perturbs tensors in place "
                         "through numpy, on the CPU: check a CPU copy (.cpu())")
    if t.layout != torch.strided:
        raise TypeError(f"{name} has layout {t.layout}; fastcheck checks dense tensors "
                        "(.to_dense())")
    if t.dtype in _HALF:
        raise TypeError(f"{name} has dtype {t.dtype}; fastcheck perturbs float64 or "
                        "float32 tensors (complex ones as real and imaginary parts): a "
                        "difference step in half precision cannot resolve a derivative. "
                        "Check the function at a float64 copy (.double())")
    if t.dtype not in _REAL + _COMPLEX:
        raise TypeError(f"{name} has dtype {t.dtype}; fastcheck needs float64 or float32 "
                        "tensors (or complex128 / complex64): convert with .double()")
    if any(s == 0 and n > 1 for s, n in zip(t.stride(), t.shape, strict=True)):
        raise ValueError(f"{name} is an expanded tensor (a stride of 0): its elements share "
                         "memory, so perturbing one moves the others. Pass .clone()")
    if t.is_conj() or t.is_neg():
        raise TypeError(f"{name} is a lazily conjugated/negated view: pass .resolve_conj()")
    base = t.detach()
    return (torch.view_as_real(base) if base.is_complex() else base).numpy()


class Inputs:
    """The checked tensors, their numpy views, and the params the checks perturb.

    ``params`` maps each name to the tensor's own view, or, for a tensor with
    non-finite elements, to a compact copy of its finite elements (rule 2);
    ``sync(params)`` writes such copies into the tensors before a call.
    """

    def __init__(self, tensors: list[Any], names: list[str], labels: list[str]) -> None:
        self.tensors, self.names = tensors, names
        self.views = [input_view(t, label) for t, label in zip(tensors, labels, strict=True)]
        self.complex = [n for n, t in zip(names, tensors, strict=True) if t.is_complex()]
        self.masks: list[np.ndarray | None] = []
        self.saved: list[np.ndarray | None] = []
        self.params: dict[str, np.ndarray] = {}
        for name, view in zip(names, self.views, strict=True):
            finite = np.isfinite(view)
            compact = not bool(np.all(finite))
            self.masks.append(finite if compact else None)
            self.saved.append(view.copy() if compact else None)
            self.params[name] = view[finite] if compact else view
        if all(v.size == 0 for v in self.views):
            raise ValueError("the tensors to check are empty (no elements): nothing to check")
        if all(p.size == 0 for p in self.params.values()):
            raise ValueError("every element of the tensors to check is inf or NaN: nothing "
                             "can be perturbed")

    @property
    def compact(self) -> bool:
        """Whether some tensor has elements left out (rule 2)."""
        return any(m is not None for m in self.masks)

    def sync(self, params: Any) -> None:
        """Write the (perturbed) compact copies into the tensors."""
        for name, view, mask in zip(self.names, self.views, self.masks, strict=True):
            if mask is not None:
                view[mask] = params[name]

    def restore(self) -> None:
        """Put back every tensor that sync wrote into, bit for bit."""
        for view, saved in zip(self.views, self.saved, strict=True):
            if saved is not None:
                view[...] = saved

    def gradients(self, grads: list[Any]) -> dict[str, np.ndarray]:
        """autograd's gradients in the structure of params (rules 1, 2, 6)."""
        out = {}
        for name, g, view, mask in zip(self.names, grads, self.views, self.masks,
                                       strict=True):
            full = grad_array(g, view)
            out[name] = full if mask is None else full[mask]
        return out

    def excluded(self) -> list[tuple[str, float]]:
        """(name, value) of every element left out, in flat order (rule 2)."""
        found = []
        for name, view, mask in zip(self.names, self.views, self.masks, strict=True):
            if mask is None:
                continue
            for index in np.argwhere(~mask):
                label = f"{name}[{', '.join(str(int(i)) for i in index)}]" if index.size \
                    else name
                found.append((label, float(view[tuple(index)])))
        return found

    def excluded_note(self) -> str | None:
        found = self.excluded()
        if not found:
            return None
        shown = ", ".join(f"{n} = {v:g}" for n, v in found[:_SHOWN])
        more = f" and {len(found) - _SHOWN} more" if len(found) > _SHOWN else ""
        return (f"{len(found)} element(s) not finite, left out of the check (a step "
                f"from inf or NaN is not a number): {shown}{more}")


def grad_array(g: Any, like: np.ndarray) -> np.ndarray:
    """One gradient from autograd as a numpy array shaped like `like` (rules 1, 6)."""
    if g is None or g._is_zerotensor():
        return np.zeros(like.shape, dtype=like.dtype)
    g = g.detach()
    if g.is_complex():
        g = torch.view_as_real(g.resolve_conj())
    return np.asarray(g.numpy(force=True), dtype=like.dtype).reshape(like.shape)


# ---------------------------------------------------------------------- outputs
def leaves(value: Any) -> Iterator[Any]:
    """What a function returned, nested tuples and lists flattened, in order."""
    if isinstance(value, (tuple, list)):
        for item in value:
            yield from leaves(item)
    else:
        yield value


def _describe(o: Any) -> str:
    return (f"{o.dtype}, shape {tuple(o.shape)}" if torch.is_tensor(o)
            else type(o).__name__)


class OutputSpec:
    """Which outputs of a function are checked, decided once (rule 3).

    Parameters
    ----------
    value
        What the function returned at the unperturbed point, with grad enabled.

    Attributes
    ----------
    kept : list of int
        Positions (in the flattened outputs) of the differentiable outputs.
    excluded : list of (int, str)
        The others, with the reason.
    empty : list of int
        Differentiable outputs with no element (among the excluded): when they are
        all there is, the gradient must be exactly zero.
    """

    def __init__(self, value: Any) -> None:
        items = list(leaves(value))
        if not any(torch.is_tensor(o) for o in items):
            raise TypeError("the function must return a tensor or a tuple of tensors, got "
                            f"{type(value).__name__}")
        self.count = len(items)
        self.single = self.count == 1
        self.kept: list[int] = []
        self.excluded: list[tuple[int, str]] = []
        self.shapes = {i: tuple(o.shape) for i, o in enumerate(items) if torch.is_tensor(o)}
        for i, o in enumerate(items):
            reason = self._reason(o)
            if reason is None:
                self.kept.append(i)
            else:
                self.excluded.append((i, reason))
        self.empty = [i for i, why in self.excluded if why == "empty"]
        self.dtypes = {i: items[i].dtype for i in self.kept}

    @staticmethod
    def _reason(o: Any) -> str | None:
        if not torch.is_tensor(o):
            return f"not a tensor ({type(o).__name__})"
        if not (o.is_floating_point() or o.is_complex()):
            return f"{o.dtype}, not floating-point"
        if not o.requires_grad:
            return ("not differentiable, as autograd declares it (no grad_fn: "
                    "mark_non_differentiable, or computed without grad)")
        if o.numel() == 0:
            return "empty"
        return None

    def name(self, i: int) -> str:
        return "the output" if self.single else f"output {i}"

    def select(self, value: Any, which: list[int]) -> list[Any]:
        """The outputs at positions `which`, after checking the structure is unchanged."""
        items = list(leaves(value))
        if len(items) != self.count:
            raise ValueError(f"the function returned {len(items)} output(s), then "
                             f"{self.count}: it must return the same structure every call")
        picked = []
        for i in which:
            o = items[i]
            if not torch.is_tensor(o) or tuple(o.shape) != self.shapes[i]:
                raise ValueError(f"{self.name(i)} changed from shape {self.shapes[i]} to "
                                 f"{_describe(o)} between calls")
            picked.append(o)
        return picked

    def excluded_note(self) -> str | None:
        if not self.excluded:
            return None
        reasons: dict[str, list[str]] = {}
        for i, why in self.excluded:
            reasons.setdefault(why, []).append(self.name(i))
        said = "; ".join(f"{', '.join(names)}: {why}" for why, names in reasons.items())
        return f"output(s) left out of both sides (no gradient to check): {said}"

    def resolution(self, which: list[int], values: np.ndarray) -> np.dtype:
        """The dtype that states the outputs' resolution (rule 5)."""
        coarse = min((_RESOLUTION[self.dtypes[i]] for i in which),
                     key=lambda d: np.finfo(d).bits)
        finite = np.isfinite(values)
        for dtype in _COARSE_FIRST[_COARSE_FIRST.index(coarse):]:
            with np.errstate(over="ignore"):
                if np.all(np.isfinite(values.astype(dtype)) | ~finite):
                    return np.dtype(dtype)
        return np.dtype(np.float64)


def flat_outputs(outs: list[Any]) -> np.ndarray:
    """The outputs as one flat float64 vector, complex ones as (re, im) pairs (rule 4)."""
    pieces = []
    for o in outs:
        o = o.detach()
        if o.is_complex():
            o = torch.view_as_real(o.resolve_conj())
        if o.dtype == torch.bfloat16:
            o = o.float()  # exact: numpy has no bfloat16
        pieces.append(np.asarray(o.numpy(force=True), dtype=np.float64).ravel())
    return np.concatenate(pieces)


def cotangents(u: np.ndarray, outs: list[Any]) -> list[Any]:
    """The flat cotangent split into tensors shaped and typed like `outs` (rule 4)."""
    u = np.asarray(u, dtype=np.float64).ravel()
    result, start = [], 0
    for o in outs:
        if o.is_complex():
            real = _REAL_PART[o.dtype]
            piece = u[start:start + 2 * o.numel()].reshape((*o.shape, 2))
            result.append(torch.view_as_complex(torch.from_numpy(piece.copy()).to(real)))
            start += 2 * o.numel()
        else:
            piece = u[start:start + o.numel()].reshape(tuple(o.shape))
            result.append(torch.from_numpy(piece.copy()).to(o.dtype))  # 0-d stays 0-d
            start += o.numel()
    return result


def refuse_shared_storage(views: dict[str, np.ndarray], what: str) -> None:
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
