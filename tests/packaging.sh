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
