"""Print the correctness suites' false-positive / false-negative tables in markdown.

    python bench/correctness_table.py [--methods central,central4,richardson]

Runs check_grad on every case of tests/correctness_cases.py (53 cases with known
verdicts) and counts, per dtype: false positives (a correct gradient, a kink or a
nondeterministic loss called wrong) and false negatives (a wrong gradient passed),
plus the kinks and nondeterministic losses reported as such.  The judging rules
are those of tests/test_correctness.py, imported from there (it needs pytest, a
test dependency).  The 10 000-component case runs with the first method only.

Then the noisy-loss suite (tests/noisy_cases.py, judged as in tests/test_noisy.py)
per category: false positives (a correct gradient called "wrong"), false
negatives (a planted bug passed), planted bugs not ranked first, "cannot resolve"
counts, and the evaluations spent measuring the noise and on refinement (larger
or smaller steps), on the correct and on the buggy cases.

Last, the gradients approximate by design (tests/accuracy_cases.py, judged as in
tests/test_accuracy.py): an adjoint ODE gradient and an implicit CG gradient,
correct and with a 1 % bug in one component, without and with a declared
accuracy (rtol=), with their verdicts and evaluations.
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import time

TESTS = pathlib.Path(__file__).resolve().parents[1] / "tests"
sys.path.insert(0, str(TESTS))

import test_accuracy as ta  # noqa: E402
import test_correctness as tc  # noqa: E402
import test_noisy as tn  # noqa: E402


def short(value: float) -> str:
    """A tolerance as people write it (1e-5, 2.5e-8, 0.01): for the table only."""
    if value == 0 or 1e-3 <= abs(value) < 1e4:
        return f"{value:.3g}"
    mantissa, exponent = f"{value:.2e}".split("e")
    return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"


def table(method: str, names: list[str] | None) -> str:
    rows = tc.confusion_table(method, names)
    head = ("| dtype | cases | expected pass (incl. kinks) | false positives | expected fail | "
            "false negatives | kinks detected | nondeterminism detected |")
    lines = [head, "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['dtype']} | {r['cases']} | {r['expected_pass']} | "
            f"{r['false_positives']} | {r['expected_fail']} | {r['false_negatives']} | "
            f"{r['kinks_detected']} of {r['expected_kink']} | "
            f"{r['nondeterminism_detected']} of {r['expected_nondeterministic']} |")
    other = sum(r["other_mismatches"] for r in rows)
    if other:
        lines.append(f"\n{other} case(s) with another mismatch (e.g. a planted component "
                     "not named): see pytest tests/test_correctness.py")
    return "\n".join(lines)


def cost_table(method: str, names: list[str]) -> str:
    """Loss evaluations per expected verdict: the first run (probes + kernel) and
    the refinement of suspects (the only extra cost)."""
    lines = ["| expected | cases | evaluations | of which refinement | cases refined |",
             "|---|---|---|---|---|"]
    for kind in ("pass", "kink", "fail", "nondeterministic"):
        runs = [tc.run(c.name, method) for c in tc.CASES
                if c.expected == kind and c.name in names]
        total = sum(r.evaluations for r in runs)
        extra = sum(r.refine_evaluations for r in runs)
        refined = sum(r.refine_evaluations > 0 for r in runs)
        share = f" ({100 * extra / total:.1f} %)" if total else ""
        lines.append(f"| {kind} | {len(runs)} | {total} | {extra}{share} | {refined} |")
    return "\n".join(lines)


def noisy_table() -> str:
    """The noisy-loss suite per category (tests/test_noisy.py's judging)."""
    rows = tn.confusion_by_category()
    lines = ["| category | correct | false positives | suspicious | cannot resolve | "
             "buggy | false negatives | not ranked first | cannot resolve | "
             "noise evals (correct / buggy) | refinement evals (correct / buggy) | "
             "all evals (correct / buggy) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    total = {k: 0 for k in rows[0] if k != "category"}
    for r in [*rows, None]:
        if r is None:
            r = {"category": "**all**", **total}
        else:
            for k in total:
                total[k] += r[k]
        lines.append(
            f"| {r['category']} | {r['correct']} | {r['false_positives']} | "
            f"{r['suspicious_correct']} | {r['unresolved_correct']} | {r['buggy']} | "
            f"{r['false_negatives']} | {r['misranked']} | {r['unresolved_buggy']} | "
            f"{r['noise_correct']} / {r['noise_buggy']} | "
            f"{r['refine_correct']} / {r['refine_buggy']} | "
            f"{r['evals_correct']} / {r['evals_buggy']} |")
    return "\n".join(lines)


def accuracy_table() -> str:
    """The approximate-by-design cases, undeclared and declared (issue 15)."""
    lines = ["| case | gradient | declared | verdict | passed | wrong | bug ranked first | "
             "evaluations |", "|---|---|---|---|---|---|---|---|"]
    for name, case in ta.CASES.items():
        for bug in (0.0, 0.01):
            for declared in (False, True):
                r = ta.run(name, bug, declared)
                first = r.worst(1)[0].name == case.bug_name if bug else "-"
                lines.append(
                    f"| {name} | {'1 % bug' if bug else 'correct'} | "
                    f"{'rtol=' + short(case.rtol) if declared else 'none'} | {r.verdict} | "
                    f"{r.passed} | {r.n_wrong} | {first} | {r.evaluations} |")
    return "\n".join(lines)


def run(quick: bool = False) -> list[dict]:
    """The table as rows, for bench/run.py's "correctness" section.

    A case whose verdict is off is a failure of the benchmark (status "error"), so
    the quick run in CI catches a regression of the verdict, not only a crash.
    """
    names = [c.name for c in tc.CASES if not quick or c.name not in tc.LARGE]
    rows = []
    for r in tc.confusion_table("central", names):
        bad = r["false_positives"] + r["false_negatives"] + r["other_mismatches"]
        rows.append({**r, "method": "central", "status": "error" if bad else "ok"})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default="central",
                        help="comma-separated check_grad methods (default: central)")
    args = parser.parse_args(argv)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    everything = [c.name for c in tc.CASES]
    small = [c.name for c in tc.CASES if c.name not in tc.LARGE]
    for k, method in enumerate(methods):
        names = everything if k == 0 else small
        started = time.perf_counter()
        text = table(method, names)
        print(f"### method={method!r} ({len(names)} cases, "
              f"{time.perf_counter() - started:.1f} s)\n")
        print(text)
        print()
        print(cost_table(method, names))
        print()
    started = time.perf_counter()
    text = noisy_table()
    print(f"### noisy losses ({len(tn.NOISY_CASES)} cases, "
          f"{time.perf_counter() - started:.1f} s)\n")
    print(text)
    print()
    started = time.perf_counter()
    text = accuracy_table()
    print(f"### approximate by design, declared accuracy ({len(ta.CASES)} cases, "
          f"{time.perf_counter() - started:.1f} s)\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
