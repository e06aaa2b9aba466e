"""Parameter layouts: how a params object maps onto one flat vector theta.

A user's parameters are an ndarray, or a dict / list / tuple of ndarrays (W1, b1,
...).  fastcheck never copies them: the kernel perturbs each component where it
lives.  A :class:`ParamLayout` validates the object once, names every component
(``W2[3, 1]``), concatenates the arrays in order into the flat index space of the
metric (the theta of docs/design.md), and describes each array to the kernel as
blocks of (address, length, stride).
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass
from itertools import accumulate
from typing import Any

import numpy as np

__all__ = ["KernelGroup", "ParamLayout", "Snapshot", "as_layout"]

SUPPORTED_DTYPES = (np.dtype(np.float64), np.dtype(np.float32))


@dataclass(frozen=True)
class KernelGroup:
    """The parameters of one dtype, as the kernel sees them.

    Attributes
    ----------
    dtype : numpy.dtype
        float64 or float32.
    members : tuple of int
        Positions (in the layout) of the parameters in this group, in order.
    blocks : ndarray of intp, shape (nblocks, 3)
        (address, length, stride in elements) of each run of memory.
    local_offsets : ndarray of intp
        For each parameter of the layout, where it starts in this group's flat
        index space (-1 for parameters of another dtype).
    """

    dtype: np.dtype
    members: tuple[int, ...]
    blocks: np.ndarray
    local_offsets: np.ndarray


def _memory_runs(array: np.ndarray, name: str) -> np.ndarray:
    """Describe `array` (in C order) as runs of equally strided elements.

    Adjacent axes are merged when the outer stride equals the inner extent, so a
    C-contiguous array, or any 1-D view, is a single run; a Fortran-ordered matrix
    is one run per row.  Returns rows of (address, length, stride in elements).
    """
    itemsize = array.itemsize
    address = array.__array_interface__["data"][0]
    if address % itemsize or any(s % itemsize for s in array.strides):
        raise ValueError(
            f"parameter {name!r} is not aligned to its dtype ({array.dtype}); "
            f"pass an aligned copy, e.g. np.array({name})")
    axes = [(n, s // itemsize) for n, s in zip(array.shape, array.strides) if n != 1]
    if not axes:
        return np.array([[address, array.size, 1]], dtype=np.intp)
    if any(s == 0 for _, s in axes):
        raise ValueError(
            f"parameter {name!r} has elements that share memory (a stride of 0, as in a "
            "broadcast view); perturbing one would move the others. Pass a real array, "
            f"e.g. np.array({name})")
    merged = [list(axes[-1])]
    for n, s in reversed(axes[:-1]):
        inner = merged[0]
        if s == inner[0] * inner[1]:
            inner[0] *= n
        else:
            merged.insert(0, [n, s])
    run_length, run_stride = merged[-1]
    if len(merged) == 1 and abs(run_stride) == 1:
        # One contiguous run (any C-ordered array, any unit-stride 1-D view): its
        # addresses are distinct, and the table is one row.
        return np.array([[address, run_length, run_stride]], dtype=np.intp)
    # More elements than addresses they span (pigeonhole): an overlapping view,
    # known without listing its addresses, which could need more memory than exists.
    overlap = array.size > sum((n - 1) * abs(s) for n, s in axes) + 1
    starts = np.zeros(1, dtype=np.intp)
    for n, s in merged[:-1] if not overlap else ():
        starts = (starts[:, None] + np.arange(n, dtype=np.intp)[None, :] * s).ravel()
    if overlap or len(merged) > 1 or abs(run_stride) != 1:
        # A view made with as_strided can map two indices to one element; then
        # perturbing one moves the other.  Contiguous runs cannot, so only
        # non-contiguous layouts pay for this O(n log n) look at every address.
        if not overlap:
            addresses = (starts[:, None]
                         + np.arange(run_length, dtype=np.intp) * run_stride).ravel()
            overlap = np.unique(addresses).size != addresses.size
        if overlap:
            raise ValueError(
                f"parameter {name!r} has elements that share memory (an as_strided view "
                "whose strides overlap); perturbing one would move the others. Pass a real "
                f"array, e.g. np.array({name})")
    table = np.empty((starts.size, 3), dtype=np.intp)
    table[:, 0] = address + starts * itemsize
    table[:, 1] = run_length
    table[:, 2] = run_stride
    return table


def _check_array(value: Any, name: str) -> np.ndarray:
    """Validate one parameter array (before anything is evaluated)."""
    if not isinstance(value, np.ndarray):
        raise TypeError(
            f"parameter {name!r} must be a numpy array (fastcheck perturbs it in place), "
            f"got {type(value).__name__}")
    if value.dtype not in SUPPORTED_DTYPES:
        if value.dtype.kind == "f" and value.dtype.isnative is False:
            raise TypeError(
                f"parameter {name!r} has non-native byte order ({value.dtype.str}); "
                f"convert it once with {name}.astype({name}.dtype.newbyteorder('='))")
        raise TypeError(
            f"parameter {name!r} has dtype {value.dtype}; fastcheck needs float64 or "
            f"float32 parameters (perturbing an integer, bool, complex or object array "
            f"in place is not meaningful). Convert with {name}.astype(np.float64)")
    if not value.flags.writeable:
        raise ValueError(
            f"parameter {name!r} is read-only; fastcheck perturbs parameters in place, so "
            f"it must be writeable (pass a writeable copy, e.g. np.array({name}))")
    return value


class ParamLayout:
    """A validated params object and the flat index space over its components.

    Parameters
    ----------
    params : ndarray, dict, list or tuple of ndarrays
        The user's parameters.  They are referenced, never copied.
    name : str
        The name of a lone array (``theta`` gives ``theta[17]``).

    Attributes
    ----------
    kind : {"array", "dict", "list", "tuple"}
    keys : tuple
        Dict keys, or positions for a list / tuple.
    names : tuple of str
        One readable name per parameter (``"W1"``, ``"params[0]"``, ``"theta"``).
    arrays : tuple of ndarray
        The user's own arrays.
    offsets : ndarray of intp
        Where each parameter starts in the flat index space; ``offsets[-1]`` is the
        total number of components.
    """

    def __init__(self, params: Any, name: str = "theta") -> None:
        self.params = params
        if isinstance(params, np.ndarray):
            self.kind, keys, names, values = "array", (None,), (name,), (params,)
        elif isinstance(params, Mapping):
            self.kind = "dict"
            keys = tuple(params.keys())
            names = tuple(str(k) for k in keys)
            values = tuple(params[k] for k in keys)
        elif isinstance(params, (list, tuple)):
            self.kind = "list" if isinstance(params, list) else "tuple"
            keys = tuple(range(len(params)))
            names = tuple(f"params[{i}]" for i in keys)
            values = tuple(params)
        else:
            raise TypeError(
                "params must be a numpy array, or a dict / list / tuple of numpy arrays; "
                f"got {type(params).__name__}")
        if not values:
            raise ValueError(f"params is an empty {type(params).__name__}: nothing to check")
        self.keys = keys
        self.names = names
        self.arrays = tuple(_check_array(v, n) for v, n in zip(values, names))
        self.offsets = np.array([0, *accumulate(a.size for a in self.arrays)], dtype=np.intp)
        if self.size == 0:
            raise ValueError("params has no components (every array is empty)")
        self._check_no_overlap()
        self._groups: list[KernelGroup] | None = None
        # Build the block tables now: they validate strides and alignment, and a
        # bad layout must be refused before the loss is ever called.
        self.kernel_groups()

    # ------------------------------------------------------------------ basics
    @property
    def size(self) -> int:
        """Total number of components (the length of theta)."""
        return int(self.offsets[-1])

    @property
    def dtypes(self) -> tuple[np.dtype, ...]:
        """The distinct dtypes, float64 first."""
        present = {a.dtype for a in self.arrays}
        return tuple(d for d in SUPPORTED_DTYPES if d in present)

    @property
    def lowest_precision(self) -> np.dtype:
        """The least precise dtype present (it governs noise and default steps)."""
        return self.dtypes[-1]

    def _check_no_overlap(self) -> None:
        arrays = self.arrays
        for i in range(len(arrays)):
            for j in range(i + 1, len(arrays)):
                a, b = arrays[i], arrays[j]
                if a.size == 0 or b.size == 0:
                    continue
                if a is b:
                    raise ValueError(
                        f"parameters {self.names[i]!r} and {self.names[j]!r} are the same "
                        "array; perturbing one would move the other. Pass each array once")
                if np.may_share_memory(a, b) and np.shares_memory(a, b, max_work=10**6):
                    raise ValueError(
                        f"parameters {self.names[i]!r} and {self.names[j]!r} overlap in "
                        "memory; perturbing one would move the other. Pass separate arrays "
                        "(np.array(...) copies)")

    # --------------------------------------------------------------- the kernel
    def kernel_groups(self) -> list[KernelGroup]:
        """The parameters grouped by dtype, with their block tables."""
        if self._groups is None:
            groups = []
            for dtype in self.dtypes:
                members = tuple(i for i, a in enumerate(self.arrays) if a.dtype == dtype)
                local = np.full(len(self.arrays), -1, dtype=np.intp)
                start = 0
                tables = []
                for i in members:
                    local[i] = start
                    start += self.arrays[i].size
                    if self.arrays[i].size:
                        tables.append(_memory_runs(self.arrays[i], self.names[i]))
                if not tables:
                    continue  # only empty arrays of this dtype: nothing to perturb
                # (each table is a new C-contiguous intp array: one needs no copy)
                blocks = tables[0] if len(tables) == 1 else np.concatenate(tables)
                groups.append(KernelGroup(dtype, members, blocks, local))
            self._groups = groups
        return self._groups

    def param_of(self, flat: np.ndarray) -> np.ndarray:
        """Position of the parameter that holds each flat index."""
        return np.searchsorted(self.offsets, flat, side="right") - 1

    # ------------------------------------------------------------------- names
    def name_of(self, flat: int) -> str:
        """The readable name of one component, e.g. ``W2[3, 1]``."""
        p = int(self.param_of(np.asarray(flat)))
        local = int(flat) - int(self.offsets[p])
        shape = self.arrays[p].shape
        if not shape:
            return self.names[p]
        index = np.unravel_index(local, shape)
        return f"{self.names[p]}[{', '.join(str(int(i)) for i in index)}]"

    def names_of(self, flat: np.ndarray) -> list[str]:
        """Names of several components."""
        return [self.name_of(int(i)) for i in np.asarray(flat).ravel()]

    def values(self) -> np.ndarray:
        """The current parameter values as one flat float64 array (a copy)."""
        return np.concatenate([a.ravel().astype(np.float64) for a in self.arrays])

    # ------------------------------------------------------- structure <-> flat
    def unflatten(self, flat: np.ndarray, dtype: Any = None) -> Any:
        """Arrays shaped like the parameters, in the same kind of container."""
        flat = np.asarray(flat)
        pieces = [
            flat[self.offsets[i]:self.offsets[i + 1]].reshape(a.shape).astype(
                dtype or flat.dtype, copy=True)
            for i, a in enumerate(self.arrays)
        ]
        return self._container(pieces)

    def _container(self, pieces: list) -> Any:
        if self.kind == "array":
            return pieces[0]
        if self.kind == "dict":
            return dict(zip(self.keys, pieces))
        return list(pieces) if self.kind == "list" else tuple(pieces)

    def flatten(self, values: Any, what: str = "grad") -> np.ndarray:
        """Flatten a structure that must match the parameters (e.g. a gradient).

        Raises
        ------
        TypeError, ValueError
            Naming the parameter and both shapes when the structure does not match.
        """
        if self.kind == "array":
            if isinstance(values, Mapping) or isinstance(values, (list, tuple)):
                raise TypeError(f"{what} must be an array like params, got "
                                f"{type(values).__name__}")
            items = [values]
        elif self.kind == "dict":
            if not isinstance(values, Mapping):
                raise TypeError(f"{what} must be a dict with the keys of params "
                                f"{list(self.names)}, got {type(values).__name__}")
            missing = [k for k in self.keys if k not in values]
            extra = [k for k in values if k not in self.params]
            if missing:
                raise ValueError(f"{what} has no entry for parameter(s) "
                                 f"{[str(k) for k in missing]}")
            if extra:
                raise ValueError(f"{what} has entries that are not parameters: "
                                 f"{[str(k) for k in extra]}")
            items = [values[k] for k in self.keys]
        else:
            if not isinstance(values, (list, tuple)):
                raise TypeError(f"{what} must be a {self.kind} of {len(self.arrays)} arrays "
                                f"like params, got {type(values).__name__}")
            if len(values) != len(self.arrays):
                raise ValueError(f"{what} has {len(values)} entries, params has "
                                 f"{len(self.arrays)}")
            items = list(values)
        out = np.empty(self.size, dtype=np.float64)
        for i, (item, array, name) in enumerate(zip(items, self.arrays, self.names)):
            if not isinstance(item, np.ndarray):
                if isinstance(item, (float, np.floating)) and array.size == 1:
                    item = np.asarray(item)
                else:
                    raise TypeError(f"{what} for parameter {name!r} must be a numpy array "
                                    f"of shape {array.shape}, got {type(item).__name__}")
            if item.dtype.kind != "f":
                raise TypeError(f"{what} for parameter {name!r} has dtype {item.dtype}; "
                                "expected a real floating-point array")
            # Strict on shape: a (1, 5) gradient for a (5, 1) bias is usually a
            # broadcasting bug in the backward pass, which is what we are here to find.
            if item.shape != array.shape:
                raise ValueError(f"{what} for parameter {name!r} has shape {item.shape}, "
                                 f"but the parameter has shape {array.shape}")
            out[self.offsets[i]:self.offsets[i + 1]] = item.ravel()
        return out

    # ------------------------------------------------------ snapshot / restore
    def snapshot(self) -> Snapshot:
        """Copies of every array (one O(n) copy, to verify and guarantee restores),
        and which object each entry of the user's container held."""
        return Snapshot([a.copy() for a in self.arrays], self._entries())

    def _entries(self) -> tuple:
        """(key, object) for each entry of a dict or list, in order; () otherwise.
        A loss that rebinds an entry (``p["b"] = np.clip(p["b"], -5, 5)``) leaves
        the arrays the kernel perturbs untouched but reads another one."""
        if self.kind == "dict":
            return tuple(self.params.items())
        if self.kind == "list":
            return tuple(enumerate(self.params))
        return ()

    def changed_since(self, snapshot: list[np.ndarray]) -> list[str]:
        """The parameters whose bits differ from `snapshot`, by name, and the
        container entries that were rebound, added or removed, each described
        (``"b (the dict entry now holds another object)"``)."""
        changed = [name for name, a, s in zip(self.names, self.arrays, snapshot)
                   if a.tobytes() != s.tobytes()]
        entries = getattr(snapshot, "entries", None)
        if entries is not None and not _same_entries(self._entries(), entries):
            changed += self._rebound(entries)
        return changed

    def _rebound(self, entries: tuple) -> list[str]:
        kind = self.kind
        now = dict(self._entries())
        before = dict(entries)
        found = []
        for key, name in zip(self.keys, self.names):
            if key not in now:
                found.append(f"{name} (removed from the {kind})")
            elif now[key] is not before[key]:
                found.append(f"{name} (the {kind} entry now holds another object)")
        found += [f"{key!s} (added to the {kind})" for key in now if key not in before]
        if not found:  # same entries, another order
            found.append(f"the order of the {kind}'s entries")
        return found

    def call_unchanged(self, function: Any, what: str) -> Any:
        """Call ``function()`` once at the parameters as they are; it must leave
        them unchanged (as `before_eval` must).

        Raises
        ------
        ValueError
            Naming `what` and the parameters it changed, after restoring them.
        Exception
            Whatever `function` raised, with a note naming `what`, after restoring.
        """
        snapshot = self.snapshot()
        try:
            value = function()
        except BaseException as exc:
            if self.changed_since(snapshot):
                self.restore(snapshot)
            if hasattr(exc, "add_note"):  # Python >= 3.11
                exc.add_note(f"raised by {what}")
            raise
        changed = self.changed_since(snapshot)
        if changed:
            self.restore(snapshot)
            raise ValueError(
                f"{what} modified the parameters {changed}; it is called before every "
                "evaluation of the loss and must leave them as they are (they were "
                "restored). Reset other state in it, e.g. a random seed")
        return value

    def restore(self, snapshot: list[np.ndarray]) -> None:
        """Put the user's own arrays back in their container, and write `snapshot`
        back into them, bit for bit."""
        entries = getattr(snapshot, "entries", ())
        if entries and not _same_entries(self._entries(), entries):
            if self.kind == "dict" and isinstance(self.params, MutableMapping):
                self.params.clear()
                self.params.update(entries)
            elif self.kind == "list":
                self.params[:] = [value for _, value in entries]
        for a, s in zip(self.arrays, snapshot):
            a[...] = s


def _same_entries(now: tuple, before: tuple) -> bool:
    """The same keys in the same order, each holding the very same object."""
    return len(now) == len(before) and all(
        k1 == k2 and v1 is v2 for (k1, v1), (k2, v2) in zip(now, before))


class Snapshot(list):
    """Copies of a layout's arrays (a list, in order), with the container's
    entries at the time: ``entries`` holds (key, object) pairs."""

    def __init__(self, copies: list[np.ndarray], entries: tuple) -> None:
        super().__init__(copies)
        self.entries = entries


def as_layout(params: Any, name: str = "theta") -> ParamLayout:
    """Validate `params` and return its :class:`ParamLayout` (see there)."""
    if isinstance(params, ParamLayout):
        return params
    return ParamLayout(params, name=name)
