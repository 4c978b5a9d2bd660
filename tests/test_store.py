"""The results store on real files: checksums catch damaged cells, claims keep two processes off one cell."""
import errno
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

import pytest
import torch

from ddim_bench.errors import UserError
from ddim_bench.results import cell_locks
from ddim_bench.results.store import ResultStore

ROOT = Path(__file__).resolve().parents[1]


def put_cell(store, key, fid=1.5, n=4):
    images = torch.arange(n * 3 * 4 * 4, dtype=torch.int64).remainder(256).to(torch.uint8).view(n, 3, 4, 4)
    store.put(key, {"key": key, "fid": fid, "steps": 10}, files={".samples.pt": images})
    return images


def corrupt_files(store):
    folder = Path(store.cells) / "corrupt"
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def test_put_then_read_back_verified(tmp_path):
    store = ResultStore(str(tmp_path))
    images = put_cell(store, "a" * 20)
    store.put("b" * 20, {"key": "b" * 20, "fid": float("nan")}, files={".features.pt": b"raw bytes"})
    assert store.has("a" * 20) and store.verify("b" * 20) and not store.has("c" * 20)
    assert torch.equal(store.samples("a" * 20), images)
    assert store.samples("b" * 20) is None and store.samples("c" * 20) is None
    assert [r["key"] for r in store.records()] == ["a" * 20, "b" * 20]
    assert store.pending(["c" * 20, "a" * 20, "d" * 20]) == ["c" * 20, "d" * 20]
    doc = json.loads((tmp_path / "cells" / ("a" * 20 + ".json")).read_text())
    assert set(doc["files"]) == {".samples.pt"} and len(doc["sha256"]) == 64
    assert corrupt_files(store) == []


def test_samples_keyword_and_unwritable_folder(tmp_path):
    store = ResultStore(str(tmp_path))
    store.put("k" * 20, {"key": "k" * 20}, samples=torch.zeros(2, 3, 4, 4, dtype=torch.uint8))
    assert store.samples("k" * 20).shape == (2, 3, 4, 4)
    store.check_writable()
    (tmp_path / "file").write_text("")
    with pytest.raises(UserError, match="is not writable"):
        ResultStore(str(tmp_path / "file" / "results")).check_writable()


@pytest.mark.parametrize("damage,reason", [
    ("truncate", "unreadable JSON"),
    ("edit", "checksum mismatch"),
    ("no checksum", "no checksum"),
])
def test_damaged_record_is_named_moved_aside_and_not_done(tmp_path, capfd, damage, reason):
    store = ResultStore(str(tmp_path))
    put_cell(store, "a" * 20)
    put_cell(store, "b" * 20, fid=2.0)
    path = tmp_path / "cells" / ("a" * 20 + ".json")
    text = path.read_text()
    if damage == "truncate":
        path.write_text(text[: len(text) // 2])
    elif damage == "no checksum":
        path.write_text(json.dumps(json.loads(text)["record"]))  # a bare record, as written before checksums
    else:
        assert '"fid": 1.5' in text
        path.write_text(text.replace('"fid": 1.5', '"fid": 0.5'))
    capfd.readouterr()
    assert [r["key"] for r in store.records()] == ["b" * 20]  # no crash, the good cell kept
    err = [ln for ln in capfd.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and str(path) in err[0] and reason in err[0] and "recomputed" in err[0], err
    assert "corrupt/" in err[0]
    assert not store.has("a" * 20) and store.has("b" * 20)
    moved = corrupt_files(store)
    assert len(moved) == 2 and any(m.endswith("a" * 20 + ".json") for m in moved)
    assert any(m.endswith("a" * 20 + ".samples.pt") for m in moved)  # the whole cell goes aside
    assert not list((tmp_path / "cells").glob("a" * 20 + ".*"))
    put_cell(store, "a" * 20)  # recomputed
    assert store.has("a" * 20)


@pytest.mark.parametrize("damage", ["truncate", "flip", "delete"])
def test_damaged_samples_file_is_named_and_the_cell_not_done(tmp_path, capfd, damage):
    store = ResultStore(str(tmp_path))
    put_cell(store, "a" * 20)
    side = tmp_path / "cells" / ("a" * 20 + ".samples.pt")
    data = side.read_bytes()
    if damage == "truncate":
        side.write_bytes(data[:-100])
    elif damage == "flip":
        side.write_bytes(data[:-200] + bytes([data[-200] ^ 1]) + data[-199:])
    else:
        side.unlink()
    capfd.readouterr()
    assert not store.has("a" * 20)
    err = [ln for ln in capfd.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and str(side) in err[0] and "is corrupt" in err[0], err
    assert store.records() == [] and store.samples("a" * 20) is None
    assert any(m.endswith("a" * 20 + ".json") for m in corrupt_files(store))


def test_samples_changed_after_verification_is_caught_on_load(tmp_path, capfd):
    store = ResultStore(str(tmp_path))
    put_cell(store, "a" * 20)
    assert store.has("a" * 20)
    side = tmp_path / "cells" / ("a" * 20 + ".samples.pt")
    side.write_bytes(side.read_bytes()[:50])
    assert store.samples("a" * 20) is None
    assert "is corrupt" in capfd.readouterr().err and not store.has("a" * 20)


# ---------------------------------------------------------------------------------------------- claims
WORKER = textwrap.dedent("""
    import os, sys, time
    from ddim_bench.results.store import ResultStore
    root, log, keys = sys.argv[1], sys.argv[2], sys.argv[3].split(",")
    store = ResultStore(root)
    while not os.path.exists(os.path.join(root, "go")):  # start both workers together
        time.sleep(0.005)
    for key in keys:
        handle = store.claim(key)
        if handle is None:
            continue
        with handle:
            with open(log, "a") as f:
                f.write(f"{os.getpid()} {key}\\n")
            time.sleep(0.05)  # the computation
            store.put(key, {"key": key, "by": os.getpid()}, files={".samples.pt": b"x" * 10})
""")


def python(*args, **kw):
    return subprocess.Popen([sys.executable, *args], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def test_two_processes_compute_each_overlapping_cell_once(tmp_path):
    keys = [f"{i:020d}" for i in range(16)]
    log = tmp_path / "computed.log"
    lists = [keys[:12], keys[:8] + keys[12:]]  # both start on the 8 cells they share
    procs = [python("-c", WORKER, str(tmp_path), str(log), ",".join(ks)) for ks in lists]
    time.sleep(1.0)  # both imported and waiting
    (tmp_path / "go").touch()
    for p in procs:
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
    lines = log.read_text().split()
    computed = Counter(lines[1::2])
    assert computed == Counter(keys), computed  # every key exactly once
    workers = Counter(lines[0::2])
    assert len(workers) == 2, workers  # both took part
    store = ResultStore(str(tmp_path))
    assert store.pending(keys) == [] and not list((tmp_path / "cells").glob("*.lock"))


HOLDER = textwrap.dedent("""
    import os, sys, time
    from ddim_bench.results.store import ResultStore
    handle = ResultStore(sys.argv[1]).claim(sys.argv[2])
    print("claimed" if handle else "refused", flush=True)
    if sys.argv[3] == "exit":
        os._exit(0)  # dies holding the lock
    time.sleep(60)
""")


@pytest.mark.parametrize("death", ["exit", "sigkill"])
def test_lock_of_a_dead_process_is_taken_over(tmp_path, capfd, death):
    store, key = ResultStore(str(tmp_path)), "s" * 20
    p = python("-c", HOLDER, str(tmp_path), key, death)
    assert p.stdout.readline().strip() == "claimed"
    lock = tmp_path / "cells" / (key + ".lock")
    owner = json.loads(lock.read_text())
    assert owner["pid"] == p.pid and owner["host"] == socket.gethostname() and owner["pid_start"] is not None
    if death == "sigkill":
        assert store.claim(key) is None  # live owner: refused
        p.send_signal(signal.SIGKILL)
    p.wait(timeout=30)
    capfd.readouterr()
    handle = store.claim(key)
    assert handle is not None
    err = capfd.readouterr().err
    assert f"{lock} was left by pid {p.pid}" in err and "no longer running" in err, err
    assert json.loads(lock.read_text())["pid"] == os.getpid()
    handle.release()
    assert not lock.exists() and not [n for n in os.listdir(tmp_path / "cells") if "stale" in n or "tmp" in n]


def write_lock(path, age_s=0.0, **fields):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**cell_locks.owner_info(), **fields}))
    os.utime(path, (time.time() - age_s, time.time() - age_s))  # last renewed age_s ago


def test_reused_pid_and_other_hosts(tmp_path):
    store, key = ResultStore(str(tmp_path), lease_s=3600), "r" * 20
    lock = tmp_path / "cells" / (key + ".lock")
    write_lock(lock, pid_start=1)  # our pid, but another process's start time
    with store.claim(key) as held:
        assert held is not None and not store.claim(key)  # held by a live process (us): refused
    write_lock(lock, host="elsewhere", age_s=60)
    assert store.claim(key) is None  # another host, renewed a minute ago: live
    assert store.holder(key)["host"] == "elsewhere" and 55 < store.holder(key)["age_s"] < 120
    write_lock(lock, host="elsewhere", age_s=7200, lease_s=None)  # an old-format claim: the reader's lease
    with store.claim(key) as held:
        assert held is not None
    write_lock(lock, host="elsewhere", age_s=400, lease_s=600)  # the holder's own lease decides
    assert store.claim(key) is None and store.holder(key)["stale"] is None


LEASED = textwrap.dedent("""
    import os, sys, time
    from ddim_bench.results.store import LostClaim, ResultStore
    root, key = sys.argv[1], sys.argv[2]
    store = ResultStore(root, lease_s=float(sys.argv[3]))
    handle = store.claim(key)
    print("claimed" if handle else "refused", flush=True)
    while not os.path.exists(os.path.join(root, "put")):
        time.sleep(0.05)
    try:
        store.put(key, {"key": key, "by": os.getpid()}, files={".samples.pt": b"old holder"}, claim=handle)
        print("written", flush=True)
    except LostClaim as e:
        print("lost:", e, flush=True)
    handle.release()
""")


def test_lease_is_renewed_and_a_lapsed_holder_writes_nothing(tmp_path, capfd):
    """A holder on a pretended other host keeps its claim by renewing it; stopped (a hung node), its claim lapses
    after the lease and is taken over; woken up, it writes nothing over the new holder's record."""
    key, lease = "h" * 20, 2.0
    holder = python("-c", LEASED, str(tmp_path), key, str(lease))
    assert holder.stdout.readline().strip() == "claimed"
    lock = tmp_path / "cells" / (key + ".lock")
    lock.write_text(lock.read_text().replace(f'"host": "{socket.gethostname()}"', '"host": "node-b"'))
    assert json.loads(lock.read_text())["host"] == "node-b"  # no pid check: only the lease decides
    store = ResultStore(str(tmp_path), lease_s=lease)
    time.sleep(2 * lease)
    assert store.claim(key) is None, "a renewed claim is live, however old"
    assert store.holder(key)["age_s"] < lease / 2
    holder.send_signal(signal.SIGSTOP)
    try:
        time.sleep(lease + 1.0)
        capfd.readouterr()
        mine = store.claim(key)
        assert mine is not None
        assert f"{lock} was left by pid {holder.pid} on node-b (not renewed for" in capfd.readouterr().err
        store.put(key, {"key": key, "by": os.getpid()}, files={".samples.pt": b"new holder"}, claim=mine)
    finally:
        holder.send_signal(signal.SIGCONT)
    (tmp_path / "put").touch()
    out, err = holder.communicate(timeout=60)
    assert holder.returncode == 0, err
    assert out.startswith("lost:") and "taken over" in out, out
    assert store.record(key)["by"] == os.getpid()
    assert (tmp_path / "cells" / (key + ".samples.pt")).read_bytes() == b"new holder"
    assert json.loads(lock.read_text())["token"] == mine.owner["token"], "the old holder left our claim alone"
    mine.release()
    assert not lock.exists()


def test_a_filesystem_without_hard_links_is_one_line(tmp_path, monkeypatch):
    def no_links(src, dst, *a, **k):
        raise OSError(errno.EPERM, "Operation not permitted")
    monkeypatch.setattr(os, "link", no_links)
    with pytest.raises(UserError, match=r"paths.results_dir=.* cannot hold cell claims: it has no hard links"):
        ResultStore(str(tmp_path)).check_writable()
    assert sorted(os.listdir(tmp_path / "cells")) == []


def test_claim_of_a_finished_cell_is_refused(tmp_path):
    store = ResultStore(str(tmp_path))
    put_cell(store, "d" * 20)
    assert store.claim("d" * 20) is None and not (tmp_path / "cells" / ("d" * 20 + ".lock")).exists()
