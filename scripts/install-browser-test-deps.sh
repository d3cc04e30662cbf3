#!/usr/bin/env bash
# What tests/test_app_browser.py needs: Debian's chromium and the playwright Python package (the test skips,
# saying why, without them). Never `playwright install`: it downloads its own browser; the test drives
# /usr/bin/chromium. Usage: scripts/install-browser-test-deps.sh [VENV]   (default .venv)
set -euo pipefail
venv="${1:-.venv}"
if [ ! -x /usr/bin/chromium ]; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium
fi
"$venv/bin/pip" install -q "playwright>=1.40"
/usr/bin/chromium --version 2>/dev/null  # its wrapper script warns on stderr about an unrelated check
