"""The replay file: what is needed to run a gradient check again, exactly.

Design notes:

1. Contents.  The parameter values at the point where the finding was made (each
   array in its own dtype and shape), and a JSON header: the format and
   fastcheck's version, the parameters' names / shapes / dtypes, the options that
   decide what is evaluated (method, eps, refine), the steps that were run (mode,
   k, max_evals, seed: so the same components and directions are tried), and the
   finding (verdict, relative error, the wrong and the worst components, the step
   rule).  The flat indices of the components checked one by one are an array of
   their own, so a replay can say that it tried the same ones.
2. Format: a numpy ``.npz`` (a zip of ``.npy`` arrays) read with
   ``allow_pickle=False``, so a replay file never runs code when it is loaded.
   The header is a 0-d unicode array.  Written to a temporary name and renamed,
   so a crash never leaves half a file.
3. Strict on reading: another format or fastcheck version, other parameter names
   or shapes, or a file that is not a replay file get a :class:`ReplayError`
   naming the mismatch.  A check from another version may choose other steps or
   components, and would not reproduce the finding exactly.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fastcheck._params import ParamLayout
from fastcheck._version import __version__

__all__ = ["FORMAT", "Recording", "ReplayError", "check_save", "read_replay", "write_replay"]

FORMAT = "fastcheck-replay"
FORMAT_VERSION = 1
SAVE_WHEN = ("failure", "always")


class ReplayError(ValueError):
    """A replay file that cannot be replayed here (it says why)."""


def check_save(save: Any, save_when: Any) -> Path | None:
    """Validate save= and save_when= before any evaluation."""
    if save_when not in SAVE_WHEN:
        raise ValueError(f"save_when must be one of {', '.join(map(repr, SAVE_WHEN))}, got "
                         f"{save_when!r}")
    if save is None:
        if save_when != "failure":
            raise ValueError(f"save_when={save_when!r} needs save= (the replay file's path)")
        return None
    if isinstance(save, bool) or not isinstance(save, (str, os.PathLike)):
        raise TypeError(f"save must be the path of the replay file to write (str or "
                        f"os.PathLike), got {type(save).__name__}")
    path = Path(save)
    if not str(save) or path.is_dir():
        raise ValueError(f"save={str(save)!r} is a directory, not a file path")
    if not path.parent.is_dir():
        raise ValueError(f"save={str(save)!r}: the folder {str(path.parent)!r} does not "
                         "exist")
    return path


def _plain(value: Any) -> Any:
    if isinstance(value, (np.floating, float)):
        value = float(value)
        return value if math.isfinite(value) else str(value)
    if isinstance(value, np.integer):
        return int(value)
    return value


def write_replay(path: Path, layout: ParamLayout, arrays: list[np.ndarray], *,
                 options: dict, steps: list[dict], finding: dict, checked: np.ndarray,
                 point: int | None, points_seed: int | None) -> Path:
    """Write a replay file (note 1) atomically (note 2); its path."""
    header = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "fastcheck": __version__,
        "kind": layout.kind, "names": list(layout.names),
        "keys": [k if isinstance(k, (str, int)) else str(k) for k in layout.keys]
        if layout.kind != "array" else [None],
        "shapes": [list(a.shape) for a in layout.arrays],
        "dtypes": [a.dtype.name for a in layout.arrays],
        "options": {k: _plain(v) for k, v in options.items()},
        "steps": [{k: _plain(v) for k, v in s.items()} for s in steps],
        "point": point, "points_seed": points_seed,
        "finding": {k: _plain(v) if not isinstance(v, list) else v
                    for k, v in finding.items()},
    }
    data = {f"p{i}": np.ascontiguousarray(a) for i, a in enumerate(arrays)}
    data["checked"] = np.asarray(checked, dtype=np.int64)
    data["header"] = np.array(json.dumps(header))
    fd, tmp = tempfile.mkstemp(prefix=".replay-", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


@dataclass(frozen=True)
class Recording:
    """A replay file, read and checked (note 3)."""

    path: str
    header: dict
    arrays: tuple[np.ndarray, ...]
    checked: np.ndarray   # flat indices of the components checked one by one

    @property
    def steps(self) -> list[dict]:
        return [dict(s) for s in self.header["steps"]]

    @property
    def options(self) -> dict:
        opts = dict(self.header["options"])
        if isinstance(opts.get("eps"), str):
            opts["eps"] = float(opts["eps"])
        return opts

    @property
    def finding(self) -> dict:
        return dict(self.header["finding"])

    def params(self) -> Any:
        """Fresh parameter arrays holding the recorded values, in the recorded
        container (dict keys as recorded, as strings when they were not)."""
        arrays = [a.copy() for a in self.arrays]
        kind = self.header["kind"]
        if kind == "array":
            return arrays[0]
        if kind == "dict":
            return dict(zip(self.header["keys"], arrays))
        return arrays if kind == "list" else tuple(arrays)

    def check_layout(self, layout: ParamLayout) -> None:
        """Raise ReplayError unless `layout` has the recorded names, shapes, dtypes."""
        names, shapes = self.header["names"], [tuple(s) for s in self.header["shapes"]]
        if list(layout.names) != names:
            raise ReplayError(f"{self.path}: recorded for the parameters {names}, but the "
                              f"given params are {list(layout.names)}")
        for name, shape, dtype, a in zip(names, shapes, self.header["dtypes"], layout.arrays):
            if tuple(a.shape) != shape:
                raise ReplayError(f"{self.path}: parameter {name!r} was recorded with shape "
                                  f"{shape}, the given one has shape {tuple(a.shape)}")
            if a.dtype.name != dtype:
                raise ReplayError(f"{self.path}: parameter {name!r} was recorded as {dtype}, "
                                  f"the given one is {a.dtype.name}")


def _corrupt(path: str, why: str) -> ReplayError:
    return ReplayError(f"{path} is not a fastcheck replay file, or it is corrupt: {why}")


def read_replay(path: Any) -> Recording:
    """Read and check a replay file (notes 2 and 3)."""
    if isinstance(path, bool) or not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be the replay file's path (str or os.PathLike), got "
                        f"{type(path).__name__}")
    name = os.fspath(path)
    if not os.path.isfile(name):
        raise FileNotFoundError(f"no replay file at {name!r}")
    try:
        # Opened here, not by np.load, so that it is closed whatever np.load raises.
        with open(name, "rb") as f, np.load(f, allow_pickle=False) as npz:
            missing = {"header", "checked"} - set(npz.files)
            if missing:
                raise _corrupt(name, f"it has no {' and no '.join(sorted(missing))}")
            header = json.loads(str(npz["header"][()]))
            count = len(header.get("names", [])) if isinstance(header, dict) else 0
            arrays = tuple(npz[f"p{i}"] for i in range(count))
            checked = npz["checked"]
    except ReplayError:
        raise
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as exc:
        raise _corrupt(name, f"{type(exc).__name__}: {exc}") from exc
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise _corrupt(name, f"its header names the format {header.get('format')!r}"
                       if isinstance(header, dict) else "its header is not a JSON object")
    if header.get("format_version") != FORMAT_VERSION:
        raise ReplayError(f"{name} has replay format version {header.get('format_version')}; "
                          f"this fastcheck reads version {FORMAT_VERSION}")
    if header.get("fastcheck") != __version__:
        raise ReplayError(f"{name} was written by fastcheck {header.get('fastcheck')}, this is "
                          f"fastcheck {__version__}: another version may choose other steps "
                          "or components, so the replay would not be exact. Replay it with "
                          f"fastcheck {header.get('fastcheck')}")
    needed = ("kind", "names", "keys", "shapes", "dtypes", "options", "steps", "finding")
    missing = [k for k in needed if k not in header]
    if missing:
        raise _corrupt(name, f"its header lacks {missing}")
    for i, (shape, dtype, a) in enumerate(zip(header["shapes"], header["dtypes"], arrays)):
        if list(a.shape) != list(shape) or a.dtype.name != dtype:
            raise _corrupt(name, f"array {header['names'][i]!r} is {a.dtype.name} "
                           f"{tuple(a.shape)}, the header says {dtype} {tuple(shape)}")
    if checked.ndim != 1 or checked.dtype.kind != "i":
        raise _corrupt(name, f"its list of checked components is {checked.dtype} of shape "
                       f"{checked.shape}")
    return Recording(name, header, arrays, checked)
