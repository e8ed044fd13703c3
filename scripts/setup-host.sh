#!/usr/bin/env bash
# Installs the host tools appliancekit needs on Debian 12 (idempotent: installs only what is missing).
set -euo pipefail
packages=(
  apt debian-archive-keyring gpgv ca-certificates
  python3 python3-venv python3-pip
  qemu-system-arm qemu-system-x86 qemu-efi-aarch64 qemu-efi-arm ovmf
  erofs-utils cryptsetup-bin fdisk dosfstools mtools e2fsprogs cpio kmod
  bmap-tools zstd xz-utils git make nix-bin
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup-host: missing host packages: ${missing[*]} (run as root or: apt-get install ${missing[*]})" >&2
    exit 2
  fi
  echo "setup-host: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq || apt-get update
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
