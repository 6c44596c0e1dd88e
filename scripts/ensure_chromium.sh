#!/usr/bin/env bash
# Make sure Debian's Chromium (and a font, so screenshots show text on a bare machine) is installed
# for the browser test, tests/integration/test_dashboard.py. The test drives it with Python
# Playwright through executable_path: Playwright's own browser download (`playwright install`) is
# never used. Run by `make test` before pytest; prints the browser's version.
set -euo pipefail

CHROMIUM="${ELIMU_CHROMIUM:-/usr/bin/chromium}"

if [ ! -x "$CHROMIUM" ]; then
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "ensure_chromium: installing Debian's chromium" >&2
        export DEBIAN_FRONTEND=noninteractive
        if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null; }; then
            echo "ensure_chromium: apt-get install chromium FAILED" >&2
            exit 1
        fi
    else
        echo "ensure_chromium: $CHROMIUM is missing and cannot be installed here" \
            "(needs root and apt-get); install Debian's chromium package" >&2
        exit 1
    fi
fi

if [ ! -x "$CHROMIUM" ]; then
    echo "ensure_chromium: $CHROMIUM still missing after the install" >&2
    exit 1
fi
"$CHROMIUM" --version
