"""Large-parameter benchmark: find the wrong components of a 1e6-parameter model.

A numpy network with 1,001,100 parameters (W1 1000x900, b1 1000, W2 100x1000,
b2 100; tanh hidden layer, squared error on a small batch, so one loss
evaluation is O(n)) gets a hand-written gradient with planted bugs:

- one wrong component among 1e6;
- five wrong components, biases included;
- a whole block wrong (dW2 missing its 1/m).

For each case, ``check_grad(mode="directional")`` (directions + localisation)
is run with several seeds (bug positions and directions differ) and reports the
loss evaluations used, the seconds, and whether it found exactly the planted
components.  A full check would need 2n + 3 = 2,002,203 evaluations; its time is
estimated from the measured time of one evaluation.  mode="sample" with the same
order of evaluations is shown for comparison.

Run from the repository root (after ``python setup.py build_ext --inplace``)::

    python bench/bench_large.py            # 5 seeds per case
    python bench/bench_large.py --quick    # 1 seed per case
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import warnings
from typing import Any

# The repository root goes last: an installed fastcheck wins over the source tree
# (which has no compiled kernel unless built in place).
sys.path.append(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np

from fastcheck import check_grad

N_IN, N_HIDDEN, N_OUT, BATCH = 900, 1000, 100, 4
MAX_EVALS = 400


class Network:
    """tanh MLP, J = 0.5 / m * ||W2 tanh(W1 X + b1) + b2 - Y||^2, float64."""

    def __init__(self, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.X = rng.standard_normal((N_IN, BATCH))
        self.Y = rng.standard_normal((N_OUT, BATCH))
        self.params = {
            "W1": rng.standard_normal((N_HIDDEN, N_IN)) / np.sqrt(N_IN),
            "b1": 0.1 * rng.standard_normal(N_HIDDEN),
            "W2": rng.standard_normal((N_OUT, N_HIDDEN)) / np.sqrt(N_HIDDEN),
            "b2": 0.1 * rng.standard_normal(N_OUT),
        }

    @property
    def n(self) -> int:
        return sum(a.size for a in self.params.values())

    def _forward(self, p: dict) -> tuple[np.ndarray, np.ndarray]:
        H = np.tanh(p["W1"] @ self.X + p["b1"][:, None])
        return H, p["W2"] @ H + p["b2"][:, None]

    def loss(self, p: dict) -> float:
        _, out = self._forward(p)
        return float(0.5 / BATCH * np.sum((out - self.Y) ** 2))

    def grad(self, p: dict, w2_factor: float = 1.0) -> dict:
        H, out = self._forward(p)
        d_out = (out - self.Y) / BATCH
        dZ = (p["W2"].T @ d_out) * (1 - H * H)
        return {"W1": dZ @ self.X.T, "b1": dZ.sum(axis=1),
                "W2": w2_factor * (d_out @ H.T), "b2": d_out.sum(axis=1)}


def _duration(seconds: float) -> str:
    """A duration read at a glance (s, min, h, days)."""
    for unit, size in (("days", 86400.0), ("h", 3600.0), ("min", 60.0)):
        if seconds >= 2 * size:
            return f"{seconds / size:.2g} {unit}"
    return f"{seconds:.2g} s"

def _plant(g: dict, rng: np.random.Generator, count: int, blocks: list[str]) -> set[str]:
    """Make `count` components wrong (one per listed block, in turn); their names."""
    names = set()
    for i in range(count):
        key = blocks[i % len(blocks)]
        a = g[key]
        while True:
            idx = np.unravel_index(int(rng.integers(a.size)), a.shape)
            name = f"{key}[{', '.join(map(str, idx))}]"
            if name not in names:
                break
        rms = float(np.sqrt(np.mean(a * a)))
        a[idx] += max(0.5 * abs(a[idx]), 0.2 * rms)   # e.g. a wrong term in one entry
        names.add(name)
    return names


CASES = {
    "1 wrong of 1e6": dict(count=1, blocks=["W1"]),
    "5 wrong (W1, b1, W2, b2)": dict(count=5, blocks=["W1", "b1", "W2", "b2"]),
    "W2 wrong throughout": dict(count=0, blocks=[], w2_factor=BATCH),
}


def _time_one_evaluation(net: Network, repeat: int = 20) -> float:
    net.loss(net.params)
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        net.loss(net.params)
        times.append(time.perf_counter() - start)
    return min(times)   # the least disturbed by other work on the machine


def _found(result: Any) -> set[str]:
    return set(result.layout.names_of(result.indices("wrong")))


def run(quick: bool = False) -> list[dict]:
    """Run every case; one dict per (case, mode) with the figures of the table."""
    reps = 1 if quick else 5
    net = Network(0)
    n = net.n
    t_eval = _time_one_evaluation(net)
    full_evals = 2 * n + 3
    rows = []
    for case, spec in CASES.items():
        for mode in ("directional", "sample"):
            evals, secs, exact, found_last, planted_last = [], [], 0, set(), set()
            for rep in range(reps):
                rng = np.random.default_rng(1000 + rep)
                g = net.grad(net.params, spec.get("w2_factor", 1.0))
                planted = _plant(g, rng, spec["count"], spec["blocks"])
                before = {k: v.copy() for k, v in net.params.items()}
                kwargs = dict(max_evals=MAX_EVALS) if mode == "directional" else dict(k=32)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    start = time.perf_counter()
                    r = check_grad(net.loss, g, net.params, mode=mode, seed=rep, **kwargs)
                    secs.append(time.perf_counter() - start)
                assert all(before[k].tobytes() == net.params[k].tobytes() for k in before)
                evals.append(r.evaluations)
                found = _found(r)
                if planted:
                    ok = found == planted
                elif mode == "directional":   # reported as such, nothing wrong elsewhere
                    ok = (r.extra["localisation"]["throughout"] == ["W2"]
                          and all(f.startswith("W2[") for f in found))
                else:
                    ok = bool(found) and all(f.startswith("W2[") for f in found)
                exact += bool(ok) and not r.passed
                found_last, planted_last = found, planted
            rows.append({
                "case": case, "mode": mode, "parameters": n, "repetitions": reps,
                "evaluations_max": max(evals), "evaluations_median": statistics.median(evals),
                "seconds_median": statistics.median(secs), "exact": exact,
                "found_last": sorted(found_last)[:8], "planted_last": sorted(planted_last),
                "full_evaluations": full_evals, "eval_seconds": t_eval,
                "full_seconds_estimate": t_eval * full_evals,
            })
    return rows


def table(rows: list[dict]) -> str:
    head = ("| case | mode | evaluations (max / median) | seconds (median) | found exactly "
            "the planted bugs | full check: evaluations | full check: estimated time |")
    lines = [head, "|" + "---|" * 7]
    for r in rows:
        lines.append(
            f"| {r['case']} | {r['mode']} | {r['evaluations_max']} / "
            f"{r['evaluations_median']:g} | {r['seconds_median']:.2f} | "
            f"{r['exact']}/{r['repetitions']} | {r['full_evaluations']:,} | "
            f"{_duration(r['full_seconds_estimate'])} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one seed per case")
    args = parser.parse_args()
    rows = run(args.quick)
    r0 = rows[0]
    print(f"model: {r0['parameters']:,} parameters; one loss evaluation "
          f"{r0['eval_seconds'] * 1e3:.2f} ms; directional max_evals={MAX_EVALS}, "
          "sample k=32 per parameter\n")
    print(table(rows))


if __name__ == "__main__":
    main()
