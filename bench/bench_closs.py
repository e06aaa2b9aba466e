"""Benchmark: a loss written in C, against the floor of any C-callback checker.

Usage::

    python bench/bench_closs.py [--quick] [--n 1000] [--one-thread]

The loss is the cheap O(n) quadratic of the benchmark workloads,
J = 0.5 * sum(d * theta**2) with a seeded diagonal d in [0.5, 2] passed as
user_data: closs_quadratic in bench/closs_floor.c, compiled at run time
(cc -O3 -shared -fPIC, into bench/_build/), and the same J in numpy
(0.5 * dot(d * theta, theta)) for the Python rows.  OpenBLAS is pinned to one
thread (OPENBLAS_NUM_THREADS=1, unless set) when this script is run directly:
with two threads the dot is memory-bound across cores and slower on 2 cores.

Rows, in microseconds per component (central differences, two loss evaluations
per component), median of the repeats, and the ratio to the floor:

- C floor: closs_floor_central, a hand-written C loop computing the same raw
  evaluations through the same function pointer (no checker can do less);
- C floor on 2 threads: the same loop on two threads, each on its own copy of
  theta and half of the components: what two threads can give on this machine;
- fastcheck, C loss: fastcheck.numerical_grad(loss, theta, indices=..., threads=...)
  with the loss as a fastcheck.CLoss over the ctypes function, threads=1 and
  threads=2: the public call, validation and result included (fastcheck also
  evaluates J(theta) once per run);
- fastcheck, Python loss: the same J written with numpy, through the Python-callback
  path;
- scipy: scipy.optimize's approx_derivative(method="3-point") on the numpy loss.
  It has no way to ask for a subset of components, so it is timed over its first
  `components` components and then stopped by an exception from the loss.

A second, smaller table repeats the C rows with the same J summed in one running
sum (closs_quadratic_chain), which is bound by the latency of an add: it shows
how threads scale when one loss evaluation does not saturate a core.

At n = 1,000 a whole run takes about 0.3 ms, so what a run costs beyond its
evaluations (set-up in Python and in the kernel, the step check, the output
arrays) shows in the ratio to the floor: that size gets ten times the repeats.
At large n only a spread subset of the components is evaluated (the cost per
component does not depend on which).  The C rows are interleaved within each
repeat, so that drifts of the machine affect them alike, and timed before the
Python rows (which are interleaved among themselves).
"""

from __future__ import annotations

import argparse
import ctypes
import os

if __name__ == "__main__":  # before numpy loads OpenBLAS
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import platform
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
# The repository root goes last: an installed fastcheck wins over the source tree
# (which has no compiled kernel unless built in place).
sys.path.append(str(HERE.parent))

import fastcheck  # noqa: E402

BUILD = HERE / "_build"
EPS = 1e-6  # absolute step, the same for every method

# n -> components timed (full run at 1e4; a spread subset above)
SIZES = {1_000: 1_000, 10_000: 10_000, 100_000: 1_000, 1_000_000: 100}
QUICK_SIZES = {1_000: 1_000, 10_000: 2_000, 100_000: 200}


FLOOR = "C floor: hand-written loop, same fn pointer"
FLOOR2 = "C floor on 2 threads (hand-written, own copies)"
C1 = "fastcheck, C loss, threads=1"
C2 = "fastcheck, C loss, threads=2"
PY = "fastcheck, Python loss (numpy)"
SCIPY = "scipy approx_derivative 3-point (numpy loss)"

# C function -> what the table calls it
LOSSES = {
    "closs_quadratic": "quadratic, 4 partial sums (throughput-bound)",
    "closs_quadratic_chain": "quadratic, 1 running sum (add-latency-bound)",
}


class _Stop(Exception):
    """Raised by the loss to stop scipy after the components being timed."""


def build_library() -> ctypes.CDLL:
    """Compile bench/closs_floor.c (once) and load it."""
    BUILD.mkdir(exist_ok=True)
    source = HERE / "closs_floor.c"
    target = BUILD / "libclossfloor.so"
    if not target.exists() or target.stat().st_mtime < source.stat().st_mtime:
        cc = os.environ.get("CC", "cc")
        subprocess.run([cc, "-O3", "-shared", "-fPIC", str(source), "-o", str(target)],
                       check=True)
    lib = ctypes.CDLL(str(target))
    dp, ip = ctypes.POINTER(ctypes.c_double), ctypes.POINTER(ctypes.c_ssize_t)
    for name in LOSSES:
        getattr(lib, name).restype = ctypes.c_int
        getattr(lib, name).argtypes = [dp, ctypes.c_ssize_t, dp, ctypes.c_void_p]
    lib.closs_floor_central.restype = ctypes.c_int
    lib.closs_floor_central.argtypes = [ctypes.c_void_p, ctypes.c_void_p, dp,
                                        ctypes.c_ssize_t, ip, ctypes.c_ssize_t,
                                        ctypes.c_double, dp, dp, dp]
    return lib


def workload(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The diagonal d and theta of the quadratic workload (seeded)."""
    rng = np.random.default_rng(seed)
    d = rng.uniform(0.5, 2.0, size=n)
    return d, rng.standard_normal(n)


def numpy_loss(d: np.ndarray):
    """The same J, in numpy."""
    def loss(theta: np.ndarray) -> float:
        return 0.5 * float(np.dot(d * theta, theta))
    return loss


def _methods(lib: ctypes.CDLL, loss_name: str, d: np.ndarray, theta: np.ndarray,
             idx: np.ndarray, full: bool) -> dict:
    """name -> a function that runs the method once over `idx`, returns seconds."""
    count = len(idx)
    c_function = getattr(lib, loss_name)
    pointer = ctypes.cast(c_function, ctypes.c_void_p)
    plus, minus, step = np.empty(count), np.empty(count), np.empty(count)
    dp, ip = ctypes.POINTER(ctypes.c_double), ctypes.POINTER(ctypes.c_ssize_t)
    c_loss = fastcheck.CLoss(c_function, user_data=d, thread_safe=True)
    python_loss = numpy_loss(d)

    def floor_on(x: np.ndarray, where: np.ndarray, out: slice) -> None:
        status = lib.closs_floor_central(
            pointer, d.ctypes.data, x.ctypes.data_as(dp), x.size,
            where.ctypes.data_as(ip), len(where), EPS, plus[out].ctypes.data_as(dp),
            minus[out].ctypes.data_as(dp), step[out].ctypes.data_as(dp))
        assert status == 0

    def floor() -> float:
        started = time.perf_counter()
        floor_on(theta, idx, slice(None))
        return time.perf_counter() - started

    def floor_two_threads() -> float:
        # What two threads can do at best here: each copies theta and runs the
        # floor on half of the components (ctypes releases the GIL).
        half = (count + 1) // 2
        parts = [(idx[:half], slice(0, half)), (idx[half:], slice(half, count))]

        def work(where, out):
            floor_on(theta.copy(), where, out)

        started = time.perf_counter()
        workers = [threading.Thread(target=work, args=part) for part in parts]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        return time.perf_counter() - started

    # The numpy loss rounds J differently from the C loop; its differences may
    # differ by a few units of roundoff in J, divided by the step.
    rounding = 64 * np.finfo(float).eps * abs(python_loss(theta)) / EPS

    def fastcheck_run(loss, threads=1):
        # The public call, all of it timed: validation, the loss-writes-theta
        # snapshot, the kernel, the derivative.
        def run() -> float:
            started = time.perf_counter()
            derivative = fastcheck.numerical_grad(loss, theta, eps=EPS, method="central",
                                                  indices=idx, threads=threads)
            seconds = time.perf_counter() - started
            # the same evaluations as the floor (run before it in each repeat):
            # bitwise for the C loss
            expected = (plus - minus) / (2 * step)
            if loss is c_loss:
                assert np.array_equal(derivative, expected)
            else:
                assert np.allclose(derivative, expected, rtol=0, atol=rounding)
            return seconds
        return run

    def scipy_run() -> float:
        from scipy.optimize._numdiff import approx_derivative  # not re-exported

        calls = [0]

        def loss(x):
            calls[0] += 1
            if calls[0] > 2 * count:
                raise _Stop
            return python_loss(x)

        f0 = python_loss(theta)
        started = time.perf_counter()
        try:
            approx_derivative(loss, theta, method="3-point", abs_step=EPS, f0=f0)
        except _Stop:
            pass
        return time.perf_counter() - started

    methods = {FLOOR: floor, C1: fastcheck_run(c_loss), C2: fastcheck_run(c_loss, 2),
               FLOOR2: floor_two_threads}
    if full:
        methods.update({PY: fastcheck_run(python_loss), SCIPY: scipy_run})
    return methods


def run(quick: bool = False, only: int | None = None, one_thread: bool = False) -> list[dict]:
    """Time every method at every size; one dict per (loss, n, method).

    Keys: loss, n, method, components, repeats, us_per_component (median of the
    repeats), us_per_component_min (the fastest repeat), ratio_to_floor (of the
    medians).  The throughput-bound quadratic gets every method;
    the latency-bound one only the C rows (it shows how threads scale).
    """
    lib = build_library()
    repeats = 3 if quick else 7
    rows = []
    for loss_name, label in LOSSES.items():
        full = loss_name == "closs_quadratic"
        for n, count in (QUICK_SIZES if quick else SIZES).items():
            if only is not None and n != only:
                continue
            d, theta = workload(n)
            idx = np.linspace(0, n - 1, count).astype(np.intp)
            reps = repeats if n > 1_000 else 10 * repeats  # short runs: more samples
            methods = _methods(lib, loss_name, d, theta, idx, full)
            if one_thread:  # the single-thread rows only, not interleaved with threads
                methods.pop(C2), methods.pop(FLOOR2)
            times: dict[str, list[float]] = {name: [] for name in methods}
            # The C rows, then the Python rows, each group interleaved: on this VM
            # a long single-threaded stretch (the Python rows) made the next
            # two-thread runs erratic, as if the idle vCPU were slow to wake.
            for group in ([FLOOR, C1, C2, FLOOR2], [PY, SCIPY]):
                group = [name for name in group if name in methods]
                for name in group:  # warm up: caches, page faults, imports
                    methods[name]()
                for _ in range(reps):
                    for name in group:
                        times[name].append(methods[name]())
            floor = statistics.median(times[FLOOR])
            for name, seconds in times.items():
                median = statistics.median(seconds)
                rows.append({"loss": label, "n": n, "method": name, "components": count,
                             "repeats": reps, "us_per_component": 1e6 * median / count,
                             "us_per_component_min": 1e6 * min(seconds) / count,
                             "ratio_to_floor": median / floor})
    return rows


def markdown(rows: list[dict]) -> str:
    """One table per loss, and the speed-ups."""
    out = []
    for label in dict.fromkeys(r["loss"] for r in rows):
        mine = [r for r in rows if r["loss"] == label]
        sizes = sorted({r["n"] for r in mine})
        methods = list(dict.fromkeys(r["method"] for r in mine))
        cell = {(r["n"], r["method"]): r for r in mine}
        out.append(f"Loss: {label}\n")
        out.append("| µs per component (× C floor) | "
                   + " | ".join(f"n = {n:.0e}" for n in sizes) + " |")
        out.append("|---|" + "---:|" * len(sizes))
        for method in methods:
            cells = [f"{cell[(n, method)]['us_per_component']:.3g} "
                     f"({cell[(n, method)]['ratio_to_floor']:.2f}×)" for n in sizes]
            out.append(f"| {method} | " + " | ".join(cells) + " |")
        out.append("| components timed | " + " | ".join(
            str(cell[(n, FLOOR)]["components"]) for n in sizes) + " |")
        out.append("")
        for n in sizes:
            us = {m: cell[(n, m)]["us_per_component"] for m in methods}
            prefix = text = f"- n = {n:.0e}: "
            if C2 in us:
                text += (f"speed-up of threads=2 over threads=1: {us[C1] / us[C2]:.2f}× "
                         f"(hand-written 2-thread floor over the floor: "
                         f"{us[FLOOR] / us[FLOOR2]:.2f}×)")
            if PY in us:
                text += ("; " if C2 in us else "") + (
                    f"speed-up of the C loss (threads=1) over the Python loss: "
                    f"{us[PY] / us[C1]:.2f}×, over scipy: {us[SCIPY] / us[C1]:.2f}×")
            if text != prefix:
                out.append(text)
        out.append("")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes, 3 repeats")
    parser.add_argument("--n", type=int, default=None,
                        help="only this size (one of the table's, e.g. 1000)")
    parser.add_argument("--one-thread", action="store_true",
                        help="leave out the two-thread rows")
    args = parser.parse_args(argv)
    rows = run(quick=args.quick, only=args.n, one_thread=args.one_thread)
    print(f"fastcheck {fastcheck.__version__}, numpy {np.__version__}, "
          f"Python {platform.python_version()}, {platform.machine()}, "
          f"{os.cpu_count()} CPUs, OPENBLAS_NUM_THREADS="
          f"{os.environ.get('OPENBLAS_NUM_THREADS', 'unset')}; median of "
          f"{rows[0]['repeats']} repeats\n")
    print(markdown(rows))


if __name__ == "__main__":
    main()
