# Shared by the benchmarks: a busybox bundle usable by every OCI runtime.
set -euo pipefail
die() { echo "error: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "benchmarks need root"
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN=${BIN:-$REPO/target/release}
for b in vessel vesseld vessel-monitor vessel-runc; do
  [ -x "$BIN/$b" ] || die "$BIN/$b missing: cargo build --release --workspace"
done
command -v hyperfine >/dev/null || die "hyperfine missing: apt-get install hyperfine"

# make_bundle DIR: a busybox root file system and a runc-generated config running `true`.
make_bundle() {
  local dir=$1
  mkdir -p "$dir/rootfs/bin" "$dir/rootfs/proc" "$dir/rootfs/sys" "$dir/rootfs/dev" "$dir/rootfs/tmp"
  cp /bin/busybox "$dir/rootfs/bin/busybox"
  for a in sh true sleep; do ln -sf busybox "$dir/rootfs/bin/$a"; done
  (cd "$dir" && rm -f config.json && runc spec)
  jq '.process.terminal = false | .process.args = ["/bin/true"]' "$dir/config.json" > "$dir/c.json"
  mv "$dir/c.json" "$dir/config.json"
}
