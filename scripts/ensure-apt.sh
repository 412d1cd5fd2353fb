#!/usr/bin/env bash
# Install the Debian packages listed in requirements/apt.txt that are not installed yet.
# Safe to run again: does nothing (and needs no root) when everything is present.
set -euo pipefail
list=${1:-requirements/apt.txt}
missing=()
while read -r pkg _; do
    [[ -z "$pkg" || "$pkg" == \#* ]] && continue
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$pkg")
    fi
done < "$list"
[[ ${#missing[@]} -eq 0 ]] && exit 0
echo "installing Debian packages: ${missing[*]}"
SUDO=""
if [[ $(id -u) -ne 0 ]]; then
    command -v sudo >/dev/null || { echo "need root (or sudo) to install: ${missing[*]}" >&2; exit 1; }
    SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
# The kamailio package may start a system daemon on :5060; the tests start their own on loopback ports.
if command -v systemctl >/dev/null && systemctl is-active --quiet kamailio 2>/dev/null; then
    $SUDO systemctl disable --now kamailio >/dev/null 2>&1 || true
fi
