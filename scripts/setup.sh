#!/usr/bin/env bash
# Installs what Lamina needs on a fresh Debian machine (run as root): FUSE, the
# squashfs tools and library, runc, a static busybox for the sample image, and
# cargo-nextest for the test suite; opens FUSE to unprivileged users (rootless)
# and turns on FUSE over io_uring where the kernel has it.
# Safe to run again.
set -euo pipefail
packages=(fuse3 libsquashfs-dev libclang-dev pkg-config squashfs-tools squashfs-tools-ng runc busybox-static attr btrfs-progs e2fsprogs podman fuse-overlayfs squashfuse)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
modprobe overlay 2>/dev/null || true
modprobe fuse 2>/dev/null || true
# Rootless FUSE as on a stock distribution: udev makes /dev/fuse 0666 (fusermount3
# opens it as the calling user); user_allow_other lets an unprivileged user's
# mounts be reached by other uids (a runtime, the test suite running as root).
if [ -c /dev/fuse ] && [ "$(stat -c %a /dev/fuse)" != 666 ]; then
  chmod 0666 /dev/fuse
fi
if [ -f /etc/fuse.conf ] && ! grep -qx 'user_allow_other' /etc/fuse.conf; then
  echo user_allow_other >> /etc/fuse.conf
fi
# FUSE over io_uring (Linux 6.14+, off by default): Lamina's FUSE daemons then
# answer each request on the CPU that asked, instead of waking a thread on
# another one. Takes effect for mounts made from now on.
if [ -w /sys/module/fuse/parameters/enable_uring ] && [ "$(cat /sys/module/fuse/parameters/enable_uring)" != Y ]; then
  echo Y > /sys/module/fuse/parameters/enable_uring
fi
if ! command -v cargo-nextest >/dev/null 2>&1 && ! cargo nextest --version >/dev/null 2>&1; then
  echo "setup: installing cargo-nextest"
  cargo install --locked cargo-nextest
fi
