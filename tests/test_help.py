"""Each app's ``--help``: what it does, what it needs and its most used settings, exit 0, nothing written; and a
reader that goes away early (``--help | head``) ends it quietly, without a traceback."""
import subprocess

import pytest

NEEDS = {"train": "Required: none", "sweep": "Required: checkpoint=PATH|ID", "report": "Required: sweep_name=NAME",
         "reconstruct": "Required: checkpoint=PATH", "interpolate": "Required: checkpoint=PATH"}


@pytest.mark.parametrize("app", sorted(NEEDS))
def test_help_says_what_the_app_does_and_needs_and_writes_nothing(app, tmp_path, bin_dir, clean_env):
    proc = subprocess.run([str(bin_dir / f"ddim-bench-{app}"), "--help"], cwd=tmp_path, env=clean_env(),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    assert lines[0].startswith(f"ddim-bench-{app}: ") and len(lines[0]) > 40, lines[0]
    assert NEEDS[app] in proc.stdout
    settings = lines[lines.index("Most used settings (key=value on the command line):") + 1:]
    assert sum("=" in ln for ln in settings) >= 3, proc.stdout
    assert list(tmp_path.iterdir()) == []


def test_help_into_a_closed_pipe_ends_quietly(tmp_path, bin_dir, clean_env):
    proc = subprocess.Popen([str(bin_dir / "ddim-bench-sweep"), "--help"], cwd=tmp_path, env=clean_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    proc.stdout.close()  # the reader is gone before the app writes (it takes seconds to start)
    err = proc.communicate(timeout=120)[1]
    assert proc.returncode == 141, err[-2000:]  # 128 + SIGPIPE, as a shell tool whose reader went away
    assert err == "", err[-2000:]
