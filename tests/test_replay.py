"""Replay files: check_grad(save=...) writes one, fastcheck.replay runs it again
exactly; bad save= arguments and bad files get clear errors."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest
from conftest import cube, cube_grad

import fastcheck
from fastcheck import ReplayError, check_grad, examples, replay


def buggy_cube_grad(p):
    g = 3 * p**2
    g[p < 0] += 1.0   # wrong where theta is negative
    return g


THETA = np.array([1.0, 2.0, -0.5, 0.25])


def _rewrite(path, change):
    """Rewrite a replay file's header through `change(header)`."""
    with np.load(path, allow_pickle=False) as npz:
        data = {k: npz[k] for k in npz.files}
    header = json.loads(str(data["header"][()]))
    change(header)
    data["header"] = np.array(json.dumps(header))
    with open(path, "wb") as f:
        np.savez(f, **data)


def test_a_failing_check_writes_a_file_that_reproduces_it(tmp_path):
    path = tmp_path / "replay.npz"
    result = check_grad(cube, buggy_cube_grad, THETA.copy(), save=path)
    assert not result.passed and path.is_file()
    assert result.extra["replay_file"] == str(path)
    again = replay(path, cube, buggy_cube_grad)
    assert again.extra["replay"]["reproduced"] is True
    assert "the finding is still there" in again.notes[0]
    assert again.verdict == result.verdict
    np.testing.assert_array_equal(again.numerical_flat, result.numerical_flat)
    np.testing.assert_array_equal(again.status, result.status)
    fixed = replay(path, cube, cube_grad)
    assert fixed.passed and fixed.extra["replay"]["reproduced"] is False
    assert "the finding is gone" in fixed.notes[0]


def test_a_passing_check_writes_nothing_unless_always(tmp_path):
    path = tmp_path / "replay.npz"
    assert check_grad(cube, cube_grad, THETA.copy(), save=path).passed
    assert not path.exists()
    check_grad(cube, cube_grad, THETA.copy(), save=path, save_when="always")
    again = replay(path, cube, cube_grad)
    assert again.passed and again.extra["replay"]["reproduced"] is True


def test_the_file_holds_the_failing_point_of_several(tmp_path):
    path = tmp_path / "points.npz"
    points = [np.abs(THETA), THETA.copy(), np.abs(THETA) + 1]
    theta = np.abs(THETA)
    result = check_grad(cube, buggy_cube_grad, theta, points=points, save=path)
    assert result.point == 1
    recorded = fastcheck._replayfile.read_replay(path)
    np.testing.assert_array_equal(recorded.arrays[0], THETA)
    assert recorded.header["point"] == 1
    again = replay(path, cube, buggy_cube_grad)
    assert again.extra["replay"]["reproduced"] is True
    assert "at point 1" in again.notes[0]
    np.testing.assert_array_equal(theta, np.abs(THETA))   # the user's values are back


@pytest.mark.parametrize("mode", ["sample", "directional"])
def test_random_modes_replay_the_same_components(tmp_path, mode):
    net = examples.demo_network()
    path = tmp_path / f"{mode}.npz"
    kwargs = {"k": 0.5} if mode == "sample" else {}
    result = check_grad(net.loss, net.buggy_grad, net.params, mode=mode, save=path, **kwargs)
    assert not result.passed
    again = replay(path, net.loss, net.buggy_grad, params=net.params)
    np.testing.assert_array_equal(again.status, result.status)
    np.testing.assert_array_equal(again.numerical_flat, result.numerical_flat)
    assert again.extra["replay"]["reproduced"] is True
    assert again.extra["replay"]["same_components"] is True
    if mode == "directional":   # fixed: the directions pass, nothing is localised
        fixed = replay(path, net.loss, net.grad, params=net.params)
        assert fixed.passed and fixed.extra["replay"]["same_components"] is False
        assert "other components were checked one by one" in fixed.notes[0]


def test_replay_into_the_users_own_arrays_restores_them(tmp_path):
    net = examples.demo_network()
    path = tmp_path / "net.npz"
    check_grad(net.loss, net.buggy_grad, net.params, save=path)
    before = {k: v.copy() for k, v in net.params.items()}
    for v in net.params.values():
        v += 0.01   # the user's arrays have moved on since
    moved = {k: v.copy() for k, v in net.params.items()}
    again = replay(path, net.loss, net.buggy_grad, params=net.params)
    assert again.extra["replay"]["reproduced"] is True
    # the replay ran at the recorded point, and put the user's values back
    np.testing.assert_array_equal(again.layout.values(), np.concatenate(
        [v.ravel() for v in moved.values()]))
    assert not np.array_equal(before["W1"], net.params["W1"])


def test_other_shapes_get_an_error_naming_the_parameter(tmp_path):
    net = examples.demo_network()
    path = tmp_path / "net.npz"
    check_grad(net.loss, net.buggy_grad, net.params, save=path)
    other = dict(net.params, W2=np.zeros((4, 5)))
    with pytest.raises(ReplayError, match=r"'W2' was recorded with shape \(3, 5\), the given "
                                          r"one has shape \(4, 5\)"):
        replay(path, net.loss, net.buggy_grad, params=other)
    with pytest.raises(ReplayError, match="recorded for the parameters"):
        replay(path, net.loss, net.buggy_grad, params={"W1": net.params["W1"]})


def test_another_version_gets_an_error_naming_both(tmp_path):
    path = tmp_path / "old.npz"
    check_grad(cube, buggy_cube_grad, THETA.copy(), save=path)
    _rewrite(path, lambda h: h.update(fastcheck="0.0.1"))
    with pytest.raises(ReplayError, match=rf"written by fastcheck 0\.0\.1, this is fastcheck "
                                          rf"{fastcheck.__version__}"):
        replay(path, cube, buggy_cube_grad)


@pytest.mark.parametrize("damage", ["garbage", "truncated", "no-header", "other-format",
                                    "array-shape"])
def test_a_corrupt_file_gets_a_clear_error(tmp_path, damage):
    path = tmp_path / "bad.npz"
    check_grad(cube, buggy_cube_grad, THETA.copy(), save=path)
    if damage == "garbage":
        path.write_bytes(b"not a replay file at all")
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[:200])
    elif damage == "no-header":
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("p0.npy", b"")
    elif damage == "other-format":
        _rewrite(path, lambda h: h.update(format="something-else"))
    else:
        with np.load(path, allow_pickle=False) as npz:
            data = {k: npz[k] for k in npz.files}
        data["p0"] = np.zeros(7)
        with open(path, "wb") as f:
            np.savez(f, **data)
    with pytest.raises(ReplayError, match="not a fastcheck replay file, or it is corrupt"):
        replay(path, cube, buggy_cube_grad)


def test_replay_refuses_options_the_file_fixes(tmp_path):
    path = tmp_path / "r.npz"
    check_grad(cube, buggy_cube_grad, THETA.copy(), save=path)
    with pytest.raises(TypeError, match=r"\['eps'\] that the replay file fixes"):
        replay(path, cube, buggy_cube_grad, eps=1e-3)
    with pytest.raises(FileNotFoundError, match="no replay file"):
        replay(tmp_path / "missing.npz", cube, buggy_cube_grad)


@pytest.mark.parametrize(("kwargs", "error", "match"), [
    ({"save": 12}, TypeError, "save must be the path"),
    ({"save": True}, TypeError, "save must be the path"),
    ({"save": "/no/such/folder/r.npz"}, ValueError, "does not exist"),
    ({"save": "r.npz", "save_when": "sometimes"}, ValueError, "save_when must be one of"),
    ({"save_when": "always"}, ValueError, "needs save="),
], ids=["int", "bool", "folder", "when", "when-alone"])
def test_bad_save_is_refused_before_any_evaluation(kwargs, error, match):
    calls = []

    def loss(p):
        calls.append(1)
        return cube(p)

    with pytest.raises(error, match=match):
        check_grad(loss, cube_grad, THETA.copy(), **kwargs)
    assert calls == []


def test_save_to_a_directory_is_refused(tmp_path):
    with pytest.raises(ValueError, match="is a directory"):
        check_grad(cube, cube_grad, THETA.copy(), save=tmp_path)
