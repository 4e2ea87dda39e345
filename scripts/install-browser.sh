#!/usr/bin/env bash
# Installs what the console's browser tests need: Debian's chromium (driven by Playwright for
# Python; Playwright's own browser download is never used), DejaVu fonts (the PDF reports and
# the screenshots) and poppler-utils (pdftoppm renders a report page in the tests).
# Idempotent and quick when everything is there. Needs apt-get and root (or sudo).
set -euo pipefail

need=()
command -v chromium >/dev/null 2>&1 || need+=(chromium)
[ -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || need+=(fonts-dejavu-core)
command -v pdftoppm >/dev/null 2>&1 || need+=(poppler-utils)
if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "install-browser: no apt-get here; install ${need[*]} by hand (browser tests will skip)" >&2
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    SUDO="sudo -n"
  else
    echo "install-browser: not root and no sudo; install ${need[*]} by hand (browser tests will skip)" >&2
    exit 0
  fi
fi
echo "install-browser: installing ${need[*]}"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
