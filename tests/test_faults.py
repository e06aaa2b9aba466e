"""Faults at the edges (issue 13): each case as a user met it, with the fix it
needed.

1. A thread that cannot allocate its copy of theta (an address-space limit) made
   the caller wait forever; now: MemoryError at once, theta intact.
2. numerical_grad with a loss that writes into the parameters: restored, and an
   error naming the loss (also for a C loss on several threads).
3. A before_eval that writes into the parameters: restored, before_eval named.
4. A loss that rebinds a dict entry: "invalid", the entry named, the dict as it was.
5. NaN or inf on one probe at the same point: "nondeterministic".
6. Bad eps, refine and memory-hungry overlap checks: errors that name the argument.
"""

from __future__ import annotations

import ctypes
import pathlib
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from lowlevel_support import quad_grad, requires_cc, sample_theta

import fastcheck

HANG = 60  # seconds: far beyond any case here, short of a CI timeout


# -------------------------------------------------- 1. memory pressure, threads
@requires_cc
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_AS, /proc")
def test_worker_out_of_memory_raises_memoryerror_at_once(lib, tmp_path):
    script = textwrap.dedent(f"""
        import ctypes, resource, sys, time
        import numpy as np
        sys.path.insert(0, {str(pathlib.Path(fastcheck.__file__).parents[1])!r})
        import fastcheck
        q = ctypes.CDLL({str(lib.path)!r}).quad_status_f64
        q.restype = ctypes.c_int
        q.argtypes = [ctypes.POINTER(ctypes.c_double), ctypes.c_ssize_t,
                      ctypes.POINTER(ctypes.c_double), ctypes.c_void_p]
        loss = fastcheck.CLoss(q, thread_safe=True)
        theta = np.linspace(0.5, 2.0, 4_000_000)
        before = theta.copy()
        status = open("/proc/self/status").read().split("VmSize:")[1].split()[0]
        vm = int(status) * 1024
        resource.setrlimit(resource.RLIMIT_AS, (vm + 200 * 2**20, resource.RLIM_INFINITY))
        started = time.monotonic()
        try:
            fastcheck.check_grad(loss, 2 * theta, theta, threads=8, mode="sample", k=16)
        except MemoryError as exc:
            print("MemoryError", round(time.monotonic() - started, 3), exc)
        print("intact", bool(np.array_equal(theta.view(np.uint64), before.view(np.uint64))))
    """)
    # From another directory: a source tree (not built) must not shadow the package tested.
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=HANG, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("MemoryError"), done.stdout
    assert "threads=8" in lines[0] and "fewer threads" in lines[0]
    assert float(lines[0].split()[1]) < 5.0  # returns, does not wait for a worker
    assert lines[-1] == "intact True"


# ------------------------------------------------ 2. numerical_grad, writing loss
def test_numerical_grad_restores_a_loss_that_writes_the_parameters():
    theta = np.array([1.0, 2.0, 3.0])

    def loss(t):
        t[0] += 1e-3
        return float(t @ t)

    with pytest.raises(ValueError, match=r"the loss modified the parameters.*theta"):
        fastcheck.numerical_grad(loss, theta)
    assert theta.tolist() == [1.0, 2.0, 3.0]


def test_numerical_grad_restores_then_reraises_when_the_loss_writes_and_fails():
    params = {"W": np.ones((2, 2)), "b": np.zeros(2)}
    calls = []

    def loss(p):
        calls.append(1)
        p["W"][1, 1] = 7.0
        if len(calls) == 3:
            raise KeyError("boom")
        return float(np.sum(p["W"]))

    with pytest.raises(KeyError, match="boom"):
        fastcheck.numerical_grad(loss, params)
    assert params["W"].tolist() == [[1.0, 1.0], [1.0, 1.0]]


@requires_cc
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_c_loss_that_writes_theta_is_caught_at_any_threads(lib, threads):
    theta = sample_theta(12)
    before = theta.copy()
    state = (ctypes.c_long * 2)(0, 6)  # writes at its 6th call
    loss = fastcheck.CLoss(lib.writing_f64, state, thread_safe=True)
    with pytest.raises(ValueError, match="modified"):
        fastcheck.numerical_grad(loss, theta, threads=threads)
    assert theta.tobytes() == before.tobytes()
    # never writes: the same loss is fine
    quiet = (ctypes.c_long * 2)(0, -1)
    g = fastcheck.numerical_grad(fastcheck.CLoss(lib.writing_f64, quiet, thread_safe=True),
                                 theta, threads=threads)
    np.testing.assert_allclose(g, quad_grad(theta), rtol=1e-7, atol=1e-7)


# --------------------------------------------------------- 3. before_eval writes
@pytest.mark.parametrize("callable_grad", [True, False], ids=["grad-callable", "grad-array"])
def test_before_eval_that_writes_the_parameters_is_named(callable_grad):
    theta = np.array([1.0, 2.0, 3.0])

    def reset():
        theta[0] = 5.0

    grad = (lambda t: 2 * t) if callable_grad else 2 * theta
    with pytest.raises(ValueError, match=r"before_eval\(\) modified the parameters"):
        fastcheck.check_grad(lambda t: float(t @ t), grad, theta, before_eval=reset)
    assert theta.tolist() == [1.0, 2.0, 3.0]


def test_before_eval_that_raises_is_named():
    theta = np.array([1.0, 2.0])

    def reset():
        raise RuntimeError("seed store offline")

    with pytest.raises(RuntimeError, match="seed store") as info:
        fastcheck.check_grad(lambda t: float(t @ t), 2 * theta, theta, before_eval=reset)
    if sys.version_info >= (3, 11):
        assert "raised by before_eval()" in info.value.__notes__


# ----------------------------------------------------- 4. rebinding a dict entry
@pytest.mark.parametrize("mode", ["full", "sample", "directional"])
def test_loss_that_rebinds_a_dict_entry_is_invalid_and_the_dict_restored(mode):
    W, b = np.array([3.0, -1.0]), np.array([1.0, 20.0])
    params = {"W": W, "b": b}

    def loss(p):
        p["b"] = np.clip(p["b"], -5, 5)
        return float(p["W"] @ p["W"] + p["b"] @ p["b"])

    grad = {"W": 2 * W, "b": 2 * np.clip(b, -5, 5)}
    result = fastcheck.check_grad(loss, grad, params, mode=mode)
    assert result.verdict == "invalid"
    assert "b (the dict entry now holds another object)" in " ".join(result.notes)
    assert params["b"] is b and params["W"] is W and list(params) == ["W", "b"]
    assert b.tolist() == [1.0, 20.0]


def test_loss_that_adds_or_removes_entries_is_named_and_undone():
    params = {"W": np.ones(3), "b": np.zeros(2)}
    original = dict(params)

    def loss(p):
        p.pop("b", None)
        p["extra"] = np.ones(1)
        return float(np.sum(p["W"] ** 2))

    with pytest.raises(ValueError, match=r"b \(removed from the dict\).*extra \(added"):
        fastcheck.numerical_grad(loss, params)
    assert list(params) == ["W", "b"]
    assert all(params[k] is original[k] for k in original)


def test_list_entry_rebound_is_restored():
    params = [np.ones(2), np.zeros(2)]
    first = params[0]

    def loss(p):
        p[0] = p[0] * 1.0
        return float(np.sum(p[0] ** 2) + np.sum(p[1]))

    with pytest.raises(ValueError, match=r"params\[0\] \(the list entry"):
        fastcheck.numerical_grad(loss, params)
    assert params[0] is first


# ------------------------------------------------- 5. NaN or inf on one probe
def _flaky(kind):
    calls = [0]

    def loss(t):
        calls[0] += 1
        if kind == "nan-on-2nd" and calls[0] == 2:
            return float("nan")
        if kind == "inf-every-2nd" and calls[0] % 2 == 0:
            return float("inf")
        return float(t @ t)

    return loss


@pytest.mark.parametrize("mode", ["full", "sample", "directional"])
@pytest.mark.parametrize("kind", ["nan-on-2nd", "inf-every-2nd"])
def test_nan_or_inf_on_one_probe_is_nondeterminism(kind, mode):
    theta = np.array([1.0, 2.0, 3.0])
    result = fastcheck.check_grad(_flaky(kind), lambda t: 2 * t, theta, mode=mode)
    assert result.verdict == "nondeterministic", result.report()
    assert theta.tolist() == [1.0, 2.0, 3.0]


# ------------------------------------------------------------ 6. bad arguments
@pytest.mark.parametrize("eps", [2**1100, 1e300, 10.0, -1, 0.0, float("nan")])
def test_eps_out_of_range_names_eps(eps):
    theta = np.array([1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match=r"eps"):
        fastcheck.check_grad(lambda t: float(t @ t), 2 * theta, theta, eps=eps)
    with pytest.raises(ValueError, match=r"eps"):
        fastcheck.numerical_grad(lambda t: float(t @ t), theta, eps=eps)


def test_refine_must_be_a_bool():
    theta = np.array([1.0, 2.0])
    with pytest.raises(TypeError, match=r"refine must be True or False, got 'no'"):
        fastcheck.check_grad(lambda t: float(t @ t), 2 * theta, theta, refine="no")


def test_directional_estimate_is_what_it_plans_not_the_budget():
    import warnings

    theta = np.linspace(-1, 1, 50)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "about 2.5e+07 days"
        result = fastcheck.check_grad(lambda t: float(t @ t), 2 * theta, theta,
                                      mode="directional", max_evals=10**18, seed=0)
    assert result.passed and result.evaluations < 100


def test_overlapping_view_too_large_to_enumerate_gets_the_overlap_message():
    base = np.zeros(10)
    view = np.lib.stride_tricks.as_strided(base, shape=(10**5, 10**5), strides=(8, 8))
    with pytest.raises(ValueError, match="share memory"):
        fastcheck.numerical_grad(lambda t: 0.0, view)


def test_torch_tied_weights_and_repeated_tensor_get_torch_wording():
    torch = pytest.importorskip("torch")
    from fastcheck import torch as fct

    x = torch.randn(4, dtype=torch.float64, requires_grad=True)
    with pytest.raises(ValueError, match=r"share storage \(tied weights, or the same tensor "
                                         r"passed twice\)") as info:
        fct.check_function(lambda a, b: (a * b).sum(), x, x)
    assert "np.array" not in str(info.value)
    encoder = torch.nn.Linear(3, 3, bias=False).double()
    model = torch.nn.Sequential(encoder, torch.nn.Linear(3, 3, bias=False).double())
    model[1].weight = torch.nn.Parameter(encoder.weight.data)  # tied through storage
    with pytest.raises(ValueError, match="share storage"):
        fct.check_module(model, torch.randn(2, 3, dtype=torch.float64),
                         lambda out: (out ** 2).sum())


# ------------------------------------------------------- 7. the C-loss boundary
_STATUS_F64 = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_double), ctypes.c_ssize_t,
                               ctypes.POINTER(ctypes.c_double), ctypes.c_void_p)


@pytest.mark.parametrize("threads", [1, 2])
def test_ctypes_python_callback_that_raises_keeps_its_exception(threads):
    calls = []

    def callback(theta, n, out, user_data):
        calls.append(1)
        if len(calls) == 4:
            raise ZeroDivisionError("inside the callback")
        out[0] = sum(theta[i] ** 2 for i in range(n))
        return 0

    function = _STATUS_F64(callback)
    theta = np.array([0.5, -1.5, 2.0])
    with pytest.raises(ZeroDivisionError, match="inside the callback") as info:
        fastcheck.numerical_grad(fastcheck.CLoss(function, thread_safe=True), theta,
                                 threads=threads)
    assert theta.tolist() == [0.5, -1.5, 2.0]
    if sys.version_info >= (3, 11):
        assert any("ctypes callback" in note for note in info.value.__notes__)


def test_user_data_byref_suggests_pointer(lib):
    class Scale(ctypes.Structure):
        _fields_ = [("factor", ctypes.c_double)]

    scale = Scale(2.0)
    with pytest.raises(TypeError, match=r"ctypes\.pointer\(obj\)"):
        fastcheck.CLoss(lib.quad_status_f64, ctypes.byref(scale))
    fastcheck.CLoss(lib.quad_status_f64, ctypes.pointer(scale))  # accepted


def test_capsule_without_name_asks_for_signature(lib):
    new = ctypes.pythonapi["PyCapsule_New"]
    new.restype = ctypes.py_object
    new.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p]
    address = ctypes.cast(lib.quad_status_f64, ctypes.c_void_p).value
    capsule = new(address, None, None)
    with pytest.raises(TypeError, match=r"pass signature=, e\.g\. fastcheck\.CLoss\(capsule"):
        fastcheck.CLoss(capsule)
    loss = fastcheck.CLoss(capsule, signature="int (double *, npy_intp, double *, void *)")
    theta = sample_theta(5)
    np.testing.assert_allclose(fastcheck.numerical_grad(loss, theta), quad_grad(theta),
                               rtol=1e-7, atol=1e-7)
