"""The peers fastcheck is measured against, one function per peer.

Every peer has the same shape::

    run_<peer>(workload, **options) -> dict(seconds=..., evals=..., grad=..., method=..., note=...)

``seconds``
    One wall-clock timing (``time.perf_counter``) of the numerical part only:
    building inputs, compiling C, importing libraries and checking results
    happen outside the timed region. Repeats are the caller's job.
``evals``
    Number of loss evaluations the peer made in the timed region.
``grad``
    The numerical gradient as a flat float64 array of length ``workload.n``,
    or ``None`` when the peer does not expose one (a pass/fail check, or a
    single random direction). Peers run on a subset of ``components`` return
    NaN at the components they skipped.
``method``
    The difference scheme: ``"central"``, ``"forward"``, ``"central+richardson"``,
    ``"random-direction central"``, or ``"none"`` for the floors.
``note``
    One line: step sizes, caps, the verdict of pass/fail peers.

Every peer works on the flat vector (``workload.theta0()``,
``workload.flat_loss``, ``workload.flat_grad``) so dict-parameter workloads
such as :class:`~workloads.MLP` are seen as one vector. Optional libraries
(scipy, numdifftools, torch, jax) are imported inside the peer; a peer raises
:class:`PeerUnavailable` when its library is missing, the workload lacks what
it needs, or ``n`` is past the peer's cap.
"""

from __future__ import annotations

import ctypes
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

# Works both as `import peers` (bench/ on sys.path, as try_peers does) and as
# `import bench.peers` from the repository root.
try:
    from .workloads import Quadratic, Workload, numerical_gradient
except ImportError:
    from workloads import Quadratic, Workload, numerical_gradient  # type: ignore[no-redef]

__all__ = [
    "DEFAULT_EPS",
    "NUMDIFFTOOLS_MAX_N",
    "PEERS",
    "SUBSET_PEERS",
    "TORCH_FULL_MAX_N",
    "PeerUnavailable",
    "peer_versions",
    "run_bare_floor",
    "run_c_floor",
    "run_jax_check_grads",
    "run_naive_copy",
    "run_numdifftools_gradient",
    "run_peer",
    "run_python_inplace",
    "run_scipy_approx_derivative",
    "run_scipy_check_grad",
    "run_torch_gradcheck",
    "run_torch_gradcheck_fast",
    "sample_components",
]

#: Step for the peers whose step we choose (the loops and the C floor). It is
#: torch.autograd.gradcheck's default and the fastcheck kernel's default.
DEFAULT_EPS = 1e-6

#: numdifftools makes about 30 evaluations per component (Richardson
#: extrapolation over 15 step sizes, central), so it stays small.
NUMDIFFTOOLS_MAX_N = 2000

#: torch gradcheck in full mode perturbs every element through Python-level
#: tensor indexing, clone and copy_ (about 20 µs of torch overhead per
#: component on top of its two forward calls), so a run costs
#: n × (2 forwards + 20 µs). At the cap the suite's largest model (MLP, 19,990
#: parameters) takes about 6 s per run on 2 cores, 2.7x the plain Python
#: in-place loop; past it, repeated runs stop being practical. Memory is not
#: the limit: for a scalar loss the "full Jacobian" it builds is n × 1.
TORCH_FULL_MAX_N = 20_000


class PeerUnavailable(Exception):
    """A peer cannot run here: library missing, workload unsupported, or n too large.

    Parameters
    ----------
    reason : str
        Human-readable reason, also available as ``.reason``.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------
def _result(seconds: float, evals: int, grad: np.ndarray | None, method: str,
            note: str = "") -> dict[str, Any]:
    return dict(seconds=float(seconds), evals=int(evals), grad=grad, method=method, note=note)


def _import(module: str, peer: str) -> Any:
    """Import ``module`` or raise PeerUnavailable naming the peer."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise PeerUnavailable(f"{peer}: {module} is not installed ({exc})") from None


def _components(n: int, components: Sequence[int] | None) -> np.ndarray | None:
    """Validate an optional subset of component indices."""
    if components is None:
        return None
    idx = np.asarray(components, dtype=np.intp).ravel()
    if idx.size and (idx.min() < 0 or idx.max() >= n):
        raise ValueError(f"components must lie in [0, {n}), got [{idx.min()}, {idx.max()}]")
    return idx


def _cap(peer: str, n: int, max_n: int | None, why: str) -> None:
    if max_n is not None and n > max_n:
        raise PeerUnavailable(f"{peer}: n = {n} > cap {max_n} ({why})")


def _scatter(n: int, idx: np.ndarray | None, values: np.ndarray) -> np.ndarray:
    """Full-length gradient, NaN where a subset run did not look."""
    if idx is None:
        return values
    out = np.full(n, np.nan)
    out[idx] = values
    return out


class _Counted:
    """Wrap a loss to count its calls, for peers that do not report them.

    The wrapper costs one Python call (~0.1 µs) per evaluation, small next to
    any of the losses and to the per-evaluation overhead of those peers.
    """

    def __init__(self, f: Callable[..., Any]) -> None:
        self.f = f
        self.calls = 0

    def __call__(self, *args: Any) -> Any:
        self.calls += 1
        return self.f(*args)


def sample_components(n: int, k: int, seed: int = 0) -> np.ndarray:
    """Return ``min(k, n)`` sorted distinct indices in ``[0, n)``, seeded.

    For timing the per-component cost at large ``n`` with the peers that take
    ``components`` (a full check there is O(n) evaluations of an O(n) loss).
    """
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n, size=min(int(k), n), replace=False))


# ---------------------------------------------------------------------------
# Floors and hand-written loops
# ---------------------------------------------------------------------------
def run_bare_floor(workload: Workload, components: Sequence[int] | None = None
                   ) -> dict[str, Any]:
    """Call the loss 2n times on an unchanged vector: the floor for any
    checker that calls a Python loss once per evaluation.

    Parameters
    ----------
    workload : Workload
    components : sequence of int, optional
        Make the 2 calls only for these components (2·len calls in all).
    """
    theta = workload.theta0()
    idx = _components(workload.n, components)
    count = workload.n if idx is None else idx.size
    f = workload.flat_loss
    t0 = time.perf_counter()
    for _ in range(count):
        f(theta)
        f(theta)
    seconds = time.perf_counter() - t0
    return _result(seconds, 2 * count, None, "none",
                   "2 loss calls per component, no perturbation, no arithmetic")


def run_naive_copy(workload: Workload, eps: float = DEFAULT_EPS,
                   components: Sequence[int] | None = None) -> dict[str, Any]:
    """The textbook loop: two fresh copies of θ per component.

    ``g_i = (J(θ + ε e_i) − J(θ − ε e_i)) / 2ε`` with θ ± ε e_i built as copies,
    so each component costs O(n) extra memory traffic besides the loss.
    """
    theta = workload.theta0()
    idx = _components(workload.n, components)
    order = range(workload.n) if idx is None else idx
    f = workload.flat_loss
    out = np.empty(len(order))
    t0 = time.perf_counter()
    for j, i in enumerate(order):
        tp = theta.copy()
        tp[i] += eps
        tm = theta.copy()
        tm[i] -= eps
        out[j] = (f(tp) - f(tm)) / (2.0 * eps)
    seconds = time.perf_counter() - t0
    return _result(seconds, 2 * len(order), _scatter(workload.n, idx, out), "central",
                   f"eps={eps:g}, copies theta twice per component, divides by 2*eps")


def run_python_inplace(workload: Workload, eps: float = DEFAULT_EPS,
                       components: Sequence[int] | None = None) -> dict[str, Any]:
    """A plain Python loop perturbing θ in place and restoring by assignment.

    This is :func:`workloads.numerical_gradient`: no copies; divides by the
    represented step ``(x + ε) − (x − ε)``. The best a pure-Python checker
    can do; the gap to :func:`run_bare_floor` is the loop's own overhead.
    """
    theta = workload.theta0()
    before = theta.copy()
    idx = _components(workload.n, components)
    t0 = time.perf_counter()
    out = numerical_gradient(workload.flat_loss, theta, eps=eps, components=idx)
    seconds = time.perf_counter() - t0
    if not np.array_equal(theta, before):  # outside the timing
        raise RuntimeError("python_inplace did not restore theta bit for bit")
    count = workload.n if idx is None else idx.size
    return _result(seconds, 2 * count, _scatter(workload.n, idx, out), "central",
                   f"eps={eps:g}, in place, restore by assignment")


# ---------------------------------------------------------------------------
# scipy
# ---------------------------------------------------------------------------
def run_scipy_approx_derivative(workload: Workload) -> dict[str, Any]:
    """``scipy.optimize._numdiff.approx_derivative(loss, θ, method="3-point")``.

    A private scipy module, but it is what ``minimize`` and
    ``least_squares`` use for finite differences. Its default step is
    relative, ``h_i = ε^(1/3) · max(1, |θ_i|)`` with ε the machine epsilon.
    """
    _import("scipy", "scipy_approx_derivative")
    try:
        from scipy.optimize._numdiff import approx_derivative
    except ImportError as exc:  # private module: may move in a future scipy
        raise PeerUnavailable(f"scipy_approx_derivative: {exc}") from None

    theta = workload.theta0()
    f = workload.flat_loss
    t0 = time.perf_counter()
    try:
        grad, info = approx_derivative(f, theta, method="3-point", full_output=True)
    except TypeError:  # scipy < 1.16 has no full_output: the count is 2n then
        grad, info = approx_derivative(f, theta, method="3-point"), {"nfev": 2 * workload.n}
    seconds = time.perf_counter() - t0
    return _result(seconds, info["nfev"], np.asarray(grad, dtype=float).ravel(), "central",
                   "rel. step eps^(1/3)*max(1,|x|); 4 copies of theta per component "
                   "(its generator of perturbed vectors runs twice)")


def run_scipy_check_grad(workload: Workload) -> dict[str, Any]:
    """``scipy.optimize.check_grad(loss, grad, θ)``.

    It returns only ``‖g_analytic − g_fd‖₂`` (reported in ``note``); ``g_fd``
    comes from ``approx_fprime``, i.e. *forward* differences with an
    absolute step √ε ≈ 1.49e-8 (n + 1 evaluations), plus one gradient call.
    """
    _import("scipy", "scipy_check_grad")
    from scipy.optimize import check_grad

    theta = workload.theta0()
    f, g = workload.flat_loss, workload.flat_grad
    t0 = time.perf_counter()
    err = check_grad(f, g, theta)
    seconds = time.perf_counter() - t0
    scale = float(np.linalg.norm(g(theta)))  # outside the timing
    return _result(seconds, workload.n + 1, None, "forward",
                   f"returns only ||g - g_fd|| = {err:.3g} (||g|| = {scale:.3g}); "
                   f"abs step 1.49e-8; + 1 grad call")


# ---------------------------------------------------------------------------
# numdifftools
# ---------------------------------------------------------------------------
def run_numdifftools_gradient(workload: Workload, max_n: int | None = NUMDIFFTOOLS_MAX_N
                              ) -> dict[str, Any]:
    """``numdifftools.Gradient(loss)(θ)`` with its defaults.

    Central differences over a sequence of steps combined by Richardson
    extrapolation: very accurate, about 30 evaluations per component.
    """
    _cap("numdifftools_gradient", workload.n, max_n, "~30 evaluations per component")
    nd = _import("numdifftools", "numdifftools_gradient")
    theta = workload.theta0()
    f = _Counted(workload.flat_loss)
    gradient = nd.Gradient(f)  # construction is cheap and untimed
    t0 = time.perf_counter()
    grad = gradient(theta)
    seconds = time.perf_counter() - t0
    return _result(seconds, f.calls, np.asarray(grad, dtype=float).ravel(),
                   "central+richardson",
                   f"numdifftools {nd.__version__} defaults; "
                   f"{f.calls / workload.n:.1f} evals per component")


# ---------------------------------------------------------------------------
# torch
# ---------------------------------------------------------------------------
_torch_warm = False


def _torch_warm_up(torch: Any) -> None:
    """Run one tiny gradcheck per process, untimed.

    The first gradcheck in a process imports parts of torch lazily on its
    first backward pass (0.2 s to several seconds, disk-cache dependent);
    that is a one-off start-up cost, not the cost of checking.
    """
    global _torch_warm
    if not _torch_warm:
        x = torch.ones(3, dtype=torch.float64, requires_grad=True)
        torch.autograd.gradcheck(lambda t: (t * t).sum(), (x,), fast_mode=True)
        torch.autograd.gradcheck(lambda t: (t * t).sum(), (x,), fast_mode=False)
        _torch_warm = True


def run_torch_gradcheck(workload: Workload, fast_mode: bool = False,
                        max_n: int | None = TORCH_FULL_MAX_N,
                        threads: int | None = None) -> dict[str, Any]:
    """``torch.autograd.gradcheck`` on the workload's torch twin, float64.

    Parameters
    ----------
    workload : Workload
        Must provide ``torch_loss``.
    fast_mode : bool, optional
        False (default): the full check, central differences on every
        element (2n forward calls), compared with the autograd gradient
        (computed twice, to detect non-reentrant backward). True: one random
        projection ``vᵀ J u``, a constant number of calls whatever n.
    max_n : int, optional
        Cap for the full mode (see :data:`TORCH_FULL_MAX_N`); ignored in
        fast mode.
    threads : int, optional
        If given, ``torch.set_num_threads(threads)`` first (process-wide).
        torch's intra-op threads do not speed up these small ops, and when
        another process holds a core they can slow a run down by 10x and
        more, so ``threads=1`` gives steadier numbers on a busy machine.

    Notes
    -----
    The timed region is the ``gradcheck`` call only (it includes the
    autograd backward passes); one tiny untimed gradcheck per process runs
    first (see :func:`_torch_warm_up`). gradcheck returns a verdict, not the
    numerical gradient, so ``grad`` is None. Defaults eps=1e-6, atol=1e-5,
    rtol=1e-3.
    """
    peer = "torch_gradcheck_fast" if fast_mode else "torch_gradcheck"
    if not fast_mode:
        _cap(peer, workload.n, max_n, "2n Python-level forward calls plus ~20 us of "
             "per-element indexing; cost grows as n x cost(forward)")
    torch = _import("torch", peer)
    _torch_warm_up(torch)
    if threads is not None:
        torch.set_num_threads(int(threads))
    theta = workload.theta0()
    t = torch.tensor(theta, dtype=torch.float64, requires_grad=True)
    try:
        workload.torch_loss(t.detach())
    except NotImplementedError as exc:
        raise PeerUnavailable(f"{peer}: {exc}") from None
    f = _Counted(workload.torch_loss)
    t0 = time.perf_counter()
    passed = torch.autograd.gradcheck(f, (t,), eps=1e-6, atol=1e-5, rtol=1e-3,
                                      raise_exception=False, fast_mode=fast_mode)
    seconds = time.perf_counter() - t0
    method = "random-direction central" if fast_mode else "central"
    return _result(seconds, f.calls, None, method,
                   f"gradcheck(fast_mode={fast_mode}) -> {'pass' if passed else 'FAIL'}; "
                   f"eps=1e-6; torch {torch.__version__}, {torch.get_num_threads()} threads")


def run_torch_gradcheck_fast(workload: Workload) -> dict[str, Any]:
    """:func:`run_torch_gradcheck` with ``fast_mode=True``."""
    return run_torch_gradcheck(workload, fast_mode=True)


# ---------------------------------------------------------------------------
# jax
# ---------------------------------------------------------------------------
def run_jax_check_grads(workload: Workload) -> dict[str, Any]:
    """``jax.test_util.check_grads(f, (x,), order=1, modes=["rev"])``, x64.

    check_grads compares the VJP with central differences along *one* seeded
    random direction (step 1e-4): a constant number of evaluations whatever
    n, and no per-component gradient, so ``grad`` is None.

    Notes
    -----
    ``f`` is the workload's jax twin, not jitted (as a user would pass it).
    One untimed call runs first, so jax's one-off costs (backend start,
    compiling each primitive) are not counted; the timed call is the second.
    """
    peer = "jax_check_grads"
    jax = _import("jax", peer)
    # x64 must be on before the first array is made, or jax casts to float32.
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    from jax.test_util import check_grads

    x = jnp.asarray(workload.theta0())
    try:
        workload.jax_loss(x)
    except NotImplementedError as exc:
        raise PeerUnavailable(f"{peer}: {exc}") from None

    def check(f: Callable[[Any], Any]) -> str | None:
        try:
            check_grads(f, (x,), order=1, modes=["rev"])
            return None
        except AssertionError as exc:  # check_grads reports a mismatch this way
            return str(exc).strip().splitlines()[0]

    check(workload.jax_loss)  # warm-up, untimed
    f = _Counted(workload.jax_loss)
    t0 = time.perf_counter()
    failure = check(f)
    seconds = time.perf_counter() - t0
    verdict = "pass" if failure is None else f"FAIL ({failure})"
    return _result(seconds, f.calls, None, "random-direction central",
                   f"check_grads rev, one direction, eps=1e-4 -> {verdict}; "
                   f"jax {jax.__version__}, eager, 2nd call timed")


# ---------------------------------------------------------------------------
# C floor
# ---------------------------------------------------------------------------
def run_c_floor(workload: Workload, eps: float = DEFAULT_EPS,
                components: Sequence[int] | None = None) -> dict[str, Any]:
    """Hand-written C loop over the C quadratic loss (``bench/cfloor.c``).

    The floor for any checker whose loss is a C callback: in place, restore
    by assignment, the loss called through a function pointer, nothing else.
    Only for :class:`~workloads.Quadratic`, whose loss exists in C.
    """
    peer = "c_floor"
    # By name too: `workloads` and `bench.workloads` are different modules
    # (hence different classes) when a caller mixes the two import styles.
    if not (isinstance(workload, Quadratic) or type(workload).__name__ == "Quadratic"):
        raise PeerUnavailable(f"{peer}: only Quadratic has a C loss, not {workload.name}")
    try:
        from .cbuild import BuildError, build_cfloor
    except ImportError:
        from cbuild import BuildError, build_cfloor  # type: ignore[no-redef]

    try:
        lib = build_cfloor()
    except BuildError as exc:
        raise PeerUnavailable(f"{peer}: {exc}") from None

    n = workload.n
    theta = workload.theta0()
    before = theta.copy()
    d = np.ascontiguousarray(workload.d, dtype=np.float64)
    idx = _components(n, components)
    count = n if idx is None else idx.size
    fplus, fminus = np.empty(count), np.empty(count)

    dptr = ctypes.POINTER(ctypes.c_double)
    loss_ptr = ctypes.cast(lib.quad_loss, ctypes.c_void_p)
    args_theta = theta.ctypes.data_as(dptr)
    args_fp, args_fm = fplus.ctypes.data_as(dptr), fminus.ctypes.data_as(dptr)
    ud = ctypes.c_void_p(d.ctypes.data)
    if idx is not None:
        idx_c = np.ascontiguousarray(idx, dtype=np.intp)
        args_idx = idx_c.ctypes.data_as(ctypes.POINTER(ctypes.c_ssize_t))

    t0 = time.perf_counter()
    if idx is None:
        status = lib.central_loop(loss_ptr, args_theta, n, eps, ud, args_fp, args_fm)
    else:
        status = lib.central_loop_subset(loss_ptr, args_theta, n, args_idx, count, eps,
                                         ud, args_fp, args_fm)
    seconds = time.perf_counter() - t0

    if status != 0:
        raise RuntimeError(f"{peer}: central loop returned status {status}")
    if not np.array_equal(theta, before):
        raise RuntimeError(f"{peer}: theta was not restored bit for bit")
    x = theta if idx is None else theta[idx]
    grad = (fplus - fminus) / ((x + eps) - (x - eps))  # the represented step
    return _result(seconds, 2 * count, _scatter(n, idx, grad), "central",
                   f"eps={eps:g}, C loop + C loss via function pointer (cc -O2)")


# ---------------------------------------------------------------------------
# Registry
# ---------------------------------------------------------------------------
#: Every peer by name, in the order a report should list them.
PEERS: dict[str, Callable[..., dict[str, Any]]] = {
    "bare_floor": run_bare_floor,
    "c_floor": run_c_floor,
    "python_inplace": run_python_inplace,
    "naive_copy": run_naive_copy,
    "scipy_approx_derivative": run_scipy_approx_derivative,
    "scipy_check_grad": run_scipy_check_grad,
    "numdifftools_gradient": run_numdifftools_gradient,
    "torch_gradcheck": run_torch_gradcheck,
    "torch_gradcheck_fast": run_torch_gradcheck_fast,
    "jax_check_grads": run_jax_check_grads,
}

#: The peers that accept ``components=`` (per-component timing at large n).
SUBSET_PEERS: list[str] = ["bare_floor", "c_floor", "python_inplace", "naive_copy"]


def run_peer(name: str, workload: Workload, **options: Any) -> dict[str, Any]:
    """Run the peer called ``name`` (a key of :data:`PEERS`) on ``workload``."""
    try:
        fn = PEERS[name]
    except KeyError:
        raise KeyError(f"unknown peer {name!r}; known: {', '.join(PEERS)}") from None
    return fn(workload, **options)


def peer_versions() -> dict[str, str | None]:
    """Versions of the peer libraries importable here (None when missing)."""
    import importlib

    out: dict[str, str | None] = {}
    for mod in ("numpy", "scipy", "numdifftools", "torch", "jax"):
        try:
            out[mod] = importlib.import_module(mod).__version__
        except ImportError:
            out[mod] = None
    return out
