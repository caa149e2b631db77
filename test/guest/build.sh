#!/usr/bin/env bash
# Builds the test guest into test/.cache/guest/: a Debian kernel (vmlinuz) and an initramfs
# (initramfs.cpio) holding busybox and the dirtier program (with its disk checker for a virtio
# disk, virtio_blk), and a small web server when the
# guest has a NIC (virtio-net; eth0 at 10.0.2.15/24, QEMU user networking's default guest
# address, serving / on port 80 with a token made at boot). Idempotent: does nothing when the
# cache is up to date (the stamp covers this script and dirtier.c). Needs Debian packages only:
# apt (for the kernel package), gcc with a static libc, busybox-static. Prints the cache dir.
#   --force   rebuild the initramfs even when the stamp matches
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
out=${GUEST_CACHE_DIR:-$root/test/.cache/guest}
mkdir -p "$out"

stamp=$(cat "$here/build.sh" "$here/dirtier.c" | sha256sum | cut -c1-16)
if [ "${1:-}" != "--force" ] && [ -s "$out/vmlinuz" ] && [ -s "$out/initramfs.cpio" ] \
   && [ "$(cat "$out/stamp" 2>/dev/null)" = "$stamp" ]; then
  echo "$out"
  exit 0
fi

# Tools: gcc with a static libc (libc6-dev), busybox-static. Installed when missing and root.
missing=()
command -v gcc >/dev/null 2>&1 || missing+=(gcc)
[ -e /usr/lib/x86_64-linux-gnu/libc.a ] || [ -e /usr/lib/libc.a ] || missing+=(libc6-dev)
command -v busybox >/dev/null 2>&1 || missing+=(busybox-static)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "guest build: missing Debian packages ${missing[*]} (not root, cannot install)" >&2
    exit 1
  fi
  echo "guest build: installing ${missing[*]}" >&2
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi
command -v dpkg-deb >/dev/null 2>&1 || { echo "guest build: dpkg-deb missing: not a Debian system?" >&2; exit 1; }

tmp=$(mktemp -d "${TMPDIR:-/tmp}/guest-build.XXXXXX")
chmod 0755 "$tmp" # apt-get download drops to the _apt user
trap 'rm -rf "$tmp"' EXIT

# 1. The kernel: the versioned package that linux-image-amd64 depends on, unpacked without
#    installing it. Only /boot, the virtio modules and virtio-net (with failover and
#    net_failover, which it needs) are taken from it.
if [ ! -s "$out/vmlinuz" ] || [ ! -d "$out/modules" ] || ! ls "$out"/modules/virtio_net.ko* >/dev/null 2>&1 \
   || ! ls "$out"/modules/virtio_blk.ko* >/dev/null 2>&1; then
  kpkg() { apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ { print $2; exit }'; }
  pkg=$(kpkg || true)
  if [ -z "$pkg" ]; then
    [ "$(id -u)" = 0 ] || { echo "guest build: apt lists lack linux-image-amd64 and we are not root to run apt-get update" >&2; exit 1; }
    apt-get update -qq >&2
    pkg=$(kpkg)
  fi
  [ -n "$pkg" ] || { echo "guest build: cannot resolve the kernel package behind linux-image-amd64" >&2; exit 1; }
  mkdir -p "$tmp/dl" && chmod 0777 "$tmp/dl"
  if ! (cd "$tmp/dl" && apt-get download -q "$pkg" >&2); then
    [ "$(id -u)" = 0 ] || { echo "guest build: apt-get download $pkg failed" >&2; exit 1; }
    apt-get update -qq >&2
    (cd "$tmp/dl" && apt-get download -q "$pkg" >&2)
  fi
  deb=$(ls "$tmp"/dl/*.deb | head -n1)
  mkdir -p "$tmp/k"
  # dpkg-deb -x would write the whole package (hundreds of MiB of modules); take what we use.
  dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$tmp/k" --wildcards './boot/vmlinuz-*' './lib/modules/*/kernel/drivers/virtio/*' \
    './lib/modules/*/kernel/drivers/net/virtio_net.ko*' './lib/modules/*/kernel/drivers/block/virtio_blk.ko*' './lib/modules/*/kernel/drivers/net/net_failover.ko*' './lib/modules/*/kernel/net/core/failover.ko*'
  rm -rf "$out/modules"
  mkdir -p "$out/modules"
  find "$tmp/k/lib/modules" -name '*.ko*' -exec cp {} "$out/modules/" \;
  cp "$tmp"/k/boot/vmlinuz-* "$out/vmlinuz.new"
  mv "$out/vmlinuz.new" "$out/vmlinuz"
  echo "$pkg" > "$out/kernel-package"
fi

# 1b. The same kernel uncompressed (vmlinux, an ELF with a PVH entry note), when it can be had:
#    QEMU then enters the kernel directly (PVH boot), with no firmware real-mode setup and no
#    decompression, which under TCG is most of a boot (measured here: 9.5 s to the guest's first
#    HTTP answer from vmlinuz, 5.5 s from vmlinux). guest.ts picks vmlinux when it exists.
if [ ! -s "$out/vmlinux" ] || [ "$out/vmlinux" -ot "$out/vmlinuz" ]; then
  rm -f "$out/vmlinux"
  # bzImage = setup code + a compressed ELF; find the payload by its magic and unpack it.
  for fmt in 'xz:\xfd7zXZ\x00:xz -dc' 'zstd:\x28\xb5\x2f\xfd:zstd -dcq' 'gzip:\x1f\x8b\x08:gzip -dc'; do
    name=${fmt%%:*}; rest=${fmt#*:}; magic=${rest%%:*}; cmd=${rest#*:}
    command -v "${cmd%% *}" >/dev/null 2>&1 || continue
    off=$(LC_ALL=C grep -obUaP "$magic" "$out/vmlinuz" 2>/dev/null | head -n1 | cut -d: -f1 || true)
    [ -n "$off" ] || continue
    if tail -c +$((off + 1)) "$out/vmlinuz" | $cmd > "$out/vmlinux.new" 2>/dev/null || [ -s "$out/vmlinux.new" ]; then
      if head -c 4 "$out/vmlinux.new" | grep -q 'ELF' && readelf -n "$out/vmlinux.new" 2>/dev/null | grep -q '0x00000012'; then
        mv "$out/vmlinux.new" "$out/vmlinux"; echo "guest build: PVH kernel unpacked ($name)" >&2; break
      fi
    fi
    rm -f "$out/vmlinux.new"
  done
  [ -s "$out/vmlinux" ] || echo "guest build: no PVH-bootable vmlinux could be unpacked; guests boot the slower bzImage" >&2
fi

# 2. The initramfs: busybox, the dirtier as PID 1's child, virtio modules for the balloon, the
#    disk and the NIC.
ir="$tmp/initramfs"
mkdir -p "$ir"/{bin,dev,proc,sys,lib/modules}
cp "$(command -v busybox)" "$ir/bin/busybox"
gcc -static -O2 -Wall -o "$ir/bin/dirtier" "$here/dirtier.c"
cp "$out"/modules/*.ko* "$ir/lib/modules/" 2>/dev/null || true
cat > "$ir/init" <<'INIT'
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
# The balloon driver, when the kernel has it as a module (order: dependencies first; virtio
# needs virtio_ring's symbols, so virtio_ring comes first).
for m in virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci virtio_balloon virtio_blk; do
  for f in /lib/modules/$m.ko*; do [ -e "$f" ] && insmod "$f" 2>/dev/null; done
done
# A NIC, when QEMU gave the guest one: virtio-net needs failover and net_failover first. The
# address is QEMU user networking's default for its guest; httpd serves a token made at this
# boot, so that a client can tell the guest answered (and which boot of it).
for m in failover net_failover virtio_net; do
  for f in /lib/modules/$m.ko*; do [ -e "$f" ] && insmod "$f" 2>/dev/null; done
done
if [ -e /sys/class/net/eth0 ]; then
  ip link set lo up
  ip link set eth0 up
  ip addr add 10.0.2.15/24 dev eth0
  ip route add default via 10.0.2.2
  mkdir -p /www
  echo "starling-test-guest boot $(cat /proc/sys/kernel/random/uuid)" > /www/index.html
  httpd -p 80 -h /www
fi
exec /bin/dirtier
INIT
chmod 0755 "$ir/init"
(cd "$ir" && find . | busybox cpio -o -H newc 2>/dev/null) > "$out/initramfs.cpio.new"
mv "$out/initramfs.cpio.new" "$out/initramfs.cpio"
echo "$stamp" > "$out/stamp"
echo "$out"
