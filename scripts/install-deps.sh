#!/usr/bin/env bash
# Installs the Debian packages the project needs, only those missing (a fresh machine has none).
# Usage: install-deps.sh NAME... (each named command is checked, or, for a NAME with a '/', that
# file; its package is installed when missing).
set -euo pipefail
declare -A package=(
  [ip]=iproute2 [python3]=python3 [c++]=g++ [make]=make [iptables]=iptables [iperf3]=iperf3 [wireguard-go]=wireguard-go [wg]=wireguard-tools [pg_ctlcluster]=postgresql [chromium]=chromium
  [unshare]=util-linux [timeout]=coreutils [ethtool]=ethtool [ping]=iputils-ping
  # strongSwan for `make bench`: charon, swanctl (vici), user-mode ESP (kernel-libipsec; this
  # kernel has no ESP) and the openssl plugin (AES-GCM, X25519).
  [swanctl]=strongswan-swanctl [/usr/lib/ipsec/charon]=strongswan
  [/usr/lib/ipsec/plugins/libstrongswan-kernel-libipsec.so]=libcharon-extra-plugins
  [/usr/lib/ipsec/plugins/libstrongswan-openssl.so]=libstrongswan-standard-plugins
)
missing=()
for name in "$@"; do
  if [[ "$name" == */* ]]; then
    [ -e "$name" ] || missing+=("${package[$name]:?no package known for $name}")
  else
    command -v "$name" >/dev/null 2>&1 || missing+=("${package[$name]:-$name}")
  fi
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
