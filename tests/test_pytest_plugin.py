"""The pytest plugin (fastcheck.pytest_plugin), run through pytest's own pytester."""

from __future__ import annotations

import importlib.metadata
import xml.etree.ElementTree as ET

import pytest
from conftest import cube

import fastcheck

pytest_plugins = ["pytester"]


def _installed() -> bool:
    """Whether the plugin comes from the installed entry point (then -p would load
    it a second time under another name)."""
    return any(ep.value == "fastcheck.pytest_plugin"
               for ep in importlib.metadata.entry_points(group="pytest11"))


# Other plugins of this environment are left out of the inner runs: pytest-benchmark
# alone takes ~1 s to start (blocking an absent plugin's name is harmless).
PLUGIN = ([] if _installed() else ["-p", "fastcheck.pytest_plugin"]) + [
    "-p", "no:cacheprovider", "-p", "no:benchmark", "-p", "no:hypothesispytest"]

LOSSES = '''
import numpy as np
import pytest

def loss(p):
    return float(np.sum(p**3))

def grad(p):
    return 3 * p**2

def buggy_grad(p):
    g = 3 * p**2
    g[1] += 1.0
    return g

THETA = np.array([1.0, 2.0, -0.5])
'''


def buggy_cube_grad(p):
    g = 3 * p**2
    g[1] += 1.0
    return g


def run(pytester: pytest.Pytester, source: str, *args: str) -> pytest.RunResult:
    pytester.makepyfile(test_user=LOSSES + source)
    return pytester.runpytest(*PLUGIN, *args)


def test_a_wrong_gradient_fails_with_the_report_and_leaves_a_replay_file(pytester):
    result = run(pytester, '''
def test_right(gradcheck):
    r = gradcheck(loss, grad, THETA.copy())
    assert r.passed

def test_wrong(gradcheck):
    gradcheck(loss, buggy_grad, THETA.copy())
''', "--gradcheck-replay-dir=replays")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*gradient check WRONG*", "*theta?1?*wrong*",
                                 "replay file: *test_user.py_test_wrong-0.npz"])
    files = sorted((pytester.path / "replays").iterdir())
    assert [f.name for f in files] == ["test_user.py_test_wrong-0.npz"]
    again = fastcheck.replay(files[0], cube, buggy_cube_grad)
    assert again.extra["replay"]["reproduced"] is True
    assert list(again.layout.names_of(again.indices("wrong"))) == ["theta[1]"]


def test_verbose_output_has_one_line_per_check(pytester):
    source = '''
def test_two(gradcheck):
    gradcheck(loss, grad, THETA.copy())
    gradcheck(loss, grad, THETA.copy(), points=2)
'''
    result = run(pytester, source, "-v")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines([
        "*test_two PASSED*",
        "    gradcheck: gradient check EXCELLENT: * (3 components; central, full)",
        "    gradcheck: gradient check EXCELLENT: *worst of 2 points*"])
    quiet = run(pytester, source)
    assert "gradcheck:" not in quiet.stdout.str()


def test_junitxml_gets_the_verdict_and_the_worst_components(pytester):
    result = run(pytester, '''
def test_right(gradcheck):
    gradcheck(loss, grad, THETA.copy())

def test_wrong(gradcheck):
    gradcheck(loss, buggy_grad, THETA.copy())
''', "--junitxml=reports/junit.xml")
    result.assert_outcomes(passed=1, failed=1)
    tree = ET.parse(pytester.path / "reports" / "junit.xml")
    props = {case.get("name"): [(p.get("name"), p.get("value"))
                                for p in case.iter("property")]
             for case in tree.iter("testcase")}
    assert dict(props["test_right"])["gradcheck_verdict"] == "excellent"
    assert "gradcheck_replay" not in dict(props["test_right"])
    wrong = dict(props["test_wrong"])
    assert wrong["gradcheck_verdict"] == "wrong"
    assert wrong["gradcheck_worst"] == "theta[1] (wrong)"
    assert wrong["gradcheck"].startswith("gradient check WRONG")
    # the replay file sits next to the report
    assert wrong["gradcheck_replay"] == str(pytester.path / "reports"
                                            / "test_user.py_test_wrong-0.npz")
    assert (pytester.path / "reports" / "test_user.py_test_wrong-0.npz").is_file()


def test_suite_wide_budget_and_marker_precedence(pytester):
    result = run(pytester, '''
def test_suite_budget(gradcheck):
    r = gradcheck(loss, grad, THETA.copy())
    assert r.extra["budget"]["seconds"] == 0.25

@pytest.mark.gradcheck(mode="sample", k=1)
def test_marker_mode_drops_the_budget(gradcheck):
    r = gradcheck(loss, grad, THETA.copy())
    assert r.mode == "sample" and "budget" not in r.extra

@pytest.mark.gradcheck(budget=1.5, points=2)
def test_marker_budget_and_points(gradcheck):
    r = gradcheck(loss, grad, THETA.copy())
    assert [p.extra["budget"]["seconds"] for p in r.points] == [0.75, 0.75]

@pytest.mark.gradcheck(points=2)
def test_call_keywords_win(gradcheck):
    r = gradcheck(loss, grad, THETA.copy(), points=3, mode="full")
    assert len(r.points) == 3 and "budget" not in r.extra
''', "--gradcheck-budget=250ms")
    result.assert_outcomes(passed=4)


def test_suite_wide_mode_and_points(pytester):
    result = run(pytester, '''
def test_mode(gradcheck):
    r = gradcheck(loss, grad, THETA.copy())
    assert r.mode == "directional" and len(r.points) == 2
''', "--gradcheck-mode=directional", "--gradcheck-points=2")
    result.assert_outcomes(passed=1)


@pytest.mark.parametrize(("args", "message"), [
    (["--gradcheck-budget=soon"], "expected seconds such as 2s"),
    (["--gradcheck-budget=0s"], "must be more than 0 seconds"),
    (["--gradcheck-budget=1s", "--gradcheck-mode=full"], "not both"),
    (["--gradcheck-points=0"], "must be at least 1"),
], ids=["word", "zero", "budget-and-mode", "points"])
def test_bad_options_are_usage_errors(pytester, args, message):
    result = run(pytester, "def test_x():\n    pass\n", *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*{message}*"])


@pytest.mark.parametrize(("save", "files"), [
    ("never", []), ("always", ["test_user.py_test_right-0.npz"])])
def test_save_option(pytester, save, files):
    result = run(pytester, '''
def test_right(gradcheck):
    gradcheck(loss, grad, THETA.copy())
''', f"--gradcheck-save={save}", "--gradcheck-replay-dir=replays")
    result.assert_outcomes(passed=1)
    folder = pytester.path / "replays"
    found = sorted(f.name for f in folder.iterdir()) if folder.exists() else []
    assert found == files


def test_bad_arguments_reach_the_test_as_errors(pytester):
    result = run(pytester, '''
def test_bad(gradcheck):
    with pytest.raises(ValueError, match="budget must be a finite number"):
        gradcheck(loss, grad, THETA.copy(), budget=-1)
''')
    result.assert_outcomes(passed=1)


def test_a_suite_that_does_not_use_it_loads_neither_numpy_nor_the_kernel(pytester):
    # fastcheck/__init__ resolves its names lazily: the plugin costs only pytest's imports.
    pytester.makepyfile(test_plain='''
import sys

def test_plain():
    assert "fastcheck.pytest_plugin" in sys.modules
    assert not [m for m in ("numpy", "scipy", "fastcheck._kernel") if m in sys.modules]
''')
    result = pytester.runpytest_subprocess(*PLUGIN, "-W", "error")
    result.assert_outcomes(passed=1)
    help_text = pytester.runpytest_subprocess(*PLUGIN, "--help")
    help_text.stdout.fnmatch_lines(["*--gradcheck-budget=SECONDS*"])


def test_a_declared_accuracy_passes_through_the_marker_and_the_call(pytester):
    # issue 15: rtol= / atol= are check_grad keywords like any other.
    result = run(pytester, '''
def approx_grad(p):
    return 3 * p**2 * (1 + 3e-6 * np.cos(p))

@pytest.mark.gradcheck(rtol=1e-5)
def test_marker(gradcheck):
    r = gradcheck(loss, approx_grad, THETA.copy())
    assert r.accuracy.rtol == 1e-5 and r.passed

def test_call(gradcheck):
    assert gradcheck(loss, approx_grad, THETA.copy(), atol=1e-4).passed

@pytest.mark.gradcheck(rtol=1e-5)
def test_a_bug_beyond_it_still_fails(gradcheck):
    gradcheck(loss, buggy_grad, THETA.copy())
''')
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(["*declared accuracy rtol=1e-5: 1 of 3 components outside*"])
