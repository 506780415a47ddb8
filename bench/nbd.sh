#!/usr/bin/env bash
# NBD export throughput: Vessel's NBD server against qemu-nbd and nbdkit serving the same
# image file to the same client (nbdcopy), same run. Reads the whole export to /dev/null and
# writes a whole image into it.
. "$(dirname "$0")/lib.sh"
RUNS=${RUNS:-6}
SIZE_MB=${SIZE_MB:-256}
for t in qemu-nbd nbdkit nbdcopy; do
  command -v "$t" >/dev/null || die "$t missing: apt-get install qemu-utils nbdkit libnbd-bin"
done
WORK=$(mktemp -d /tmp/vessel-nbdbench.XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done; wait 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT
head -c "$((SIZE_MB << 20))" /dev/urandom > "$WORK/source.img"
for s in vessel qemu nbdkit; do cp "$WORK/source.img" "$WORK/$s.img"; done
"$BIN/vessel-nbd" --socket "$WORK/vessel.sock" "disk=$WORK/vessel.img" & PIDS+=($!)
qemu-nbd -f raw -x disk --socket="$WORK/qemu.sock" --persistent --shared=8 \
  "$WORK/qemu.img" & PIDS+=($!)
nbdkit -f -U "$WORK/nbdkit.sock" -e disk file "$WORK/nbdkit.img" & PIDS+=($!)
for s in vessel qemu nbdkit; do
  for _ in $(seq 1 100); do [ -S "$WORK/$s.sock" ] && break; sleep 0.1; done
done
uri() { echo "nbd+unix:///disk?socket=$WORK/$1.sock"; }
hyperfine -N --warmup 1 --runs "$RUNS" --export-json "$WORK/read.json" \
  -n vessel "nbdcopy $(uri vessel) null:" -n qemu-nbd "nbdcopy $(uri qemu) null:" \
  -n nbdkit "nbdcopy $(uri nbdkit) null:" >&2
hyperfine -N --warmup 1 --runs "$RUNS" --export-json "$WORK/write.json" \
  -n vessel "nbdcopy $WORK/source.img $(uri vessel)" -n qemu-nbd "nbdcopy $WORK/source.img $(uri qemu)" \
  -n nbdkit "nbdcopy $WORK/source.img $(uri nbdkit)" >&2
for f in read write; do
  jq -r --arg f "$f" --argjson mb "$SIZE_MB" '.results as $r |
    ($r[] | "\($f)\t\(.command)\t\(.median*1000|round) ms\t\($mb / .median | round) MB/s"),
    "\($f)\tvessel / qemu-nbd = \(($r[0].median / $r[1].median)*100|round/100)\tvessel / nbdkit = \(($r[0].median / $r[2].median)*100|round/100)"' "$WORK/$f.json"
done
