"""The fixed cost of one check_grad call: a 1-parameter loss, where the two
evaluations are nothing and everything else (validation, probes, the judge, the
result) is what is timed.  Public API only.

    PYTHONPATH=. python bench/bench_fixed.py            # prints one table row
    PYTHONPATH=. python bench/bench_fixed.py --calls 500 --repeats 3
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time

import numpy as np

import fastcheck


def _loss(theta: np.ndarray) -> float:
    return float(theta[0] ** 2)


def _grad(theta: np.ndarray) -> np.ndarray:
    return 2.0 * theta


def time_calls(fn, calls: int, repeats: int) -> list[float]:
    """Microseconds per call, one figure per repeat (GC off while timing)."""
    for _ in range(max(10, calls // 10)):  # warm up: imports, caches
        fn()
    figures = []
    gc.disable()
    try:
        for _ in range(repeats):
            started = time.perf_counter()
            for _ in range(calls):
                fn()
            figures.append((time.perf_counter() - started) / calls * 1e6)
    finally:
        gc.enable()
    return figures


def run(calls: int = 2000, repeats: int = 5) -> list[dict]:
    theta = np.array([0.7])
    rows = []
    for label, fn in (
            ("check_grad, 1 parameter", lambda: fastcheck.check_grad(_loss, _grad, theta)),
            ("numerical_grad, 1 parameter", lambda: fastcheck.numerical_grad(_loss, theta)),
            ("the 2 loss evaluations alone", lambda: (_loss(theta), _loss(theta)))):
        figures = time_calls(fn, calls, repeats)
        rows.append({"what": label, "us_median": statistics.median(figures),
                     "us_min": min(figures), "calls": calls, "repeats": repeats})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print("| call | µs per call, median (min) |")
    print("|---|---|")
    for r in run(args.calls, args.repeats):
        print(f"| {r['what']} | {r['us_median']:.3g} ({r['us_min']:.3g}) |")


if __name__ == "__main__":
    main()
