#!/usr/bin/env bash
# The whole test suite, the README's one test command: `bash tests/all.sh [cargo test args...]`.
#
# As root on Debian it first installs what the tool-dependent tests need (chromium, promtool,
# journalctl, systemd-journal-remote, kill, ip, node and npm; podman, runc and busybox-static
# for the container tests), then `npm ci` for the browser driver;
# then it runs every test, the ignored ones too (`--include-ignored`): a tool that is still
# missing fails its test, which names it. Plain `cargo test` skips those tests and says so in
# its summary ("N ignored", each with the reason).
set -euo pipefail
cd "$(dirname "$0")/.."

# tool -> Debian package
declare -A need=(
  [chromium]=chromium
  [promtool]=prometheus
  [journalctl]=systemd
  [kill]=procps
  [ip]=iproute2
  [node]=nodejs
  [podman]=podman
  [runc]=runc
)
missing=()
for tool in "${!need[@]}"; do
  # type -P: the program on PATH, not a shell builtin of the same name (kill).
  type -P "$tool" >/dev/null 2>&1 || missing+=("${need[$tool]}")
done
# npm: on PATH, or the copy a Node build carries without linking it (NodeSource's repack ships
# /usr/lib/node_modules/npm but no /usr/bin/npm, and Debian's npm package conflicts with that
# nodejs); only with neither is Debian's npm wanted.
npm_cli=/usr/lib/node_modules/npm/bin/npm-cli.js
if type -P npm >/dev/null 2>&1; then
  npm=(npm)
elif type -P node >/dev/null 2>&1 && [ -f "$npm_cli" ]; then
  npm=(node "$npm_cli")
else
  npm=(npm)
  missing+=(npm)
fi

if ! [ -x /lib/systemd/systemd-journal-remote ] && ! [ -x /usr/lib/systemd/systemd-journal-remote ]; then
  missing+=(systemd-journal-remote)
fi

# The container tests' image is Debian's static busybox (a dynamic one would need a libc in it).
if ! dpkg-query -W -f '${Status}' busybox-static 2>/dev/null | grep -q 'ok installed'; then
  missing+=(busybox-static)
fi

if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "tests/all.sh: installing ${missing[*]} (apt)"
    apt-get update -qq
    # A package apt cannot install (a conflict with what the machine already has) does not stop
    # the suite: the tests that need it fail and name it.
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; then
      echo "tests/all.sh: apt could not install all of ${missing[*]}; trying them one by one" >&2
      for pkg in "${missing[@]}"; do
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$pkg" >/dev/null ||
          echo "tests/all.sh: could not install $pkg; the tests that need it will fail" >&2
      done
    fi
  else
    echo "tests/all.sh: not root (or no apt-get): cannot install ${missing[*]}; the tests that need them will fail" >&2
  fi
fi

# The browser driver (playwright-core, which uses the system chromium), pinned by the lock file.
if type -P "${npm[0]}" >/dev/null 2>&1; then
  lock=tests/browser/package-lock.json
  stamp=tests/browser/node_modules/.package-lock.json
  if ! [ -d tests/browser/node_modules/playwright-core ] || [ "$lock" -nt "$stamp" ]; then
    "${npm[@]}" ci --prefix tests/browser --no-audit --no-fund
  fi
fi

exec cargo test --locked "$@" -- --include-ignored
