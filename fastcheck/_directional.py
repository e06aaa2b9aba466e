"""mode="directional": random-direction checks per parameter, and localisation.

Design notes (the code refers to them):

1. The directional test.  For a parameter block and a random direction v, the
   central difference D = (J(theta + h v) - J(theta - h v)) / 2h approximates
   <grad J, v>; a gradient error e shows as the mismatch D - <g, v> = <e, v>.
   It is compared with the noise of D -- rounding delta / h (delta = C_ROUND u |J|,
   as in _verdict note 2) plus a curvature guess for truncation -- and a relative
   floor (the "excellent" tier times |D| + |<g, v>|, as for a component), *not*
   with |grad J| |v|.  So one wrong component among a million is still seen:
   <e, v> = e_i v_i does not shrink with the size of the block.
2. Directions.  v_i = s_i m_i, with random signs s_i and magnitudes m_i uniform
   in [0.5, 1.5]: no component is ever nearly left out (a Gaussian v would make
   |v_i| small with probability ~8 % and hide e_i there), and errors in several
   components do not cancel exactly (they would with probability 1/2 for two
   equal errors under +-1 signs).  Two independent directions per block.
3. In place.  theta_S + h v_S is written into the user's own arrays with numpy,
   J is evaluated, then theta_S - h v_S, then the saved theta_S is written back by
   assignment -- bitwise, also on exceptions and Ctrl-C (try / finally).  Only the
   affected range is saved.  The direction actually applied is what the dtype
   represents: w = (fl(x + h v) - fl(x - h v)) / 2h, and <g, w> is compared.
4. The step is relative to the block's scale, h = eps0 max(1, |theta_block|_inf) /
   |v|_inf, eps0 the default central step of the dtype (or the user's eps, then
   absolute).  A direction whose first mismatch exceeds its tolerance is
   evaluated again at h/4, h/16, ... (or at larger steps when rounding limits
   it) and judged by the same rule as a component, fastcheck._judge.assess: a
   bug's mismatch does not depend on the step, truncation and noise do; a kink
   keeps its one-sided slopes apart.  A direction that looked off (or too coarse
   for the "ok" tier) first has the noise measured (_noise, once per check); one
   that cannot be resolved to the "ok" tier is "unresolved", not passed.
5. Localisation is group testing with additive measurements.  A failing block
   is split in two halves of contiguous flat indices; the direction restricted
   to the left half is measured (2 evaluations).  When it passes, the right half
   must hold the error (the parent failed): no evaluation needed.  When it fails
   too, the right half may or may not: since D and <g, w> are both linear in the
   direction, its mismatch is the parent's minus the left's, for free, with the
   two tolerances added; once that inferred tolerance has grown well past a
   direct one, the right half is measured instead.
   Halves that fail are split again, breadth first, down to ranges of at most
   LEAF components, which are checked one by one through the kernel with the
   same first / second look as mode="full": the final statuses come from the
   component logic.  k wrong components among n cost about 2 k log2(n)
   evaluations.
6. "Wrong throughout": when (nearly) every one of the 2**THROUGHOUT_LEVEL parts
   of a block fails, a sample of THROUGHOUT_SAMPLE components is checked one by
   one; if enough of them are wrong the block is reported as wrong throughout,
   instead of spending n evaluations on it.
7. Cancellation guard.  After a block's localisation, the components found must
   explain the mismatch of *both* directions (sum of e_i w_i over the found
   components, e_i = numerical - analytic).  A residual beyond tolerance in the
   second direction starts a new localisation along it, with the known
   contributions subtracted; a residual left at the end is reported.
8. max_evals bounds everything (probes, directions, localisation, components);
   what the budget did not cover is said in the notes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from fastcheck._evaluate import default_eps
from fastcheck._guard import Probes, invalid_result
from fastcheck._judge import (
    MAX_STEP,
    REFINE,
    REFINE_LEVELS,
    UPWARD_LEVELS,
    Noise,
    assess,
    status_notes,
)
from fastcheck._partial import BudgetExhausted, PartialCheck
from fastcheck._progress import progress_reporter, warn_if_long
from fastcheck._request import DIRECTIONS, CheckRequest, minimum_evals
from fastcheck._result import GradCheckResult, build_result
from fastcheck._verdict import KAPPA, ComponentStatus, relative_error, tier_of

__all__ = ["ParamsModified", "run_directional"]

_S = ComponentStatus
MAGNITUDE = (0.5, 1.5)       # |v_i| range (note 2)
LEAF = 2                     # ranges this small are checked one by one (note 5)
REANCHOR = 3.0               # measure the right half when inference gets this loose
THROUGHOUT_LEVEL = 3         # 2**3 = 8 parts (note 6)
THROUGHOUT_PASS = 1          # at most this many of the parts may pass
THROUGHOUT_SAMPLE = 20
THROUGHOUT_WRONG = 0.25      # fraction of the sample that must be wrong


class ParamsModified(Exception):
    """The loss wrote into the parameters it was given (they were restored)."""


class _Access:
    """Read and write a C-order range of one array's components, whatever its strides."""

    def __init__(self, array: np.ndarray) -> None:
        self.array = array
        self.flat = array.reshape(-1) if array.flags.c_contiguous else None
        self.size = array.size

    def _where(self, lo: int, hi: int) -> tuple:
        return np.unravel_index(np.arange(lo, hi), self.array.shape)

    def get(self, lo: int, hi: int) -> np.ndarray:
        if self.flat is not None:
            return self.flat[lo:hi].copy()
        if lo == 0 and hi == self.size:
            return np.array(self.array, order="C").reshape(-1)
        return self.array[self._where(lo, hi)]

    def holds(self, lo: int, hi: int, values: np.ndarray) -> bool:
        """Whether the range holds exactly `values` (bit for bit)."""
        now = self.flat[lo:hi] if self.flat is not None else self.get(lo, hi)
        bits = np.dtype(f"u{values.itemsize}")
        return bool(np.array_equal(now.view(bits), values.view(bits)))

    def put(self, lo: int, hi: int, values: np.ndarray) -> None:
        if self.flat is not None:
            self.flat[lo:hi] = values
        elif lo == 0 and hi == self.size:
            self.array[...] = values.reshape(self.array.shape)
        else:
            self.array[self._where(lo, hi)] = values


@dataclass
class _Measure:
    """One directional measurement over a range, at one step."""

    d: float          # central difference along w
    g: float          # <analytic, w>
    tol: float        # allowed |d - g| (note 1)
    h: float
    plus: float
    minus: float
    noise: float = math.nan   # rounding + truncation guess of d (note 1)
    allow: float = 0.0        # declared accuracy along w: sum |w_i| (atol + rtol |g_i|)

    @property
    def mismatch(self) -> float:
        return self.d - self.g


@dataclass
class _Test:
    """The block-level test of one direction (notes 1 and 4)."""

    direction: int
    status: str = "undecided"   # pass, wrong, kink, nonfinite, undecided
    h: float = math.nan         # the step the decision was made at
    mismatch: float = math.nan  # raw central mismatch at h (for localisation)
    estimate: float = math.nan  # best estimate of the mismatch (Richardson if refined)
    d: float = math.nan
    g: float = math.nan
    tol: float = math.nan
    z: float = math.nan         # first look: |mismatch| / tolerance
    steps: int = 0

    def as_dict(self) -> dict:
        return {"direction": self.direction, "status": self.status, "step": self.h,
                "derivative": self.d, "analytic": self.g, "mismatch": self.estimate,
                "tolerance": self.tol, "z": self.z, "steps": self.steps}


@dataclass
class _Block:
    p: int
    name: str
    array: np.ndarray
    offset: int
    access: _Access
    g: np.ndarray                 # analytic, non-finite entries zeroed
    dirs: list[np.ndarray]
    scale: float
    base_h: float
    tests: list[_Test] = field(default_factory=list)
    known: dict[int, float] = field(default_factory=dict)   # local index -> e_i
    known_noise: dict[int, float] = field(default_factory=dict)
    descended: set[int] = field(default_factory=set)
    throughout: tuple[int, int] | None = None   # (wrong, sampled)
    parts: tuple[int, int] | None = None        # (failing, parts) when throughout
    uncovered: list[tuple[int, int]] = field(default_factory=list)
    residual: list[tuple[int, float, float]] = field(default_factory=list)

    @property
    def size(self) -> int:
        return self.array.size

    @property
    def failed(self) -> bool:
        return any(t.status in ("wrong", "undecided") for t in self.tests)


@dataclass
class _Node:
    b: _Block
    j: int
    lo: int
    hi: int
    m: float       # raw mismatch (known contributions not subtracted)
    tol: float
    h: float
    depth: int


class _Directional:
    def __init__(self, check: PartialCheck, seed: int) -> None:
        self.check = check
        layout = check.layout
        self.seq = np.random.SeedSequence(seed)
        streams = self.seq.spawn(len(layout.arrays) + 1)
        self.sample_rng = np.random.default_rng(streams[-1])
        n = layout.size
        self.numerical = np.full(n, np.nan)
        self.noise = np.full(n, np.nan)
        self.status = np.full(n, _S.NOT_CHECKED, dtype=np.int8)
        self.measurements = 0
        finite = np.isfinite(check.analytic)
        self.status[~finite] = _S.NONFINITE_GRAD
        self.blocks = []
        for p, (name, array) in enumerate(zip(layout.names, layout.arrays, strict=True)):
            lo, hi = int(layout.offsets[p]), int(layout.offsets[p + 1])
            rng = np.random.default_rng(streams[p])
            dirs = []
            for _ in range(DIRECTIONS):
                v = rng.uniform(*MAGNITUDE, size=array.size)
                v *= rng.choice(np.array([-1.0, 1.0]), size=array.size)
                v[~finite[lo:hi]] = 0.0   # a NaN gradient is reported, not perturbed
                dirs.append(v)
            x = check.values()[lo:hi]
            scale = max(1.0, float(np.max(np.abs(x)))) if x.size else 1.0
            eps0 = check.step if check.step is not None else default_eps(array.dtype,
                                                                          "central")
            base_h = (eps0 * scale if check.relative else eps0) / MAGNITUDE[1]
            self.blocks.append(_Block(
                p, name, array, lo, _Access(array),
                np.where(finite[lo:hi], check.analytic[lo:hi], 0.0), dirs, scale, base_h))

    # ------------------------------------------------------------ measuring
    def _effective(self, b: _Block, j: int, h: float, local: np.ndarray) -> np.ndarray:
        """w_i = (fl(x + h v) - fl(x - h v)) / 2h at some components (note 3)."""
        x = self.check.values()[b.offset + local]
        v = b.dirs[j][local]
        dtype = b.array.dtype
        return ((x + h * v).astype(dtype).astype(np.float64)
                - (x - h * v).astype(dtype).astype(np.float64)) / (2 * h)

    def _known(self, b: _Block, j: int, h: float, lo: int, hi: int) -> tuple[float, float]:
        """Contribution of already-checked components in [lo, hi) to a mismatch, and
        its uncertainty (note 7)."""
        if not b.known:
            return 0.0, 0.0
        local = np.array(sorted(i for i in b.known if lo <= i < hi), dtype=np.intp)
        if local.size == 0:
            return 0.0, 0.0
        w = self._effective(b, j, h, local)
        e = np.array([b.known[i] for i in local])
        noise = np.array([b.known_noise[i] for i in local])
        return float(np.dot(e, w)), float(KAPPA * np.dot(noise, np.abs(w)))

    def measure(self, b: _Block, j: int, lo: int, hi: int, h: float,
                phase: str) -> _Measure:
        """Two evaluations along direction j restricted to [lo, hi) (notes 1, 3)."""
        check = self.check
        if check.remaining < 2:
            raise BudgetExhausted
        saved = b.access.get(lo, hi)
        x = saved.astype(np.float64, copy=False)
        v = b.dirs[j][lo:hi]
        plus, minus = x + h * v, x - h * v
        if b.array.dtype != np.float64:   # what the parameter's dtype represents
            plus, minus = plus.astype(b.array.dtype), minus.astype(b.array.dtype)
        try:
            b.access.put(lo, hi, plus)
            jp = check.evaluate(phase)
            touched = not b.access.holds(lo, hi, plus)
            b.access.put(lo, hi, minus)
            jm = check.evaluate(phase)
            touched = touched or not b.access.holds(lo, hi, minus)
        finally:
            b.access.put(lo, hi, saved)
        if touched:
            raise ParamsModified(b.name)
        self.measurements += 1
        # <g, w> with w = (plus - minus) / 2h, the direction the dtype represented
        w = np.subtract(plus, minus, dtype=np.float64)
        g = float(np.dot(b.g[lo:hi], w)) / (2 * h)
        allow = 0.0
        if check.accuracy is not None:   # a component error e_i shows as e_i w_i
            allow = float(np.dot(np.abs(w), check.accuracy.allowance(b.g[lo:hi]))) / (2 * h)
        with np.errstate(all="ignore"):
            d = (jp - jm) / (2 * h)
        noise, tol = self._tolerance(b, d, g, h, jp, jm, x, allow)
        return _Measure(d, g, tol, h, jp, jm, noise, allow)

    def _tolerance(self, b: _Block, d: float, g: float, h: float, jp: float, jm: float,
                   x: np.ndarray | None = None, allow: float = 0.0) -> tuple[float, float]:
        """Noise of a directional difference and its allowed mismatch (note 1)."""
        check = self.check
        j0 = check.center
        with np.errstate(all="ignore"):
            delta = float(self.noise_model().delta(j0, jp, jm)[()])
            gap = abs((jp - j0) - (j0 - jm)) / h
            scale = (max(1.0, float(np.max(np.abs(x)))) if x is not None and x.size
                     else b.scale)
            noise = delta / h + h * gap / scale
            tol = KAPPA * noise + check.tiers.excellent * (abs(d) + abs(g)) + allow
        return noise, tol

    # ------------------------------------------------------- the block test
    def test(self, b: _Block, j: int) -> _Test:
        """Note 4: first look at h; failing directions again at other steps, judged
        by the one rule of _judge (:func:`fastcheck._judge.assess`)."""
        t = _Test(j)
        b.tests.append(t)
        check = self.check
        first = self.measure(b, j, 0, b.size, b.base_h, "directions")
        poor = KAPPA * first.noise > check.tiers.ok * self.size(b, first)
        if ((abs(first.mismatch) > first.tol or poor) and check.refine
                and math.isfinite(first.d)):
            # Suspect, or not resolved to the "ok" tier by the noise model: measure
            # the noise (once per check) before believing either.
            if self.calibrate():
                first = self.remeasure(b, first)
        t.steps = 1
        t.d, t.g, t.h, t.tol = first.d, first.g, first.h, first.tol
        t.mismatch = t.estimate = first.mismatch
        with np.errstate(all="ignore"):
            t.z = abs(first.mismatch) / first.tol if first.tol > 0 else (
                0.0 if first.mismatch == 0 else math.inf)
        if not (math.isfinite(first.d) and math.isfinite(first.g)):
            t.status = "nonfinite"
            return t
        resolved_enough = KAPPA * first.noise <= check.tiers.ok * self.size(b, first)
        if abs(first.mismatch) <= first.tol and resolved_enough:
            t.status = "pass"
            return t
        if not check.refine:
            t.status = "wrong" if abs(first.mismatch) > first.tol else "unresolved"
            return t
        self.refine_test(b, j, t, first)
        return t

    def refine_test(self, b: _Block, j: int, t: _Test, m1: _Measure) -> None:
        """Refine a direction at h/4, h/16, ... or 4h, 16h, ... (_judge notes 2, 3)."""
        check = self.check
        floor_rel = check.tiers.excellent
        j0 = check.center
        noise = self.noise_model()
        rounding0 = float(noise.delta(j0, m1.plus, m1.minus)[()]) / m1.h
        if abs(m1.mismatch) > m1.tol:   # a suspect: up when rounding limits it
            up = KAPPA * REFINE * rounding0 >= 0.5 * abs(m1.mismatch)
        else:                            # coarse: up when rounding dominates its noise
            up = rounding0 >= 0.5 * m1.noise
        factor = REFINE if up else 1 / REFINE
        coef = extrapolated = math.nan
        kink_before = False
        levels = UPWARD_LEVELS if up else REFINE_LEVELS
        for level in range(1, levels + 1):
            m2 = self.measure(b, j, 0, b.size, m1.h * factor, "directions")
            t.steps += 1
            delta = noise.delta(j0, m1.plus, m1.minus, m2.plus, m2.minus)
            lv = assess(j0, m1.h, m1.plus, m1.minus, m2.h, m2.plus, m2.minus, m1.g, m2.g,
                        delta, floor_rel, coef, extrapolated, allow=m2.allow)
            kink = bool(lv.kink) and not up
            last = level == levels or (up and m2.h * REFINE > MAX_STEP * b.scale)
            floor = floor_rel * (abs(m2.d) + abs(m2.g)) + m2.allow
            limit = float(KAPPA * (lv.rounding + lv.trunc) + floor)
            good = float(KAPPA * (lv.rounding + lv.reach) + floor) <= (
                check.tiers.ok * self.size(b, m2))
            t.d, t.g, t.h, t.mismatch, t.tol = m2.d, m2.g, m2.h, m2.mismatch, limit
            t.estimate = m2.mismatch if kink else float(lv.richardson - m2.g)
            if not lv.finite:
                t.status = "nonfinite"
            elif kink and (kink_before or last):
                t.status = "kink" if lv.kink_ok else "wrong"
            elif not kink and lv.stable_wrong:
                t.status = "wrong"
            elif not kink and lv.fine and (lv.settled or last) and good:
                t.status = "pass"
            elif up and (lv.resolve > 4 * lv.rounding or last):
                t.status = "pass" if lv.fine and good else "unresolved"
            elif not up and (last or REFINE * lv.rounding * KAPPA >= (
                    check.tiers.ok * self.size(b, m2) if lv.fine else lv.miss)):
                t.status = "pass" if lv.fine and good else "unresolved"
            if t.status != "undecided":
                return
            m1, coef, extrapolated, kink_before = m2, float(lv.coef), float(lv.richardson), kink

    @staticmethod
    def size(b: _Block, m: _Measure) -> float:
        """The size a direction's resolution is judged against: its own derivative,
        or the block's gradient norm when that is larger (_judge note 3)."""
        return max(abs(m.d) + abs(m.g), float(np.linalg.norm(b.g)))

    def noise_model(self) -> Noise:
        """The check's noise model (measured once a direction looked off)."""
        return self.check.noise if self.check.noise is not None else Noise(self.check.unit)

    def calibrate(self) -> bool:
        """Measure the noise once (8 or 16 evaluations within the budget); True when
        the noise model or the tiers changed."""
        check = self.check
        calibration = check.calibration()
        if (check.noise_option == "model" or calibration.estimate is not None
                or check.remaining < 24 + 2):
            return False
        found = calibration(check.analytic, check.analytic, check.values())
        check.spend(calibration.evaluations, "noise")
        if found is None:
            return False
        check.noise, check.tiers = found[0], found[1]
        return True

    def remeasure(self, b: _Block, m: _Measure) -> _Measure:
        """The first measurement's tolerance under the measured noise (no evaluation)."""
        noise, tol = self._tolerance(b, m.d, m.g, m.h, m.plus, m.minus, allow=m.allow)
        return replace(m, tol=tol, noise=noise)

    # --------------------------------------------------------- localisation
    def _failing(self, node: _Node) -> bool:
        known, known_tol = self._known(node.b, node.j, node.h, node.lo, node.hi)
        return abs(node.m - known) > node.tol + known_tol

    def split(self, node: _Node) -> list[tuple[_Node, bool]]:
        """Note 5: measure the left half, infer (or measure) the right half.

        Returns the two halves, each with whether it fails.  When the parent
        fails and the left half passes, the right half fails: that is logic, not
        a measurement, so it holds however loose the inferred tolerance is.
        """
        b, j, h = node.b, node.j, node.h
        mid = (node.lo + node.hi) // 2
        left = self.measure(b, j, node.lo, mid, h, "localisation")
        lnode = _Node(b, j, node.lo, mid, left.mismatch, left.tol, h, node.depth + 1)
        left_fails = self._failing(lnode)
        rnode = _Node(b, j, mid, node.hi, node.m - left.mismatch, node.tol + left.tol, h,
                      node.depth + 1)
        if not left_fails and math.isfinite(rnode.m):
            return [(lnode, False), (rnode, True)]
        if rnode.tol > REANCHOR * left.tol or not math.isfinite(rnode.m):
            right = self.measure(b, j, mid, node.hi, h, "localisation")
            rnode.m, rnode.tol = right.mismatch, right.tol
        return [(lnode, True), (rnode, self._failing(rnode))]

    def record(self, flat: np.ndarray, numerical: np.ndarray, noise: np.ndarray,
               status: np.ndarray) -> None:
        """Store one-by-one results; finite ones become known contributions."""
        self.numerical[flat], self.noise[flat], self.status[flat] = numerical, noise, status
        for i, n_i, s_i, st in zip(flat, numerical, noise, status, strict=True):
            b = self.blocks[int(self.check.layout.param_of(np.asarray(i)))]
            e = n_i - self.check.analytic[i]
            if math.isfinite(e) and st != _S.NONFINITE_LOSS:
                b.known[int(i) - b.offset] = float(e)
                b.known_noise[int(i) - b.offset] = float(s_i) if math.isfinite(s_i) else 0.0

    def check_leaves(self, nodes: list[_Node]) -> list[_Node]:
        """Check the components of small ranges one by one (in one kernel run when
        the budget allows, else range by range); return the ranges left over."""
        def todo(node: _Node) -> list[int]:
            return [node.b.offset + i for i in range(node.lo, node.hi)
                    if self.status[node.b.offset + i] == _S.NOT_CHECKED]

        flat = np.array(sorted({i for node in nodes for i in todo(node)}), dtype=np.intp)
        if flat.size == 0:
            return []
        try:
            self.record(flat, *self.check.check_components(flat, "components"))
            return []
        except BudgetExhausted:
            pass
        left = []
        for node in nodes:
            one = np.array(todo(node), dtype=np.intp)
            try:
                self.record(one, *self.check.check_components(one, "components"))
            except BudgetExhausted:
                left.append(node)
        return left

    def throughout(self, b: _Block, parts: int, failing: int) -> bool:
        """Note 6: sample the block; True when it is wrong throughout."""
        todo = np.flatnonzero(self.status[b.offset:b.offset + b.size] == _S.NOT_CHECKED)
        if todo.size == 0:
            return False
        pick = np.sort(self.sample_rng.choice(todo, min(THROUGHOUT_SAMPLE, todo.size),
                                              replace=False))
        flat = (b.offset + pick).astype(np.intp)
        try:
            numerical, noise, status = self.check.check_components(flat, "throughout")
        except BudgetExhausted:
            return False
        self.record(flat, numerical, noise, status)
        wrong = int(np.count_nonzero((status == _S.WRONG) | (status == _S.NONFINITE_GRAD)))
        if wrong >= max(1, THROUGHOUT_WRONG * flat.size):
            b.throughout = (wrong, int(flat.size))
            b.parts = (failing, parts)
            return True
        return False

    def localise(self, roots: list[_Node]) -> None:
        """Breadth-first group testing over every failing block (notes 5, 6)."""
        level = [r for r in roots if self._failing(r)]
        while level:
            leaves = [n for n in level if n.hi - n.lo <= LEAF]
            for node in self.check_leaves(leaves):
                node.b.uncovered.append((node.lo, node.hi))
            nxt: list[_Node] = []
            parts: dict[tuple[int, int], list[int]] = {}
            for node in level:
                if node.hi - node.lo <= LEAF or node.b.throughout:
                    continue
                try:
                    kids = self.split(node)
                except BudgetExhausted:
                    node.b.uncovered.append((node.lo, node.hi))
                    continue
                for kid, bad in kids:
                    if kid.depth == THROUGHOUT_LEVEL:
                        count = parts.setdefault((kid.b.p, kid.j), [0, 0])
                        count[0] += 1
                        count[1] += bool(bad)
                    if bad:
                        nxt.append(kid)
            for (p, _j), (total, failing) in parts.items():
                b = self.blocks[p]
                if (total == 2 ** THROUGHOUT_LEVEL and failing >= total - THROUGHOUT_PASS
                        and not b.throughout and self.throughout(b, total, failing)):
                    nxt = [n for n in nxt if n.b is not b]
            level = nxt

    # ----------------------------------------------------------------- run
    def residuals(self, b: _Block) -> list[tuple[_Test, float, float]]:
        """Note 7: what the found components leave unexplained, per direction."""
        out = []
        for t in b.tests:
            if t.status != "wrong":
                continue
            known, known_tol = self._known(b, t.direction, t.h, 0, b.size)
            out.append((t, t.mismatch - known, t.tol + known_tol))
        return out

    def run(self) -> None:
        order = []
        try:
            for b in self.blocks:
                for j in range(DIRECTIONS if b.size else 0):
                    order.append((b, j))
            for b, j in order:
                self.test(b, j)
        except BudgetExhausted:
            pass
        for _ in range(DIRECTIONS):
            roots = []
            for b in self.blocks:
                if b.throughout or b.uncovered:
                    continue
                # The direction whose mismatch is least explained goes first.
                left = [(abs(r) / tol if tol > 0 else math.inf, t)
                        for t, r, tol in self.residuals(b)
                        if abs(r) > tol and t.direction not in b.descended]
                if left:
                    t = max(left, key=lambda item: item[0])[1]
                    b.descended.add(t.direction)
                    roots.append(_Node(b, t.direction, 0, b.size, t.mismatch, t.tol, t.h, 0))
            if not roots:
                break
            self.localise(roots)
        for b in self.blocks:
            if b.throughout or b.uncovered:
                continue
            b.residual = [(t.direction, r, tol) for t, r, tol in self.residuals(b)
                          if abs(r) > tol]


def _directional_error(tests: list[_Test]) -> float:
    done = [t for t in tests if t.status in ("pass", "wrong", "kink")]
    if not done:
        return math.nan
    g = np.array([t.g for t in done])
    d = g + np.array([t.estimate for t in done])
    return relative_error(d, g)


def _shown(names: list[str], limit: int = 5) -> str:
    return ", ".join(names[:limit]) + (f", ... ({len(names)} in all)" if len(names) > limit
                                       else "")


def _block_verdict(rel: float, tiers: Any, bad: bool, nonfinite_grad: bool,
                   unsure: bool, unresolved: bool = False, declared: bool = False) -> str:
    if nonfinite_grad or (declared and bad):   # outside a declared accuracy: wrong
        return "wrong"
    tier = tier_of(rel, tiers) if math.isfinite(rel) else "suspicious"
    if bad and tier in ("excellent", "ok"):
        return "suspicious"
    if not bad and tier in ("suspicious", "wrong"):
        tier = "ok"
    if unsure and tier in ("excellent", "ok"):
        return "suspicious"
    if unresolved and not bad and tier in ("excellent", "ok"):
        return "unresolved"
    return tier


def _detection_limit(work: _Directional) -> float:
    """The smallest single-component error the directional tests would have seen:
    e_i shows as e_i w_i with |w_i| >= 0.5, against the test's tolerance (_judge
    note 4); and the limit of the components checked one by one."""
    tols = [2 * t.tol for b in work.blocks for t in b.tests
            if t.status in ("pass", "wrong", "kink", "unresolved") and math.isfinite(t.tol)]
    limits = [*tols, work.check.detection_limit(work.status)]
    limits = [v for v in limits if math.isfinite(v)]
    return max(limits) if limits else math.nan


def run_directional(request: CheckRequest, probes: Probes, analytic: np.ndarray,
                    seed: int) -> GradCheckResult:
    """mode="directional" after the probes: warn when long, show progress, check.

    ``max_evals`` counts every evaluation of the check, the probes and the closing
    J(theta) included: the budget keeps one back for that closing probe.
    """
    max_evals = request.options.max_evals
    assert max_evals is not None
    check = PartialCheck.start(request, probes, analytic)
    check.max_evals, check.reserved = max_evals, 1
    layout = request.layout
    # max_evals bounds the run; what it plans is the directional test of every
    # parameter (localisation only follows a failing one).
    planned = min(max_evals, minimum_evals(sum(1 for a in layout.arrays if a.size)))
    estimate = warn_if_long(
        probes.seconds_per_eval, planned - check.evaluations,
        what=f"mode='directional' with max_evals={max_evals}",
        warn_seconds=request.warn_seconds, suggestion="Pass a smaller max_evals to bound it.")
    with progress_reporter(request.progress, total=max_evals, estimate=estimate,
                           unit="evaluations") as report:
        check.progress, check.progress_total = report, max_evals
        try:
            result = _run(check, seed)
        except ParamsModified as exc:
            return invalid_result(
                request, analytic, f"the loss modified the parameter {exc} while it was "
                "perturbed (it was restored): a loss must only read its parameters. No "
                "verdict on the gradient", check.evaluations, probes.seconds(),
                probes.eps_text)
        if report is not None:
            report(check.evaluations + 1, check.evaluations + 1)
    return result


def _run(check: PartialCheck, seed: int) -> GradCheckResult:
    """The directional tests and localisation (module notes); the result."""
    work = _Directional(check, seed)
    work.run()
    layout, tiers, status = check.layout, check.tiers, work.status
    result = build_result(
        layout, work.numerical, check.analytic, work.noise, status, tiers,
        evaluations=check.evaluations, seconds=check.probes.seconds(),
        eps=check.probes.eps_text, method="central", mode="directional",
        accuracy=check.accuracy)
    per_block, reports, lines, all_tests = _per_block(work, result)
    rel = _directional_error(all_tests)
    flags = [per_block[b.name]["status"] for b in work.blocks]
    bad = any(f.startswith("wrong") for f in flags)
    unsure = any(f in ("undecided", "not tested") for f in flags)
    verdict = "wrong" if any(b.throughout for b in work.blocks) else _block_verdict(
        rel, tiers, bad, bool(np.any(status == _S.NONFINITE_GRAD)), unsure,
        any(f == "unresolved" for f in flags), check.accuracy is not None)
    result.notes = _notes(work, seed, per_block, lines, bad, unsure)
    uncovered = [{"parameter": b.name, "first": layout.name_of(b.offset + lo),
                  "last": layout.name_of(b.offset + hi - 1), "components": hi - lo}
                 for b in work.blocks for lo, hi in b.uncovered]
    result.extra = {
        "loss_value": check.center, "seed": seed, "max_evals": check.max_evals,
        "directional": per_block,
        "localisation": {
            "measurements": work.measurements,
            "found": layout.names_of(np.flatnonzero(status == _S.WRONG)[:100]),
            "throughout": [b.name for b in work.blocks if b.throughout],
            "uncovered": uncovered},
        "evaluations_by_phase": dict(check.phases),
        **check.calibration().extra()}
    result.detection_limit = _detection_limit(work)
    result.parameters = reports
    result.verdict, result.passed, result.relative_error = (
        verdict, verdict in ("excellent", "ok"), rel)
    return result


def _per_block(work: _Directional, result: GradCheckResult
               ) -> tuple[dict, list, list[str], list[_Test]]:
    """Each block's summary (for extra), report row, notes; and all the tests."""
    layout, tiers, status = work.check.layout, work.check.tiers, work.status
    per_block, reports, lines, all_tests = {}, [], [], []
    for b, report in zip(work.blocks, result.parameters, strict=True):
        st = status[b.offset:b.offset + b.size]
        wrong_here = np.flatnonzero((st == _S.WRONG) | (st == _S.NONFINITE_GRAD))
        rel = _directional_error(b.tests)
        all_tests += b.tests
        statuses = [t.status for t in b.tests]
        unsure = b.size > 0 and (len(b.tests) < DIRECTIONS or "undecided" in statuses
                  or "nonfinite" in statuses)
        unresolved = "unresolved" in statuses or bool(np.any(st == _S.UNRESOLVED))
        bad = b.failed or wrong_here.size > 0 or bool(b.residual)
        verdict = "wrong" if b.throughout else _block_verdict(
            rel, tiers, bad, bool(np.any(st == _S.NONFINITE_GRAD)), unsure, unresolved,
            work.check.accuracy is not None)
        label = ("wrong throughout" if b.throughout else "wrong" if bad
                 else "empty" if not b.size else "not tested" if not b.tests
                 else "undecided" if unsure
                 else "unresolved" if unresolved
                 else "pass")
        per_block[b.name] = {
            "status": label, "relative_error": rel, "directions": len(b.tests),
            "max_z": max((t.z for t in b.tests), default=math.nan),
            "tests": [t.as_dict() for t in b.tests],
            "wrong": layout.names_of(b.offset + wrong_here[:20]),
        }
        reports.append(replace(report, relative_error=rel, verdict=verdict) if b.size
                       else report)
        lines += _block_notes(work, b, wrong_here, st)
    return per_block, reports, lines, all_tests


def _notes(work: _Directional, seed: int, per_block: dict, lines: list[str], bad: bool,
           unsure: bool) -> list[str]:
    """The report's notes: what was checked, per block, and what was not."""
    check, layout, status = work.check, work.check.layout, work.status
    flags = [per_block[b.name]["status"] for b in work.blocks]
    checked = int(np.count_nonzero(status != _S.NOT_CHECKED))
    tested = sum(1 for b in work.blocks if b.tests)
    head = (f"directional mode: each of the {tested} parameter(s) was checked along "
            f"{DIRECTIONS} random directions (seed {seed}); {checked:,} of {layout.size:,} "
            "components were then checked one by one, the rest show as 'not checked'. "
            "The relative error is that of the directional derivatives")
    if not bad and not unsure:
        head += ("; a wrong component whose error is below the noise of a directional "
                 "derivative of its whole parameter could go unseen (mode='full' checks "
                 "each component)")
    out_notes = [*check.probes.notes, head, *lines]
    if any(b.uncovered or any(t.status == "undecided" for t in b.tests)
           or (b.size and len(b.tests) < DIRECTIONS) for b in work.blocks):
        out_notes.append(f"max_evals={check.max_evals} was not enough to finish: see above "
                         "for what was not covered")
    out_notes += check.calibration().notes()
    out_notes += status_notes(layout, status, 0, False)
    out_notes += check.limit_notes(status)
    if any(f == "unresolved" for f in flags):
        names = [b.name for b in work.blocks if per_block[b.name]["status"] == "unresolved"]
        out_notes.append(
            f"{_shown(names)}: a directional test could not be resolved to the 'ok' tier "
            "even at larger steps (the loss is too noisy here), so it is not passed")
    if check.phases.get("unrefined"):
        out_notes.append(f"{check.phases['unrefined']} suspect component(s) could not be "
                         "re-evaluated at smaller steps within max_evals and count as wrong")
    return out_notes


def _block_notes(work: _Directional, b: _Block, wrong_here: np.ndarray,
                 st: np.ndarray) -> list[str]:
    layout = work.check.layout
    lines = []
    worst = max(b.tests, key=lambda t: t.z if math.isfinite(t.z) else 0.0, default=None)
    if b.throughout:
        wrong, sampled = b.throughout
        failing, parts = b.parts
        checked = int(np.count_nonzero(st != _S.NOT_CHECKED))
        text = (f"{b.name} is wrong throughout: {failing} of its {parts} parts fail the "
                f"directional test and {wrong} of {sampled} sampled components are wrong "
                f"({_shown(layout.names_of(b.offset + wrong_here))})")
        if checked < b.size:
            text += (f"; its other {b.size - checked:,} components were not checked one "
                     "by one")
        lines.append(text)
        return lines
    if b.failed and worst is not None:
        found = _shown(layout.names_of(b.offset + wrong_here)) if wrong_here.size else None
        text = (f"{b.name} fails the directional test (mismatch {worst.estimate:.3g}, "
                f"{worst.z:.3g} times its tolerance)")
        if found:
            text += f"; localised to {wrong_here.size} wrong component(s): {found}"
        elif not b.uncovered:
            text += "; no component checked one by one was wrong"
            here = slice(b.offset, b.offset + b.size)
            with np.errstate(all="ignore"):
                ratio = (np.abs(work.numerical[here] - work.check.analytic[here])
                         / work.noise[here])
            ratio = np.where(np.isfinite(ratio), ratio, -1.0)
            if ratio.size and ratio.max() > 0:
                i = int(np.argmax(ratio))
                diff = abs(work.numerical[b.offset + i] - work.check.analytic[b.offset + i])
                text += (f": the largest difference is at {layout.name_of(b.offset + i)} "
                         f"({diff:.2g}, noise {work.noise[b.offset + i]:.2g}), too small "
                         "for a one-by-one check to call it wrong")
            else:
                text += " (the mismatch may come from many small errors)"
        lines.append(text)
    elif wrong_here.size:
        lines.append(f"{b.name}: {wrong_here.size} component(s) wrong "
                     f"({_shown(layout.names_of(b.offset + wrong_here))})")
    if any(t.status == "kink" for t in b.tests):
        lines.append(f"{b.name}: a random direction crosses a kink (the one-sided slopes "
                     "differ and do not come together at smaller steps); the analytic "
                     "directional derivative lies between them, so it counts as a pass")
    if any(t.status == "nonfinite" for t in b.tests):
        lines.append(f"{b.name}: the loss is not finite at θ ± h·v along a random "
                     "direction: this parameter could not be checked")
    if any(t.status == "undecided" for t in b.tests) or (
            b.size > 0 and len(b.tests) < DIRECTIONS):
        lines.append(f"{b.name}: max_evals ran out before its directional test was "
                     "decided")
    if b.uncovered:
        size = sum(hi - lo for lo, hi in b.uncovered)
        ranges = [f"{layout.name_of(b.offset + lo)} … {layout.name_of(b.offset + hi - 1)}"
                  for lo, hi in b.uncovered]
        lines.append(f"{b.name}: max_evals ran out with {len(b.uncovered)} failing range(s) "
                     f"not localised ({size:,} components in C order: {_shown(ranges, 3)}); "
                     "raise max_evals to finish")
    for j, r, tol in b.residual:
        lines.append(f"{b.name}: the components found do not explain the mismatch along "
                     f"direction {j + 1} (residual {r:.3g}, tolerance {tol:.3g}): more "
                     "wrong components may remain")
    return lines
