"""fastcheck.torch over a slice of PyTorch's own operator database, with planted bugs.

Every third differentiable OpInfo of ``op_db`` (float64 sample inputs on the CPU,
PyTorch's own gradcheck recomposition; tests/opdb_cases.py), minus the ops PyTorch
itself marks as failing or skipped in its gradcheck test: up to two samples per op
checked as they are (a correct backward must pass) and one with a planted bug (one
element of the gradient ×1.01, ×1.1, sign-flipped or dropped: it must not pass,
and the planted element must be among the five worst components named).  The full
run, side by side with gradcheck, is bench/bench_opdb.py.

Skipped without torch or expecttest (``torch.testing._internal`` imports it).
"""

from __future__ import annotations

import warnings

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("expecttest")

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import opdb_cases as oc

STRIDE = 4
# Cases expected to fail, with the reason (none left: ndtr's tail at x = -4.827,
# issue 16 item 6, was a noise table that aliased, _noise note 8).
KNOWN: dict[str, str] = {}


def _slice() -> list:
    ops = oc.differentiable_ops()
    cases = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for i in range(0, len(ops), STRIDE):
            if not oc.marked(ops[i]):
                cases += oc.op_cases(ops[i], i)
    return cases


CASES = _slice()


def _param(case: oc.Case) -> object:
    reason = KNOWN.get(case.id)
    marks = [pytest.mark.xfail(reason=reason, strict=False)] if reason else []
    return pytest.param(case, id=case.id, marks=marks)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    # Tiny ops on a shared 2-core machine: torch's own threads only contend.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_the_slice_is_what_it_says():
    bugged = [c for c in CASES if c.bug]
    assert set(KNOWN) <= {c.id for c in CASES}
    assert sum(c.out_size == 1 for c in bugged) > 20  # one-element outputs (issue 16 item 1)
    assert len(CASES) > 300 and 0.25 < len(bugged) / len(CASES) < 0.45
    assert {c.bug for c in bugged} == set(oc.BUG_KINDS)
    assert not any(c.mark for c in CASES)


@pytest.mark.parametrize("case", [_param(c) for c in CASES])
def test_opdb_case_gets_the_right_verdict(case):
    before = [t.detach().numpy().tobytes() for t in case.inputs]
    run = oc.run_fastcheck(case)
    assert run["error"] is None, run["error"]
    assert oc.outcome(case, run) == "right", (case.bug, case.where, run["verdict"])
    if case.bug:
        assert case.where in run["top5"], (case.where, run["top5"])
    assert [t.detach().numpy().tobytes() for t in case.inputs] == before
