#!/usr/bin/env bash
# Assembles ui/dist/ (what vesseld serves at /ui/) from ui/src/ and the vendor files of
# node_modules. Installs node_modules from package-lock.json when missing or stale; after
# that it works offline.
set -euo pipefail
cd "$(dirname "$0")"

installed="node_modules up to date"
stamp=node_modules/.package-lock.json
if [ ! -f "$stamp" ] || [ package-lock.json -nt "$stamp" ]; then
  npm ci --no-audit --no-fund --loglevel=error >/dev/null
  touch "$stamp"
  installed="npm ci done"
fi

nm=node_modules
rm -rf dist
mkdir -p dist/vendor/xterm dist/vendor/novnc/vendor
cp -R src/. dist/

# xterm.js and its fit addon: ES modules as shipped, renamed .js (served as text/javascript
# like every other module here), without their source-map comments (the maps are not copied).
strip_map() { sed -e '/^\/\/# sourceMappingURL=/d' "$1" > "$2"; }
strip_map "$nm/@xterm/xterm/lib/xterm.mjs" dist/vendor/xterm/xterm.js
strip_map "$nm/@xterm/addon-fit/lib/addon-fit.mjs" dist/vendor/xterm/addon-fit.js
cp "$nm/@xterm/xterm/css/xterm.css" dist/vendor/xterm/xterm.css
cp "$nm/@xterm/xterm/LICENSE" dist/vendor/xterm/LICENSE

# noVNC ships browser ES modules: core/ imports ../vendor/pako/, so both keep their layout.
cp -R "$nm/@novnc/novnc/core" dist/vendor/novnc/core
cp -R "$nm/@novnc/novnc/vendor/pako" dist/vendor/novnc/vendor/pako
cp "$nm/@novnc/novnc/LICENSE.txt" dist/vendor/novnc/LICENSE.txt
find dist/vendor/novnc -name '*.md' -delete

files=$(find dist -type f | wc -l)
size=$(du -sk dist | cut -f1)
echo "ui/build.sh: $installed; dist/ assembled from src/ + xterm $(node -p "require('./$nm/@xterm/xterm/package.json').version"), addon-fit $(node -p "require('./$nm/@xterm/addon-fit/package.json').version"), noVNC $(node -p "require('./$nm/@novnc/novnc/package.json').version") ($files files, ${size} KiB)"
