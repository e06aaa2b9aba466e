#!/usr/bin/env python
"""The fastcheck benchmark: fastcheck against its peers on seeded workloads.

Usage (from the repository root)::

    python bench/run.py                     # full run, under 15 minutes on 2 cores
    python bench/run.py --quick             # smoke test, under a minute (CI)
    python bench/run.py --only quadratic --max-n 100000 --repeats 3

Every tool computes (or checks) the gradient of the same loss at the same
parameters; the table says which difference scheme each uses. For each tool
and workload the run reports the median (min, max) wall time of the timed
region over repeats, microseconds per component, the ratio to the bare-loop
floor, the loss evaluations of one run, the tracemalloc peak of one extra
untimed run, and the relative error of the numerical gradient against the
analytic one. Where a full run would take too long, a seeded subset of
components is timed (or, for peers with no subset API, the run is stopped
after its first k components) and the note says so.

Outputs ``results.md``, ``results.json`` and (with matplotlib) ``results.png``
in ``--out`` (default ``bench/results/``, or ``bench/results/quick/`` for
``--quick``). The exit status is 1 when any benchmark raised or produced a
wrong result, never because of a timing. Optional sections from
``bench/bench_closs.py``, ``bench_large.py``, ``bench_executor.py``,
``correctness_table.py`` and ``bench_budget.py`` (each ``run(quick: bool) -> list[dict]``) are run
when present and skipped with a note when not.
"""

from __future__ import annotations

import argparse
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))

#: Thread-count variables of the BLAS / OpenMP runtimes numpy, scipy and torch use.
BLAS_THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
                    "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")

#: Workload kinds of the core section, and the optional sections: (name, module, what).
KINDS = ("quadratic", "logistic", "mlp")
SECTIONS = (
    ("closs", "bench_closs", "fastcheck with a C loss (scipy.LowLevelCallable) and threads"),
    ("large", "bench_large", "finding wrong components among 1e6 (directional, sample)"),
    ("executor", "bench_executor", "fastcheck with executor="),
    ("correctness", "correctness_table", "verdicts of every checker on seeded bugs"),
    ("budget", "bench_budget", "check_grad(budget=) on 1e6 parameters: wall time vs budget"),
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line (stdlib only: runs before numpy is imported)."""
    p = argparse.ArgumentParser(
        description="Benchmark fastcheck against its peers (see bench/README.md).")
    p.add_argument("--quick", action="store_true",
                   help="smoke test: quadratic n=1e3, 1e4 and the small MLP, few repeats, "
                        "under a minute; exits 1 if a benchmark breaks, never on timings")
    p.add_argument("--out", default=None,
                   help="output folder (default bench/results/, bench/results/quick/ "
                        "with --quick)")
    p.add_argument("--only", default=None,
                   help="comma list of workload kinds (quadratic, logistic, mlp), 'core' "
                        "(all three) and optional sections (closs, large, executor, "
                        "correctness); everything else is skipped")
    p.add_argument("--tools", default=None,
                   help="comma list of tool-name prefixes for the core section, e.g. "
                        "'fastcheck,bare_floor' (default: all)")
    p.add_argument("--max-n", type=int, default=None,
                   help="leave out core workloads with more parameters than this")
    p.add_argument("--repeats", type=int, default=None,
                   help="timed repeats per tool and workload (default: adaptive, "
                        "3..15 full, 3..10 quick)")
    p.add_argument("--blas-threads", default="1",
                   help="value for OPENBLAS/OMP/MKL_NUM_THREADS, set before numpy is "
                        "imported (default 1, for fairness); 'env' keeps the environment's")
    p.add_argument("--seed", type=int, default=0, help="seed of workloads and samples")
    p.add_argument("--no-plot", action="store_true", help="do not write results.png")
    args = p.parse_args(argv)
    only = set(_split_list(args.only))
    known = {"core", *KINDS, *(s[0] for s in SECTIONS)}
    if only - known:
        p.error(f"--only: unknown {', '.join(sorted(only - known))}; "
                f"known: {', '.join(sorted(known))}")
    if args.repeats is not None and args.repeats < 1:
        p.error("--repeats must be >= 1")
    if args.blas_threads != "env" and not args.blas_threads.isdigit():
        p.error("--blas-threads must be a positive integer or 'env'")
    return args


def _split_list(text: str | None) -> list[str]:
    return [t.strip() for t in (text or "").split(",") if t.strip()]


def pin_blas_threads(value: str) -> dict[str, str | None]:
    """Set the BLAS thread variables (before numpy is imported); return them."""
    if value != "env":
        for var in BLAS_THREAD_VARS:
            os.environ[var] = value
    return {var: os.environ.get(var) for var in BLAS_THREAD_VARS}


if __name__ == "__main__":
    ARGS = parse_args()
    pin_blas_threads(ARGS.blas_threads)

# numpy and everything that imports it come after the thread variables are set.
import gc  # noqa: E402
import importlib  # noqa: E402
import inspect  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
import tracemalloc  # noqa: E402
from collections.abc import Callable  # noqa: E402
from dataclasses import asdict, dataclass, field, fields  # noqa: E402
from datetime import datetime, timezone  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

if HERE not in sys.path:
    sys.path.insert(0, HERE)

import peers  # noqa: E402
from workloads import MLP, Logistic, Quadratic, Workload, relative_error  # noqa: E402

# ---------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------


@dataclass
class Row:
    """One line of a results table: one tool on one workload.

    ``median_s``/``min_s``/``max_s`` are over the timed repeats of one run
    (all n components, or the ``components`` sampled); ``us_per_component``
    is ``median_s / components``; ``ratio_to_floor`` divides it by the
    floor's (bare Python loop, or the C loop for C losses); ``evals`` are the
    loss evaluations of one run; ``peak_mb`` is the tracemalloc peak above the
    start of one untimed run; ``accuracy`` is ``‖num − analytic‖ /
    (‖num‖ + ‖analytic‖)`` over the components the tool returned.
    """

    tool: str
    workload: str = ""
    n: int = 0
    method: str = ""
    median_s: float | None = None
    min_s: float | None = None
    max_s: float | None = None
    us_per_component: float | None = None
    ratio_to_floor: float | None = None
    evals: int | None = None
    peak_mb: float | None = None
    accuracy: float | None = None
    note: str = ""
    section: str = "core"
    status: str = "ok"  # ok | skipped | error
    components: int | None = None
    repeats: int = 0
    floor: str | None = None
    extra: dict = field(default_factory=dict)


@dataclass
class Run:
    """What one run of a tool gave.

    ``seconds`` is the timed region only; ``grad`` the numerical gradient on
    ``index`` (None: every component), or None when the tool returns no
    gradient; ``accuracy`` when the tool measures it itself (check_grad).
    """

    seconds: float
    components: int
    evals: int | None = None
    grad: np.ndarray | None = None
    index: np.ndarray | None = None
    accuracy: float | None = None
    note: str = ""
    after: Callable[[], None] | None = None  # a check run outside timing and tracing


@dataclass
class Job:
    """One tool on one workload: ``fn(warm)`` makes one run."""

    tool: str
    method: str
    fn: Callable[[bool], Run]
    note: str = ""
    floor: str | None = "bare_floor"
    outside: Callable[[], float] | None = None  # seconds spent outside loss calls


@dataclass(frozen=True)
class Settings:
    """How long runs may take, and how many repeats they get."""

    quick: bool
    repeats: int | None  # fixed repeats, or None for adaptive
    run_budget: float  # a run estimated longer than this is sampled
    job_budget: float  # timed seconds per job that set the adaptive repeats
    min_repeats: int
    max_repeats: int
    max_full: float  # longest full run for tools with no component subset
    min_sample: int
    overhead_n: int  # n of the check_grad-over-numerical_grad rows
    seed: int
    tools: tuple[str, ...]
    torch_threads: int | None


def make_settings(args: argparse.Namespace) -> Settings:
    common = dict(repeats=args.repeats, seed=args.seed, tools=tuple(_split_list(args.tools)),
                  torch_threads=None if args.blas_threads == "env" else int(args.blas_threads))
    if args.quick:
        return Settings(quick=True, run_budget=0.2, job_budget=0.3, min_repeats=3,
                        max_repeats=7, max_full=0.5, min_sample=100, overhead_n=10_000,
                        **common)
    return Settings(quick=False, run_budget=1.5, job_budget=8.0, min_repeats=3,
                    max_repeats=15, max_full=30.0, min_sample=200, overhead_n=100_000,
                    **common)


class BenchmarkError(RuntimeError):
    """A benchmark ran but its result is wrong (e.g. parameters not restored)."""


class SkipJob(Exception):
    """This tool does not apply here; the message says why."""


# ---------------------------------------------------------------------------
# Measuring
# ---------------------------------------------------------------------------


class Counted:
    """A loss that counts its calls (only in the untimed warm-up run)."""

    def __init__(self, f: Callable[..., Any]) -> None:
        self.f = f
        self.calls = 0

    def __call__(self, *args: Any) -> Any:
        self.calls += 1
        return self.f(*args)


class Stamped:
    """A loss that records when its first call started and its last ended."""

    def __init__(self, f: Callable[..., Any]) -> None:
        self.f = f
        self.first: float | None = None
        self.last: float | None = None

    def __call__(self, *args: Any) -> Any:
        if self.first is None:
            self.first = time.perf_counter()
        value = self.f(*args)
        self.last = time.perf_counter()
        return value


def outside_loss(call: Callable[[Callable[..., Any]], Any], loss: Callable[..., Any]) -> float:
    """Seconds ``call(stamped_loss)`` spends before the first and after the
    last loss call: a tool's own O(n) set-up and post-processing, measured
    without the noise of the 2n evaluations in between."""
    stamped = Stamped(loss)
    gc.collect()
    t0 = time.perf_counter()
    call(stamped)
    wall = time.perf_counter() - t0
    return wall - (stamped.last - stamped.first)


class StopRun(Exception):
    """Raised by a truncated loss to end a peer's run early."""


class Truncated:
    """A workload whose loss stops the run after ``max_calls`` evaluations.

    For peers that have no component subset: their loop is the same for every
    component, so the time between the loss calls of their steady loop, per
    component, is their cost per component. Each call's start is recorded;
    the first ``SETUP_CALLS`` (the peer's f(θ) and set-up calls) are left out.
    """

    SETUP_CALLS = 8

    def __init__(self, workload: Workload, components: int, evals_per_component: int) -> None:
        self._w = workload
        self.epc = evals_per_component
        self.max_calls = self.SETUP_CALLS + evals_per_component * components
        self.stamps: list[float] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._w, name)

    def _tick(self) -> None:
        self.stamps.append(time.perf_counter())
        if len(self.stamps) > self.max_calls:
            raise StopRun

    def flat_loss(self, theta: np.ndarray) -> float:
        self._tick()
        return self._w.flat_loss(theta)

    def torch_loss(self, t: Any) -> Any:
        self._tick()
        return self._w.torch_loss(t)

    def window(self) -> tuple[float, int, int]:
        """(seconds, components, evaluations) of the steady loop."""
        first, last = self.SETUP_CALLS, len(self.stamps) - 1
        if last <= first:
            raise BenchmarkError("truncated run ended before its loop started")
        calls = last - first
        return self.stamps[last] - self.stamps[first], calls // self.epc, calls


def freeze_heap() -> None:
    """Move every object alive now (modules of numpy, scipy, torch, jax, ...)
    out of the collector's reach, so the ``gc.collect()`` before each run
    takes microseconds, not the ~0.1 s a full collection takes with torch
    loaded. Called between jobs, never inside a timed region."""
    gc.collect()
    gc.freeze()


def time_run(job: Job) -> Run:
    """One timed run, with the garbage collector off (as timeit does)."""
    gc.collect()
    gc.disable()
    try:
        run = job.fn(False)
    finally:
        gc.enable()
    if run.after is not None:
        run.after()
    return run


def warm_run(job: Job) -> tuple[Run, float, float]:
    """The traced run (untimed, under tracemalloc): (run, wall seconds, peak MB)."""
    gc.collect()
    tracemalloc.start()
    try:
        start, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        t0 = time.perf_counter()
        run = job.fn(True)
        wall = time.perf_counter() - t0
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    if run.after is not None:
        run.after()
    return run, wall, max(0, peak - start) / 2**20


def repeats_for(settings: Settings, run_seconds: float) -> int:
    if settings.repeats is not None:
        return settings.repeats
    by_budget = int(settings.job_budget / max(run_seconds, 1e-6))
    return max(settings.min_repeats, min(settings.max_repeats, by_budget))


def accuracy_of(run: Run, analytic: np.ndarray) -> float | None:
    if run.accuracy is not None:
        return run.accuracy
    if run.grad is None:
        return None
    exact = analytic if run.index is None else analytic[run.index]
    approx = np.asarray(run.grad, dtype=float).ravel()
    if approx.size != exact.size:  # peers return full length with NaN where not run
        approx = approx[run.index] if run.index is not None else approx
    ok = np.isfinite(approx)
    return relative_error(approx[ok], exact[ok]) if ok.any() else None


# ---------------------------------------------------------------------------
# Plans: full run, a sample of components, or a truncated run
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Spec:
    """A tool's cost model, for deciding how much of n to time.

    ``how``: "index" (takes a component subset), "truncate" (can be stopped
    after k components), "full" (neither: full runs only), "constant" (cost
    does not grow with n).
    """

    evals: float
    copies: float
    overhead_us: float
    how: str
    loss_factor: float = 1.0


SPECS: dict[str, Spec] = {
    "bare_floor": Spec(2, 0, 0.1, "index"),
    "c_floor": Spec(2, 0, 0.05, "index", loss_factor=0.6),
    "python_inplace": Spec(2, 0, 0.5, "index"),
    "naive_copy": Spec(2, 2, 0.5, "index"),
    "scipy_approx_derivative": Spec(2, 4, 3.0, "truncate"),
    "scipy_check_grad": Spec(1, 1, 2.0, "truncate"),
    "numdifftools_gradient": Spec(30, 0, 20.0, "full"),
    "torch_gradcheck": Spec(2, 0, 25.0, "truncate", loss_factor=1.2),
    "torch_gradcheck_fast": Spec(0, 0, 0, "constant"),
    "jax_check_grads": Spec(0, 0, 0, "constant"),
    "fastcheck": Spec(2, 0, 0.2, "index"),
    "fastcheck forward": Spec(1, 0, 0.2, "index"),
    "fastcheck check_grad": Spec(2, 0, 0.2, "full"),
    "fastcheck mode": Spec(0, 0, 0, "constant"),
}


@dataclass(frozen=True)
class Plan:
    index: np.ndarray | None = None  # components to time (None: all)
    truncate_at: int | None = None  # stop the peer after this many components
    note: str = ""


@dataclass(frozen=True)
class Profile:
    """Cost of one loss call and one copy of θ, measured on the workload."""

    loss_s: float
    copy_s: float


def profile_workload(w: Workload) -> Profile:
    theta = w.theta0()
    calls = max(3, min(200, int(2e5 / w.n)))

    def per_call(f: Callable[[], Any]) -> float:
        samples = []
        for _ in range(5):
            t0 = time.perf_counter()
            for _ in range(calls):
                f()
            samples.append((time.perf_counter() - t0) / calls)
        return float(np.median(samples))

    return Profile(per_call(lambda: w.flat_loss(theta)), per_call(theta.copy))


def plan_for(spec: Spec, n: int, prof: Profile, settings: Settings,
             force_full: bool = False) -> Plan:
    per = (spec.evals * prof.loss_s * spec.loss_factor + spec.copies * prof.copy_s
           + spec.overhead_us * 1e-6)
    estimate = n * per
    if spec.how == "constant" or force_full or estimate <= settings.run_budget:
        return Plan()
    if spec.how == "full":
        if estimate <= settings.max_full:
            return Plan()
        raise SkipJob(f"a full run would take about {estimate:.0f} s (limit "
                      f"{settings.max_full:g} s here) and it has no component subset")
    k = max(settings.min_sample, int(settings.run_budget / per))
    if k >= n:
        return Plan()
    if spec.how == "index":
        return Plan(index=peers.sample_components(n, k, settings.seed),
                    note=f"sampled {k:,} of {n:,} components (seeded)")
    return Plan(truncate_at=k, note=f"stopped after {k:,} of {n:,} components (no subset "
                                    "API): µs/component from its steady loop")


# ---------------------------------------------------------------------------
# Jobs: peers
# ---------------------------------------------------------------------------


#: The difference scheme of each peer, for the table (compare like with like).
PEER_METHODS = {
    "bare_floor": "none (floor)",
    "c_floor": "central, C loss",
    "python_inplace": "central",
    "naive_copy": "central",
    "scipy_approx_derivative": "central (3-point)",
    "scipy_check_grad": "forward",
    "numdifftools_gradient": "central + Richardson",
    "torch_gradcheck": "central",
    "torch_gradcheck_fast": "random direction, central",
    "jax_check_grads": "random direction, central",
}


def peer_call(name: str, settings: Settings) -> Callable[..., dict]:
    """The peer function with the options this benchmark uses."""
    if name == "torch_gradcheck":
        return lambda w, **kw: peers.run_torch_gradcheck(
            w, fast_mode=False, max_n=None, threads=settings.torch_threads, **kw)
    if name == "torch_gradcheck_fast":
        return lambda w, **kw: peers.run_torch_gradcheck(
            w, fast_mode=True, threads=settings.torch_threads, **kw)
    return peers.PEERS[name]


def peer_job(name: str, w: Workload, prof: Profile, settings: Settings) -> Job:
    spec = SPECS[name]
    plan = plan_for(spec, w.n, prof, settings)
    call = peer_call(name, settings)

    def fn(warm: bool) -> Run:
        if plan.truncate_at is not None:
            proxy = Truncated(w, plan.truncate_at, int(spec.evals))
            try:
                call(proxy)
            except StopRun:
                seconds, comps, evals = proxy.window()
                return Run(seconds, comps, evals)
            raise BenchmarkError(f"{name} finished before the planned stop")
        kwargs = {} if plan.index is None else {"components": plan.index}
        res = call(w, **kwargs)
        comps = w.n if plan.index is None else plan.index.size
        return Run(res["seconds"], comps, res["evals"], res["grad"], plan.index,
                   note=res["note"])

    return Job(name, PEER_METHODS.get(name, "?"), fn, plan.note,
               floor=None if name == "bare_floor" else "bare_floor")


# ---------------------------------------------------------------------------
# Jobs: fastcheck
# ---------------------------------------------------------------------------

_FASTCHECK: dict[str, Any] = {}


def load_fastcheck() -> Any:
    """Import fastcheck once (public API only)."""
    if "module" not in _FASTCHECK:
        import fastcheck

        _FASTCHECK["module"] = fastcheck
    return _FASTCHECK["module"]


def _restored(w: Workload, params: Any, tool: str) -> None:
    """Check (outside the timing) that a run left the parameters bit for bit."""
    if not np.array_equal(w.flatten(params), w.theta0()):
        raise BenchmarkError(f"{tool} did not restore the parameters bit for bit")


def numerical_grad_job(w: Workload, prof: Profile, settings: Settings, method: str = "central",
                       structured: bool = False, force_full: bool = False,
                       tool: str = "fastcheck.numerical_grad") -> Job:
    """numerical_grad on the flat vector (as the peers see it) or on the
    workload's own structure (dict of arrays for the MLP, no unflatten)."""
    fc = load_fastcheck()
    spec = SPECS["fastcheck forward" if method == "forward" else "fastcheck"]
    plan = plan_for(spec, w.n, prof, settings, force_full=force_full)
    if plan.index is not None and "indices" not in inspect.signature(
            fc.numerical_grad).parameters:
        raise SkipJob("sampling needs numerical_grad(indices=) (fastcheck >= 0.2)")
    base_loss = w.loss if structured else w.flat_loss

    def fn(warm: bool) -> Run:
        params = w.make_params() if structured else w.theta0()
        loss = Counted(base_loss) if warm else base_loss
        if plan.index is None:
            t0 = time.perf_counter()
            g = fc.numerical_grad(loss, params, method=method)
            seconds = time.perf_counter() - t0
            grad, comps = w.flatten(g), w.n
        else:
            t0 = time.perf_counter()
            grad = fc.numerical_grad(loss, params, method=method, indices=plan.index)
            seconds = time.perf_counter() - t0
            comps = plan.index.size
        return Run(seconds, comps, loss.calls if warm else None, grad, plan.index,
                   after=lambda: _restored(w, params, tool))

    def outside() -> float:
        return outside_loss(lambda f: fc.numerical_grad(f, w.theta0(), method=method),
                            base_loss)

    notes = [plan.note] if plan.note else []
    if plan.index is not None:
        notes.append("via numerical_grad(indices=), the same C loop")
    notes.append("rel. step u^(1/3)·max(1,|x|)" if method == "central"
                 else "rel. step u^(1/2)·max(1,|x|)")
    if structured:
        notes.append("loss on the dict of arrays, no flat vector")
    return Job(tool, method, fn, "; ".join(notes),
               outside=outside if force_full and not structured else None)


def check_grad_job(w: Workload, prof: Profile, settings: Settings, mode: str | None = None,
                   force_full: bool = False) -> Job:
    """check_grad with the analytic gradient as a callable (as scipy's gets)."""
    fc = load_fastcheck()
    tool = "fastcheck.check_grad" + (f" mode={mode}" if mode else "")
    spec = SPECS["fastcheck mode" if mode else "fastcheck check_grad"]
    plan_for(spec, w.n, prof, settings, force_full=force_full)  # SkipJob if too long
    kwargs = {"mode": mode} if mode else {}

    def fn(warm: bool) -> Run:
        theta = w.theta0()
        t0 = time.perf_counter()
        r = fc.check_grad(w.flat_loss, w.flat_grad, theta, **kwargs)
        seconds = time.perf_counter() - t0
        if not r.passed:
            raise BenchmarkError(f"{tool} rejected the correct analytic gradient of {w.name}: "
                                 f"verdict {r.verdict}, relative error {r.relative_error:.3g}")
        acc = r.relative_error if math.isfinite(r.relative_error) else None
        extra = r.extra if isinstance(getattr(r, "extra", None), dict) else {}
        refined = extra.get("suspects_refined")
        note = f"verdict {r.verdict}" + (f", {refined} suspects refined" if refined else "")
        return Run(seconds, w.n, r.evaluations, None, None, accuracy=acc, note=note,
                   after=lambda: _restored(w, theta, tool))

    def outside() -> float:
        return outside_loss(lambda f: fc.check_grad(f, w.flat_grad, w.theta0(), **kwargs),
                            w.flat_loss)

    what = ("metric, noise model and ranking on top of the kernel; grad callable timed"
            if not mode else "µs per parameter of n (the mode evaluates fewer components)")
    return Job(tool, "central" if not mode else mode, fn, what,
               outside=outside if force_full and not mode else None)


_MODE_PROBES: dict[str, tuple[str, str]] = {}


def probe_mode(mode: str) -> tuple[str, str]:
    """Whether check_grad has ``mode`` here, probed once on a tiny problem:
    ("ok", ""), ("missing", why) or ("error", what the probe raised)."""
    if mode not in _MODE_PROBES:
        fc = load_fastcheck()
        w = Quadratic(16, seed=0)
        try:
            fc.check_grad(w.flat_loss, w.flat_grad, w.theta0(), mode=mode)
            _MODE_PROBES[mode] = ("ok", "")
        except (TypeError, ValueError) as exc:
            msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            _MODE_PROBES[mode] = ("missing" if "mode" in msg else "error", msg)
        except Exception as exc:
            _MODE_PROBES[mode] = ("error", f"{type(exc).__name__}: {exc}")
    return _MODE_PROBES[mode]


def failing_job(tool: str, method: str, why: str) -> Job:
    """A job that fails at once (its probe failed): reported as an error row."""
    def fn(warm: bool) -> Run:
        raise BenchmarkError(why)

    return Job(tool, method, fn)


#: check_grad modes benchmarked besides "full" (directional includes the
#: localisation of wrong components); an installed fastcheck without one is
#: detected by calling it (the bench uses only public API).
FASTCHECK_MODES = ("directional", "sample")


def fastcheck_modes() -> list[str]:
    return list(FASTCHECK_MODES)


def fastcheck_jobs(w: Workload, prof: Profile, settings: Settings,
                   skipped: list[tuple[str, str, str]]) -> list[Job]:
    """Every fastcheck mode that applies to a Python loss on ``w``."""
    force = isinstance(w, Quadratic) and w.n == settings.overhead_n
    makers: list[tuple[str, str, Callable[[], Job]]] = [
        ("fastcheck.numerical_grad", "central",
         lambda: numerical_grad_job(w, prof, settings, force_full=force)),
        ("fastcheck.numerical_grad [forward]", "forward",
         lambda: numerical_grad_job(w, prof, settings, method="forward",
                                    tool="fastcheck.numerical_grad [forward]")),
    ]
    if isinstance(w, MLP):
        makers.append(("fastcheck.numerical_grad [dict]", "central",
                       lambda: numerical_grad_job(w, prof, settings, structured=True,
                                                  tool="fastcheck.numerical_grad [dict]")))
    makers.append(("fastcheck.check_grad", "central",
                   lambda: check_grad_job(w, prof, settings, force_full=force)))
    for mode in fastcheck_modes():
        tool = f"fastcheck.check_grad mode={mode}"
        status, why = probe_mode(mode)
        if status == "ok":
            makers.append((tool, mode,
                           lambda mode=mode: check_grad_job(w, prof, settings, mode=mode)))
        elif status == "missing":
            skipped.append((tool, mode, f"not in this fastcheck ({why})"))
        else:
            makers.append((tool, mode, lambda tool=tool, mode=mode, why=why:
                           failing_job(tool, mode, f"probe on n=16 failed: {why}")))
    if isinstance(w, Quadratic):
        skipped.append(("fastcheck C loss (LowLevelCallable)", "central",
                        "see section closs (bench/bench_closs.py)"))
        skipped.append(("fastcheck threads=2", "central", "needs a C loss (a Python loss holds "
                        "the GIL, fastcheck refuses threads > 1 for it): see section closs"))
    jobs = []
    for tool, method, make in makers:
        try:
            jobs.append(make())
        except SkipJob as exc:
            skipped.append((tool, method, str(exc)))
    return jobs


# ---------------------------------------------------------------------------
# The core section
# ---------------------------------------------------------------------------


def core_workloads(quick: bool, kinds: set[str], max_n: int | None, seed: int
                   ) -> list[Workload]:
    if quick:
        made: list[Callable[[], Workload]] = [
            lambda: Quadratic(1_000, seed=seed), lambda: Quadratic(10_000, seed=seed),
            lambda: MLP.small(seed=seed)]
        kinds_of = ["quadratic", "quadratic", "mlp"]
        sizes = [1_000, 10_000, 1_002]
    else:
        made = [lambda n=n: Quadratic(n, seed=seed) for n in (1_000, 10_000, 100_000, 1_000_000)]
        made += [lambda n=n: Logistic(n, seed=seed) for n in (1_000, 10_000)]
        made += [lambda: MLP.small(seed=seed), lambda: MLP.medium(seed=seed)]
        kinds_of = ["quadratic"] * 4 + ["logistic"] * 2 + ["mlp"] * 2
        sizes = [1_000, 10_000, 100_000, 1_000_000, 1_000, 10_000, 1_002, 19_990]
    return [make() for make, kind, n in zip(made, kinds_of, sizes)
            if kind in kinds and (max_n is None or n <= max_n)]


def kind_of(w: Workload) -> str:
    return type(w).__name__.lower()


def selected(tool: str, settings: Settings) -> bool:
    return not settings.tools or any(tool.startswith(t) for t in settings.tools)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


#: Tools that have run once in this process (their one-off costs are paid).
_PREWARMED: set[str] = set()


def run_workload(w: Workload, settings: Settings, errors: list[str]) -> tuple[list[Row], dict]:
    """Warm up, then time every tool on ``w`` in interleaved rounds."""
    prof = profile_workload(w)
    analytic = w.flat_grad(w.theta0())
    log(f"\n[{w.name}] n = {w.n:,}; loss {prof.loss_s * 1e6:.2f} µs/call, "
        f"copy of θ {prof.copy_s * 1e6:.2f} µs")
    skipped: list[tuple[str, str, str]] = []
    jobs: list[Job | tuple[str, str, str]] = []  # a tuple: (tool, method, why skipped)
    for name in peers.PEERS:
        if not selected(name, settings):
            continue
        try:
            jobs.append(peer_job(name, w, prof, settings))
        except SkipJob as exc:
            jobs.append((name, PEER_METHODS.get(name, "?"), str(exc)))
    jobs += [j for j in fastcheck_jobs(w, prof, settings, skipped) if selected(j.tool, settings)]
    jobs += [s for s in skipped if selected(s[0], settings)]

    rows: list[Row] = []
    active: list[tuple[Job, Run, float, int]] = []
    for job in jobs:
        freeze_heap()
        if isinstance(job, tuple):
            rows.append(_skip_row(Row(job[0], w.name, w.n, job[1]), job[2]))
            continue
        base = Row(job.tool, w.name, w.n, job.method, floor=job.floor)
        try:
            if job.tool not in _PREWARMED:  # first use: lazy imports, caches; untraced
                job.fn(False)
                _PREWARMED.add(job.tool)
            run, wall, peak = warm_run(job)
        except peers.PeerUnavailable as exc:
            rows.append(_skip_row(base, exc.reason))
            continue
        except Exception as exc:  # a broken benchmark: record, go on, exit 1 at the end
            rows.append(_error_row(base, exc, errors))
            continue
        reps = repeats_for(settings, run.seconds)
        base.evals, base.peak_mb = run.evals, peak
        base.accuracy = accuracy_of(run, analytic)
        base.components = run.components
        base.note = "; ".join(t for t in (job.note, run.note) if t)
        rows.append(base)
        active.append((job, run, wall, reps))
        log(f"  {job.tool:<37} traced run {wall:8.3f} s -> {reps} timed runs")

    times: dict[str, list[float]] = {job.tool: [] for job, *_ in active}
    comps: dict[str, list[int]] = {job.tool: [] for job, *_ in active}
    failed: set[str] = set()
    rounds = max((reps for *_, reps in active), default=0)
    for r in range(rounds):
        order = active[r % len(active):] + active[:r % len(active)]
        for job, _, _, reps in order:
            if r >= reps or job.tool in failed:
                continue
            try:
                run = time_run(job)
            except Exception as exc:
                failed.add(job.tool)
                row = next(x for x in rows if x.tool == job.tool)
                _error_row(row, exc, errors)
                continue
            times[job.tool].append(run.seconds)
            comps[job.tool].append(run.components)

    for row in rows:
        if row.status == "ok" and times.get(row.tool):
            _fill_timing(row, times[row.tool], comps[row.tool])
    for job, *_ in active:
        if job.outside is not None and job.tool not in failed:
            row = next(x for x in rows if x.tool == job.tool)
            try:
                row.extra["outside_loss_s"] = job.outside()
            except Exception as exc:
                _error_row(row, exc, errors)
    _fill_ratios(rows)
    info = {"workload": w.name, "kind": kind_of(w), "n": w.n, "loss_us": prof.loss_s * 1e6,
            "copy_us": prof.copy_s * 1e6, "times": times}
    return rows, info


def _fill_timing(row: Row, seconds: list[float], components: list[int]) -> None:
    row.median_s = float(np.median(seconds))
    row.min_s, row.max_s = float(min(seconds)), float(max(seconds))
    row.repeats = len(seconds)
    per = [s / c for s, c in zip(seconds, components) if c > 0]
    if per:
        row.us_per_component = float(np.median(per)) * 1e6
        row.components = int(np.median(components))


def _fill_ratios(rows: list[Row]) -> None:
    by_tool = {(r.workload, r.n, r.tool): r for r in rows}
    for r in rows:
        floor = by_tool.get((r.workload, r.n, r.floor)) if r.floor else None
        if r.ratio_to_floor is None and r.us_per_component is not None and floor is not None \
                and floor.us_per_component:
            r.ratio_to_floor = r.us_per_component / floor.us_per_component
        elif r.tool == "bare_floor" and r.us_per_component is not None:
            r.ratio_to_floor = 1.0


def _skip_row(row: Row, why: str) -> Row:
    row.status, row.note = "skipped", f"skipped: {why}"
    log(f"  {row.tool:<37} skipped: {why}")
    return row


def _error_row(row: Row, exc: BaseException, errors: list[str]) -> Row:
    msg = f"{type(exc).__name__}: {exc}".splitlines()[0]
    row.status, row.note = "error", f"ERROR {msg}"
    row.median_s = row.min_s = row.max_s = row.us_per_component = row.ratio_to_floor = None
    errors.append(f"{row.section}/{row.workload}/{row.tool}: {msg}")
    log(f"  {row.tool:<37} ERROR {msg}")
    traceback.print_exception(exc, file=sys.stderr)
    return row


def overhead_rows(rows: list[Row], times: dict[str, dict[str, list[float]]], n: int
                  ) -> list[Row]:
    """check_grad over numerical_grad, both full runs at ``n``, paired by round."""
    name = f"quadratic_n{n}"
    t = times.get(name, {})
    ng, cg = t.get("fastcheck.numerical_grad", []), t.get("fastcheck.check_grad", [])
    full = [r for r in rows if r.workload == name and r.components == n
            and r.tool in ("fastcheck.numerical_grad", "fastcheck.check_grad")]
    if not ng or not cg or len(full) < 2:
        return []
    pairs = [(c - g) / g for g, c in zip(ng, cg)]
    med_ng, med_cg = float(np.median(ng)), float(np.median(cg))
    row_ng, row_cg = sorted(full, key=lambda r: r.tool != "fastcheck.numerical_grad")
    extra: dict[str, Any] = {"overhead_fraction": med_cg / med_ng - 1, "paired_fractions": pairs}
    note = (f"medians of interleaved full runs: check_grad {med_cg:.3f} s vs numerical_grad "
            f"{med_ng:.3f} s = {100 * (med_cg / med_ng - 1):+.2f}% (paired rounds "
            f"{100 * min(pairs):+.2f}% … {100 * max(pairs):+.2f}%)")
    o_ng, o_cg = row_ng.extra.get("outside_loss_s"), row_cg.extra.get("outside_loss_s")
    if o_ng is not None and o_cg is not None:
        extra_evals = (row_cg.evals or 0) - (row_ng.evals or 0)
        per_eval = med_ng / max(row_ng.evals or 1, 1)
        own = o_cg - o_ng + extra_evals * per_eval
        extra.update(outside_loss_check_grad_s=o_cg, outside_loss_numerical_grad_s=o_ng,
                     extra_evals=extra_evals, own_overhead_fraction=own / med_ng)
        note += (f"; outside the loss calls (one instrumented run each): check_grad "
                 f"{1e3 * o_cg:.1f} ms, numerical_grad {1e3 * o_ng:.1f} ms; with its "
                 f"{extra_evals} extra evaluations check_grad adds {1e3 * own:.1f} ms = "
                 f"{100 * own / med_ng:+.2f}% of numerical_grad")
    return [Row("check_grad − numerical_grad", name, n, "central",
                median_s=med_cg - med_ng, min_s=min(c - g for g, c in zip(ng, cg)),
                max_s=max(c - g for g, c in zip(ng, cg)),
                us_per_component=(med_cg - med_ng) / n * 1e6, repeats=len(pairs),
                section="overhead", note=note, extra=extra)]


# ---------------------------------------------------------------------------
# Optional sections
# ---------------------------------------------------------------------------


def run_section(name: str, module: str, quick: bool, errors: list[str]) -> dict:
    """Import ``bench/<module>.py`` if present and return its rows."""
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name == module:
            return {"status": "skipped", "note": f"bench/{module}.py is not present", "rows": []}
        errors.append(f"{name}: import failed: {exc}")
        traceback.print_exc()
        return {"status": "error", "note": f"import failed: {exc}", "rows": []}
    except Exception as exc:
        errors.append(f"{name}: import failed: {exc}")
        traceback.print_exc()
        return {"status": "error", "note": f"import failed: {exc}", "rows": []}
    t0 = time.perf_counter()
    try:
        out = mod.run(quick=quick)
        if not isinstance(out, list) or not all(isinstance(d, dict) for d in out):
            raise BenchmarkError(f"{module}.run must return a list of dicts, got "
                                 f"{type(out).__name__}")
    except Exception as exc:
        errors.append(f"{name}: {type(exc).__name__}: {exc}")
        traceback.print_exc()
        return {"status": "error", "note": f"{type(exc).__name__}: {exc}", "rows": []}
    bad = [d for d in out if str(d.get("status", "ok")) == "error"]
    errors.extend(f"{name}: {d.get('tool', '?')}: {d.get('note', 'error')}" for d in bad)
    return {"status": "ok", "note": f"{len(out)} rows in {time.perf_counter() - t0:.1f} s",
            "rows": out}


def rows_from_dicts(dicts: list[dict], section: str, core: list[Row]) -> list[Row] | None:
    """Rows of a plug-in section, or None when its dicts are not tool rows."""
    if not dicts or not all("tool" in d for d in dicts):
        return None
    names = {f.name for f in fields(Row)}
    floors = {(r.workload, r.n, r.tool): r for r in core}
    rows = []
    for d in dicts:
        row = Row(**{k: v for k, v in d.items() if k in names and k != "extra"})
        row.section = section
        row.extra = {**d.get("extra", {}), **{k: v for k, v in d.items() if k not in names}}
        floor = floors.get((row.workload, row.n, row.floor)) if row.floor else None
        if row.ratio_to_floor is None and floor is not None and floor.us_per_component \
                and row.us_per_component is not None:
            row.ratio_to_floor = row.us_per_component / floor.us_per_component
        rows.append(row)
    return rows


# ---------------------------------------------------------------------------
# Machine, versions
# ---------------------------------------------------------------------------


def _version(module: str) -> str | None:
    try:
        return str(importlib.import_module(module).__version__)
    except Exception:
        return None


def cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def machine_info() -> dict:
    mem = None
    try:
        with open("/proc/meminfo") as fh:
            mem = round(int(fh.readline().split()[1]) / 2**20, 1)
    except (OSError, ValueError, IndexError):
        pass
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return {"platform": platform.platform(), "machine": platform.machine(),
            "cpu_model": cpu_model(), "cores": os.cpu_count(), "cores_usable": usable,
            "memory_gb": mem, "hostname": platform.node()}


def git_revision() -> str | None:
    root = os.path.dirname(HERE)
    try:
        rev = subprocess.run(["git", "-C", root, "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "-C", root, "status", "--porcelain"],
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    if rev.returncode != 0:
        return None
    return rev.stdout.strip() + (" (modified)" if dirty.stdout.strip() else "")


def blas_info() -> dict:
    out: dict[str, Any] = {}
    try:
        cfg = np.show_config(mode="dicts")
        blas = cfg["Build Dependencies"]["blas"]
        out["numpy_blas"] = f"{blas.get('name')} {blas.get('version')}"
    except Exception:
        pass
    try:
        from threadpoolctl import threadpool_info

        out["threadpools"] = [{k: p.get(k) for k in ("internal_api", "version", "num_threads")}
                              for p in threadpool_info()]
    except Exception:
        pass
    return out


def versions() -> dict:
    fc = load_fastcheck()
    v = {"python": platform.python_version(), "numpy": np.__version__,
         "scipy": _version("scipy"), "fastcheck": getattr(fc, "__version__", None),
         "fastcheck_path": os.path.dirname(getattr(fc, "__file__", "") or ""),
         "git": git_revision()}
    for mod in ("numdifftools", "torch", "jax", "jaxlib", "matplotlib", "threadpoolctl"):
        v[mod] = _version(mod)
    return v


def environment(blas_threads: str) -> dict:
    keys = (*BLAS_THREAD_VARS, "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "PYTHONHASHSEED",
            "XLA_FLAGS")
    return {"set_by_run_py": blas_threads != "env",
            "vars": {k: os.environ.get(k) for k in keys}}


# ---------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------


def _g(x: float | None, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "—"
    return f"{x:.{digits}g}"


def _cell(row: Row, name: str) -> str:
    if name == "time":
        if row.median_s is None:
            return "—"
        return f"{_g(row.median_s)} ({_g(row.min_s)}–{_g(row.max_s)})"
    if name == "ratio":
        return "—" if row.ratio_to_floor is None else f"{row.ratio_to_floor:.2f}×"
    if name == "evals":
        return "—" if row.evals is None else f"{int(row.evals):,}"
    if name == "peak":
        return "—" if row.peak_mb is None else f"{row.peak_mb:.2f}"
    if name == "accuracy":
        return "—" if row.accuracy is None else f"{row.accuracy:.1e}"
    if name == "us":
        return _g(row.us_per_component)
    return str(getattr(row, name))


def md_table(header: list[str], lines: list[list[str]]) -> str:
    def esc(s: str) -> str:
        return str(s).replace("|", "\\|").replace("\n", " ")

    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(esc(c) for c in line) + " |" for line in lines]
    return "\n".join(out)


ROW_COLUMNS = [("tool", "tool"), ("method", "method"), ("time", "median s (min–max)"),
               ("us", "µs/component"), ("ratio", "× floor"), ("evals", "evals/run"),
               ("peak", "peak MB"), ("accuracy", "rel. error"), ("note", "note")]


def rows_table(rows: list[Row], with_workload: bool = False) -> str:
    cols = ([("workload", "workload"), ("n", "n")] if with_workload else []) + ROW_COLUMNS
    return md_table([h for _, h in cols], [[_cell(r, c) for c, _ in cols] for r in rows])


def generic_table(dicts: list[dict]) -> str:
    keys: list[str] = []
    for d in dicts:
        keys += [k for k in d if k not in keys]

    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return _g(v)
        return "—" if v is None else str(v)

    return md_table(keys, [[fmt(d.get(k)) for k in keys] for d in dicts])


def headline(rows: list[Row], overhead: list[Row], settings: Settings) -> list[str]:
    """The issue's targets, stated for the reader (informational, never a failure)."""
    get = {(r.workload, r.tool): r for r in rows if r.us_per_component is not None}
    lines = []
    q4, q5 = "quadratic_n10000", "quadratic_n100000"
    fc, fl = get.get((q4, "fastcheck.numerical_grad")), get.get((q4, "bare_floor"))
    if fc and fl:
        lines.append(f"quadratic n = 10,000: fastcheck.numerical_grad "
                     f"{fc.us_per_component:.3g} µs/component vs bare-loop floor "
                     f"{fl.us_per_component:.3g} ({fc.us_per_component / fl.us_per_component:.2f}×;"
                     " target ≤ 1×)")
    fc = get.get((q5, "fastcheck.numerical_grad"))
    for peer in ("naive_copy", "scipy_approx_derivative", "python_inplace", "bare_floor"):
        p = get.get((q5, peer))
        if fc and p:
            lines.append(f"quadratic n = 100,000: {peer} / fastcheck.numerical_grad = "
                         f"{p.us_per_component / fc.us_per_component:.2f}× "
                         f"({p.us_per_component:.3g} vs {fc.us_per_component:.3g} µs/component)")
    for r in overhead:
        own = r.extra.get("own_overhead_fraction")
        lines.append(f"check_grad over numerical_grad at n = {r.n:,}: "
                     f"{100 * r.extra['overhead_fraction']:+.2f}% (medians of full runs)"
                     + (f", {100 * own:+.2f}% measured outside the loss calls" if own is not None
                        else "") + " (target: a few percent)")
    return lines


def write_markdown(path: str, meta: dict, core: list[Row], overhead: list[Row],
                   sections: dict, head: list[str]) -> str:
    m, v = meta["machine"], meta["versions"]
    peers_v = ", ".join(f"{k} {v[k] or 'not installed'}"
                        for k in ("numdifftools", "torch", "jax"))
    env = meta["environment"]["vars"]
    lines = [
        f"# fastcheck benchmark ({'quick' if meta['settings']['quick'] else 'full'})",
        "",
        f"- date: {meta['date']}; wall time of the run: {meta['wall_seconds']:.0f} s",
        f"- machine: {m['cpu_model']}, {m['cores']} cores ({m['cores_usable']} usable), "
        f"{m['memory_gb']} GiB; {m['platform']}",
        f"- load average at start / end: {meta['load_start']} / {meta['load_end']} "
        "(a busy machine makes timings noisy)",
        f"- Python {v['python']}, numpy {v['numpy']} ({meta['blas'].get('numpy_blas', '?')}), "
        f"scipy {v['scipy']}, fastcheck {v['fastcheck']} (git {v['git']}); {peers_v}",
        f"- BLAS threads: OPENBLAS_NUM_THREADS={env['OPENBLAS_NUM_THREADS']}, "
        f"OMP_NUM_THREADS={env['OMP_NUM_THREADS']}, MKL_NUM_THREADS={env['MKL_NUM_THREADS']} "
        f"({'set by run.py' if meta['environment']['set_by_run_py'] else 'from the environment'})"
        + (f"; OPENBLAS_CORETYPE={env['OPENBLAS_CORETYPE']}" if env["OPENBLAS_CORETYPE"] else ""),
        "- timing: wall clock of the timed region only (set-up, imports, checks outside it), "
        "garbage collector off, tools interleaved round by round; median (min–max) over the "
        "repeats. µs/component = median / components timed; × floor = that over the bare "
        "Python loop's (C floor for C losses). evals/run: loss evaluations of one run. "
        "peak MB: tracemalloc peak above the start of one extra untimed run (Python and numpy "
        "allocations, including the tool's copy of θ; torch/jax allocators are not traced; "
        "one-off imports and caches are paid by an earlier untraced run). "
        "rel. error: ‖num − analytic‖/(‖num‖ + ‖analytic‖) over the components returned.",
        "",
    ]
    if head:
        lines += ["## Headline", ""] + [f"- {h}" for h in head] + [""]
    lines += ["## Core: checking the gradient of a Python loss", ""]
    for name in dict.fromkeys(r.workload for r in core):
        rows = [r for r in core if r.workload == name]
        info = meta["workloads"].get(name, {})
        lines += [f"### {name} (n = {rows[0].n:,}; one loss call "
                  f"{info.get('loss_us', float('nan')):.3g} µs)", "", rows_table(rows), ""]
    if overhead:
        lines += ["## check_grad over numerical_grad (both full runs, interleaved)", "",
                  rows_table(overhead, with_workload=True), ""]
    for name, sec in sections.items():
        lines += [f"## Section {name}: {sec['what']}", "", f"{sec['status']}: {sec['note']}", ""]
        if sec["rows"]:
            rows = rows_from_dicts(sec["rows"], name, core)
            lines += [rows_table(rows, with_workload=True) if rows is not None
                      else generic_table(sec["rows"]), ""]
    if meta["errors"]:
        lines += ["## Errors", ""] + [f"- {e}" for e in meta["errors"]] + [""]
    text = "\n".join(lines)
    _write(path, text)
    return text


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return _jsonable(x.tolist())
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        return float(x) if math.isfinite(x) else None
    if isinstance(x, (str, int, bool)) or x is None:
        return x
    return str(x)


def write_json(path: str, meta: dict, core: list[Row], overhead: list[Row],
               sections: dict) -> None:
    doc = dict(meta)
    doc["rows"] = [asdict(r) for r in core + overhead]
    doc["sections"] = sections
    _write(path, json.dumps(_jsonable(doc), indent=1, ensure_ascii=False))


def write_plot(path: str, rows: list[Row]) -> str:
    """µs per component against n, log-log, one line per tool, one panel per kind."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed: no plot"
    pts = [r for r in rows if r.us_per_component and r.n and r.status == "ok"]
    kinds = list(dict.fromkeys(r.workload.split("_")[0] for r in pts))
    if not kinds:
        return "nothing to plot"
    tools = list(dict.fromkeys(r.tool for r in pts))
    cmap = plt.get_cmap("tab20")
    color = {t: cmap(i % 20) for i, t in enumerate(tools)}  # one colour per tool everywhere
    fig, axes = plt.subplots(1, len(kinds), figsize=(6.5 * len(kinds), 5), squeeze=False)
    for ax, kind in zip(axes[0], kinds):
        mine = [r for r in pts if r.workload.split("_")[0] == kind]
        for tool in dict.fromkeys(r.tool for r in mine):
            xy = sorted((r.n, r.us_per_component) for r in mine if r.tool == tool)
            ours = tool.startswith("fastcheck")
            ax.plot(*zip(*xy), "-" if ours else "--", marker="o", lw=2.5 if ours else 1.2,
                    ms=4, color=color[tool], label=tool)
        ax.set(xscale="log", yscale="log", xlabel="n (parameters)",
               ylabel="µs per component", title=kind)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    tmp = path + ".tmp"
    fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    os.replace(tmp, path)
    return f"wrote {path}"


def _write(path: str, text: str) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text if text.endswith("\n") else text + "\n")
    os.replace(tmp, path)


# ---------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "?"


def main(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    settings = make_settings(args)
    only = set(_split_list(args.only))
    kinds = set(KINDS) if not only or "core" in only else only & set(KINDS)
    wanted_sections = [s for s in SECTIONS if not only or s[0] in only]
    out = args.out or (os.path.join(HERE, "results", "quick") if args.quick
                       else os.path.join(HERE, "results"))
    os.makedirs(out, exist_ok=True)
    try:
        load_fastcheck()
    except ImportError as exc:
        log(f"cannot import fastcheck: {exc}\n(build it, or run with PYTHONPATH=<repo root>)")
        return 2
    meta: dict[str, Any] = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([os.path.basename(sys.executable), *sys.argv]),
        "machine": machine_info(), "versions": versions(), "blas": blas_info(),
        "environment": environment(args.blas_threads), "load_start": _load(),
        "settings": {k: v for k, v in asdict(settings).items()}, "workloads": {},
        "errors": [],
    }
    errors: list[str] = meta["errors"]
    core: list[Row] = []
    times: dict[str, dict[str, list[float]]] = {}
    sections: dict[str, dict] = {}
    interrupted = False
    try:
        for w in core_workloads(args.quick, kinds, args.max_n, args.seed):
            t0 = time.perf_counter()
            rows, info = run_workload(w, settings, errors)
            log(f"  [{w.name}: {time.perf_counter() - t0:.1f} s]")
            core += rows
            times[w.name] = info.pop("times")
            meta["workloads"][w.name] = info
        for name, module, what in wanted_sections:
            log(f"\n[section {name}]")
            sec = run_section(name, module, args.quick, errors)
            sec["what"] = what
            sections[name] = sec
            log(f"  {sec['status']}: {sec['note']}")
    except KeyboardInterrupt:
        interrupted = True
        errors.append("interrupted (Ctrl-C): partial results")
    overhead = overhead_rows(core, times, settings.overhead_n)
    head = headline(core, overhead, settings)
    meta["load_end"] = _load()
    meta["wall_seconds"] = time.perf_counter() - started
    meta["headline"] = head
    md = write_markdown(os.path.join(out, "results.md"), meta, core, overhead, sections, head)
    write_json(os.path.join(out, "results.json"), meta, core, overhead, sections)
    plot = "plot skipped (--no-plot)" if args.no_plot else write_plot(
        os.path.join(out, "results.png"), core + [r for s in sections.values()
                                                  for r in (rows_from_dicts(s["rows"], "", core)
                                                            or [])])
    print(md)
    log(f"\nwrote {out}/results.md and results.json; {plot}; "
        f"{meta['wall_seconds']:.0f} s in all")
    if errors:
        log(f"{len(errors)} benchmark(s) failed:\n  " + "\n  ".join(errors))
        return 130 if interrupted else 1
    return 0


if __name__ == "__main__":
    sys.exit(main(ARGS))
