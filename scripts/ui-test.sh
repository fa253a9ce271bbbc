#!/usr/bin/env bash
# The GMS web UI in headless Chromium (Debian's chromium; Playwright from PyPI drives it).
# Starts gmsd on loopback with a throw-away data directory and a small network defined through
# `gscip admin`; screenshots go to target/ui-screenshots (test output, not the repository).
# Usage: ui-test.sh PATH-TO-gmsd PATH-TO-gscip
set -euo pipefail
gmsd=${1:?usage: ui-test.sh GMSD GSCIP}
gscip=${2:?usage: ui-test.sh GMSD GSCIP}
cd "$(dirname "$0")/.."
./scripts/install-deps.sh chromium
venv=target/venv
if [ ! -x "$venv/bin/python" ]; then
  python3 -c 'import ensurepip' 2>/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-venv
  python3 -m venv "$venv"
fi
"$venv/bin/python" -c 'import playwright' 2>/dev/null || "$venv/bin/pip" install -q "playwright==1.65.2"
tmp=$(mktemp -d)
source scripts/gmsd-loopback.sh
"$gscip" admin groups create engineering --id 1 >/dev/null
"$gscip" admin groups create sales --id 2 >/dev/null
"$gscip" admin ges create ges1 --kind ges --mode closed --groups 1 >/dev/null
"$gscip" admin ges create ges2 --kind ges --mode open --groups 1,2 >/dev/null
"$gscip" admin ges create gen1 --kind gen --mode closed --groups 2 >/dev/null
"$gscip" admin ges create ges3 --kind ges --mode open >/dev/null
rm -rf target/ui-screenshots
GMS_URL="$GSCIP_GMS_URL" GMS_PASSWORD="$GMSD_PASSWORD" SHOTS=target/ui-screenshots \
  "$venv/bin/python" crates/gscip-gms/tests/ui/test_ui.py
echo "ui-test: screenshots in target/ui-screenshots"
