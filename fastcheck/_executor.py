"""Scale-out: run the kernel's components in shards on any concurrent.futures Executor.

A full check is embarrassingly parallel: component i needs only J(θ ± h e_i).  With
``executor=`` the requested components are cut into contiguous shards; each task
gets the loss and the parameters (pickled once, in the caller, into one payload),
the shard's flat indices and the step settings, and runs the ordinary C kernel in
place on a *private copy* of the parameters in the worker.  It returns the raw
evaluations; the caller writes them back by position into one
:class:`~fastcheck._evaluate.RawEvaluations`, exactly as a serial run lays them out.

Design notes:

1. Bit-for-bit equal to a serial run.  The kernel's step depends only on the value
   θ_i and eps (``h = (x + eps·max(1, |x|)) − x``), and pickling float arrays is
   exact, so a worker's private copy yields the same steps and -- for a loss that
   is a deterministic function of the parameter *values* -- the same loss values.
   (A loss whose rounding depends on memory layout or addresses, or on the number of
   BLAS threads, may differ in the last bits between machines; that is the loss's
   property, not the sharding's.)
2. What crosses the process boundary.  One payload, ``pickle.dumps((loss,
   params))``, made once in the caller (cloudpickle when plain pickle refuses a
   lambda or closure and cloudpickle is installed).  Pickling the pair together keeps
   shared objects shared: a loss that is a bound method of an object holding the very
   params arrays still sees the worker's copy.  A loss that reads the parameters
   through *views* it captured (``theta[0:10].reshape(...)``) does not: views are
   pickled as separate copies.  Read the parameters from the loss's argument.
3. Pickled once, unpickled once per worker.  The payload bytes go with every shard
   (a memcpy-sized cost: 8 bytes per component per shard; shards are few, by default
   4 per worker), but each worker thread unpickles a payload once and keeps the
   private copy for the next shards of the same check (a small cache keyed by a
   token per check and by thread, so threads of one worker never share a copy).
4. The caller's parameters are never touched by the workers.  A loss that fails in
   a worker comes back as the same exception (same type where it can be pickled),
   its message extended with the shard's component range; the other shards are
   cancelled.
5. A C loss (scipy.LowLevelCallable) is a function pointer plus a user-data pointer
   into this process's memory: it cannot cross processes.  It is refused with the
   alternative: ``threads=`` runs it in parallel inside the kernel.
"""

from __future__ import annotations

import math
import os
import pickle
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, wait
from typing import Any

import numpy as np

from fastcheck import _kernel
from fastcheck._lowlevel import is_c_loss
from fastcheck._params import ParamLayout
from fastcheck._raw import METHODS, RawEvaluations, run_serial

__all__ = ["check_executor", "default_shards", "run_sharded"]

# Shards per worker: more than one so that a slow shard does not leave the other
# workers idle at the end; few, because each shard carries the payload.
SHARDS_PER_WORKER = 4
# No shard smaller than this (a tiny check is not worth many round trips).
MIN_SHARD = 16
# Private copies a worker thread keeps (one per check in flight).
CACHE_SIZE = 2


def _cloudpickle() -> Any:
    """The cloudpickle module, or None when it is not installed."""
    try:
        import cloudpickle
    except ImportError:
        return None
    return cloudpickle


def _pickle_error(what: str, exc: BaseException) -> TypeError:
    has_cloudpickle = _cloudpickle() is not None
    advice = ("define it as a module-level function (def loss(params): ... at the top "
              "level of an importable module) or a module-level class with __call__")
    if not has_cloudpickle:
        advice += (", or install cloudpickle (pip install cloudpickle), which also "
                   "pickles lambdas and closures (dask.distributed uses it)")
    else:
        advice += ("; cloudpickle was tried too. Objects such as open files, locks, "
                   "sockets or GPU handles cannot be pickled: create them inside the "
                   "loss instead")
    return TypeError(
        f"executor= sends the {what} to worker processes, but it cannot be pickled "
        f"({type(exc).__name__}: {exc}). To run a check on an executor, {advice}. "
        "Or drop executor= to run the check in this process")


def _dumps(obj: Any, what: str) -> bytes:
    """Pickle `obj`; fall back to cloudpickle; else a TypeError that says what to do."""
    try:
        return pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as exc:
        cloudpickle = _cloudpickle()
        if cloudpickle is None:
            raise _pickle_error(what, exc) from exc
        try:
            return cloudpickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc2:
            raise _pickle_error(what, exc2) from exc2


def check_executor(executor: Any, loss: Any = None, threads: int = 1) -> None:
    """Validate ``executor=`` (and the loss that goes with it) before any evaluation.

    Raises
    ------
    TypeError
        When `executor` has no ``submit``, the loss is a C function (it cannot cross
        processes), or the loss cannot be pickled.
    ValueError
        When ``threads`` is also given.
    """
    if executor is None:
        return
    if not callable(getattr(executor, "submit", None)):
        raise TypeError(
            "executor must be a concurrent.futures.Executor (an object with "
            "submit(fn, *args) returning a future), e.g. ProcessPoolExecutor(4) or "
            f"dask.distributed's Client(...).get_executor(); got {type(executor).__name__}")
    if loss is not None and is_c_loss(loss):
        raise TypeError(
            "executor= cannot run a C loss (a scipy.LowLevelCallable, fastcheck.CLoss or C "
            "function pointer): a C loss cannot cross processes. It is a function "
            "pointer with a user-data pointer into this process's memory, which mean "
            "nothing in another process and cannot be pickled. Use threads=N instead: "
            "the kernel then runs the C loss on N threads without the GIL, each on a "
            "private copy of the parameters. To use many machines, wrap the C function "
            "in a Python loss that loads it in the worker (e.g. through ctypes)")
    if threads != 1:
        raise ValueError(
            f"give either executor= or threads={threads}, not both: threads= is for C "
            "losses in this process, executor= for Python losses in other processes")
    if loss is not None:
        _dumps(loss, "loss")


def executor_workers(executor: Any) -> int:
    """How many tasks `executor` runs at once (best effort)."""
    n = getattr(executor, "_max_workers", None)
    if isinstance(n, int) and n > 0:
        return n
    client = getattr(executor, "_client", None)  # dask.distributed's ClientExecutor
    if client is not None:
        try:
            return max(1, int(sum(client.nthreads().values())))
        except Exception:
            pass
    return os.cpu_count() or 1


def default_shards(executor: Any, count: int) -> int:
    """Shards for `count` components: 4 per worker, none smaller than 16 components."""
    by_size = max(1, math.ceil(count / MIN_SHARD))
    return max(1, min(SHARDS_PER_WORKER * executor_workers(executor), by_size, count))


# ----------------------------------------------------------------- the worker side
_local = threading.local()


def _private_copy(token: str, payload: bytes) -> tuple[Callable, ParamLayout]:
    """This thread's unpickled (loss, layout) for the check `token` (note 3)."""
    cache = getattr(_local, "cache", None)
    if cache is None:
        cache = _local.cache = OrderedDict()
    if token in cache:
        cache.move_to_end(token)
        return cache[token]
    loss, params = pickle.loads(payload)
    entry = (loss, ParamLayout(params))
    cache[token] = entry
    while len(cache) > CACHE_SIZE:
        cache.popitem(last=False)
    return entry


def _forget(token: str) -> None:
    cache = getattr(_local, "cache", None)
    if cache is not None:
        cache.pop(token, None)


def _portable(exc: BaseException) -> BaseException:
    """`exc` itself when it survives a pickle round trip, else a RuntimeError saying
    what it was (a custom exception whose __init__ needs other arguments does not)."""
    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:
        return RuntimeError(f"{type(exc).__module__}.{type(exc).__qualname__}: {exc}")
    return exc


def _shard_task(token: str, payload: bytes, method: str, eps: float | None,
                relative: bool, indices: np.ndarray, eps_each: np.ndarray | None,
                with_center: bool) -> dict:
    """Run one shard on this worker's private copy; return the raw arrays.

    Module-level so that executors pickle it by reference.
    """
    loss, layout = _private_copy(token, payload)
    snapshot = layout.snapshot()
    try:
        raw = run_serial(loss, layout, method, eps=eps, relative=relative, indices=indices,
                         eps_each=eps_each, with_center=with_center)
    except BaseException as exc:
        _forget(token)
        portable = _portable(exc)
        if portable is exc:
            raise
        raise portable from None
    changed = layout.changed_since(snapshot)
    if changed:
        _forget(token)
        raise ValueError(f"the loss modified the parameters {changed} in a worker; a loss "
                         "must only read them. No verdict on the gradient")
    return {"center": raw.center, "plus": raw.plus, "minus": raw.minus, "plus2": raw.plus2,
            "minus2": raw.minus2, "step": raw.step, "calls": raw.calls}


# ----------------------------------------------------------------- the caller side
def _annotate(exc: BaseException, text: str, lo: int, hi: int) -> None:
    """Add the shard's description to `exc`, keeping its type (note 4)."""
    try:
        exc.fastcheck_shard = (lo, hi)
    except Exception:  # pragma: no cover - exceptions with __slots__
        pass
    if exc.args and isinstance(exc.args[0], str):
        exc.args = (f"{exc.args[0]} [{text}]", *exc.args[1:])
    elif hasattr(exc, "add_note"):
        exc.add_note(text)
    elif not exc.args:  # pragma: no cover - Python 3.10
        exc.args = (text,)


def run_sharded(
    executor: Any,
    loss: Callable[[Any], Any],
    layout: ParamLayout,
    method: str = "central",
    *,
    eps: float | None = None,
    relative: bool | None = None,
    indices: np.ndarray | None = None,
    eps_each: np.ndarray | None = None,
    progress: Callable[[int, int], Any] | None = None,
    with_center: bool = True,
    threads: int = 1,
    shards: int | None = None,
) -> RawEvaluations:
    """:func:`~fastcheck._evaluate.run_kernel` in shards on `executor`.

    Same parameters and result as ``run_kernel`` (identical arrays, bit for bit),
    plus `executor` and `shards` (default: :func:`default_shards`).  `progress` is
    called as shards complete.
    """
    check_executor(executor, None, threads)
    if is_c_loss(loss):
        check_executor(executor, loss)  # raises, explaining why
    m = METHODS[method]
    if relative is None:
        relative = eps is None
    n_all = layout.size
    flat = (np.arange(n_all, dtype=np.intp) if indices is None
            else np.ascontiguousarray(indices, dtype=np.intp))
    count = flat.size
    if eps_each is not None:
        eps_each = np.ascontiguousarray(eps_each, dtype=np.float64)
        if eps_each.size != count:
            raise ValueError("eps_each must hold one step per requested component")
    if shards is None:
        shards = default_shards(executor, count)
    if isinstance(shards, bool) or not isinstance(shards, (int, np.integer)) or shards < 1:
        raise ValueError(f"shards must be an integer >= 1, got {shards!r}")
    shards = int(min(shards, max(count, 1)))

    started = time.perf_counter()
    payload = _dumps((loss, layout.params), "loss and its parameters")
    token = uuid.uuid4().hex
    bounds = np.linspace(0, count, shards + 1).round().astype(np.intp)
    out = {key: (np.empty(count) if m.evals & flag else None)
           for key, flag in (("plus", _kernel.EVAL_PLUS), ("minus", _kernel.EVAL_MINUS),
                             ("plus2", _kernel.EVAL_PLUS2), ("minus2", _kernel.EVAL_MINUS2))}
    step = np.empty(count)
    center = None
    calls = 0
    futures = {}
    try:
        for s in range(shards):
            lo, hi = int(bounds[s]), int(bounds[s + 1])
            fut = executor.submit(
                _shard_task, token, payload, method, eps, bool(relative), flat[lo:hi],
                None if eps_each is None else eps_each[lo:hi], with_center and s == 0)
            futures[fut] = (s, lo, hi)
        pending = set(futures)
        done_count = 0
        while pending:
            done, pending = wait(pending, return_when=FIRST_EXCEPTION)
            for fut in done:
                s, lo, hi = futures[fut]
                try:
                    result = fut.result()
                except BaseException as exc:
                    names = (f"{layout.name_of(int(flat[lo]))} .. "
                             f"{layout.name_of(int(flat[hi - 1]))}" if hi > lo else "none")
                    _annotate(exc, f"in shard {s + 1} of {shards} on an executor worker: "
                                   f"components {lo}..{hi - 1} of the {count} checked "
                                   f"({names}); the caller's parameters were not modified",
                              lo, hi)
                    raise
                for key in out:
                    if out[key] is not None:
                        out[key][lo:hi] = result[key]
                step[lo:hi] = result["step"]
                calls += result["calls"]
                if result["center"] is not None:
                    center = result["center"]
                done_count += hi - lo
                if progress is not None:
                    progress(done_count, count)
    except BaseException:
        for fut in futures:
            fut.cancel()
        raise
    return RawEvaluations(
        method=m, indices=None if indices is None else flat, center=center,
        plus=out["plus"], minus=out["minus"], plus2=out["plus2"], minus2=out["minus2"],
        step=step, calls=calls, seconds=time.perf_counter() - started,
        extra={"shards": shards, "executor": type(executor).__name__})

