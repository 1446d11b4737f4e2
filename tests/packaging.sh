#!/usr/bin/env bash
# Packaging checks (run by .ci/run as root): build the .deb, inspect it, lint it, verify and rate the
# systemd unit, install it, run the installed binary, keep the conffile across a reinstall, purge it;
# then the arm64 package, its binary answering /healthz under qemu. Bounded in time throughout.
set -euo pipefail
cd "$(dirname "$0")/.."

fail() { echo "FAIL: $*" >&2; exit 1; }
ok() { echo "ok   $*"; }

# Runs BINARY... on 127.0.0.1:0 and echoes the address it reports; the caller kills it.
serve() {
  local log; log=$(mktemp)
  "$@" --listen 127.0.0.1:0 2>"$log" &
  local pid=$!
  for _ in $(seq 1 100); do
    addr=$(grep -o 'listening on http://[0-9.:]*' "$log" | sed 's|.*http://||' || true)
    [ -n "$addr" ] && { echo "$pid $addr"; return; }
    sleep 0.1
  done
  kill "$pid" 2>/dev/null || true
  fail "$* did not start: $(cat "$log")"
}

# SIGTERM, then waits (at most 6 s) for the process to go.
stop() {
  kill -TERM "$1" 2>/dev/null || return 0
  for _ in $(seq 1 60); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.1; done
  fail "pid $1 did not stop on SIGTERM"
}

# --- amd64 package ------------------------------------------------------------------------------
deb=$(cargo deb --locked 2>/dev/null | tail -n 1)
[ -f "$deb" ] || fail "cargo deb produced no package"
ok "cargo deb: $deb"

contents=$(dpkg-deb -c "$deb")
for path in ./usr/bin/edgemon ./usr/lib/systemd/system/edgemon.service ./etc/default/edgemon \
            ./usr/share/doc/edgemon/README.md ./usr/share/doc/edgemon/copyright \
            ./usr/share/doc/edgemon/changelog.Debian.gz; do
  grep -q " $path\$" <<<"$contents" || fail "$path missing from the package"
done
grep -qE " \./usr/share/man/man8/edgemon\.8(\.gz)?\$" <<<"$contents" || fail "edgemon.8 missing from the package"
ok "dpkg-deb -c: binary, unit, conffile, README, copyright, changelog, edgemon(8)"

info=$(dpkg-deb -I "$deb")
grep -q '^ Depends: .*libc6' <<<"$info" || fail "Depends lacks libc6: $info"
grep -q '^ Depends: .*ca-certificates' <<<"$info" || fail "Depends lacks ca-certificates (https notifications): $info"
# Packed relocations need a loader that knows DT_RELR (glibc 2.36): the package must say so.
grep -q '^ Depends: .*libc6 (>= 2.36)' <<<"$info" || fail "Depends lacks libc6 (>= 2.36) (DT_RELR): $info"
[ "$(dpkg-deb -f "$deb" Architecture)" = amd64 ] || fail "architecture"
# Listed into variables first: `producer | grep -q` under pipefail fails whenever grep's early
# exit cuts the producer off with SIGPIPE (it did, once in three runs, for "no postinst").
conffiles=$(dpkg-deb --ctrl-tarfile "$deb" | tar -xO ./conffiles)
grep -qx /etc/default/edgemon <<<"$conffiles" || fail "conffile not declared"
control=$(dpkg-deb --ctrl-tarfile "$deb" | tar -t)
for script in postinst prerm postrm; do
  grep -qx "./$script" <<<"$control" || fail "no $script"
done
ok "dpkg-deb -I: Depends libc6 and ca-certificates, conffile /etc/default/edgemon, maintainer scripts"

lintian --fail-on error "$deb" 2>&1 | grep -v 'root privileges' >/tmp/lintian.out || true
if grep -q '^E:' /tmp/lintian.out; then
  fail "lintian errors: $(cat /tmp/lintian.out)"
fi
ok "lintian: no errors ($(grep -c '^W:' /tmp/lintian.out || true) warnings)"
if grep -E 'no-manual-page|manual-page' /tmp/lintian.out; then
  fail "lintian complains about the manual page"
fi
ok "lintian: nothing about the manual page"

dpkg -i "$deb" >/dev/null
unit=/usr/lib/systemd/system/edgemon.service
for f in /usr/bin/edgemon /etc/default/edgemon "$unit"; do [ -e "$f" ] || fail "$f not installed"; done
ok "dpkg -i: files in place"

systemd-analyze verify "$unit" || fail "systemd-analyze verify"
ok "systemd-analyze verify"
rating=$(systemd-analyze security --offline=yes "$unit" 2>&1 | grep 'Overall exposure')
echo "     $rating"
grep -Eq ' (SAFE|OK) ' <<<"$rating" || fail "security rating not OK or better: $rating"
ok "systemd-analyze security: OK or better"

# The mailbox drop-in (README, Raspberry Pi): the unit with it appended (a section may repeat),
# verified and rated again; the issue's bound is 4.9.
dropin=/usr/share/doc/edgemon/examples/mailbox.conf
[ -e "$dropin" ] || fail "$dropin not installed"
merged=$(mktemp -d)/edgemon.service
{ cat "$unit"; echo; grep -v '^#' "$dropin"; } > "$merged"
systemd-analyze verify "$merged" || fail "systemd-analyze verify with the mailbox drop-in"
rating=$(systemd-analyze security --offline=yes "$merged" 2>&1 | grep 'Overall exposure')
echo "     with mailbox.conf: $rating"
score=$(grep -Eo '[0-9]+\.[0-9]+' <<<"$rating" | head -1)
awk -v s="$score" 'BEGIN { exit !(s != "" && s <= 4.9) }' || fail "rating with the mailbox drop-in above 4.9: $rating"
ok "systemd-analyze security with the mailbox drop-in: $score (at most 4.9)"

read -r pid addr < <(serve /usr/bin/edgemon)
[ "$(curl -s -m 5 "http://$addr/healthz")" = ok ] || { kill "$pid"; fail "installed binary does not serve /healthz"; }
stop "$pid"
ok "installed /usr/bin/edgemon serves /healthz"

echo '# kept across upgrades' >> /etc/default/edgemon
DEBIAN_FRONTEND=noninteractive dpkg -i --force-confold "$deb" >/dev/null
grep -q 'kept across upgrades' /etc/default/edgemon || fail "conffile change lost on reinstall"
ok "conffile kept across a reinstall"

dpkg --purge edgemon >/dev/null
for f in /usr/bin/edgemon /etc/default/edgemon "$unit"; do [ ! -e "$f" ] || fail "$f left after purge"; done
ok "dpkg --purge removes everything"

# --- the package under a real systemd ------------------------------------------------------------
# A Debian 12 system booted with systemd-nspawn (debootstrap, kept in $rootfs between runs; the
# boot is an overlay, so the tree stays as debootstrap left it) in a network namespace of its own
# (--private-network: only its loopback; the host's curl and python3 reach it with nsenter -n).
# The package is installed there as on a board: its postinst creates the user, enables and
# starts the unit; then the services topic must read the real systemd through the unit's
# sandbox, which the fake systemctl of tests/services.rs cannot show.
rootfs=${EDGEMON_SYSTEMD_ROOTFS:-/var/tmp/edgemon-bookworm}
if ! [ -x "$rootfs/usr/lib/systemd/systemd" ]; then
  rm -rf "$rootfs"
  timeout 600 debootstrap --variant=minbase --include=systemd,systemd-sysv,dbus,ca-certificates \
    bookworm "$rootfs" http://deb.debian.org/debian >/dev/null || fail "debootstrap bookworm"
fi
ok "Debian 12 root file system: $rootfs"
echo edgemon-ci > "$rootfs/etc/hostname"
debdir=$(cd "$(dirname "$deb")" && pwd)
nslog=$(mktemp)
systemd-nspawn -q -D "$rootfs" --volatile=overlay --boot --register=no --keep-unit \
  --private-network -M edgemon-ci --bind-ro="$debdir":/pkg </dev/null >"$nslog" 2>&1 &
nspawn=$!
# The container's init is the nspawn process's child; everything below runs in its namespaces.
leader=""
for _ in $(seq 1 100); do
  leader=$(cat /proc/$nspawn/task/*/children 2>/dev/null | awk '{print $1}')
  [ -n "$leader" ] && break
  sleep 0.1
done
in_ct() { timeout 60 nsenter -t "$leader" -a "$@"; }
in_net() { timeout 30 nsenter -t "$leader" -n "$@"; }
ct_down() { kill -TERM "$nspawn" 2>/dev/null || true; wait "$nspawn" 2>/dev/null || true; }
ct_fail() { echo "--- journal of the container:" >&2; in_ct journalctl -b --no-pager -n 60 >&2 || true; ct_down; fail "$*"; }
[ -n "$leader" ] || { cat "$nslog" >&2; ct_down; fail "systemd-nspawn did not start: $(cat "$nslog")"; }
# Until its init has the bus up (asked too early, systemctl finds no socket yet), then until boot is done.
state=""
for _ in $(seq 1 300); do
  state=$(in_ct systemctl is-system-running --wait 2>/dev/null || true)
  case "$state" in running|degraded) break ;; esac
  sleep 0.1
done
[ "$state" = running ] || [ "$state" = degraded ] || ct_fail "the container's systemd is $state"
ok "systemd booted in the container ($state)"

in_ct sh -c "DEBIAN_FRONTEND=noninteractive dpkg -i /pkg/$(basename "$deb")" >/dev/null || ct_fail "dpkg -i in the container"
[ "$(in_ct systemctl is-active edgemon.service || true)" = active ] || ct_fail "edgemon.service not active after install"
[ "$(in_ct systemctl show -p StatusText --value edgemon.service)" = serving ] || ct_fail "no READY/serving status"
ok "dpkg -i: the postinst enabled and started edgemon.service (Type=notify: serving)"
in_ct getent passwd edgemon >/dev/null || ct_fail "no edgemon user after install"
ok "the service's user exists (systemd-sysusers)"

# A failed unit, and the daemon watching journald and it.
in_ct sh -c 'printf "[Unit]\nDescription=Nightly backup to the NAS\n[Service]\nExecStart=/bin/false\n" > /etc/systemd/system/backup.service
  echo "EDGEMON_ARGS=\"--unit systemd-journald.service --unit backup.service\"" > /etc/default/edgemon
  systemctl daemon-reload; systemctl start backup.service || true; systemctl restart edgemon.service' \
  || ct_fail "setting up the failed unit"
metrics=""
for _ in $(seq 1 100); do
  metrics=$(in_net curl -s -m 5 http://127.0.0.1:9753/metrics || true)
  grep -q '^edgemon_units_failed 1$' <<<"$metrics" && break
  sleep 0.1
done
grep -q '^edgemon_units_failed 1$' <<<"$metrics" || ct_fail "/metrics has no edgemon_units_failed 1: $(grep units_failed <<<"$metrics")"
ok "/metrics: edgemon_units_failed 1 (systemctl show NFailedUnits, as the service's user)"
frame=$(in_net python3 - <<'PY'
import base64, json, os, socket
s = socket.create_connection(("127.0.0.1", 9753), timeout=20)
key = base64.b64encode(os.urandom(16)).decode()
s.sendall(("GET /ws/services HTTP/1.1\r\nHost: 127.0.0.1:9753\r\nUpgrade: websocket\r\n"
           "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n" % key).encode())
buf = b""
while b"\r\n\r\n" not in buf:
    buf += s.recv(4096)
head, buf = buf.split(b"\r\n\r\n", 1)
assert b" 101 " in head.split(b"\r\n")[0], head
def take(n):
    global buf
    while len(buf) < n:
        more = s.recv(65536)
        if not more:
            raise SystemExit("closed")
        buf += more
    out, buf = buf[:n], buf[n:]
    return out
while True:
    b0, b1 = take(2)
    n = b1 & 0x7F
    if n == 126:
        n = int.from_bytes(take(2), "big")
    elif n == 127:
        n = int.from_bytes(take(8), "big")
    payload = take(n)
    if b0 & 0x0F == 1:
        msg = json.loads(payload)
        if msg.get("type") == "data":
            print(json.dumps(msg["data"]))
            break
PY
) || ct_fail "no services frame"
python3 - "$frame" <<'PY' || ct_fail "services frame: $frame"
import json, sys
d = json.loads(sys.argv[1])
assert d["available"] is True, d
assert [u["unit"] for u in d["failed"]] == ["backup.service"], d["failed"]
assert d["failed"][0]["description"] == "Nightly backup to the NAS", d["failed"]
j, b = d["units"]
assert (j["unit"], j["load"], j["active"], j["sub"]) == ("systemd-journald.service", "loaded", "active", "running"), j
assert j["since"] > 1_700_000_000_000 and j["restarts"] == 0, j
assert (b["unit"], b["active"], b["sub"]) == ("backup.service", "failed", "failed"), b
PY
ok "services topic: the failed unit and both named units, from the real systemd 252"
if in_ct journalctl -u edgemon.service --no-pager | grep -q 'cannot be read'; then
  ct_fail "the daemon said systemd units cannot be read"
fi
in_ct systemctl stop edgemon.service
[ "$(in_ct systemctl show -p Result --value edgemon.service)" = success ] || ct_fail "edgemon.service did not stop cleanly"
ok "systemctl stop: Result=success"
ct_down
ok "container stopped"

# --- arm64 package, binary under qemu -------------------------------------------------------------
if ! rustup target add aarch64-unknown-linux-gnu >/dev/null 2>&1; then
  echo "SKIPPED arm64: rustup target add aarch64-unknown-linux-gnu failed"; exit 0
fi
for tool in aarch64-linux-gnu-gcc qemu-aarch64-static; do
  command -v "$tool" >/dev/null || { echo "SKIPPED arm64: $tool not installed"; exit 0; }
done
cargo deb --locked --target aarch64-unknown-linux-gnu >/dev/null 2>&1 || fail "cargo deb --target aarch64 failed"
arm_deb=$(ls target/aarch64-unknown-linux-gnu/debian/edgemon_*_arm64.deb)
[ "$(dpkg-deb -f "$arm_deb" Architecture)" = arm64 ] || fail "arm64 architecture"
kind=$(file target/aarch64-unknown-linux-gnu/release/edgemon)
grep -q 'ARM aarch64' <<<"$kind" || fail "not an aarch64 binary: $kind"
ok "cargo deb --target aarch64-unknown-linux-gnu: $arm_deb"
read -r pid addr < <(serve qemu-aarch64-static -L /usr/aarch64-linux-gnu target/aarch64-unknown-linux-gnu/release/edgemon)
[ "$(curl -s -m 10 "http://$addr/healthz")" = ok ] || { kill "$pid"; fail "arm64 binary does not serve /healthz"; }
stop "$pid"
ok "arm64 binary under qemu-aarch64-static serves /healthz"
