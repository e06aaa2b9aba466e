"""The correctness suite: every case of tests/correctness_cases.py gets its verdict.

Mapping from a case's expected verdict to what check_grad must say:

- "pass": ``result.passed`` and no kinks;
- "kink": ``result.passed`` with ``n_kinks > 0``;
- "fail": not passed, every planted wrong block / component is among the
  components named wrong, and nothing outside the planted set is named wrong
  (except in a case that also has kinks, where only the planted bug is required);
- "nondeterministic": verdict "nondeterministic".

The summary test counts false positives (a correct gradient not passed: pass, kink
or nondeterministic cases that come out as a failure) and false negatives (a
wrong gradient passed), per dtype.  The same cases are rerun with central4 and
richardson (same verdicts expected); complex step has its own complex-safe list
in test_methods.py.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import numpy as np
import pytest
from correctness_cases import CASES, Case, cases_by_name

import fastcheck

BY_NAME = cases_by_name()
# The 10 000-component case costs ~2e4 evaluations per run: checked once, with
# the default method only.
LARGE = {c.name for c in CASES if c.name.startswith("single_component_of_10000")}


def wrong_names(result: fastcheck.GradCheckResult) -> list[str]:
    return result.layout.names_of(result.indices("wrong"))


def _matches(name: str, planted: str) -> bool:
    """Whether component `name` ("W2[0, 1]", "theta[7]") belongs to `planted`
    ("W2" for a whole block, "theta[7]" for one component)."""
    return name == planted or name.split("[")[0] == planted


def judge(case: Case, result: fastcheck.GradCheckResult) -> tuple[str, list[str]]:
    """What the result says in the case's vocabulary, and what is wrong with it.

    Returns ``(observed, problems)``: observed is "pass", "kink", "fail",
    "nondeterministic" or "invalid"; problems lists the mismatches with the case
    (empty when the result is right in every respect).
    """
    if result.verdict in ("nondeterministic", "invalid"):
        observed = result.verdict
    elif result.passed:
        observed = "kink" if result.n_kinks else "pass"
    else:
        observed = "fail"
    problems = []
    if observed != case.expected:
        problems.append(f"expected {case.expected}, got {observed} ({result.summary()})")
    if case.expected == "fail" and observed == "fail":
        names = wrong_names(result)
        missing = [w for w in case.wrong if not any(_matches(n, w) for n in names)]
        if missing:
            problems.append(f"planted bug(s) {missing} not named wrong; wrong: {names[:8]}")
        has_kinks = "kink" in case.name
        stray = [n for n in names if not any(_matches(n, w) for w in case.wrong)]
        if stray and not has_kinks:
            problems.append(f"named wrong outside the planted set: {stray[:8]}")
    return observed, problems


class Run(NamedTuple):
    observed: str
    problems: tuple[str, ...]
    evaluations: int
    refine_evaluations: int  # beyond the probes and the kernel's first run


def run(name: str, method: str = "central") -> Run:
    """check_grad on a case (cached: the summary test reuses the per-case runs)."""
    return _run(name, method)


@functools.cache
def _run(name: str, method: str) -> Run:
    case = BY_NAME[name]
    result = fastcheck.check_grad(case.loss, case.grad, case.make_params(), method=method)
    observed, problems = judge(case, result)
    first = 0
    if observed not in ("nondeterministic", "invalid"):
        per = {"central": 2, "forward": 1, "backward": 1, "central4": 4, "richardson": 4,
               "complex": 1}[method]
        first = per * result.status.size + (method != "complex") + 3
    refine = result.evaluations - first if first else 0
    return Run(observed, tuple(problems), result.evaluations, refine)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_case_verdict(case: Case) -> None:
    problems = run(case.name).problems
    assert not problems, "; ".join(problems)


SECOND_METHODS = ("central4", "richardson")
RERUN = [c for c in CASES if c.name not in LARGE]


@pytest.mark.parametrize("method", SECOND_METHODS)
@pytest.mark.parametrize("case", RERUN, ids=[c.name for c in RERUN])
def test_case_verdict_other_methods(case: Case, method: str) -> None:
    problems = run(case.name, method).problems
    assert not problems, f"{method}: " + "; ".join(problems)


def confusion_table(method: str = "central", names: list[str] | None = None) -> list[dict]:
    """Per dtype: cases, expected pass / fail, false positives / negatives, and
    kinks / nondeterminism detected.  A false positive is a case with a correct
    gradient (pass or kink) or a nondeterministic loss whose gradient was called
    wrong; a false negative is a wrong gradient that passed.  Reported as such by
    bench/correctness_table.py."""
    rows = []
    for dtype in ("float64", "float32"):
        cases = [c for c in CASES if c.dtype == dtype and (names is None or c.name in names)]
        row = {"dtype": dtype, "cases": len(cases), "expected_pass": 0, "false_positives": 0,
               "expected_fail": 0, "false_negatives": 0, "expected_kink": 0,
               "kinks_detected": 0, "expected_nondeterministic": 0,
               "nondeterminism_detected": 0, "other_mismatches": 0, "evaluations": 0,
               "refine_evaluations": 0}
        for c in cases:
            observed, problems, evaluations, refine = run(c.name, method)
            row["evaluations"] += evaluations
            row["refine_evaluations"] += refine
            if c.expected in ("pass", "kink"):
                row["expected_pass"] += 1
                row["false_positives"] += observed == "fail"
            if c.expected == "fail":
                row["expected_fail"] += 1
                row["false_negatives"] += observed in ("pass", "kink")
            if c.expected == "kink":
                row["expected_kink"] += 1
                row["kinks_detected"] += observed == "kink"
            if c.expected == "nondeterministic":
                row["expected_nondeterministic"] += 1
                row["nondeterminism_detected"] += observed == "nondeterministic"
                row["false_positives"] += observed == "fail"
            # anything else that is not right (a kink reported as a plain pass, a
            # planted component not named, ...)
            row["other_mismatches"] += bool(problems) and not (
                (c.expected in ("pass", "kink", "nondeterministic") and observed == "fail")
                or (c.expected == "fail" and observed in ("pass", "kink")))
        rows.append(row)
    return rows


def test_suite_has_enough_cases() -> None:
    kinds = {k: sum(c.expected == k for c in CASES)
             for k in ("pass", "fail", "kink", "nondeterministic")}
    assert len(CASES) >= 30
    assert all(v >= 3 for v in kinds.values()), kinds


def test_confusion_table_is_clean() -> None:
    rows = confusion_table()
    for row in rows:
        assert row["false_positives"] == 0, row
        assert row["false_negatives"] == 0, row
        assert row["kinks_detected"] == row["expected_kink"], row
        assert row["nondeterminism_detected"] == row["expected_nondeterministic"], row
        assert row["other_mismatches"] == 0, row
    assert sum(r["cases"] for r in rows) == len(CASES)


@pytest.mark.parametrize("method", SECOND_METHODS)
def test_confusion_table_is_clean_other_methods(method: str) -> None:
    for row in confusion_table(method, [c.name for c in RERUN]):
        assert row["false_positives"] == row["false_negatives"] == 0, row
        assert row["other_mismatches"] == 0, row


def test_judge_catches_a_wrong_result() -> None:
    # The harness itself: a correct gradient judged against a "fail" expectation,
    # and a buggy one whose planted component is not the one named.
    case = BY_NAME["sign_flip_component_f64"]
    good = fastcheck.check_grad(case.loss, BY_NAME["quadratic_form_nonsym_f64"].grad,
                                case.make_params())
    observed, problems = judge(case, good)
    assert observed == "pass" and problems
    moved = Case(case.name, case.make_params, case.loss, case.grad, "fail", "float64",
                 ("theta[8]",))
    bad = fastcheck.check_grad(case.loss, case.grad, case.make_params())
    observed, problems = judge(moved, bad)
    assert observed == "fail"
    assert any("not named wrong" in p for p in problems)
    assert any("outside the planted set" in p for p in problems)
    assert np.array_equal(bad.indices("wrong"), [7])
