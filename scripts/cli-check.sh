#!/usr/bin/env bash
# Checks the `gscip sim` command-line contract (SPEC section 11): every example exits 0 with
# valid JSON whose summary shows no plaintext leak; a bad scenario exits 2 naming file and line.
set -euo pipefail
gscip=${1:?usage: cli-check.sh PATH-TO-gscip}
fail() { echo "cli-check: $*" >&2; exit 1; }
for f in examples/*.toml; do
  out=$("$gscip" sim "$f" --json) || fail "$f: exit $?"
  python3 -c 'import json,sys; r=json.load(sys.stdin); s=r["summary"]; assert r["engine"]=="sim"; assert s["plaintext_leaks"]==0 and s["not_as_expected"]==0, s' <<<"$out" \
    || fail "$f: bad report"
  echo "cli-check: $f ok ($(python3 -c 'import json,sys; print(json.load(sys.stdin)["summary"]["flows"])' <<<"$out") flows)"
done
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
printf 'name = "bad"\n[[node]]\nname = "x"\nkind = "router"\ncolour = "red"\n' >"$tmp/bad.toml"
set +e
msg=$("$gscip" sim "$tmp/bad.toml" 2>&1); code=$?
set -e
[ "$code" = 2 ] || fail "bad scenario: exit $code, want 2"
grep -q "bad.toml:5" <<<"$msg" || fail "bad scenario: message does not name file and line: $msg"
set +e
"$gscip" sim "$tmp/missing.toml" >/dev/null 2>&1; code=$?
set -e
[ "$code" = 2 ] || fail "missing file: exit $code, want 2"
sed 's/expect = "discarded"/expect = "protected"/' examples/enterprise.toml >"$tmp/wrong.toml"
set +e
"$gscip" sim "$tmp/wrong.toml" >/dev/null 2>&1; code=$?
set -e
[ "$code" = 1 ] || fail "unmet expectation: exit $code, want 1"
echo "cli-check: exit codes 0/1/2 ok"

# The management-load report reproduces seed 001's figures (docs/load-report.md).
seed=crates/gscip-load/seed001
load() { "$gscip" load-report "$@" --json | python3 -c 'import json,sys; r=json.load(sys.stdin); c=r.get("change", r); print(c["gscip"], c["ipsec_ike"])'; }
[ "$(load $seed/fig6.toml)" = "38 174" ] || fail "load-report fig6: $(load $seed/fig6.toml)"
[ "$(load $seed/fig6.toml --compare $seed/fig6-ges2-moved.toml)" = "0 20" ] || fail "load-report: GES2 moves"
[ "$(load $seed/fig6.toml --compare $seed/fig6-ges4-seed.toml)" = "10 72" ] || fail "load-report: GES4 is added"
[ "$(load $seed/fig6.toml --compare $seed/fig6-ges2-moved.toml --convention complete)" = "0 40" ] \
  || fail "load-report: complete convention"
set +e
msg=$("$gscip" load-report $seed/fig6.toml --compare $seed/fig6.toml --convention nope 2>&1); code=$?
[ "$code" = 2 ] && grep -q "expected seed | complete" <<<"$msg" || fail "load-report, bad convention: exit $code: $msg"
msg=$("$gscip" load-report "$tmp/bad.toml" 2>&1); code=$?
[ "$code" = 2 ] && grep -q "bad.toml:5" <<<"$msg" || fail "load-report, bad scenario: exit $code: $msg"
set -e
echo "cli-check: load-report 38/174, 0/20, 10/72 ok"

# The lab's bad inputs: a clear message and exit 2, nothing left behind.
set +e
msg=$("$gscip" lab run "$tmp/bad.toml" 2>&1); code=$?
[ "$code" = 2 ] && grep -q "bad.toml:5" <<<"$msg" || fail "lab, bad scenario: exit $code: $msg"
msg=$(GSCIPD=/nonexistent/gscipd "$gscip" lab run examples/enterprise.toml --prefix clichk 2>&1); code=$?
[ "$code" = 2 ] && grep -q "gscipd not found" <<<"$msg" || fail "lab, missing gscipd: exit $code: $msg"
if id nobody >/dev/null 2>&1 && command -v setpriv >/dev/null 2>&1; then
  msg=$(setpriv --reuid=nobody --regid=nogroup --clear-groups "$gscip" lab run examples/enterprise.toml --prefix clichk 2>&1); code=$?
  [ "$code" = 2 ] && grep -q "needs root" <<<"$msg" || fail "lab as non-root: exit $code: $msg"
fi
msg=$("$gscip" status --socket "$tmp/none.sock" 2>&1); code=$?
[ "$code" = 2 ] && grep -q "is gscipd running" <<<"$msg" || fail "status without a daemon: exit $code: $msg"
set -e
[ -z "$(ip netns list 2>/dev/null | grep '^clichk-')" ] || fail "the lab left namespaces behind"
echo "cli-check: lab and status bad inputs ok"

# `gscip admin` against a real gmsd on loopback: tables, JSON, and exit codes 0/1/2.
gmsd="$(dirname "$gscip")/gmsd"
source "$(dirname "$0")/gmsd-loopback.sh"
"$gscip" admin groups create staff --id 1 >/dev/null || fail "groups create"
"$gscip" admin ges create ges1 --kind ges --mode closed --groups 1 >/dev/null || fail "ges create"
"$gscip" admin ges list | grep -q "ges1 *ges *closed *pending *1" || fail "ges list table"
"$gscip" admin --json groups list | python3 -c 'import json,sys; g=json.load(sys.stdin); assert g[0]["members"]==["ges1"], g' || fail "groups list json"
[ -n "$("$gscip" admin ges token ges1)" ] || fail "ges token"
"$gscip" admin audit --json | python3 -c 'import json,sys; a=json.load(sys.stdin); assert any(e["action"]=="ge.token" for e in a)' || fail "audit"
set +e
"$gscip" admin ges create "bad name" --kind ges --mode open >/dev/null 2>&1; code=$?
[ "$code" = 1 ] || fail "admin refused request: exit $code, want 1"
GSCIP_GMS_TOKEN=wrong "$gscip" admin groups list >/dev/null 2>&1; code=$?
[ "$code" = 1 ] || fail "admin bad token: exit $code, want 1"
"$gscip" admin --ca /nonexistent groups list >/dev/null 2>&1; code=$?
[ "$code" = 2 ] || fail "admin missing CA: exit $code, want 2"
GSCIP_GMS_URL="https://127.0.0.1:1" "$gscip" admin groups list >/dev/null 2>&1; code=$?
[ "$code" = 1 ] || fail "admin unreachable: exit $code, want 1"
set -e
echo "cli-check: gscip admin ok"

# gmsd refuses to start on a database whose master key is missing (and creates none).
kill $gmsd_pid; wait $gmsd_pid 2>/dev/null || true
rm "$tmp/gms/master.key"
set +e
msg=$(timeout 10 "$gmsd" --data-dir "$tmp/gms" --listen "127.0.0.1:$port" 2>&1); code=$?
set -e
[ "$code" = 1 ] || fail "gmsd without its master key: exit $code, want 1"
grep -q "restore the master key" <<<"$msg" || fail "gmsd without its master key: $msg"
[ ! -e "$tmp/gms/master.key" ] || fail "gmsd created a master key for an existing database"
echo "cli-check: gmsd master key ok"
