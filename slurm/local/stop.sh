#!/usr/bin/env bash
# Stop the single-node SLURM cluster that slurm/local/start.sh started in STATE_DIR.
#
#   slurm/local/stop.sh [STATE_DIR]      # default: ${TMPDIR:-/tmp}/ddim-bench-slurm
#
# Only the daemons whose pid files are in STATE_DIR are stopped (slurmd, slurmctld, munged),
# plus job processes (slurmstepd) left behind by that slurmd. The state dir itself is kept.
set -uo pipefail

export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"
STATE="${1:-${TMPDIR:-/tmp}/ddim-bench-slurm}"
[ -d "$STATE" ] || exit 0
STATE="$(cd "$STATE" && pwd)"

log() { echo "[slurm-local] $*" >&2; }

alive() { [ -n "$1" ] && kill -0 "$1" 2>/dev/null; }

# The command name a pid runs, so that a stale pid file never makes us kill a stranger.
comm_of() { cat "/proc/$1/comm" 2>/dev/null || true; }

stop_pid() { # name pidfile
    local name="$1" pidfile="$2" pid
    [ -s "$pidfile" ] || return 0
    pid="$(tr -dc '0-9' <"$pidfile")"
    if alive "$pid" && [ "$(comm_of "$pid")" = "$name" ]; then
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 1 100); do alive "$pid" || break; sleep 0.1; done
        if alive "$pid"; then
            log "$name ($pid) ignored SIGTERM; killing"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    rm -f "$pidfile"
}

# Job steps of this cluster: slurmstepd processes whose environment names this slurm.conf.
stop_steps() {
    local conf="$STATE/slurm.conf" pid
    for pid in $(pgrep -x slurmstepd 2>/dev/null || true); do
        if tr '\0' '\n' <"/proc/$pid/environ" 2>/dev/null | grep -qxF "SLURM_CONF=$conf"; then
            kill -KILL "$pid" 2>/dev/null || true
        fi
    done
}

if [ -f "$STATE/slurm.conf" ] && command -v scontrol >/dev/null 2>&1; then
    # Cancel what is still queued or running so job processes end with their steps.
    SLURM_CONF="$STATE/slurm.conf" timeout 10 scancel --full --quiet --user="$(id -un)" >/dev/null 2>&1 || true
fi
stop_pid slurmd "$STATE/run/slurmd.pid"
stop_steps
stop_pid slurmctld "$STATE/run/slurmctld.pid"
if [ -s "$STATE/run/munged.pid" ]; then
    stop_pid munged "$STATE/run/munged.pid"
fi
rm -f "$STATE/env.sh" "$STATE/munge/munge.socket" "$STATE/munge/munge.socket.lock"
log "stopped cluster in $STATE"
