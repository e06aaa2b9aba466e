"""Sanity check: run every available peer once on two small workloads.

Prints, per peer, the time of one run, the number of loss evaluations and the
largest absolute difference between its numerical gradient and the analytic
one ("-" when the peer only returns a verdict). Unavailable peers say why.

Run from the repository root with any Python that has numpy::

    python bench/try_peers.py
    /work/venv-peers/bin/python bench/try_peers.py   # with the optional peers
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np
from peers import PEERS, PeerUnavailable, peer_versions
from workloads import MLP, Quadratic, Workload


def try_all(workload: Workload) -> None:
    """Run every peer on ``workload`` and print one line each."""
    exact = workload.flat_grad(workload.theta0())
    print(f"\n{workload.name}  (n = {workload.n})")
    print(f"  {'peer':<25}{'seconds':>10}{'evals':>9}{'max|diff|':>11}  method / note")
    for name, run in PEERS.items():
        try:
            r = run(workload)
        except PeerUnavailable as exc:
            print(f"  {name:<25}{'unavailable':>30}  {exc.reason}")
            continue
        diff = "-" if r["grad"] is None else f"{np.nanmax(np.abs(r['grad'] - exact)):.1e}"
        print(f"  {name:<25}{r['seconds']:>10.4f}{r['evals']:>9}{diff:>11}  "
              f"{r['method']}; {r['note']}")


def main() -> None:
    versions = ", ".join(f"{k} {v or 'missing'}" for k, v in peer_versions().items())
    print(f"Python {sys.version.split()[0]}; {versions}")
    for workload in (Quadratic(1000), MLP.small()):
        try_all(workload)


if __name__ == "__main__":
    main()
