"""The README's "Testing your gradients" example (docs/test_gradients.py), run as a
user would: it passes as written; with a bug planted in each backward pass it fails
with the report as the message and leaves a replay file that reproduces the same
finding."""

from __future__ import annotations

import importlib.util
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

import fastcheck

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "docs" / "test_gradients.py"
try:
    import torch
except ImportError:   # the torch test of the example skips
    torch = None

from test_pytest_plugin import PLUGIN  # noqa: E402  (the same way of loading the plugin)

# (test, the line as written, the line with a bug, the parameters the bug makes wrong)
BUGS = {
    "mlp": ("test_mlp_backward", "dZ = (p[\"W2\"].T @ d_out) * (1 - H**2)",
            "dZ = (p[\"W2\"].T @ d_out) * (1 - H)", {"W1", "b1"}),
    "c": ("test_c_loss_gradient", "return XC.T @ (-1.0 / (1.0 + np.exp(z)))",
          "return XC.T @ (-1.0 / (1.0 + np.exp(-z)))", {"theta"}),
    "torch": ("test_swish_backward", "return grad_out * s * (1 + x * (1 - s))",
              "return grad_out * s * (1 + x * (1 + s))", {"theta"}),
}


def test_the_readme_shows_the_example_file_verbatim():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert f"```python\n{EXAMPLE.read_text(encoding='utf-8')}```" in readme


def _load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_example_passes_as_written(pytester):
    pytester.makepyfile(test_gradients=EXAMPLE.read_text(encoding="utf-8"))
    result = pytester.runpytest(*PLUGIN, "-v")
    skipped = int(torch is None) + int(shutil.which("cc") is None)
    result.assert_outcomes(passed=3 - skipped, skipped=skipped)
    result.stdout.fnmatch_lines(["*test_mlp_backward PASSED*",
                                 "    gradcheck: gradient check EXCELLENT*worst of 3 points*"])


@pytest.mark.parametrize("bug", list(BUGS))
def test_a_planted_bug_fails_with_the_report_and_a_replay_file(pytester, tmp_path, bug):
    test, right, wrong, parameters = BUGS[bug]
    if bug == "torch" and torch is None:
        pytest.skip("needs PyTorch")
    if bug == "c" and shutil.which("cc") is None:
        pytest.skip("needs a C compiler")
    source = EXAMPLE.read_text(encoding="utf-8")
    assert source.count(right) == 1
    path = pytester.makepyfile(test_gradients=source.replace(right, wrong))
    result = pytester.runpytest(*PLUGIN, "-k", test, "--junitxml=report/junit.xml")
    result.assert_outcomes(failed=1)
    output = result.stdout.str()
    assert "fastcheck: gradient check WRONG" in output
    for name in parameters:
        assert f"{name} is wrong" in output
    # the replay file sits next to the report, and reproduces the same finding
    case = next(ET.parse(pytester.path / "report" / "junit.xml").iter("testcase"))
    props = dict((p.get("name"), p.get("value")) for p in case.iter("property"))
    replay_file = Path(props["gradcheck_replay"])
    assert replay_file.parent == pytester.path / "report" and replay_file.is_file()
    module = _load(path, f"buggy_example_{bug}")
    if bug == "mlp":
        loss, grad = module.mlp_loss, module.mlp_grad
    elif bug == "c":
        loss, grad = module.build_c_loss(tmp_path), module.c_loss_grad
    else:
        loss, grad = module.swish_loss, module.swish_grad
    again = fastcheck.replay(replay_file, loss, grad)
    replayed = again.extra["replay"]
    assert replayed["reproduced"] is True
    assert replayed["now"]["wrong"] == replayed["recorded"]["wrong"] != []
    assert {p.name for p in again.parameters if p.wrong} == parameters
