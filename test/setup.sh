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
  for pair in ip:iproute2; do
    cmd=${pair%%:*}; pkg=${pair#*:}
    command -v "$cmd" >/dev/null 2>&1 || need+=("$pkg")
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
npx tsc -p tsconfig.json
