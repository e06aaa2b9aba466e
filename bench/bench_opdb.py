"""fastcheck.torch against torch.autograd.gradcheck over PyTorch's own operator database.

    python bench/bench_opdb.py                     # every differentiable op (minutes)
    python bench/bench_opdb.py --stride 10         # every tenth op, for a quick look
    python bench/bench_opdb.py --out bench/results/opdb.json

Every differentiable OpInfo of ``torch.testing._internal.common_methods_invocations
.op_db`` (float64 sample inputs on the CPU, recomposed as PyTorch's own gradient
tests do; tests/opdb_cases.py): up to two samples per op as they are, and two with
a planted backward bug (one gradient element ×1.01, ×1.1, sign-flipped or dropped):
one at the element with the largest gradient, one at the element with the
smallest gradient that a difference can still resolve (|g_i| max(1, |x_i|) above
1e-6 of the outputs' scale; ids end in "-small"), where a tiny derivative could
hide the bug (issue 16 item 2).  Each case is checked by
fastcheck.torch.check_function (defaults), gradcheck (slow mode, the default) and
gradcheck(fast_mode=True), all with raise_exception=False and op's nondet_tol.

A verdict is right when a clean case passes and a bugged case does not; a false
positive is a clean case failed, a false negative a bugged case passed; a crash is
an exception from the checker.  Ops that PyTorch itself marks as an expected
failure or skip of its float64 CPU gradcheck test are counted apart (their clean
cases have no known right answer).  Times are the sum of each checker's wall
clock, one torch thread (tiny ops: more threads only contend).  Needs torch and
expecttest.
"""

from __future__ import annotations

import argparse
import collections
import json
import pathlib
import platform
import sys
import time
import warnings

TESTS = pathlib.Path(__file__).resolve().parents[1] / "tests"
sys.path.insert(0, str(TESTS))
sys.path.append(str(TESTS.parent))

import torch  # noqa: E402

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import opdb_cases as oc

TOOLS = ("fastcheck", "gradcheck", "gradcheck fast")
OUTCOMES = ("right", "false positive", "false negative", "crash")


def run_case(case: oc.Case) -> dict:
    runs = {"fastcheck": oc.run_fastcheck(case),
            "gradcheck": oc.run_gradcheck(case, fast=False),
            "gradcheck fast": oc.run_gradcheck(case, fast=True)}
    return {"id": case.id, "op": case.op, "bug": case.bug, "where": case.where,
            "out_size": case.out_size, "mark": case.mark, "small": case.small,
            **{tool: {**run, "outcome": oc.outcome(case, run)} for tool, run in runs.items()}}


def collect(stride: int, progress: bool) -> tuple[list[dict], int]:
    ops = oc.differentiable_ops()
    rows = []
    for i in range(0, len(ops), stride):
        try:
            cases = oc.op_cases(ops[i], i, small=True)
        except Exception as exc:  # an op whose samples cannot be made: say so, go on
            print(f"  {ops[i].name}: no cases ({type(exc).__name__}: {exc})"[:200])
            continue
        rows += [run_case(c) for c in cases]
        if progress and (i // stride) % 50 == 0:
            print(f"  {i + 1}/{len(ops)} ops, {len(rows)} cases", flush=True)
    return rows, len(range(0, len(ops), stride))


def table(rows: list[dict]) -> str:
    head = ("| checker | right verdicts | false positives | false negatives | crashes "
            "| time (s) |")
    lines = [head, "|---|---|---|---|---|---|"]
    for tool in TOOLS:
        count = collections.Counter(r[tool]["outcome"] for r in rows)
        seconds = sum(r[tool]["seconds"] for r in rows)
        lines.append(f"| {tool} | {count['right']:,} / {len(rows):,} | "
                     f"{count['false positive']} | {count['false negative']} | "
                     f"{count['crash']} | {seconds:.1f} |")
    return "\n".join(lines)


def judge_item(row: dict) -> str:
    """Which item of issue 16 a wrong fastcheck verdict belongs to (a guess by shape)."""
    outcome = row["fastcheck"]["outcome"]
    if outcome == "false negative" and row["out_size"] == 1:
        return "item 1 (one-element output)"
    if outcome == "false positive" and row["op"].startswith("special.ndtr"):
        return "item 6 (ndtr tail)"
    if outcome == "false negative" and row.get("small"):
        return "item 2 (bug at the smallest gradient)"
    if outcome == "false negative":
        return "item 2? (small derivative)"
    return "other"


def small_line(bugged: list[dict]) -> str:
    """The bugs planted at the smallest resolvable gradient, caught per checker."""
    small = [r for r in bugged if r.get("small")]
    caught = ", ".join(f"{tool} {sum(r[tool]['outcome'] == 'right' for r in small)}"
                       for tool in TOOLS)
    return (f"Of the {len(bugged)} planted bugs, {len(small)} sit at the element with the "
            f"smallest resolvable gradient; caught: {caught}.")


def report(rows: list[dict], n_ops: int, seconds: float) -> str:
    plain = [r for r in rows if not r["mark"]]
    marked = [r for r in rows if r["mark"]]
    bugged = [r for r in plain if r["bug"]]
    caught = [r for r in bugged if r["fastcheck"]["passed"] is False]
    named = [r for r in caught if r["where"] in r["fastcheck"]["top5"]]
    out = [f"{len(plain):,} cases from {len({r['op'] for r in plain})} ops "
           f"({len(bugged)} with a planted bug); {n_ops} differentiable ops visited; "
           f"{seconds:.0f} s in all.", "", table(plain), "",
           f"fastcheck names the planted element among its 5 worst components in "
           f"{len(named)} of the {len(caught)} bugged cases it fails.", "",
           small_line(bugged), ""]
    wrong = [r for r in plain if r["fastcheck"]["outcome"] != "right"]
    by_item = collections.defaultdict(list)
    for r in wrong:
        by_item[judge_item(r)].append(r)
    out.append("fastcheck's wrong verdicts, by the issue-16 item they belong to:")
    for item, found in sorted(by_item.items()):
        ids = ", ".join(f"{r['id']} ({r['fastcheck']['verdict']})" for r in found)
        out.append(f"- {item}: {len(found)}: {ids}")
    slow = [r for r in plain if r["gradcheck"]["outcome"] != "right"]
    out.append(f"- gradcheck (slow mode) for comparison: {len(slow)}: " + ", ".join(
        f"{r['id']} ({r['gradcheck']['outcome']})" for r in slow))
    out += ["", f"Ops PyTorch marks as failing or skipped in its own gradcheck test "
            f"({len(marked)} cases): verdicts fastcheck / gradcheck / fast:"]
    for r in marked:
        out.append(f"- {r['id']} [{r['mark']}]: " + " / ".join(
            r[t]["verdict"] for t in TOOLS))
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stride", type=int, default=1, help="every n-th op (default 1)")
    parser.add_argument("--out", type=pathlib.Path, help="write the rows as JSON here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    started = time.perf_counter()
    rows, n_ops = collect(args.stride, progress=True)
    seconds = time.perf_counter() - started
    print(report(rows, n_ops, seconds))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        meta = {"torch": torch.__version__, "python": platform.python_version(),
                "stride": args.stride, "seconds": seconds}
        args.out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
