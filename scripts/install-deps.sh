#!/usr/bin/env bash
# Installs the Debian packages the project needs, only those missing (a fresh machine has none).
# Usage: install-deps.sh COMMAND... (each named command is checked; its package installed).
set -euo pipefail
declare -A package=(
  [ip]=iproute2 [python3]=python3 [c++]=g++ [make]=make [iptables]=iptables [iperf3]=iperf3 [wireguard-go]=wireguard-go [wg]=wireguard-tools [pg_ctlcluster]=postgresql [chromium]=chromium
)
missing=()
for cmd in "$@"; do
  command -v "$cmd" >/dev/null 2>&1 || missing+=("${package[$cmd]:-$cmd}")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ]; then
  echo "install-deps: missing ${missing[*]}; run as root or install them: apt-get install ${missing[*]}" >&2
  exit 1
fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}"
