# Shared by the benchmarks: a busybox bundle usable by every OCI runtime.
set -euo pipefail
die() { echo "error: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "benchmarks need root"
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN=${BIN:-$REPO/target/release}
for b in vessel vesseld vessel-monitor vessel-runc; do
  [ -x "$BIN/$b" ] || die "$BIN/$b missing: cargo build --release --workspace"
done
# Binaries older than the sources would measure other code than the tree's.
if [ -z "${BENCH_ALLOW_STALE:-}" ] && [ -n "$(find "$REPO/crates" "$REPO/Cargo.lock" -newer "$BIN/vesseld" \( -name '*.rs' -o -name Cargo.toml -o -name Cargo.lock \) -print -quit)" ]; then
  die "$BIN is older than the sources: cargo build --release --workspace (or BENCH_ALLOW_STALE=1)"
fi
command -v bc >/dev/null || die "bc missing: apt-get install bc"

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

# interleave RUNS DIR NAME PREPARE COMMAND [NAME PREPARE COMMAND ...]
# Runs every COMMAND once per round, RUNS rounds (plus one warm-up round, not counted), in an
# order that rotates each round, so that load on the machine falls on all of them alike.
# PREPARE (may be ":") runs untimed before each COMMAND. Writes each run's seconds to
# DIR/times.NAME, prints "NAME  median ms (min, max)" per command and the ratio of the first
# command's median to each other's (below 1: the first is faster).
interleave() {
  local runs=$1 dir=$2; shift 2
  local names=() preps=() cmds=()
  while [ $# -gt 0 ]; do names+=("$1"); preps+=("$2"); cmds+=("$3"); shift 3; done
  local n=${#names[@]} r k i t0 t1
  for i in $(seq 0 $((n - 1))); do : > "$dir/times.${names[$i]}"; done
  for r in $(seq 0 "$runs"); do
    for k in $(seq 0 $((n - 1))); do
      i=$(( (k + r) % n ))
      bash -c "${preps[$i]}" >/dev/null 2>"$dir/prep.${names[$i]}" \
        || die "preparing ${names[$i]} failed: $(tail -c 400 "$dir/prep.${names[$i]}")"
      t0=$(date +%s%N)
      bash -c "${cmds[$i]}" >/dev/null 2>"$dir/err.${names[$i]}" \
        || die "${names[$i]} failed in round $r: $(tail -c 400 "$dir/err.${names[$i]}")"
      t1=$(date +%s%N)
      [ "$r" = 0 ] || echo "scale=6; ($t1 - $t0) / 1000000000" | bc >> "$dir/times.${names[$i]}"
    done
  done
  local base
  base=$(bench_median "$dir/times.${names[0]}")
  for i in $(seq 0 $((n - 1))); do
    sort -n "$dir/times.${names[$i]}" | awk -v name="${names[$i]}" '{a[NR]=$1} END {
      m = (NR % 2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2
      printf "%s\t%.1f ms median\t(min %.1f, max %.1f; %d rounds)\n", name, m*1000, a[1]*1000, a[NR]*1000, NR }'
  done
  for i in $(seq 1 $((n - 1))); do
    echo "${names[0]} / ${names[$i]} = $(echo "scale=2; $base / $(bench_median "$dir/times.${names[$i]}")" | bc)"
  done
}

# bench_median FILE: the median of the numbers in FILE, one per line.
bench_median() {
  sort -n "$1" | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'
}
