# Sourced by the test scripts: starts a throw-away gmsd on 127.0.0.1 with its data in
# "$tmp/gms" and the first administrator's password 'correct horse battery staple' in
# "$tmp/pw"; stops it and removes "$tmp" on exit; exports GSCIP_GMS_URL, GSCIP_GMS_CA and
# GSCIP_GMS_TOKEN for `gscip admin`. Needs: $gmsd, $gscip, $tmp. Sets $gmsd_pid, $port.
GMSD_PASSWORD='correct horse battery staple'
printf '%s' "$GMSD_PASSWORD" >"$tmp/pw"
port=$((20000 + RANDOM % 20000))
"$gmsd" --data-dir "$tmp/gms" --listen "127.0.0.1:$port" --admin-password-file "$tmp/pw" 2>"$tmp/gmsd.log" &
gmsd_pid=$!
trap 'kill $gmsd_pid 2>/dev/null || true; wait $gmsd_pid 2>/dev/null || true; rm -rf "$tmp"' EXIT
export GSCIP_GMS_URL="https://127.0.0.1:$port" GSCIP_GMS_CA="$tmp/gms/ca.pem"
for _ in $(seq 100); do
  [ -s "$GSCIP_GMS_CA" ] && "$gscip" admin login --password-file "$tmp/pw" >/dev/null 2>&1 && break
  sleep 0.1
done
if ! GSCIP_GMS_TOKEN=$("$gscip" admin login --password-file "$tmp/pw"); then
  echo "gmsd did not start: $(cat "$tmp/gmsd.log")" >&2
  exit 1
fi
export GSCIP_GMS_TOKEN
