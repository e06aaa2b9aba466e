"""A real Ctrl-C during a long run: KeyboardInterrupt arrives within a fraction of a
second and the parameters are bitwise unchanged.

Three ways to deliver it:

- ``_thread.interrupt_main()`` from a timer thread (what Ctrl-C does to the main
  thread's pending-signal flag);
- ``signal.raise_signal(SIGINT)`` from a timer thread (a real SIGINT through the
  C-level handler);
- ``signal.setitimer``: the kernel delivers SIGALRM after 0.3 s without needing any
  Python thread (and so without the GIL), with ``signal.default_int_handler``
  installed for it, which raises KeyboardInterrupt.  This is the case that only the
  kernel's periodic ``PyErr_CheckSignals`` can catch when the loss is a builtin that
  never runs Python bytecode.

Each run would take several seconds without the interrupt; a loss-side watchdog
stops a Python loss (with a different exception) if the interrupt never comes.
"""

from __future__ import annotations

import _thread
import functools
import math
import signal
import threading
import time
import traceback

import numpy as np
import pytest

from fastcheck import check_grad, numerical_grad

DELAY = 0.3
MAX_LATENCY = 0.5
WATCHDOG = 10.0

pytestmark = pytest.mark.skipif(not hasattr(signal, "setitimer"),
                                reason="needs POSIX signals")


class Watchdog(Exception):
    pass


def python_loss(n_window=2000):
    """A Python loss that takes a few tens of microseconds, with a watchdog."""
    started = time.monotonic()

    def loss(p):
        if time.monotonic() - started > WATCHDOG:
            raise Watchdog("the interrupt never arrived")
        return float(np.sum(np.sin(p[:n_window])))

    return loss


def run_interrupted(work, how):
    """Run `work()` and interrupt it after DELAY seconds.

    Returns (outcome, latency, exception): outcome is "interrupted" or "completed";
    latency is the time from when the signal was due (DELAY after the start) to the
    KeyboardInterrupt reaching us.  (Measured from when it was due, not from when
    the timer thread got to run: a thread that cannot get the GIL fires late.)
    """
    due = []
    timer = None
    old_alarm = None

    def fire():
        if how == "interrupt_main":
            _thread.interrupt_main()
        else:
            signal.raise_signal(signal.SIGINT)

    outcome = None
    caught_at = None
    caught = None
    try:
        try:
            if how == "setitimer":
                old_alarm = signal.signal(signal.SIGALRM, signal.default_int_handler)
                due.append(time.monotonic() + DELAY)
                signal.setitimer(signal.ITIMER_REAL, DELAY)
            else:
                timer = threading.Timer(DELAY, fire)
                due.append(time.monotonic() + DELAY)
                timer.start()
            work()
            outcome = "completed"
        except KeyboardInterrupt as exc:
            caught_at = time.monotonic()
            outcome = "interrupted"
            caught = exc
        finally:
            if how == "setitimer":
                signal.setitimer(signal.ITIMER_REAL, 0)
                signal.signal(signal.SIGALRM, old_alarm)
            else:
                timer.cancel()
                timer.join()
            for _ in range(10_000):  # let a late signal be handled in here, if any
                pass
    except KeyboardInterrupt:  # pragma: no cover - only when the run beat the timer
        outcome = outcome or "late"
    latency = None if caught_at is None else caught_at - due[0]
    return outcome, latency, caught


@pytest.mark.parametrize("how", ["interrupt_main", "raise_signal", "setitimer"])
def test_ctrl_c_stops_a_long_numerical_grad(how):
    n = 200_000  # ~400k evaluations of ~30 us: many seconds without the interrupt
    theta = np.random.default_rng(0).standard_normal(n)
    theta[:2] = (0.1, 1 / 3)
    before = theta.tobytes()
    outcome, latency, _ = run_interrupted(lambda: numerical_grad(python_loss(), theta), how)
    assert outcome == "interrupted"
    assert -0.05 <= latency < MAX_LATENCY
    assert theta.tobytes() == before


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
def test_ctrl_c_stops_check_grad_and_restores_a_dict(dtype):
    rng = np.random.default_rng(1)
    params = {"W": np.asfortranarray(rng.standard_normal((400, 250)).astype(dtype)),
              "b": rng.standard_normal(1000).astype(dtype)[::-2]}
    before = {k: v.tobytes() for k, v in params.items()}
    watch = python_loss()

    def loss(p):
        return watch(p["W"][0]) + float(np.sum(p["b"][:100]))

    grad = {k: np.zeros(v.shape) for k, v in params.items()}
    outcome, latency, _ = run_interrupted(lambda: check_grad(loss, grad, params),
                                          "interrupt_main")
    assert outcome == "interrupted"
    assert -0.05 <= latency < MAX_LATENCY
    assert {k: v.tobytes() for k, v in params.items()} == before


def _builtin_loss(n, kind):
    """A loss that is a C callable.

    - "math.dist": ``functools.partial(math.dist, w)`` never runs Python bytecode
      and does not use BLAS threads (about 0.5 ms per call for n = 20000);
    - "partial-np.dot": ``functools.partial(np.dot, w)``; in numpy 2, np.dot goes
      through a small Python ``__array_function__`` dispatcher, where the
      interpreter also checks for signals.
    """
    w = np.random.default_rng(2).standard_normal(n)
    if kind == "math.dist":
        return functools.partial(math.dist, tuple(w.tolist()))
    return functools.partial(np.dot, w)


@pytest.mark.parametrize(
    ("kind", "how", "n"),
    [
        # 40k calls of 0.5 ms: ~20 s without the interrupt
        ("math.dist", "setitimer", 20_000),
        # 200k calls over 100k elements: many seconds without the interrupt
        ("partial-np.dot", "setitimer", 100_000),
        ("partial-np.dot", "raise_signal", 100_000),
    ],
    ids=["math.dist-setitimer", "np.dot-setitimer", "np.dot-raise_signal"],
)
def test_ctrl_c_stops_a_builtin_loss(kind, how, n):
    theta = np.random.default_rng(3).standard_normal(n)
    before = theta.tobytes()
    loss = _builtin_loss(n, kind)
    assert isinstance(loss(theta), float)
    started = time.monotonic()
    outcome, latency, exc = run_interrupted(lambda: numerical_grad(loss, theta), how)
    elapsed = time.monotonic() - started
    assert outcome == "interrupted", f"ran to completion in {elapsed:.1f} s"
    assert -0.05 <= latency < MAX_LATENCY
    assert theta.tobytes() == before
    if kind == "math.dist":
        # no Python frame ran inside the loop: the kernel's periodic hook
        # (PyErr_CheckSignals every 64 components) is what noticed the signal
        last = traceback.extract_tb(exc.__traceback__)[-1]
        assert not last.filename.endswith(".py"), last


def test_other_threads_keep_running_during_a_builtin_loss():
    n = 6000  # ~1.5 s run
    theta = np.random.default_rng(3).standard_normal(n)
    loss = _builtin_loss(n, "math.dist")
    ticks = []
    stop = threading.Event()

    def background():
        while not stop.is_set():
            ticks.append(time.monotonic())
            time.sleep(0.01)

    thread = threading.Thread(target=background)
    thread.start()
    try:
        time.sleep(0.05)
        t0 = time.monotonic()
        numerical_grad(loss, theta)
        t1 = time.monotonic()
    finally:
        stop.set()
        thread.join()
    inside = [t for t in ticks if t0 < t < t1]
    assert len(inside) >= 0.3 * (t1 - t0) / 0.01, (len(inside), t1 - t0)


def test_timer_thread_interrupt_reaches_a_builtin_loss():
    n = 6000  # ~1.5 s run
    theta = np.random.default_rng(3).standard_normal(n)
    before = theta.tobytes()
    loss = _builtin_loss(n, "math.dist")
    outcome, latency, _ = run_interrupted(lambda: numerical_grad(loss, theta), "interrupt_main")
    assert theta.tobytes() == before
    assert outcome == "interrupted"
    assert latency < MAX_LATENCY
