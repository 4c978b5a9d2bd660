#!/usr/bin/env bash
# Install a single-node SLURM (slurmctld + slurmd + munge) from Debian packages.
# Idempotent: does nothing when the daemons are already installed.
set -euo pipefail

have_all() {
    command -v slurmctld >/dev/null 2>&1 &&
    command -v slurmd >/dev/null 2>&1 &&
    command -v sbatch >/dev/null 2>&1 &&
    command -v munged >/dev/null 2>&1
}

if have_all; then
    echo "slurm already installed"
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO="sudo"
    else
        echo "install.sh: need root (or sudo) to install slurm-wlm and munge" >&2
        exit 1
    fi
fi

export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
# The Debian packages try to start their services; on machines without systemd this fails harmlessly,
# but a policy-rc.d keeps the postinst scripts from trying at all.
policy=/usr/sbin/policy-rc.d
made_policy=0
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null
    $SUDO chmod 755 "$policy"
    made_policy=1
fi
cleanup() { if [ "$made_policy" = 1 ]; then $SUDO rm -f "$policy"; fi; }
trap cleanup EXIT

pkgs=(slurm-wlm munge)
$SUDO apt-get install -y -q --no-install-recommends "${pkgs[@]}"

have_all || { echo "install.sh: slurm binaries still missing after install" >&2; exit 1; }
echo "installed: slurm-wlm $(dpkg-query -W -f '${Version}' slurm-wlm 2>/dev/null || echo unknown)"
