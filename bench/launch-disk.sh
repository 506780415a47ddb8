#!/usr/bin/env bash
# Launch time and disk use of unprivileged containers: builds an image (busybox, or debian
# with IMAGE=debian) in a private vesseld, launches N containers one after another (the first
# launch of an image pays for anything made once per image or range), and prints each launch's
# wall time, then the disk use of images/ and instances/. Run it with BIN= pointing at the
# binaries of two versions to compare them. DISK=SIZE gives each a root disk of that size
# (-l disk=SIZE), in a pool with POOL=btrfs or POOL=dir (made first; a btrfs pool is a loop
# file of POOL_SIZE, 2GiB by default).
set -euo pipefail
die() { echo "error: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "benchmarks need root"
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN=${BIN:-$REPO/target/release}
IMAGE=${IMAGE:-busybox}
N=${N:-5}
DISK=${DISK:-}
POOL=${POOL:-}
POOL_SIZE=${POOL_SIZE:-2GiB}
for b in vessel vesseld vessel-monitor vessel-runc; do
  [ -x "$BIN/$b" ] || die "$BIN/$b missing: cargo build --release --workspace"
done
WORK=$(mktemp -d /tmp/vessel-launch.XXXXXX)
chmod 755 "$WORK"
SOCK=$WORK/vessel.sock
V() { "$BIN/vessel" --socket "$SOCK" "$@"; }
cleanup() {
  for i in $(seq 1 "$N"); do V delete --force "l$i" >/dev/null 2>&1 || true; done
  [ -n "$POOL" ] && V storage pool delete p >/dev/null 2>&1
  [ -n "${DPID:-}" ] && kill "$DPID" 2>/dev/null && wait "$DPID" 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT
VESSEL_LIBEXEC=$BIN "$BIN/vesseld" --root-dir "$WORK/root" --run-dir "$WORK/run" --socket "$SOCK" \
  >"$WORK/vesseld.log" 2>&1 &
DPID=$!
for _ in $(seq 1 100); do V info >/dev/null 2>&1 && break; sleep 0.1; done
V image build "$IMAGE" >/dev/null
alias=$IMAGE; [ "$IMAGE" = debian ] && alias=debian/bookworm
extra=()
[ -n "$DISK" ] && extra+=(-l "disk=$DISK")
case "$POOL" in
  "") ;;
  btrfs) V storage pool create p btrfs --size "$POOL_SIZE" >/dev/null; extra+=(--storage p) ;;
  dir) V storage pool create p dir >/dev/null; extra+=(--storage p) ;;
  *) die "POOL is btrfs or dir" ;;
esac
du_images_before=$(du -sx --block-size=1K "$WORK/root/images" | cut -f1)
for i in $(seq 1 "$N"); do
  s=$(date +%s%N)
  V launch "$alias" "l$i" "${extra[@]}" -- sleep 3600 >/dev/null
  e=$(date +%s%N)
  echo "launch $i: $(( (e - s) / 1000000 )) ms"
done
du_images=$(du -sx --block-size=1K "$WORK/root/images" | cut -f1)
du_instances=$(du -sx --block-size=1K "$WORK/root/instances" | cut -f1)
echo "images/ after the build: ${du_images_before} KiB; after $N launches: ${du_images} KiB"
echo "instances/ after $N launches: ${du_instances} KiB"
