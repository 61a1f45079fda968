#!/usr/bin/env bash
# Make sure a Chromium exists for the browser tests (tests/test_web_*.py drive it with PyPI
# playwright through executable_path; playwright's own browser download does not work offline).
# Uses PROVENANT_CHROMIUM or /usr/bin/chromium when present; otherwise, as root, installs Debian's
# `chromium`. Without root it stops and prints the one command to run.
set -euo pipefail
browser="${PROVENANT_CHROMIUM:-/usr/bin/chromium}"
if [ -x "$browser" ]; then exit 0; fi
if [ "$(id -u)" != 0 ]; then
  echo "No Chromium at $browser. Run first: sudo apt-get install -y chromium   (or set PROVENANT_CHROMIUM)" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -qq chromium >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; }
if [ ! -x "$browser" ]; then
  echo "installed Debian's chromium, but $browser is still missing; set PROVENANT_CHROMIUM to its path" >&2
  exit 1
fi
echo "installed Debian's chromium ($("$browser" --version 2>/dev/null || echo "$browser"))"
