"""The noisy-loss suite: tests/noisy_cases.py through check_grad (default options).

A correct gradient must not be called "wrong" (passed, an honest "unresolved", or
"suspicious" where the loss's own tolerance bends its derivative -- counted
separately); a planted bug must not pass, and its component must be ranked first.  The
confusion table per category is in bench/correctness_table.py.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import pytest
from noisy_cases import NOISY_CASES, NoisyCase

import fastcheck


class NoisyRun(NamedTuple):
    """What one case gave: the outcome in the suite's words and the costs."""

    outcome: str            # "pass", "unresolved", "suspicious", "fail"
    problem: str            # "" when right, else "false positive" / ...
    verdict: str
    evaluations: int
    noise_evaluations: int
    refine_evaluations: int
    report: str


def outcome_of(case: NoisyCase, result: fastcheck.GradCheckResult) -> tuple[str, str]:
    if result.passed:
        outcome = "pass"
    elif result.verdict in ("unresolved", "suspicious"):
        outcome = result.verdict
    else:
        outcome = "fail"
    problem = ""
    if case.expected == "pass" and outcome == "fail":
        problem = "false positive"
    elif case.expected == "fail":
        if outcome == "pass":
            problem = "false negative"
        elif outcome != "unresolved" and result.worst(1)[0].name != case.wrong:
            problem = f"planted {case.wrong} not ranked first ({result.worst(1)[0].name})"
    return outcome, problem


@functools.cache
def run(name: str) -> NoisyRun:
    case = next(c for c in NOISY_CASES if c.name == name)
    result = fastcheck.check_grad(case.loss, case.grad, case.make_params())
    outcome, problem = outcome_of(case, result)
    phases = result.extra.get("evaluations_by_phase", {})
    return NoisyRun(outcome, problem, result.verdict, result.evaluations,
                    int(phases.get("noise", 0)), int(phases.get("refinement", 0)),
                    result.report())


@pytest.mark.parametrize("case", NOISY_CASES, ids=[c.name for c in NOISY_CASES])
def test_noisy_case(case):
    r = run(case.name)
    assert not r.problem, f"{r.problem}\n{r.report}"


def test_noisy_suite_covers_every_category():
    categories = {c.category for c in NOISY_CASES}
    assert {"float32/16 inside", "cancellation", "exact offset", "log/exp near 1",
            "table lookup"} <= categories
    assert sum(c.expected == "fail" for c in NOISY_CASES) == len(NOISY_CASES) // 2


def confusion_by_category() -> list[dict]:
    """Per category: cases, false positives, false negatives, misranked, unresolved,
    and the evaluations spent on noise measurement and refinement."""
    rows = {}
    for case in NOISY_CASES:
        r = run(case.name)
        row = rows.setdefault(case.category, {
            "category": case.category, "correct": 0, "buggy": 0, "false_positives": 0,
            "false_negatives": 0, "misranked": 0, "unresolved_correct": 0,
            "suspicious_correct": 0,
            "unresolved_buggy": 0, "evals_correct": 0, "noise_correct": 0,
            "refine_correct": 0, "evals_buggy": 0, "noise_buggy": 0, "refine_buggy": 0})
        kind = "correct" if case.expected == "pass" else "buggy"
        row[kind] += 1
        row["false_positives"] += r.problem == "false positive"
        row["false_negatives"] += r.problem == "false negative"
        row["misranked"] += r.problem.startswith("planted")
        row[f"unresolved_{kind}"] += r.outcome == "unresolved"
        row["suspicious_correct"] += kind == "correct" and r.outcome == "suspicious"
        row[f"evals_{kind}"] += r.evaluations
        row[f"noise_{kind}"] += r.noise_evaluations
        row[f"refine_{kind}"] += r.refine_evaluations
    return list(rows.values())
