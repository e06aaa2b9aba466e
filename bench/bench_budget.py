"""Time budgets: does ``check_grad(budget=...)`` end within its budget?

On the 1,001,100-parameter tanh network of ``bench_large.py`` (a full check would
take 2,002,203 evaluations), ``check_grad(loss, grad, params, budget=B)`` is run
for B = 0.5 s, 2 s and 10 s with a correct gradient, 5 seeds each, in a
process that has already run one check (a test suite's later checks; the very
first check in a process also pays one-time costs, reported separately).  For
each: the wall time against the budget (the target: within 20 %), the plan the
budget chose, the components checked one by one, the detection limits, and what
a larger budget would add.  The same budgets with one planted wrong component
show what the budget finds.

Run from the repository root (after ``python setup.py build_ext --inplace``)::

    python bench/bench_budget.py            # 5 seeds per budget
    python bench/bench_budget.py --quick    # 0.5 s and 2 s, 1 seed

BLAS threads are pinned to 1 (set before numpy is imported), as in bench/run.py.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
# The repository root goes last: an installed fastcheck wins over the source tree.
sys.path.append(os.path.dirname(HERE))

import numpy as np  # noqa: E402
from bench_large import Network, _plant  # noqa: E402

from fastcheck import check_grad  # noqa: E402

BUDGETS = (0.5, 2.0, 10.0)
TOLERANCE = 0.2


def _one(net: Network, grad: dict, budget: float, seed: int) -> dict:
    before = {k: v.copy() for k, v in net.params.items()}
    start = time.perf_counter()
    result = check_grad(net.loss, grad, net.params, budget=budget, seed=seed)
    wall = time.perf_counter() - start
    restored = all(before[k].tobytes() == net.params[k].tobytes() for k in before)
    info = result.extra["budget"]
    return {"budget": budget, "seed": seed, "wall": wall, "ratio": wall / budget,
            "passed": bool(result.passed), "restored": restored,
            "plan": " + ".join(s["mode"] for s in info["steps"]),
            "checked": info["components_checked"], "limit": info["detection_limit"],
            "directional_limit": info["directional_limit"],
            "eval_ms": 1e3 * info["eval_seconds"], "larger": info["larger_budget"],
            "found": result.layout.names_of(result.indices("wrong"))[:5]}


def run(quick: bool = False) -> list[dict]:
    """One row per budget (and one per budget with a planted bug)."""
    net = Network(0)
    budgets = BUDGETS[:2] if quick else BUDGETS
    seeds = range(1) if quick else range(5)
    right = net.grad(net.params)
    cold = _one(net, right, budgets[0], 99)   # the first check in this process
    rows = []
    for budget in budgets:
        runs = [_one(net, right, budget, seed) for seed in seeds]
        ratios = [r["ratio"] for r in runs]
        last = runs[-1]
        rows.append({
            "case": "correct gradient", "budget_s": budget, "runs": len(runs),
            "wall_median_s": statistics.median(r["wall"] for r in runs),
            "ratio_min": min(ratios), "ratio_max": max(ratios),
            "within_20pct": sum(abs(x - 1) <= TOLERANCE for x in ratios),
            "plan": last["plan"], "checked": last["checked"],
            "limit": last["limit"], "directional_limit": last["directional_limit"],
            "eval_ms": last["eval_ms"], "larger": last["larger"], "found": last["found"],
            "status": "ok" if all(r["passed"] and r["restored"] for r in runs) else "error"})
    for budget in budgets:
        buggy = net.grad(net.params)
        planted = _plant(buggy, np.random.default_rng(7), 1, ["W1"])
        r = _one(net, buggy, budget, 0)
        rows.append({
            "case": f"1 wrong component ({sorted(planted)[0]})", "budget_s": budget,
            "runs": 1, "wall_median_s": r["wall"], "ratio_min": r["ratio"],
            "ratio_max": r["ratio"], "within_20pct": None, "plan": r["plan"],
            "checked": r["checked"], "limit": r["limit"],
            "directional_limit": r["directional_limit"], "eval_ms": r["eval_ms"],
            "larger": r["larger"], "found": r["found"], "passed": r["passed"],
            # Failing is what counts; naming the component needs time to localise,
            # which the smallest budget may not leave (the report says so).
            "status": "ok" if (not r["passed"] and r["restored"]
                               and r["found"] in ([], sorted(planted))) else "error"})
    rows.append({"case": "first check in a process (cold)", "budget_s": cold["budget"],
                 "runs": 1, "wall_median_s": cold["wall"], "ratio_min": cold["ratio"],
                 "ratio_max": cold["ratio"], "within_20pct": None, "plan": cold["plan"],
                 "checked": cold["checked"], "limit": cold["limit"],
                 "directional_limit": cold["directional_limit"], "eval_ms": cold["eval_ms"],
                 "larger": cold["larger"], "found": cold["found"],
                 "status": "ok" if cold["passed"] and cold["restored"] else "error"})
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| case | budget | wall (median) | wall / budget (min–max) | within 20 % | plan "
             "| components checked one by one | detection limit (one by one, median) "
             "| directional limit (of RMS gradient) | wrong components named |",
             "|" + "---|" * 10]
    for r in rows:
        within = "—" if r["within_20pct"] is None else f"{r['within_20pct']}/{r['runs']}"
        lines.append(
            f"| {r['case']} | {r['budget_s']:g} s | {r['wall_median_s']:.2f} s | "
            f"{r['ratio_min']:.2f}–{r['ratio_max']:.2f} | {within} | {r['plan']} | "
            f"{r['checked']:,} | {r['limit']:.1e} | {r['directional_limit']:.1e} | "
            f"{', '.join(r['found']) or '—'} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="0.5 s and 2 s, one seed")
    args = parser.parse_args()
    rows = run(args.quick)
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    print(f"model: {Network(0).n:,} parameters; one loss evaluation "
          f"{rows[0]['eval_ms']:.2f} ms; load average after the run "
          f"{load[0]:.2f}, {load[1]:.2f}, {load[2]:.2f} on {os.cpu_count()} cores\n")
    print(table(rows))
    print()
    for r in rows:
        print(f"{r['case']}, {r['budget_s']:g} s: {r['larger']}"
              + (f"; found {r['found']}" if r.get("found") else ""))
    if any(r["status"] != "ok" for r in rows):
        sys.exit(1)


if __name__ == "__main__":
    main()
