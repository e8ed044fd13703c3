#!/usr/bin/env bash
# Installs the host tools appliancekit needs on Debian 12 (idempotent: installs only what is missing).
# `setup-host.sh bench` adds what `make bench` needs for its plain-Debian baseline: mmdebstrap,
# and qemu-user-static + binfmt to run the target architecture's maintainer scripts.
set -euo pipefail
extra="${1:-}"
# chromium + chromium-driver: the panel's tests drive a real browser (selenium, headless).
# golang-go: builds content-sync (appliancekit/content/program), a static Go program, for
# every board, and the monitoring agent (appliancekit/monitoring/agent) for images with
# [monitoring]; openssh-client's ssh-keygen signs the content tests' commits; s6: the
# monitoring agent's test runs it against a real s6-supervise on the host. lynis: the
# optional `audit --lynis` check.
# pebble: the test ACME CA of `cloud test`; uacme, curl, execline and s6 run the appliances'
# certificate scripts (recipes/*/acme/) on the host in tests/test_acme.py.
# nix-bin: Debian 12's is Nix 2.8, which the tests use to parse and evaluate rendered flakes.
# It cannot build them (nixpkgs needs Nix >= 2.18): see appliancekit/nixos/nixversion.py.
packages=(
  apt debian-archive-keyring gpgv ca-certificates
  python3 python3-venv python3-pip
  qemu-system-arm qemu-system-x86 qemu-efi-aarch64 qemu-efi-arm ovmf
  erofs-utils cryptsetup-bin fdisk dosfstools mtools e2fsprogs cpio kmod
  bmap-tools zstd xz-utils git make nix-bin
  device-tree-compiler busybox-static minisign golang-go
  pdns-server pdns-backend-sqlite3 sqlite3
  chromium chromium-driver
  openssh-client s6 lynis
  serf tmux
  pebble uacme curl execline
)
# Node.js and npm (sources/npm locks and fetches People's Cloud's packages): a machine that
# already has both commands (e.g. a vendor's nodejs package, which bundles npm and conflicts
# with Debian's npm package) keeps them; only a machine without them gets Debian's.
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  packages+=(nodejs npm)
fi
if [ "$extra" = bench ]; then
  packages+=(mmdebstrap qemu-user-static binfmt-support arch-test)
fi
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
  # pdns-server is for the tests, which start their own on loopback: the package's service
  # must not start (or take port 53) on this machine.
  policy=/usr/sbin/policy-rc.d
  own_policy=
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod 755 "$policy" && own_policy=1
  fi
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  if [ -n "$own_policy" ]; then rm -f "$policy"; fi
  if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
    systemctl disable --now pdns.service >/dev/null 2>&1 || true
  fi
fi

# QEMU 10 for the SD-card boards: Debian 12's QEMU 7.2 has no raspi4b model and its
# cubieboard cannot run U-Boot's SPL from the SD card. On bookworm it comes from
# bookworm-backports, added on the host's own Debian mirror; every other package stays on
# bookworm. qemu-system-x86 moves too: it must match qemu-system-common's version.
qemu_min="1:10"
qemu_now=$(dpkg-query -W -f='${Version}' qemu-system-arm 2>/dev/null || true)
# qemu-img (publish --to proxmox) comes with the same QEMU
img_now=$(dpkg-query -W -f='${Version}' qemu-utils 2>/dev/null || true)
if ! dpkg --compare-versions "${qemu_now:-0}" ge "$qemu_min" \
   || ! dpkg --compare-versions "${img_now:-0}" ge "$qemu_min"; then
  codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup-host: qemu-system-arm ${qemu_now:-missing} is older than $qemu_min (run as root to install it from $codename-backports)" >&2
    exit 2
  fi
  export DEBIAN_FRONTEND=noninteractive
  suite=""
  if [ "$codename" = bookworm ]; then
    suite="$codename-backports"
    list=/etc/apt/sources.list.d/appliancekit-backports.sources
    if [ ! -f "$list" ]; then
      mirror=$(apt-get indextargets --format '$(REPO_URI)' "Release: $codename" 'Created-By: Packages' | head -n1)
      [ -n "$mirror" ] || { echo "setup-host: no Debian $codename source to derive $suite from" >&2; exit 2; }
      printf 'Types: deb\nURIs: %s\nSuites: %s\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
        "$mirror" "$suite" > "$list"
    fi
  fi
  apt-get update -qq || apt-get update
  echo "setup-host: installing QEMU >= $qemu_min${suite:+ from $suite}"
  apt-get install -y -qq --no-install-recommends ${suite:+-t "$suite"} \
    qemu-system-arm qemu-system-x86 qemu-system-common qemu-system-data qemu-utils >/dev/null
fi

if [ "$extra" = bench ]; then
  # In a container binfmt_misc may be unmounted and binfmt-support's service is not started
  # (policy-rc.d): register the emulators of the boards' architectures (arm64, armhf) here.
  binfmt=/proc/sys/fs/binfmt_misc
  if [ ! -e "$binfmt/status" ]; then
    [ "$(id -u)" -eq 0 ] || { echo "setup-host: binfmt_misc is not mounted (run as root)" >&2; exit 2; }
    mount -t binfmt_misc binfmt_misc "$binfmt"
  fi
  for emulator in qemu-aarch64 qemu-arm; do
    if [ ! -e "$binfmt/$emulator" ]; then
      [ "$(id -u)" -eq 0 ] || { echo "setup-host: $emulator is not registered with binfmt_misc (run as root)" >&2; exit 2; }
      update-binfmts --enable "$emulator"
    fi
  done
fi

# The browser tests' WebDriver client reaches chromedriver as "localhost". A machine whose
# /etc/hosts is missing (a bare chroot or container) cannot resolve that name; Debian's
# installer writes this line, so it is added only where the name resolves to nothing.
if ! getent hosts localhost >/dev/null; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup-host: the name localhost does not resolve (add '127.0.0.1 localhost' to /etc/hosts)" >&2
    exit 2
  fi
  echo "setup-host: adding '127.0.0.1 localhost' to /etc/hosts (the name did not resolve)"
  printf '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n' >> /etc/hosts
fi
