"""The one atomic write and the one move-aside: a failed write leaves the old file and no temporary; writers that
need a path (PIL, matplotlib, torch.save) get one with the target's ending; a bad file is kept, never overwritten."""
import os
import stat

import pytest
import torch

from ddim_bench.io import atomic_path, atomic_write, move_aside


def test_a_write_that_fails_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "out" / "r.json"
    atomic_write(str(path), "old")
    assert path.read_text() == "old" and stat.S_IMODE(path.stat().st_mode) == 0o644
    with pytest.raises(RuntimeError), atomic_path(str(path)) as tmp:
        open(tmp, "w").write("half")
        raise RuntimeError("interrupted")
    assert path.read_text() == "old" and sorted(os.listdir(path.parent)) == ["r.json"]


def test_writers_that_need_a_path_get_one_with_the_targets_ending(tmp_path):
    path = tmp_path / "x.pt"
    with atomic_path(str(path)) as tmp:
        assert tmp.endswith("x.pt") and os.path.dirname(tmp) == str(tmp_path) and not path.exists()
        torch.save({"a": torch.arange(3)}, tmp)
    assert torch.equal(torch.load(path, weights_only=True)["a"], torch.arange(3))
    assert os.listdir(tmp_path) == ["x.pt"]


def test_move_aside_keeps_every_bad_file_and_says_none_when_it_is_gone(tmp_path):
    path = tmp_path / "cache.pt"
    moved = []
    for content in (b"one", b"two"):
        path.write_bytes(content)
        moved.append(move_aside(str(path), stamp="20260101-000000-1"))
    assert [os.path.basename(m) for m in moved] == ["20260101-000000-1-cache.pt", "20260101-000000-1-1-cache.pt"]
    assert [open(m, "rb").read() for m in moved] == [b"one", b"two"]
    assert os.path.dirname(moved[0]) == str(tmp_path / "corrupt") and not path.exists()
    assert move_aside(str(path)) is None
