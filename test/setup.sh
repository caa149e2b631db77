#!/usr/bin/env bash
# Installs what the agent and its tests need on a fresh machine, then builds.
#   --npm-only   npm packages and the build only (enough for `npm run demo`)
# Debian packages are installed only when missing and only when running as root.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund --loglevel=error
fi
if [ "${1:-}" != "--npm-only" ]; then
  need=()
  # command:package pairs; add a pair when a test needs a new tool.
  for pair in ip:iproute2 tc:iproute2 arping:iputils-arping ping:iputils-ping tcpdump:tcpdump \
              qemu-system-x86_64:qemu-system-x86 qemu-img:qemu-utils ss:iproute2 busybox:busybox-static virsh:libvirt-clients libvirtd:libvirt-daemon-system \
              dpkg-deb:dpkg unshare:util-linux setpriv:util-linux systemd-analyze:systemd systemd-sysusers:systemd systemd-tmpfiles:systemd \
              chromium:chromium; do
    cmd=${pair%%:*}; pkg=${pair#*:}
    command -v "$cmd" >/dev/null 2>&1 || case " ${need[*]-} " in *" $pkg "*) ;; *) need+=("$pkg") ;; esac
  done
  if [ ${#need[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ]; then
      echo "setup: installing ${need[*]}" >&2
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
    else
      echo "setup: MISSING Debian packages ${need[*]} (not root, cannot install): tests that need them will fail loudly" >&2
    fi
  fi
fi
npx tsc -p tsconfig.build.json
node packaging/bundle-cli.mjs   # one file for the agent and the CLI: a faster start (packaging/bundle-cli.mjs)
