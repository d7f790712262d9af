#!/bin/sh
# Installs Debian's chromium (the headless browser the report tests load the HTML page in).
# Idempotent: does nothing when chromium is already on PATH. Needs root (or sudo) for apt-get.
set -e
if command -v chromium >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" = 0 ]; then SUDO=""; elif command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
    echo "install_chromium: not root and no sudo; install it yourself: apt-get update && apt-get install -y chromium" >&2
    exit 1
fi
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
command -v chromium >/dev/null
