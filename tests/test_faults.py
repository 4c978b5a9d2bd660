"""Faults a cluster brings, on the real console scripts: a signal mid-record, claims held by live or dead processes
on other hosts, the sweep's accounting of every record it expects."""
import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time

import pytest

from ddim_bench.results import accounting
from ddim_bench.results import cell_locks
from ddim_bench.results.store import ResultStore
from slurm_cluster import catches

N = 24


def sweep_args(trained, results, run, *extra):
    return [f"checkpoint={trained / 'checkpoints' / 'last.ckpt'}", f"n_samples={N}", "grid.eta=[0.0]",
            "grid.hat=false", "logger.wandb.mode=disabled", "metrics.bootstrap.replicates=10",
            "sampler.batch_size=8", f"paths.results_dir={results}", f"hydra.run.dir={run}", *extra]


def last_line(stderr: str) -> str:
    return [ln for ln in stderr.splitlines() if ln.strip()][-1]


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.mark.parametrize("sig,extra", [(signal.SIGTERM, []), (signal.SIGINT, []),
                                       (signal.SIGUSR2, ["slurm.signal=USR2@90"])],
                         ids=["SIGTERM", "SIGINT", "slurm.signal"])
def test_a_signal_mid_record_releases_the_claim_and_exits_non_zero(sig, extra, trained, tmp_path, bin_dir, root_dir,
                                                                    clean_env, cli):
    results, cells = tmp_path / "r", tmp_path / "r" / "cells"
    args = sweep_args(trained, results, tmp_path / "run", "grid.steps=[3,40]", f"n_samples={8 * N}", *extra)
    proc = subprocess.Popen([str(bin_dir / "ddim-bench-sweep"), *args], cwd=root_dir, env=clean_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    # the first record (S=3) is written, then the sweep is stopped while it holds the second one's claim
    wait_for(lambda: len(list(cells.glob("*.json"))) == 1 and list(cells.glob("*.lock")), 240, "the second claim")
    time.sleep(0.5)
    proc.send_signal(sig)
    err = proc.communicate(timeout=120)[1]
    assert proc.returncode == 128 + sig, err[-2000:]
    line = last_line(err)
    assert line.startswith(f"stopped by {signal.Signals(sig).name}:") and "claim is released" in line, err[-2000:]
    assert "Traceback" not in err
    left = sorted(p.name for p in cells.iterdir())
    assert [n for n in left if n.endswith(".lock") or n.startswith(".")] == [], left
    assert len([n for n in left if n.endswith(".json")]) == 1, left  # nothing half-written
    done = cli("ddim-bench-sweep", *args)
    assert last_line(done.stderr).endswith("2 records: 1 done before, 1 computed now, 0 by other processes, "
                                           "0 held by live processes, 0 failed, 0 missing"), done.stderr[-2000:]


def test_the_warning_signal_during_start_up_stops_the_sweep_before_its_first_record(trained, tmp_path, bin_dir,
                                                                                   root_dir, clean_env):
    """SLURM may send its warning signal (``slurm.signal``, USR1 by default) up to a minute early: one that comes
    while the sweep is still starting (importing, composing) stops it as soon as it begins, with its one line and
    exit status 128 + SIGUSR1 (requeued under SLURM), instead of USR1's default action killing it silently."""
    results = tmp_path / "r"
    proc = subprocess.Popen([str(bin_dir / "ddim-bench-sweep"), *sweep_args(trained, results, tmp_path / "run")],
                            cwd=root_dir, env=clean_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.monotonic() + 3  # start-up (imports, composing every job, loading) takes longer than this
    while time.monotonic() < deadline and not catches(proc.pid, signal.SIGUSR2):  # USR2: held at start-up only
        time.sleep(0.005)
    proc.send_signal(signal.SIGUSR1)
    err = proc.communicate(timeout=120)[1]
    assert proc.returncode == 128 + signal.SIGUSR1, err[-2000:]
    assert last_line(err).startswith("stopped by SIGUSR1:") and "Traceback" not in err, err[-2000:]
    assert "records already done" not in err  # it stopped before the sweep's first line
    assert not (results / "cells").exists() or not list((results / "cells").iterdir())


HOLDER = textwrap.dedent("""
    import sys, time
    from ddim_bench.results.cell_locks import claim_lock
    claim = claim_lock(sys.argv[1], lease_s=float(sys.argv[2]))
    print("claimed" if claim else "refused", flush=True)
    time.sleep(600)
""")


def test_records_held_elsewhere_are_counted_and_abandoned_claims_taken_over(trained, tmp_path, cli, root_dir,
                                                                           clean_env):
    """A record held by a live process on another host is left to it and named in the last line; one whose
    holder stopped renewing (a dead node) is waited for until its lease runs out, then computed here."""
    results = tmp_path / "r"
    base = sweep_args(trained, results, tmp_path / "run", "grid.steps=[3,4]")
    cli("ddim-bench-sweep", *base)
    store = ResultStore(str(results))
    keys = {r["steps"]: r["key"] for r in store.records()}
    for name in os.listdir(results / "cells"):  # S=4's record is lost: it has to be computed again
        if name.startswith(keys[4]):
            os.unlink(results / "cells" / name)
    lock = results / "cells" / f"{keys[4]}.lock"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(lock), "20"], cwd=root_dir, env=clean_env(),
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "claimed"
        lock.write_text(lock.read_text().replace(f'"host": "{socket.gethostname()}"', '"host": "node-b"'))
        proc = cli("ddim-bench-sweep", *base)
        assert re.search(r"2 records: 1 done before, 0 computed now, 0 by other processes, 1 held by live processes "
                         rf"\(node-b pid {holder.pid}, renewed \d+ s ago\), 0 failed, 0 missing$",
                         last_line(proc.stderr)), proc.stderr[-2000:]
        assert "held by node-b" in proc.stderr and not store.has(keys[4])
    finally:
        holder.kill()
        holder.wait()
    # the holder is gone (its node died): its claim is no longer renewed; a new sweep waits out the lease
    t0 = time.monotonic()
    proc = cli("ddim-bench-sweep", *base)
    assert "waiting for 1 claim(s) no longer renewed (node-b" in proc.stderr, proc.stderr[-2000:]
    assert "(not renewed for" in proc.stderr and "taking it over" in proc.stderr
    assert last_line(proc.stderr).endswith("1 done before, 1 computed now, 0 by other processes, "
                                           "0 held by live processes, 0 failed, 0 missing")
    assert store.has(keys[4]) and not lock.exists() and time.monotonic() - t0 < 120


def test_each_record_is_done_held_or_missing(tmp_path, capfd):
    """The states the last line and the report's status view are built from, on real claims."""
    store = ResultStore(str(tmp_path), lease_s=60)
    store.put("a" * 20, {"key": "a" * 20})
    live = store.claim("b" * 20)
    lapsed = tmp_path / "cells" / ("c" * 20 + ".lock")
    lapsed.write_text(json.dumps({**cell_locks.owner_info(60), "host": "node-c"}))
    os.utime(lapsed, (time.time() - 61, time.time() - 61))
    tally = accounting.Tally({k * 20: k for k in "abcd"}, {"a" * 20})
    tally.settle(store)
    states = {k[0]: s for k, (s, _) in tally.final.items()}
    assert states == {"a": "done", "b": "in progress", "c": "missing", "d": "missing"}
    assert tally.missing == ["c" * 20, "d" * 20]
    assert tally.line("x") == (f"sweep x: 4 records: 1 done before, 0 computed now, 0 by other processes, "
                               f"1 held by live processes ({socket.gethostname()} pid {os.getpid()}, renewed 0 s "
                               f"ago), 0 failed, 2 missing")
    live.release()


def test_report_lists_missing_records_and_the_status_view(trained, tmp_path, cli):
    results = tmp_path / "r"
    cli("ddim-bench-sweep", *sweep_args(trained, results, tmp_path / "run", "grid.steps=[3,4]", "sweep_name=mine"))
    store = ResultStore(str(results))
    keys = {r["steps"]: r["key"] for r in store.records()}
    (results / "cells" / f"{keys[4]}.json").unlink()  # S=4's record is gone
    report = ["logger.wandb.mode=disabled", f"results_dir={results}", f"hydra.run.dir={tmp_path / 'rep'}"]
    out = cli("ddim-bench-report", *report, "sweep_name=mine").stdout
    assert "sweep mine: 2 expected: 1 done, 0 in progress, 1 missing" in out, out[-2000:]
    assert f"  missing: S=4 η = 0 uniform seed 0 ({keys[4]})" in out
    with open(results / "report" / "missing.csv") as f:
        assert f.read().splitlines()[1:] == [f"mine,S=4 η = 0 uniform seed 0,{keys[4]},missing,"]
    held = store.claim(keys[4])
    try:
        before = sorted(str(p) for p in tmp_path.rglob("*") if ".hydra" not in str(p) and "rep" not in p.parts)
        out = cli("ddim-bench-report", *report, "status=true").stdout
        assert re.fullmatch(rf"sweep mine: 2 expected: 1 done, 1 in progress \({socket.gethostname()} pid "
                            rf"{os.getpid()}, renewed \d+ s ago\), 0 missing\n", out), out
        after = sorted(str(p) for p in tmp_path.rglob("*") if ".hydra" not in str(p) and "rep" not in p.parts)
        assert before == after, "the status view writes nothing"
    finally:
        held.release()


def children(pid: int) -> list[int]:
    out = []
    for name in os.listdir("/proc"):
        try:
            with open(f"/proc/{name}/stat") as f:
                stat = f.read()
        except (OSError, ValueError):
            continue
        if name.isdigit() and int(stat[stat.rindex(")") + 2:].split()[1]) == pid:
            out.append(int(name))
    return out


def test_a_dying_rank_stops_the_sweep_with_one_line_and_no_claim_left(trained, tmp_path, bin_dir, root_dir,
                                                                       clean_env):
    """Two gloo ranks; rank 1 is killed (-9) mid-record: rank 0 stops within seconds, says so once, leaves no
    claim and no half-written record, and exits non-zero."""
    results, cells = tmp_path / "r", tmp_path / "r" / "cells"
    args = sweep_args(trained, results, tmp_path / "run", "grid.steps=[40]", f"n_samples={16 * N}", "eval.devices=2",
                      "eval.timeout_s=30")
    proc = subprocess.Popen([str(bin_dir / "ddim-bench-sweep"), *args], cwd=root_dir, env=clean_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: list(cells.glob("*.lock")), 240, "the claim")
    rank1 = children(proc.pid)
    assert len(rank1) == 1, rank1
    time.sleep(0.5)
    os.kill(rank1[0], signal.SIGKILL)
    t0 = time.monotonic()
    err = proc.communicate(timeout=120)[1]
    assert time.monotonic() - t0 < 10, "rank 0 must stop within seconds"
    assert proc.returncode == 1, err[-2000:]
    said = [ln for ln in err.splitlines() if "died" in ln or "error" in ln.lower()]
    assert said == [f"error: rank 1 of 2 (pid {rank1[0]}) died; the sweep stopped, the record in progress was not "
                    f"written and its claim is released; rerun to resume"], err[-3000:]
    assert "Traceback" not in err
    assert sorted(p.name for p in cells.iterdir() if not p.name.startswith(".tmp-")) == []


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("sig,said,within", [
    (signal.SIGSTOP, "error: rank 0 heard nothing from another rank within eval.timeout_s (8 s): a rank hung or its "
                     "node was lost", 60),
    (signal.SIGKILL, "error: another rank closed its connection to rank 0: it crashed or was killed", 45),
], ids=["hung node", "killed"])
def test_a_rank_on_another_host_stops_the_sweep_with_one_line(sig, said, within, trained, tmp_path, bin_dir, root_dir,
                                                              clean_env):
    """Two ranks started by hand as two nodes (``eval.num_nodes=2``, as a cluster launcher starts them), rank 1 on a
    pretended other host, so rank 0 cannot watch its process: a rank that stops answering (SIGSTOP, a hung or lost
    node) stops rank 0 after the process group's timeout, one that is killed at its next collective; either way
    with one line, exit 1 and no claim left."""
    node_b = tmp_path / "node-b"
    node_b.mkdir()
    (node_b / "sitecustomize.py").write_text("import socket\nsocket.gethostname = lambda: 'node-b'\n")
    results, cells = tmp_path / "r", tmp_path / "r" / "cells"
    args = sweep_args(trained, results, tmp_path / "run", "grid.steps=[40]", f"n_samples={16 * N}", "eval.devices=1",
                      "eval.num_nodes=2", "eval.timeout_s=8")
    group = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()), "WORLD_SIZE": "2", "LOCAL_RANK": "0"}
    ranks = [subprocess.Popen([str(bin_dir / "ddim-bench-sweep"), *args], cwd=root_dir, env=clean_env(
        {**group, "NODE_RANK": str(r), "RANK": str(r), **({"PYTHONPATH": str(node_b)} if r else {})}),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for r in (0, 1)]
    try:
        wait_for(lambda: list(cells.glob("*.lock")), 240, "the claim")
        time.sleep(0.5)
        os.kill(ranks[1].pid, sig)
        t0 = time.monotonic()
        err = ranks[0].communicate(timeout=120)[1]
        took = time.monotonic() - t0
    finally:
        for p in ranks:
            p.kill()
            p.communicate()
    assert ranks[0].returncode == 1, err[-2000:]
    assert took < within, took
    assert [ln for ln in err.splitlines() if "error" in ln.lower()] == [
        f"{said}; the sweep stopped with its claims released; rerun to resume"], err[-3000:]
    assert "Traceback" not in err
    assert sorted(p.name for p in cells.iterdir() if not p.name.startswith(".tmp-")) == []
