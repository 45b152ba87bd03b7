#!/usr/bin/env bash
# Install (or reuse) the headless browser the report test uses
# (tests/integration/test_report_browser.py): Debian's chromium-headless-shell,
# installed with apt-get when missing and we are root; otherwise the command to
# run is printed and we fail.
#
# Usage: scripts/browser.sh [--print-bin]
#   --print-bin   print the browser binary's path (exit 1 when it is not installed)
set -euo pipefail

PACKAGE=chromium-headless-shell

bin_path() {
  dpkg -L "$PACKAGE" 2>/dev/null | grep -E '/bin/[^/]+$' | head -n 1
}

installed() {
  dpkg-query -W -f='${Status}' "$PACKAGE" 2>/dev/null | grep -q 'install ok installed'
}

case ${1:-} in
  --print-bin)
    found=$(bin_path || true)
    if [[ -z $found || ! -x $found ]]; then
      echo "browser.sh: $PACKAGE is not installed (or its binary is gone); run: make browser" >&2
      exit 1
    fi
    echo "$found"; exit 0 ;;
  -h|--help) sed -n '2,8p' "$0"; exit 0 ;;
  "") ;;
  *) echo "browser.sh: unknown argument $1" >&2; exit 2 ;;
esac

if installed; then
  echo "browser.sh: reusing $(bin_path) ($(dpkg-query -W -f='${Version}' "$PACKAGE"))" >&2
  exit 0
fi
if [[ $(id -u) -ne 0 ]]; then
  echo "browser.sh: missing Debian package: $PACKAGE; install it with:" >&2
  echo "    sudo apt-get update && sudo apt-get install -y --no-install-recommends $PACKAGE" >&2
  exit 1
fi
echo "browser.sh: apt-get install $PACKAGE" >&2
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$PACKAGE" >/dev/null
echo "browser.sh: installed $(bin_path)" >&2
