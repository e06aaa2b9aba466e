"""One pipeline, validated once (issue 12): the API defects found by running it,
options validated before any evaluation, and no import cycle among the modules."""

from __future__ import annotations

import ast
import ctypes
import inspect
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

import fastcheck
from fastcheck import LongCheckWarning


def _f(p):
    return np.tanh(p["w"]) * 2.0


def _vjp(p, u):
    return {"w": u * 2.0 * (1 - np.tanh(p["w"]) ** 2)}


def _params():
    return {"w": np.linspace(-1.0, 1.0, 40)}


# ------------------------------------------------------------------ defect 1
@pytest.mark.parametrize("progress", [True, False])
def test_check_vjp_takes_progress_true_and_false(progress, capsys):
    result = fastcheck.check_vjp(_f, _vjp, _params(), progress=progress, n_vectors=1)
    assert result.verdict in ("excellent", "ok")
    err = capsys.readouterr().err
    assert ("fastcheck" in err) == progress  # the bar, drawn only when asked


def test_torch_check_function_takes_progress_true():
    torch = pytest.importorskip("torch")
    x = torch.linspace(-1, 1, 6, dtype=torch.float64, requires_grad=True)
    import fastcheck.torch as ft

    result = ft.check_function(torch.sin, x, progress=True)
    assert result.passed


# ------------------------------------------------------------------ defect 2
def _c_losses():
    from scipy import LowLevelCallable
    proto = ctypes.CFUNCTYPE(ctypes.c_double, ctypes.POINTER(ctypes.c_double),
                             ctypes.c_ssize_t, ctypes.c_void_p)
    func = proto(lambda p, n, _u: sum(p[i] ** 2 for i in range(n)))
    return func, [LowLevelCallable(func), func, fastcheck.CLoss(LowLevelCallable(func))]


def test_c_loss_with_executor_says_use_threads():
    keep, losses = _c_losses()
    theta = np.array([1.0, 2.0])
    with ThreadPoolExecutor(1) as pool:
        for loss in losses:
            with pytest.raises(TypeError, match=r"C loss cannot cross processes.*threads="):
                fastcheck.check_grad(loss, 2 * theta, theta, executor=pool)
    assert keep is not None


# ------------------------------------------------------------------ defect 3
def _wrong_vjp(p, u):
    g = _vjp(p, u)
    g["w"][7] *= 1.5
    return g


def test_check_vjp_sample_mode_is_reproducible_and_reports_its_seed():
    runs = [fastcheck.check_vjp(_f, _wrong_vjp, _params(), mode="sample", seed=3,
                                n_vectors=2) for _ in range(2)]
    assert runs[0].status.tolist() == runs[1].status.tolist()
    assert runs[0].extra["seed"] == 3
    assert all("seed 3" in n for n in runs[0].notes if "sample mode" in n)
    drawn = fastcheck.check_vjp(_f, _vjp, _params(), mode="sample", seed=None,
                                n_vectors=1)
    assert isinstance(drawn.extra["seed"], int)  # the seed drawn is reported


# ------------------------------------------------------------------ defect 4
def _slow_loss(p):
    import time
    time.sleep(0.002)
    return float(np.sum(p ** 2))


@pytest.mark.parametrize("mode", ["full", "sample", "directional"])
def test_long_check_warning_points_at_the_caller(mode):
    theta = np.linspace(0.1, 1.0, 8)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fastcheck.check_grad(_slow_loss, 2 * theta, theta, mode=mode, warn_seconds=0.0)
    long = [w for w in caught if issubclass(w.category, LongCheckWarning)]
    assert long and Path(long[0].filename).resolve() == Path(__file__).resolve()


# ------------------------------------------- options validated before any evaluation
class _Counted:
    """Counts every call of the user's functions (loss, grad, f, vjp, ...)."""

    def __init__(self) -> None:
        self.calls = 0

    def wrap(self, fn):
        def counted(*args):
            self.calls += 1
            return fn(*args)
        return counted


def _quad(p):
    return float(np.sum(p ** 2))


def _run_check_grad(c, **kw):
    p = np.linspace(0.1, 1.0, 5)
    fastcheck.check_grad(c.wrap(_quad), c.wrap(lambda q: 2 * q), p, **kw)


def _run_assert_grad_ok(c, **kw):
    from fastcheck.testing import assert_grad_ok
    p = np.linspace(0.1, 1.0, 5)
    assert_grad_ok(c.wrap(_quad), c.wrap(lambda q: 2 * q), p, **kw)


def _run_numerical_grad(c, **kw):
    fastcheck.numerical_grad(c.wrap(_quad), np.linspace(0.1, 1.0, 5), **kw)


def _run_eps_sweep(c, **kw):
    p = np.linspace(0.1, 1.0, 5)
    fastcheck.eps_sweep(c.wrap(_quad), c.wrap(lambda q: 2 * q), p, **kw)


def _run_check_vjp(c, **kw):
    fastcheck.check_vjp(c.wrap(_f), c.wrap(_vjp), _params(), **kw)


def _run_check_jvp(c, **kw):
    fastcheck.check_jvp(c.wrap(_f), c.wrap(lambda p, v: 2 * (1 - np.tanh(p["w"]) ** 2)
                                           * v["w"]), _params(), **kw)


def _run_check_hvp(c, **kw):
    fastcheck.check_hvp(c.wrap(lambda p: {"w": 2 * p["w"]}),
                        c.wrap(lambda p, v: {"w": 2 * v["w"]}), _params(), **kw)


def _run_torch_function(c, **kw):
    torch = pytest.importorskip("torch")
    import fastcheck.torch as ft
    x = torch.linspace(-1, 1, 4, dtype=torch.float64, requires_grad=True)
    ft.check_function(c.wrap(torch.sin), x, **kw)


def _run_torch_module(c, **kw):
    torch = pytest.importorskip("torch")
    import fastcheck.torch as ft
    module = torch.nn.Linear(3, 2).double()
    ft.check_module(module, torch.ones(2, 3, dtype=torch.float64),
                    c.wrap(lambda out: (out ** 2).sum()), **kw)


_ENTRY = {
    "check_grad": _run_check_grad, "assert_grad_ok": _run_assert_grad_ok,
    "numerical_grad": _run_numerical_grad, "eps_sweep": _run_eps_sweep,
    "check_vjp": _run_check_vjp, "check_jvp": _run_check_jvp, "check_hvp": _run_check_hvp,
    "torch.check_function": _run_torch_function, "torch.check_module": _run_torch_module,
}
# Each entry point's options, each with bad values; `name` is what the message names.
_BAD = {
    "eps": [-1.0, "small", float("nan")],
    "method": ["nope", 3],
    "mode": ["nope"],
    "seed": [-1, "s", 1.5],
    "before_eval": [3],
    "refine": ["yes"],
    "progress": [3],
    "threads": [0, "2"],
    "executor": [4],
    "noise": ["loud", -1.0],
    "warn_seconds": [-1.0, "soon"],
    "n_vectors": [0, 1.5],
    "methods": ["nope"],
    "indices": [[0, 0], [99], "x"],
    "rtol": [-1.0, "x"],
    "atol": [float("nan")],
}
_OPTIONS = {
    "check_grad": ["eps", "method", "mode", "seed", "before_eval", "refine", "progress",
                   "threads", "executor", "noise", "warn_seconds", "rtol", "atol"],
    "assert_grad_ok": ["eps", "method", "mode", "seed", "before_eval", "refine", "progress",
                       "threads", "noise", "rtol", "atol"],
    "numerical_grad": ["eps", "method", "threads", "executor", "before_eval", "indices"],
    "eps_sweep": ["methods", "before_eval"],
    "check_vjp": ["n_vectors", "seed", "eps", "method", "mode", "before_eval", "refine",
                  "progress", "executor", "noise", "rtol", "atol"],
    "check_jvp": ["n_vectors", "seed", "eps", "before_eval", "rtol", "atol"],
    "check_hvp": ["n_vectors", "seed", "eps", "before_eval", "rtol", "atol"],
    "torch.check_function": ["n_vectors", "seed", "eps", "method", "before_eval",
                             "refine", "progress", "rtol", "atol"],
    "torch.check_module": ["eps", "method", "mode", "seed", "before_eval", "refine",
                           "progress", "warn_seconds", "noise", "rtol", "atol"],
}
_CASES = [pytest.param(entry, name, value, id=f"{entry}-{name}={value!r}")
          for entry, names in _OPTIONS.items() for name in names for value in _BAD[name]]


@pytest.mark.parametrize(("entry", "name", "value"), _CASES)
def test_bad_option_refused_before_any_evaluation(entry, name, value):
    counted = _Counted()
    with pytest.raises((TypeError, ValueError)) as info:
        _ENTRY[entry](counted, **{name: value})
    assert counted.calls == 0, f"{entry} evaluated before refusing {name}={value!r}"
    shown = "method" if name == "methods" else name
    assert shown in str(info.value), str(info.value)


def test_check_module_runs_before_eval_once_per_evaluation():
    torch = pytest.importorskip("torch")
    import fastcheck.torch as ft
    module = torch.nn.Linear(3, 2).double()
    calls = []
    result = ft.check_module(module, torch.ones(2, 3, dtype=torch.float64),
                             lambda out: (out ** 2).sum(), before_eval=lambda: calls.append(1))
    assert result.passed
    assert len(calls) == result.evaluations + 1  # every evaluation, and grad once


# ------------------------------------------------------------------ no import cycle
_PACKAGE = Path(fastcheck.__file__).parent


def _imports(path: Path) -> set[str]:
    """The fastcheck modules a module imports, at the top or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "fastcheck":
                found.update(a.name for a in node.names)
            elif node.module.startswith("fastcheck."):
                found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".")[1] for a in node.names
                         if a.name.startswith("fastcheck."))
    return found


def _graph() -> dict[str, set[str]]:
    modules = {p.stem: p for p in _PACKAGE.glob("*.py")}
    return {m: _imports(p) & modules.keys() - {m} for m, p in modules.items()}


def _cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[set[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            part = set()
            while True:
                w = stack.pop()
                part.add(w)
                if w == v:
                    break
            if len(part) > 1:
                out.append(part)

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_cycle_finder_finds_a_planted_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [{"a", "b", "c"}]


def test_no_import_cycle_among_fastcheck_modules():
    graph = _graph()
    assert sum(map(len, graph.values())) > 30  # the parser sees the imports
    assert _cycles(graph) == []


# ------------------------------------------------------------------ coherent API
@pytest.mark.parametrize(("entry", "old"), [("check_vjp", "n_cotangents"),
                                            ("check_jvp", "n_tangents"),
                                            ("torch.check_function", "n_cotangents")])
def test_old_vector_counts_still_work_with_a_deprecation_warning(entry, old):
    counted = _Counted()
    with pytest.warns(DeprecationWarning, match=f"{old}= is deprecated; use n_vectors=") \
            as caught:
        _ENTRY[entry](counted, **{old: 1})
    assert Path(caught[0].filename).resolve() == Path(__file__).resolve()
    with pytest.raises(TypeError, match="not both"), \
            pytest.warns(DeprecationWarning):
        _ENTRY[entry](_Counted(), **{old: 1, "n_vectors": 1})


def test_seed_defaults_to_0_everywhere():
    for fn in (fastcheck.check_grad, fastcheck.check_vjp, fastcheck.check_jvp,
               fastcheck.check_hvp):
        assert inspect.signature(fn).parameters["seed"].default == 0, fn.__name__
    theta = np.linspace(0.1, 1.0, 200)
    runs = [fastcheck.check_grad(_quad, 2 * theta, theta, mode="sample", k=5)
            for _ in range(2)]
    assert runs[0].extra["seed"] == 0
    assert runs[0].status.tolist() == runs[1].status.tolist()
    assert fastcheck.check_grad(_quad, 2 * theta, theta, seed=3).passed  # full: unused



def test_seed_defaults_to_0_in_fastcheck_torch():
    pytest.importorskip("torch")
    import fastcheck.torch as ft
    for fn in (ft.check_function, ft.check_module):
        assert inspect.signature(fn).parameters["seed"].default == 0, fn.__name__


def test_k_1_float_is_refused_as_ambiguous():
    theta = np.linspace(0.1, 1.0, 20)
    counted = _Counted()
    with pytest.raises(ValueError, match=r"k=1\.0 is ambiguous"):
        fastcheck.check_grad(counted.wrap(_quad), 2 * theta, theta, mode="sample", k=1.0)
    assert counted.calls == 0


def test_check_module_takes_the_partial_modes():
    torch = pytest.importorskip("torch")
    import fastcheck.torch as ft
    torch.manual_seed(0)
    module = torch.nn.Linear(30, 20).double()
    x = torch.ones(2, 30, dtype=torch.float64)
    result = ft.check_module(module, x, lambda out: (out ** 2).sum(), mode="directional",
                             max_evals=60, seed=4)
    assert result.passed and result.mode == "directional"
    assert result.extra["seed"] == 4 and result.evaluations <= 60


# --------------------------------------------------- numerical_grad(indices=, before_eval=)
def test_numerical_grad_indices_equal_the_full_gradient_there():
    params = {"a": np.linspace(0.1, 1.0, 6).reshape(2, 3), "b": np.array([0.5, -2.0])}

    def loss(p):
        return float(np.sum(np.sin(p["a"])) + np.sum(p["b"] ** 3))

    counted = _Counted()
    full = fastcheck.numerical_grad(loss, params)
    flat = np.concatenate([full["a"].ravel(), full["b"]])
    chosen = [7, 0, 4]
    part = fastcheck.numerical_grad(counted.wrap(loss), params, indices=chosen)
    assert np.array_equal(part, flat[chosen])  # same steps, same evaluations: bitwise
    assert counted.calls == 2 * len(chosen) + 1  # central: 2 per component, and J(θ)


@pytest.mark.parametrize("chosen", [[1, 2, 6], [6, 2, 1], [5, 0, 7, 3, 1], list(range(8))])
def test_numerical_grad_indices_in_any_order_map_back(chosen):
    # increasing indices take the no-sort path, others the argsort path
    theta = np.linspace(-1.0, 1.0, 8)
    full = fastcheck.numerical_grad(_quad, theta)
    part = fastcheck.numerical_grad(_quad, theta, indices=np.array(chosen))
    assert np.array_equal(part, full[chosen])


@pytest.mark.parametrize(("indices", "error", "message"), [
    ([0, 0], ValueError, "distinct"), ([8], ValueError, r"in \[0, 8\)"),
    ([3, 1, 3], ValueError, "distinct"), ([1, 2, 2], ValueError, "distinct"),
    ([-1], ValueError, r"in \[0, 8\)"), ([0.5], TypeError, "integers"),
    ([], ValueError, "empty"), ("0", TypeError, "1-d sequence"),
    ([[0, 1]], TypeError, "1-d sequence"),
])
def test_numerical_grad_bad_indices(indices, error, message):
    counted = _Counted()
    with pytest.raises(error, match=f"indices.*{message}|{message}.*indices"):
        fastcheck.numerical_grad(counted.wrap(_quad), np.ones(8), indices=indices)
    assert counted.calls == 0


def test_numerical_grad_before_eval_runs_before_every_evaluation():
    calls, seen = [], []
    state = {"x": 0.0}

    def loss(p):
        seen.append(state["x"])
        state["x"] = 1.0  # what before_eval undoes
        return float(np.sum(p ** 2)) + state["x"]

    g = fastcheck.numerical_grad(loss, np.array([1.0, 2.0]),
                                 before_eval=lambda: (calls.append(1),
                                                      state.update(x=0.0)))
    assert len(calls) == len(seen) and set(seen) == {0.0}
    np.testing.assert_allclose(g, [2.0, 4.0], rtol=1e-8)


# ------------------------------------------------------------ functions to hold in mind
MAX_LINES = 80  # code lines of one function, its docstring not counted


def _long_functions() -> list[tuple[str, int]]:
    found = []
    for path in sorted(_PACKAGE.glob("*.py")):
        source = path.read_text(encoding="utf-8")
        lines = source.splitlines()
        for node in ast.walk(ast.parse(source)):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            first = node.body[0]
            docstring = (isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant)
                         and isinstance(first.value.value, str))
            start = first.end_lineno + 1 if docstring and len(node.body) > 1 else first.lineno
            size = node.end_lineno - start + 1
            body = "\n".join(lines[node.lineno - 1:node.end_lineno])
            if size > MAX_LINES and "# Long because" not in body:
                found.append((f"{path.stem}.{node.name}", size))
    return found


def test_no_function_over_80_lines_without_a_reason():
    assert _long_functions() == []
