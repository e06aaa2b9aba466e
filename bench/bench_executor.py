"""Scale-out benchmark: a full check of the MLP workload, serial vs executors.

    python bench/bench_executor.py            # MLP.medium(): 19,990 parameters
    python bench/bench_executor.py --quick    # MLP.small(): 1,002 parameters, one repeat

Runs ``fastcheck.check_grad`` on the same workload (numpy loss and hand-written
gradient from ``bench/workloads.py``) three ways:

- serial, in this process;
- ``executor=ProcessPoolExecutor(2)``;
- ``executor=Client(LocalCluster(n_workers=2, threads_per_worker=1)).get_executor()``
  (skipped when dask.distributed is not installed).

Fairness: OPENBLAS_NUM_THREADS, OMP_NUM_THREADS and MKL_NUM_THREADS are set to 1
here, before numpy is imported, so the serial run and every worker use one BLAS
thread each (the workers inherit the environment).  Pools and the cluster are
started before the clock starts (start-up is reported separately for dask); each
timing is the best of the repeats, because the machine is shared.  Every sharded
result is compared with the serial one bit for bit (the numerical gradient, the
noise estimates and the statuses), and the script fails if any differs.

Columns: ``seconds`` (check_grad wall time), ``speedup`` (serial / this),
``overhead`` (this − serial / workers: what the run costs beyond a perfect split),
``efficiency`` (speedup / workers), ``CPU s total`` (CPU seconds of the caller and
the workers during the run, with psutil: the work sharding adds), ``CPU s path``
(the caller's CPU plus the workers' CPU shared evenly: how long the run would take
with a free core per process) and ``CPU speed-up`` (serial / that).  On a shared, busy
machine the wall-clock columns drop; the CPU columns do not.
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from concurrent.futures import ProcessPoolExecutor  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.append(os.path.dirname(_HERE))  # the repository root, last: fastcheck
sys.path.insert(0, _HERE)  # bench/: workloads

from workloads import MLP  # noqa: E402

import fastcheck  # noqa: E402

try:
    import psutil  # the workers' CPU time (optional)
except ImportError:  # pragma: no cover
    psutil = None

WORKERS = 2


def _cpu(pids: list[int]) -> np.ndarray:
    """CPU seconds (user + system) used so far by this process and each of `pids`."""
    out = [time.process_time()]
    for pid in pids:
        if psutil is None:
            out.append(float("nan"))
            continue
        times = psutil.Process(pid).cpu_times()
        out.append(times.user + times.system)
    return np.array(out)


def _check(work: MLP, executor: Any = None, pids: list[int] | None = None
           ) -> tuple[float, dict, Any]:
    """One check: wall seconds, CPU seconds, result.

    CPU: "total" over the caller and the workers; "caller"; "workers" (one per
    worker); "path", the caller's CPU plus the workers' shared evenly: the run's
    length with a free core per process and the shards evenly spread (the caller
    mostly waits while the workers run, and does the serial parts before and
    after).  On a busy machine the executor hands more shards to the less busy
    worker, so the per-worker split is uneven; the even split is what free cores
    give.
    """
    params = work.make_params()
    before = _cpu(pids or [])
    started = time.perf_counter()
    result = fastcheck.check_grad(work.loss, work.grad, params, executor=executor)
    seconds = time.perf_counter() - started
    used = _cpu(pids or []) - before
    path = used[0] + (np.mean(used[1:]) if used.size > 1 else 0.0)
    return seconds, {"total": float(np.sum(used)), "path": float(path),
                     "caller": float(used[0]), "workers": [float(w) for w in used[1:]]}, result


def _same(a: Any, b: Any) -> bool:
    return (np.array_equal(a.numerical_flat, b.numerical_flat)
            and np.array_equal(a.noise_flat, b.noise_flat)
            and np.array_equal(a.status, b.status) and a.verdict == b.verdict)


def _best(work: MLP, executor: Any, repeats: int, reference: Any = None,
          pids: list[int] | None = None) -> tuple[float, dict, Any]:
    """The fastest of `repeats` runs: (wall seconds, CPU seconds of that run, result)."""
    best, best_cpu, result = float("inf"), {}, None
    for _ in range(repeats):
        seconds, cpu, result = _check(work, executor, pids)
        if seconds < best:
            best, best_cpu = seconds, cpu
        if reference is not None and not _same(reference, result):
            raise AssertionError("a sharded result differs from the serial one")
    return best, best_cpu, result


def run(quick: bool = False) -> list[dict]:
    """Time serial vs ProcessPoolExecutor(2) vs dask LocalCluster(2); return rows."""
    work = MLP.small() if quick else MLP.medium()
    repeats = 1 if quick else 3
    rows: list[dict] = []
    # Warm up imports and caches in this process.
    _check(MLP.small())

    serial_s, serial_cpu, serial = _best(work, None, repeats)
    rows.append({"engine": "serial", "workers": 1, "seconds": serial_s, "speedup": 1.0,
                 "overhead": 0.0, "efficiency": 1.0, "cpu": serial_cpu["total"],
                 "cpu_path": serial_cpu["path"], "cpu_speedup": 1.0, "startup": 0.0,
                 "evaluations": serial.evaluations, "verdict": serial.verdict,
                 "identical": True})

    def add(engine: str, seconds: float, cpu: dict, result: Any, startup: float) -> None:
        speedup = serial_s / seconds
        rows.append({"engine": engine, "workers": WORKERS, "seconds": seconds,
                     "speedup": speedup, "overhead": seconds - serial_s / WORKERS,
                     "efficiency": speedup / WORKERS, "cpu": cpu["total"],
                     "cpu_path": cpu["path"], "cpu_speedup": serial_cpu["path"] / cpu["path"],
                     "cpu_caller": cpu["caller"], "cpu_workers": cpu["workers"],
                     "startup": startup,
                     "evaluations": result.evaluations, "verdict": result.verdict,
                     "identical": _same(serial, result)})

    started = time.perf_counter()
    with ProcessPoolExecutor(WORKERS) as pool:
        list(pool.map(abs, range(WORKERS)))  # start the workers
        startup = time.perf_counter() - started
        pids = list(pool._processes)  # a private attribute: good enough for a bench
        seconds, cpu, result = _best(work, pool, repeats, serial, pids)
    add("ProcessPoolExecutor(2)", seconds, cpu, result, startup)

    try:
        from distributed import Client, LocalCluster
    except ImportError:
        print("dask.distributed not installed: skipping the dask rows", file=sys.stderr)
        return rows
    started = time.perf_counter()
    with LocalCluster(n_workers=WORKERS, threads_per_worker=1, processes=True,
                      dashboard_address=":0") as cluster, Client(cluster) as client:
        client.wait_for_workers(WORKERS)
        startup = time.perf_counter() - started
        pids = list(client.run(os.getpid).values())
        seconds, cpu, result = _best(work, client.get_executor(), repeats, serial, pids)
    add("dask LocalCluster(2×1)", seconds, cpu, result, startup)
    return rows


def _table(rows: list[dict], n: int, load: tuple[float, float, float]) -> str:
    head = (f"full check_grad of MLP ({n} parameters), {WORKERS} workers, 1 BLAS thread "
            f"each; {os.cpu_count()} CPUs, load average before the run "
            f"{load[0]:.2f} (1 min)")
    lines = [head, "",
             "| engine | seconds | speed-up | overhead s | efficiency | CPU s total | "
             "CPU s path | CPU speed-up | start-up s | identical |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['engine']} | {r['seconds']:.3f} | {r['speedup']:.2f}× | "
                     f"{r['overhead']:+.3f} | {r['efficiency']:.0%} | {r['cpu']:.2f} | "
                     f"{r['cpu_path']:.2f} | {r['cpu_speedup']:.2f}× | {r['startup']:.2f} | "
                     f"{'yes' if r['identical'] else 'NO'} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small MLP, one repeat")
    parser.add_argument("--json", metavar="PATH", help="also write the rows as JSON")
    args = parser.parse_args(argv)
    # A speed-up needs idle cores: other processes on the machine show in the load.
    load = os.getloadavg()
    rows = run(args.quick)
    work = MLP.small() if args.quick else MLP.medium()
    print(_table(rows, work.n, load))
    if load[0] > 0.5:
        print(f"note: the machine was busy (load {load[0]:.2f}): the speed-ups are lower "
              "bounds", file=sys.stderr)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=2)
    return 0 if all(r["identical"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
