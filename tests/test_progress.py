"""Time estimate, LongCheckWarning and the progress bar (issue 6)."""

from __future__ import annotations

import io
import sys
import time
import warnings

import numpy as np
import pytest

import fastcheck
from fastcheck import LongCheckWarning, check_grad
from fastcheck._evaluate import HOOK_EVERY
from fastcheck._progress import ProgressLine, format_seconds


def make_model(n=1000, slow_calls=0, sleep=0.0):
    """A quadratic loss whose first `slow_calls` evaluations sleep (the probes), so
    the estimate is long while the check itself is fast."""
    rng = np.random.default_rng(0)
    theta = rng.standard_normal(n)
    d = rng.uniform(0.5, 2, n)
    calls = [0]

    def loss(t):
        calls[0] += 1
        if calls[0] <= slow_calls:
            time.sleep(sleep)
        return 0.5 * float(np.dot(d, t * t))

    loss.calls = calls
    return theta, loss, d * theta


class FakeTerminal(io.StringIO):
    def isatty(self):
        return True


@pytest.fixture
def no_tqdm(monkeypatch):
    monkeypatch.setitem(sys.modules, "tqdm", None)   # import tqdm -> ImportError


# --------------------------------------------------------------------- the estimate


def test_long_full_check_warns_with_duration_and_suggestion():
    theta, loss, g = make_model(n=1445, slow_calls=2, sleep=0.05)
    with pytest.warns(LongCheckWarning) as record:
        r = check_grad(loss, g, theta, progress=False)
    assert r.passed
    message = str(record[0].message)
    assert "a full check of 1,445 components needs about 2,890 loss evaluations" in message
    assert "min" in message or " s " in message
    assert "mode='directional'" in message and "warn_seconds=None" in message
    assert record[0].filename == __file__   # points at the caller


def test_warning_threshold_is_configurable_and_can_be_silenced():
    theta, loss, g = make_model(n=50)
    with pytest.warns(LongCheckWarning, match="mode='sample' with 10 components"):
        check_grad(loss, g, theta, mode="sample", k=10, seed=0, warn_seconds=0)
    with pytest.warns(LongCheckWarning, match="mode='directional' with max_evals=40"):
        check_grad(loss, g, theta, mode="directional", max_evals=40, seed=0, warn_seconds=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_grad(loss, g, theta, warn_seconds=None)
        check_grad(loss, g, theta)   # fast: the default threshold is far


def test_long_check_warning_is_a_user_warning():
    assert issubclass(LongCheckWarning, UserWarning)
    assert fastcheck.LongCheckWarning is LongCheckWarning


def test_format_seconds():
    assert format_seconds(0.35) == "0.35 s"
    assert format_seconds(42) == "42 s"
    assert format_seconds(300) == "5 min"
    assert format_seconds(4 * 3600) == "4 h"
    assert format_seconds(5 * 86400) == "5 days"
    assert format_seconds(float("inf")) == "unknown time"


# ----------------------------------------------------------------------- the bar


def test_plain_line_without_tqdm(no_tqdm, capsys):
    theta, loss, g = make_model(n=2000)
    r = check_grad(loss, g, theta, progress=True)
    assert r.passed
    err = capsys.readouterr().err
    assert err.startswith("\rfastcheck: ") and err.endswith("\n")
    assert "2,000/2,000 components (100%)" in err


def test_tqdm_bar_when_installed(capsys):
    pytest.importorskip("tqdm")
    theta, loss, g = make_model(n=2000)
    check_grad(loss, g, theta, progress=True)
    err = capsys.readouterr().err
    assert "fastcheck" in err and "2000/2000" in err and "100%" in err


def test_auto_progress_is_silent_when_stderr_is_not_a_terminal(capsys):
    theta, loss, g = make_model(n=500, slow_calls=2, sleep=0.02)
    check_grad(loss, g, theta, warn_seconds=None)   # estimate 20 s, but not a TTY
    assert capsys.readouterr().err == ""


def test_auto_progress_shows_on_a_terminal_for_long_work(no_tqdm, monkeypatch):
    terminal = FakeTerminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    theta, loss, g = make_model(n=500, slow_calls=2, sleep=0.01)   # estimate ~10 s
    check_grad(loss, g, theta, warn_seconds=None)
    assert "500/500 components" in terminal.getvalue()
    short = FakeTerminal()
    monkeypatch.setattr(sys, "stderr", short)
    theta, loss, g = make_model(n=500)            # fast: no bar
    check_grad(loss, g, theta, warn_seconds=None)
    assert short.getvalue() == ""


def test_progress_false_shows_nothing(capsys, monkeypatch):
    monkeypatch.setattr(sys, "stderr", FakeTerminal())
    theta, loss, g = make_model(n=500, slow_calls=2, sleep=0.01)
    check_grad(loss, g, theta, progress=False, warn_seconds=None)
    assert sys.stderr.getvalue() == ""


def test_callable_is_fed_from_the_kernel_hook_not_per_component():
    theta, loss, g = make_model(n=5000)
    seen = []
    check_grad(loss, g, theta, progress=lambda done, total: seen.append((done, total)))
    assert seen[-1] == (5000, 5000)
    assert all(t == 5000 for _, t in seen)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)
    assert len(seen) <= 5000 // HOOK_EVERY + 2


def test_callable_in_directional_mode_counts_evaluations():
    theta, loss, g = make_model(n=5000)
    g = g.copy()
    g[4321] += 1.0
    seen = []
    r = check_grad(loss, g, theta, mode="directional", seed=0, max_evals=200,
                   progress=lambda done, total: seen.append((done, total)))
    assert seen[0][1] == 200 and seen[-1] == (r.evaluations, r.evaluations)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)


def test_directional_bar_without_tqdm(no_tqdm, capsys):
    theta, loss, g = make_model(n=3000)
    check_grad(loss, g, theta, mode="directional", seed=0, progress=True)
    err = capsys.readouterr().err
    assert "evaluations (100%)" in err and err.endswith("\n")


def test_progress_line_throttles_and_estimates_time_left():
    out = io.StringIO()
    line = ProgressLine(1000, "components", stream=out, use_tqdm=False)
    for done in range(0, 1001, 10):
        line.update(done, 1000)
    line.close()
    text = out.getvalue()
    assert text.count("\r") <= 4          # redrawn at most every 0.1 s, and at the end
    assert "1,000/1,000 components (100%)" in text and text.endswith("\n")
    out = io.StringIO()
    line = ProgressLine(100, "evaluations", stream=out, use_tqdm=False)
    line.started -= 1.0                    # 1 s ago
    line.update(25)
    assert "25/100 evaluations (25%)" in out.getvalue() and "left" in out.getvalue()
    line.close()


def test_bar_is_closed_when_the_loss_raises(no_tqdm, capsys):
    theta, loss, g = make_model(n=1000)
    calls = [0]

    def failing(t):
        calls[0] += 1
        if calls[0] == 500:
            raise RuntimeError("boom")
        return loss(t)

    with pytest.raises(RuntimeError):
        check_grad(failing, g, theta, progress=True)
    assert capsys.readouterr().err.endswith("\n")
