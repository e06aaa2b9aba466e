"""fastcheck's pytest plugin: a ``gradcheck`` fixture, suite-wide options and a marker.

Active when fastcheck is installed (entry point ``pytest11``).  In a test::

    def test_backward(gradcheck):
        gradcheck(loss, grad, params, points=3, budget=2.0)

The call runs :func:`fastcheck.check_grad`, and a failing check fails the test
with the report as its message and a replay file written (see
:func:`fastcheck.replay`).  Options, lowest precedence first:

* command line: ``--gradcheck-budget=2s``, ``--gradcheck-mode=directional``,
  ``--gradcheck-points=3``, ``--gradcheck-save=failure|always|never``,
  ``--gradcheck-replay-dir=DIR``;
* the marker ``@pytest.mark.gradcheck(budget=1.0, points=3, ...)`` on a test,
  class or module (any check_grad keyword: ``rtol=1e-5`` declares the accuracy
  of gradients approximate by design -- per test, not suite-wide, since it
  belongs to the gradient);
* the keywords of the call itself.

A layer that sets ``mode``, ``k`` or ``max_evals`` drops a ``budget`` from the layers
below it, and one that sets ``budget`` drops their ``mode`` (budget= chooses it).

With ``-v`` each check adds one line under its test; with ``--junitxml`` the
verdict, the worst components and the replay file are properties of the test
case.

Loading this module imports only pytest and the standard library (the package's
``__init__`` resolves its public names lazily), so suites that do not use the
fixture pay nothing; numpy, scipy and the kernel are imported by the first check.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

__all__ = ["GradCheck", "parse_seconds"]

_MODE_KEYS = ("mode", "k", "max_evals")
_UNITS = {"": 1.0, "s": 1.0, "sec": 1.0, "ms": 1e-3, "min": 60.0, "m": 60.0}
_KEY = pytest.StashKey[dict]()


def parse_seconds(text: str) -> float:
    """``"2s"``, ``"500ms"``, ``"1.5"``, ``"1min"`` -> seconds (> 0)."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*([a-z]*)\s*", text)
    if not match or match.group(2) not in _UNITS:
        raise ValueError(f"--gradcheck-budget={text!r}: expected seconds such as 2s, 500ms, "
                         "1.5 or 1min")
    value = float(match.group(1)) * _UNITS[match.group(2)]
    if value <= 0:
        raise ValueError(f"--gradcheck-budget={text!r} must be more than 0 seconds")
    return value


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("fastcheck", "gradient checks (fastcheck's gradcheck fixture)")
    group.addoption("--gradcheck-budget", metavar="SECONDS", default=None,
                    help="time budget of each gradcheck call, e.g. 2s or 500ms")
    group.addoption("--gradcheck-mode", choices=("full", "directional", "sample"),
                    default=None, help="mode of each gradcheck call (not with a budget)")
    group.addoption("--gradcheck-points", metavar="N", type=int, default=None,
                    help="check each gradcheck call at N points")
    group.addoption("--gradcheck-save", choices=("failure", "always", "never"),
                    default="failure", help="when to write replay files (default: failure)")
    group.addoption("--gradcheck-replay-dir", metavar="DIR", default=None,
                    help="where replay files go (default: next to the --junitxml report, "
                         "else .gradcheck-replays under the root directory)")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "gradcheck(**options): check_grad keywords (budget, mode, points, ...) "
                   "for the gradcheck fixture in this test")
    defaults: dict[str, Any] = {}
    budget = config.getoption("--gradcheck-budget", None)
    mode = config.getoption("--gradcheck-mode", None)
    points = config.getoption("--gradcheck-points", None)
    if budget is not None and mode is not None:
        raise pytest.UsageError("--gradcheck-budget chooses the mode itself: pass it or "
                                "--gradcheck-mode, not both")
    if budget is not None:
        try:
            defaults["budget"] = parse_seconds(budget)
        except ValueError as exc:
            raise pytest.UsageError(str(exc)) from None
    if mode is not None:
        defaults["mode"] = mode
    if points is not None:
        if points < 1:
            raise pytest.UsageError(f"--gradcheck-points={points} must be at least 1")
        defaults["points"] = points
    replay_dir = config.getoption("--gradcheck-replay-dir", None)
    if replay_dir is None:
        xml = getattr(config.option, "xmlpath", None)
        replay_dir = Path(xml).resolve().parent if xml else config.rootpath / \
            ".gradcheck-replays"
    replay_dir = config.invocation_params.dir / replay_dir   # relative: to where pytest ran
    config.pluginmanager.register(_VerboseLines(config), "fastcheck-gradcheck-lines")
    config.stash[_KEY] = {"defaults": defaults, "replay_dir": Path(replay_dir),
                          "save": config.getoption("--gradcheck-save", "failure")}


def _layer(base: dict, top: dict) -> dict:
    """`top` over `base`, with budget and mode excluding each other (module notes)."""
    merged = dict(base)
    if any(key in top for key in _MODE_KEYS):
        merged.pop("budget", None)
    if "budget" in top:
        for key in _MODE_KEYS:
            merged.pop(key, None)
    merged.update(top)
    return merged


class GradCheck:
    """The ``gradcheck`` fixture: call it like :func:`fastcheck.check_grad`.

    Attributes
    ----------
    results : list of GradCheckResult
        The results of this test's calls, in order.
    """

    def __init__(self, node: pytest.Item, settings: dict) -> None:
        self.node = node
        self.settings = settings
        self.results: list[Any] = []
        marker_options: dict = {}
        for marker in reversed(list(node.iter_markers("gradcheck"))):
            marker_options.update(marker.kwargs)   # the closest marker wins
        self.options = _layer(settings["defaults"], marker_options)

    def _replay_path(self) -> Path:
        name = re.sub(r"[^\w.-]+", "_", self.node.nodeid).strip("_")[-150:]
        return self.settings["replay_dir"] / f"{name}-{len(self.results)}.npz"

    def __call__(self, loss: Any, grad: Any, params: Any, **kwargs: Any) -> Any:
        """Check the gradient; fail the test with the report if the check fails.

        Returns the :class:`fastcheck.GradCheckResult` when it passes.
        """
        __tracebackhide__ = True
        from fastcheck import check_grad

        options = _layer(self.options, kwargs)
        when = self.settings["save"]
        if when != "never" and "save" not in options:
            path = self._replay_path()
            path.parent.mkdir(parents=True, exist_ok=True)
            options["save"], options["save_when"] = path, when
        result = check_grad(loss, grad, params, **options)
        self.results.append(result)
        props = self.node.user_properties
        props.append(("gradcheck", result.summary()))
        props.append(("gradcheck_verdict", result.verdict))
        worst = [f"{c.name} ({c.status})" for c in result.worst(5)
                 if c.status not in ("ok", "not checked")]
        if worst:
            props.append(("gradcheck_worst", "; ".join(worst)))
        replay_file = result.extra.get("replay_file")
        if replay_file:
            props.append(("gradcheck_replay", replay_file))
        if not result.passed:
            message = result.report()
            if replay_file:
                message += (f"\n\nreplay file: {replay_file}\n  fastcheck.replay("
                            f"{replay_file!r}, loss, grad) runs this check again")
            pytest.fail(message, pytrace=False)
        return result


@pytest.fixture
def gradcheck(request: pytest.FixtureRequest) -> GradCheck:
    """Check a hand-written gradient; a failing check fails the test with its report.

    ``gradcheck(loss, grad, params, **kwargs)`` takes :func:`fastcheck.check_grad`'s
    arguments, over the ``--gradcheck-*`` options and the ``gradcheck`` marker.
    """
    return GradCheck(request.node, request.config.stash[_KEY])


class _VerboseLines:
    """With -v: one line per check under its test's status line."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config

    @pytest.hookimpl(trylast=True)   # after the terminal reporter wrote the status
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when != "call" or self.config.get_verbosity() <= 0:
            return
        reporter = self.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is None:
            return
        for key, value in report.user_properties:
            if key == "gradcheck":
                reporter.write_line(f"    gradcheck: {value}")
