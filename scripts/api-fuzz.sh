#!/usr/bin/env bash
# Fuzzes gmsd's REST API from its own OpenAPI document with schemathesis (PyPI): every generated
# request, valid or not, must get an answer that is not a 5xx, with a documented status code,
# content type and body schema. Runs a gmsd on loopback with a throw-away data directory.
# Usage: api-fuzz.sh PATH-TO-gmsd PATH-TO-gscip [MAX_EXAMPLES]
set -euo pipefail
gmsd=${1:?usage: api-fuzz.sh GMSD GSCIP [MAX_EXAMPLES]}
gscip=${2:?usage: api-fuzz.sh GMSD GSCIP [MAX_EXAMPLES]}
examples=${3:-30}
cd "$(dirname "$0")/.."
venv=target/venv
if [ ! -x "$venv/bin/schemathesis" ]; then
  if ! python3 -c 'import ensurepip' 2>/dev/null; then
    [ "$(id -u)" = 0 ] || { echo "api-fuzz: install python3-venv" >&2; exit 1; }
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-venv
  fi
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q "schemathesis==4.32.5"
fi
tmp=$(mktemp -d)
source scripts/gmsd-loopback.sh
"$venv/bin/schemathesis" run "$GSCIP_GMS_URL/openapi.json" --tls-verify "$GSCIP_GMS_CA" \
  -H "Authorization: Bearer $GSCIP_GMS_TOKEN" --request-timeout 10 --max-examples "$examples" --seed 1 \
  --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance
if grep -q "ERROR" "$tmp/gmsd.log"; then
  echo "api-fuzz: gmsd logged errors:" >&2; grep ERROR "$tmp/gmsd.log" >&2; exit 1
fi
echo "api-fuzz: ok"
