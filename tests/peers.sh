#!/usr/bin/env bash
# Side by side: edgemon against the peers a user would install instead, measured by the same code
# (edgemon-bench --peers) in the same run. Not part of CI: it installs Netdata (Debian package) and
# Glances (PyPI, in a venv under /opt/edgemon-peers) and takes about 5 minutes per pass.
#
#   sudo bash tests/peers.sh [--passes N] [--window SECONDS]
#
# Every peer is bound to loopback. Results: target/peers.json and target/peers.md.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
    echo "peers.sh: run as root (it installs packages)" >&2
    exit 2
fi

export DEBIAN_FRONTEND=noninteractive
if ! [ -x /usr/sbin/netdata ] || ! [ -x /opt/edgemon-peers/bin/glances ]; then
    apt-get update -qq
    apt-get install -y -qq netdata python3-venv >/dev/null
fi
# The package starts its own netdata on :19999; the bench starts one it can measure.
if command -v systemctl >/dev/null && systemctl is-active --quiet netdata 2>/dev/null; then
    systemctl stop netdata
fi
pkill -x netdata 2>/dev/null || true
if ! [ -x /opt/edgemon-peers/bin/glances ]; then
    python3 -m venv /opt/edgemon-peers
    /opt/edgemon-peers/bin/pip install -q 'glances[web]'
fi

cargo build --release --locked --bins
target/release/edgemon-bench --peers \
    --netdata /usr/sbin/netdata \
    --glances /opt/edgemon-peers/bin/glances \
    --json target/peers.json --markdown target/peers.md "$@"
