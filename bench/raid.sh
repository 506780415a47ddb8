#!/usr/bin/env bash
# RAID engine throughput: vessel_raid::RaidArray at RAID 0, 1, 5 and 6 over MEMBERS member
# files against the raw files driven with the same access patterns, same run (the driver is
# crates/vessel-raid/examples/raid-bench.rs; its header says what each figure is divided
# by). O_DIRECT on both sides, flush/fdatasync inside the timed region of every write test.
# Prints a table of ratios; the JSON goes to $JSON if set, else to stdout before the table.
set -euo pipefail
die() { echo "error: $*" >&2; exit 1; }
REPO=$(cd "$(dirname "$0")/.." && pwd)
MEMBERS=${MEMBERS:-4}
MEMBER_MIB=${MEMBER_MIB:-256}
CHUNK_KIB=${CHUNK_KIB:-64}
LEVELS=${LEVELS:-0,1,5,6}
RUNS=${RUNS:-3}
RAND_SECS=${RAND_SECS:-2}
THREADS=${THREADS:-4}
DIR=${DIR:-/var/tmp}

[ "$(id -u)" = 0 ] || die "run as root: the driver drops the page cache if O_DIRECT is refused"
command -v cargo >/dev/null || die "cargo missing: the driver is a Rust example (rustup or apt-get install cargo)"
[ -d "$DIR" ] || die "$DIR does not exist"
fstype=$(findmnt -n -o FSTYPE -T "$DIR")
[ "$fstype" = tmpfs ] && echo "warning: $DIR is tmpfs: members measure memory, not a disk" >&2
need=$((2 * MEMBERS * MEMBER_MIB * 11 / 10))
avail=$(df -Pm "$DIR" | awk 'NR == 2 {print $4}')
[ "$avail" -ge "$need" ] || die "$DIR has $avail MiB free, the member and raw files need $need MiB"

# Build first, so the compiler does not run inside any timed region.
(cd "$REPO" && cargo build --release -q -p vessel-raid --example raid-bench) \
  || die "cargo build --release -p vessel-raid --example raid-bench failed"
BENCH=$REPO/target/release/examples/raid-bench

WORK=$(mktemp -d "$DIR/vessel-raidbench.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
echo "$MEMBERS members of $MEMBER_MIB MiB on $DIR ($fstype, $(findmnt -n -o SOURCE -T "$DIR")), chunk $CHUNK_KIB KiB, $RUNS runs, random tests $RAND_SECS s with 1 and $THREADS threads; $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg)" >&2
"$BENCH" --dir "$WORK" --members "$MEMBERS" --member-mib "$MEMBER_MIB" --chunk-kib "$CHUNK_KIB" \
  --levels "$LEVELS" --runs "$RUNS" --rand-secs "$RAND_SECS" --threads "$THREADS" \
  ${JSON:+--json "$JSON"}
