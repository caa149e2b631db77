#!/usr/bin/env bash
# Builds the Debian package starling_<version>_<arch>.deb with dpkg-deb, from the compiled agent
# (dist/, built by `npm run build`) and the production node_modules, pruned from the installed
# node_modules (no network).
#   bash packaging/deb/build.sh [--version V] [--out DIR]
# --version defaults to package.json's version, --out to the repository's root.
# Installed layout:
#   /opt/starling/{package.json,dist/agent (with agent/web),dist/policies,node_modules,data/planetlab,systemd/}
#   /usr/bin/starling                        wrapper: node /opt/starling/dist/agent/cli/starling.js
#   /usr/lib/systemd/system/starling.service the unit (its ExecStart runs /opt/starling/dist/...)
#   /usr/lib/sysusers.d/starling.conf        the user and its groups
#   /usr/lib/tmpfiles.d/starling.conf        /etc/starling and /var/lib/starling, owners and modes
#   /etc/starling/starling.json              the example configuration, a conffile
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
version=""; out="$root"
while [ $# -gt 0 ]; do
  case "$1" in
    --version) version="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    *) echo "usage: build.sh [--version V] [--out DIR]" >&2; exit 2 ;;
  esac
done
for tool in dpkg-deb dpkg node npm; do
  command -v "$tool" >/dev/null || { echo "build.sh: $tool is missing (Debian package: ${tool%%-*})" >&2; exit 1; }
done
[ -n "$version" ] || version="$(node -p "require('$root/package.json').version")"
arch="$(dpkg --print-architecture)"
# prebuilt native addons are kept for this platform only (node-gyp-build's prebuilds/<platform>-<arch>)
node_arch="$(node -p process.arch)"
[ -f "$root/dist/agent/cli/starling.js" ] || { echo "build.sh: dist/ is missing: run npm run build first" >&2; exit 1; }
[ -d "$root/node_modules" ] || { echo "build.sh: node_modules is missing: run npm ci first" >&2; exit 1; }

stage="$(mktemp -d "${TMPDIR:-/tmp}/starling-deb.XXXXXX")"
trap 'rm -rf "$stage"' EXIT
pkg="$stage/pkg"
app="$pkg/opt/starling"
mkdir -p "$app/dist" "$pkg/DEBIAN"

# The compiled agent: only the .js files whose .ts source still exists (dist/ may hold files
# of sources since removed), no source maps; and the chunks of the bundled CLI beside its entry
# (packaging/bundle-cli.mjs: dist/agent/cli/starling.js is the bundle's entry).
(cd "$root/dist" && find agent policies -name '*.js' -type f) | while read -r f; do
  if [ -f "$root/${f%.js}.ts" ]; then install -D -m 0644 "$root/dist/$f" "$app/dist/$f"; fi
done
head -c 200 "$root/dist/agent/cli/starling.js" | grep -q 'bundled by packaging/bundle-cli.mjs' \
  || { echo "build.sh: dist/agent/cli/starling.js is not the bundle: run npm run build" >&2; exit 1; }
install -m 0644 "$root"/dist/agent/cli/bundle-*.js "$app/dist/agent/cli/"
# The web page every agent serves (plain files; web-view.ts finds them in dist/agent/web).
install -d "$app/dist/agent/web"
install -m 0644 "$root"/agent/web/index.html "$root"/agent/web/app.js "$root"/agent/web/style.css "$app/dist/agent/web/"
cp "$root/package.json" "$root/package-lock.json" "$app/"   # package.json: "type": "module" for dist/
# Production node_modules, never from the network: `npm ci --omit=dev --offline` from npm's
# cache (which `npm ci` filled), or, when the cache lacks a package (or STARLING_DEB_MODULES=copy),
# a copy of the installed tree with the devDependencies pruned. No install scripts run: the
# native addons are the prebuilt ones of their npm packages.
npm_flags=(--omit=dev --offline --ignore-scripts --no-audit --no-fund --loglevel=error)
if [ "${STARLING_DEB_MODULES:-ci}" = copy ] || ! (cd "$app" && npm ci "${npm_flags[@]}" >/dev/null 2>&1); then
  [ "${STARLING_DEB_MODULES:-ci}" = copy ] || echo "build.sh: npm ci --offline failed (npm cache incomplete?): copying node_modules and pruning it" >&2
  rm -rf "$app/node_modules" && mkdir "$app/node_modules"
  cp -a "$root/node_modules/." "$app/node_modules/"   # the contents, also when node_modules is a symlink
  [ ! -L "$app/node_modules" ] || { echo "build.sh: staging node_modules is a symlink" >&2; exit 1; }
  (cd "$app" && npm prune "${npm_flags[@]}" >/dev/null)
  find "$app/node_modules" -mindepth 1 -maxdepth 1 -type d -name '@*' -empty -delete   # scopes prune emptied
fi
find "$app/node_modules" -type d -path '*/prebuilds/*' ! -path '*/prebuilds/*/*' \
  ! -name "linux-$node_arch" -prune -exec rm -rf {} +
rm -rf "$app/node_modules/.cache" "$app/node_modules/.package-lock.json" "$app/package-lock.json"
node -e 'const f = process.argv[1]; const p = JSON.parse(require("fs").readFileSync(f, "utf8")); p.version = process.argv[2]; require("fs").writeFileSync(f, JSON.stringify(p, null, 2) + "\n")' "$app/package.json" "$version"
# `starling sim` reads the PlanetLab days next to dist/
mkdir -p "$app/data"
cp -r "$root/data/planetlab" "$app/data/"
install -D -m 0644 "$root/systemd/starling.example.md" "$app/systemd/starling.example.md"
install -D -m 0644 "$root/systemd/starling.example.json" "$app/systemd/starling.example.json"

install -D -m 0755 "$here/starling.sh" "$pkg/usr/bin/starling"
install -D -m 0644 "$root/systemd/starling.service" "$pkg/usr/lib/systemd/system/starling.service"
install -D -m 0644 "$root/systemd/starling.sysusers.conf" "$pkg/usr/lib/sysusers.d/starling.conf"
install -D -m 0644 "$root/systemd/starling.tmpfiles.conf" "$pkg/usr/lib/tmpfiles.d/starling.conf"
install -D -m 0644 "$root/systemd/starling.example.json" "$pkg/etc/starling/starling.json"
install -D -m 0644 "$here/copyright" "$pkg/usr/share/doc/starling/copyright"

for s in postinst prerm postrm; do install -m 0755 "$here/$s" "$pkg/DEBIAN/$s"; done
echo /etc/starling/starling.json > "$pkg/DEBIAN/conffiles"
size="$(du -sk --exclude=DEBIAN "$pkg" | cut -f1)"
sed -e "s/@VERSION@/$version/" -e "s/@ARCH@/$arch/" -e "s/@SIZE@/$size/" "$here/control" > "$pkg/DEBIAN/control"
# files and directories: root-owned, no group or world write
chmod -R u+rwX,go+rX,go-w "$pkg"

mkdir -p "$out"
deb="$out/starling_${version}_${arch}.deb"
# xz level: 6 (dpkg-deb's default); STARLING_DEB_XZ_LEVEL=1 builds faster and about 15 % bigger (the test uses it)
dpkg-deb --root-owner-group -Zxz -z"${STARLING_DEB_XZ_LEVEL:-6}" --build "$pkg" "$deb" >/dev/null
echo "$deb"
