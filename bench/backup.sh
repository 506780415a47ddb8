#!/usr/bin/env bash
# Backups: Vessel's backup store (crates/vessel-backup, driven by its example
# crates/vessel-backup/examples/vbackup.rs) against restic, borg, GNU tar | zstd and qemu-img,
# on the same data in the same run, rounds interleaved (each round runs every tool once, the
# order rotating from round to round, so load and cache drift fall on all alike).
# - tree: a copy of parts of /usr (TREE_SRC, ~1.3 GB in ~35k files) backed up three times into
#   a fresh repository: first; again, unchanged; again after 10 % of its files changed (every
#   10th regular file in name order has up to 4 KiB in its middle rewritten in place with
#   bytes derived from its name). Then the repository's size, then the third backup restored
#   into a new directory (checked against the source in the first round). Peers: restic
#   (repository v2, compression "auto", i.e. zstd; always encrypted: an empty password with
#   --insecure-no-password where this restic has it, else a fixed one),
#   borg 1.2 (`-e none`, its default lz4), GNU tar --listed-incremental | zstd -T0 (level 3:
#   a full archive, then two incremental ones; a restore extracts all three).
# - disk: a DISK_SIZE raw image with an ext4 file system holding DISK_SRC (~1.1 GB) and holes;
#   its change is what rewriting 10 % of those files (as above) in the mounted file system
#   did to the image, captured once as a block patch so that every tool sees the same bytes.
#   Peers: restic, borg, qemu-img (qcow2, uncompressed: a full `convert`, then for each later
#   backup an overlay filled by a safe `qemu-img rebase` onto the one before, which writes the
#   clusters that differ from it; a restore converts the chain back to raw).
# - chunks: our store alone with each FastCDC average in AVGS (CHUNK_RUNS rounds): the tree's
#   first backup, unchanged, 10 % changed, and the store's size after the three.
# PARTS picks among tree, disk and chunks (all three: about 10 minutes on 2 idle cores).
# VBACKUP=PATH runs another build of the example instead of building this tree's.
# Every timed command ends with a syncfs of the work directory's file system (ours makes one
# itself; for the others it is added), after an untimed one, so that each tool pays for its
# own writes reaching the disk. Caches are warm and nothing is dropped: the data is copied
# just before the rounds and the machine's memory holds all of it.
# Prints tables of medians and ratios; RESULTS=FILE keeps every measurement (TSV: part, tool,
# measure, round, seconds or bytes), written as they come.
set -euo pipefail
die() { echo "error: $*" >&2; exit 1; }
REPO=$(cd "$(dirname "$0")/.." && pwd)
RUNS=${RUNS:-2}
CHUNK_RUNS=${CHUNK_RUNS:-2}
PARTS=${PARTS:-tree disk chunks}
DIR=${DIR:-/var/tmp}
TREE_SRC=${TREE_SRC:-/usr/lib/x86_64-linux-gnu /usr/lib/python3 /usr/lib/python3.11 /usr/share/doc /usr/share/man}
DISK_SRC=${DISK_SRC:-/usr/lib/jvm /usr/lib/llvm-14 /usr/share/locale}
DISK_SIZE=${DISK_SIZE:-2G}
AVGS=${AVGS:-262144 1048576 4194304}

[ "$(id -u)" = 0 ] || die "run as root: the disk image's file system is filled and changed through a loop mount"
for t in restic borg zstd tar qemu-img mkfs.ext4 python3 bc; do
  command -v "$t" >/dev/null \
    || die "$t missing: apt-get install restic borgbackup zstd tar qemu-utils e2fsprogs python3 bc"
done
for s in $TREE_SRC $DISK_SRC; do [ -d "$s" ] || die "$s missing: set TREE_SRC and DISK_SRC"; done
avail=$(df -Pm "$DIR" | awk 'NR == 2 {print $4}')
[ "$avail" -ge 12000 ] || die "$DIR has $avail MiB free; the data, stores and restores need 12000"

# Build first, so that the compiler does not run inside any timed region.
if [ -z "${VBACKUP:-}" ]; then
  (cd "$REPO" && cargo build --release -q -p vessel-backup --example vbackup) \
    || die "cargo build --release -p vessel-backup --example vbackup failed"
  VBACKUP=$REPO/target/release/examples/vbackup
fi
VB=$VBACKUP

WORK=$(mktemp -d "$DIR/vessel-backupbench.XXXXXX")
cleanup() {
  mountpoint -q "$WORK/mnt" 2>/dev/null && umount "$WORK/mnt"
  rm -rf "$WORK"
}
trap cleanup EXIT
# restic always encrypts; it takes an empty password only with --insecure-no-password (0.17 on),
# so older versions get a fixed one.
if restic --help 2>/dev/null | grep -q -- --insecure-no-password; then
  RESTIC_NOPW=--insecure-no-password; unset RESTIC_PASSWORD
else
  RESTIC_NOPW=; export RESTIC_PASSWORD=vessel-bench
fi
export RESTIC_CACHE_DIR=$WORK/cache/restic
export BORG_BASE_DIR=$WORK/cache/borg BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK=yes
DATA=$WORK/data IMG=$WORK/img/disk.raw R=$WORK/repo T=$WORK/restore LOG=$WORK/log
RES=${RESULTS:-$WORK/results.tsv}
: > "$RES"
mkdir -p "$WORK/img" "$WORK/mnt"

# Changes made in place and undone: a plan holds (path, offset, old bytes, new bytes).
cat > "$WORK/mutate.py" <<'PY'
import hashlib, os, pickle, sys
def noise(seed, n):
    out, i = b"", 0
    while len(out) < n:
        out += hashlib.sha256(seed + i.to_bytes(8, "little")).digest(); i += 1
    return out[:n]
def plan_tree(root):
    files = []
    for d, dirs, names in os.walk(root):
        for n in names:
            p = os.path.join(d, n)
            if os.path.isfile(p) and not os.path.islink(p) and os.path.getsize(p) > 0:
                files.append(os.path.relpath(p, root))
    files.sort()
    plan = []
    for rel in files[::10]:
        size = os.path.getsize(os.path.join(root, rel))
        n = min(4096, size); off = (size - n) // 2
        with open(os.path.join(root, rel), "rb") as f:
            f.seek(off); old = f.read(n)
        plan.append((rel, off, old, noise(rel.encode(), n)))
    return plan, len(files)
def plan_diff(orig, changed):  # 4 KiB blocks that differ between two images
    plan, B = [], 1 << 20
    with open(orig, "rb") as a, open(changed, "rb") as b:
        off = 0
        while True:
            x, y = a.read(B), b.read(B)
            if not x: break
            if x != y:
                for i in range(0, len(x), 4096):
                    if x[i:i + 4096] != y[i:i + 4096]:
                        plan.append((os.path.basename(orig), off + i, x[i:i + 4096], y[i:i + 4096]))
            off += len(x)
    return plan
def write(root, plan, new):
    for rel, off, old, nb in plan:
        fd = os.open(os.path.join(root, rel), os.O_WRONLY)
        try: os.pwrite(fd, nb if new else old, off)
        finally: os.close(fd)
cmd = sys.argv[1]
if cmd == "plan-tree":
    plan, n = plan_tree(sys.argv[2])
    pickle.dump(plan, open(sys.argv[3], "wb"))
    print(f"{len(plan)} of {n} files, {sum(len(p[2]) for p in plan)} bytes")
elif cmd == "plan-diff":
    plan = plan_diff(sys.argv[2], sys.argv[3])
    pickle.dump(plan, open(sys.argv[4], "wb"))
    print(f"{len(plan)} blocks of 4 KiB, {len(plan) * 4096} bytes")
elif cmd in ("apply", "revert"):
    write(sys.argv[2], pickle.load(open(sys.argv[3], "rb")), cmd == "apply")
PY
mutate() { python3 "$WORK/mutate.py" "$@"; }
# manifest DIR: one checksum of every file's content, link target and directory name.
manifest() {
  (cd "$1" && { find . -type f -print0 | sort -z | xargs -0 -r md5sum
                find . -type l -printf '%p -> %l\n' | sort; find . -type d | sort; } | md5sum)
}

echo "tools: vessel-backup ($VB), $(restic version | cut -d' ' -f1-2), $(borg --version), $(tar --version | head -1), $(zstd --version | sed 's/\*//g; s/,.*//'), $(qemu-img --version | head -1)" >&2
echo "machine: $(nproc) CPUs, $(free -g | awk '/Mem:/ {print $2}') GiB, $DIR on $(findmnt -n -o FSTYPE,SOURCE -T "$DIR"), load $(cut -d' ' -f1-3 /proc/loadavg)" >&2

# The data, made once.
for p in $PARTS; do case $p in tree|chunks) need_tree=1 ;; disk) need_disk=1 ;; *) die "PARTS: tree disk chunks" ;; esac; done
if [ -n "${need_tree:-}" ]; then
  for s in $TREE_SRC; do mkdir -p "$DATA$(dirname "$s")"; cp -a "$s" "$DATA$(dirname "$s")/"; done
  TREE_BYTES=$(find "$DATA" -type f -printf '%i %s\n' | sort -u | awk '{s += $2} END {print s}')
  echo "tree: $TREE_SRC: $TREE_BYTES bytes in $(find "$DATA" -type f | wc -l) files, $(find "$DATA" -type l | wc -l) links, $(find "$DATA" -type d | wc -l) directories; change: $(mutate plan-tree "$DATA" "$WORK/tree.plan")" >&2
  mutate apply "$DATA" "$WORK/tree.plan"; TREE_SUM=$(manifest "$DATA"); mutate revert "$DATA" "$WORK/tree.plan"
fi
if [ -n "${need_disk:-}" ]; then
  truncate -s "$DISK_SIZE" "$IMG"
  mkfs.ext4 -q -F -E lazy_itable_init=0,lazy_journal_init=0 "$IMG"
  mount -o loop "$IMG" "$WORK/mnt" || die "cannot loop-mount the disk image"
  for s in $DISK_SRC; do mkdir -p "$WORK/mnt$(dirname "$s")"; cp -a "$s" "$WORK/mnt$(dirname "$s")/"; done
  used=$(df -B1 --output=used "$WORK/mnt" | tail -1)
  umount "$WORK/mnt"
  cp --sparse=always "$IMG" "$WORK/changed.raw"
  mount -o loop "$WORK/changed.raw" "$WORK/mnt"
  inner=$(mutate plan-tree "$WORK/mnt" "$WORK/inner.plan")
  mutate apply "$WORK/mnt" "$WORK/inner.plan"
  umount "$WORK/mnt"
  DISK_BYTES=$(stat -c %s "$IMG")
  echo "disk: $DISK_BYTES bytes, ext4 with $used bytes used ($DISK_SRC), $(du -B1 "$IMG" | cut -f1) allocated; change: $inner in the file system, $(mutate plan-diff "$IMG" "$WORK/changed.raw" "$WORK/disk.plan") in the image" >&2
  mutate apply "$WORK/img" "$WORK/disk.plan"; cmp -s "$IMG" "$WORK/changed.raw" || die "the disk patch does not reproduce the change"
  mutate revert "$WORK/img" "$WORK/disk.plan"; rm "$WORK/changed.raw"
fi
sync -f "$WORK"

# timed PART TOOL MEASURE ROUND COMMAND...: runs COMMAND (its output to $LOG), then a syncfs,
# and records the seconds.
timed() {
  local part=$1 tool=$2 measure=$3 round=$4 t0 t1; shift 4
  sync -f "$WORK"
  t0=$(date +%s%N)
  "$@" >>"$LOG" 2>&1 || die "$tool: $measure failed in round $round: $(tail -c 600 "$LOG")"
  sync -f "$WORK"
  t1=$(date +%s%N)
  printf '%s\t%s\t%s\t%s\t%s\n' "$part" "$tool" "$measure" "$round" \
    "$(echo "scale=6; ($t1 - $t0) / 1000000000" | bc)" >> "$RES"
}
record() { printf '%s\t%s\t%s\t%s\t%s\n' "$@" >> "$RES"; }
sizes() { # PART TOOL ROUND DIR: the repository's apparent and allocated (on disk) bytes
  record "$1" "$2" "size after 3rd" "$3" "$(du -sb "$4" | cut -f1)"
  record "$1" "$2" "on disk, 3rd" "$3" "$(du -s -B1 "$4" | cut -f1)"
}

# Each tool: TOOL_init KIND, TOOL_backup KIND N (N = 1, 2, 3), TOOL_restore KIND.
ours_init() { "$VB" init "$R" ${AVG:+--avg "$AVG"}; }
ours_backup() {
  if [ "$1" = tree ]; then "$VB" tree "$R" g "$DATA"; else "$VB" disk "$R" g "$IMG"; fi >> "$WORK/ours.jsonl" \
    && tail -1 "$WORK/ours.jsonl"
}
ours_restore() {
  mkdir "$T" || return
  if [ "$1" = tree ]; then "$VB" restore-tree "$R" g "$("$VB" latest "$R" g)" "$T/data"
  else "$VB" restore-disk "$R" g "$("$VB" latest "$R" g)" "$T/disk.raw"; fi
}
restic_init() { restic $RESTIC_NOPW init -q --repository-version 2 -r "$R"; }
restic_backup() { if [ "$1" = tree ]; then (cd "$WORK" && restic $RESTIC_NOPW -q -r "$R" backup data); else (cd "$WORK/img" && restic $RESTIC_NOPW -q -r "$R" backup disk.raw); fi; }
restic_restore() { restic $RESTIC_NOPW -q -r "$R" restore latest --target "$T"; }
borg_init() { borg init -e none "$R"; }
borg_backup() { if [ "$1" = tree ]; then (cd "$WORK" && borg create "$R::b$2" data); else (cd "$WORK/img" && borg create "$R::b$2" disk.raw); fi; }
borg_restore() { mkdir "$T" && (cd "$T" && borg extract --sparse "$R::b3"); }
tar_init() { mkdir "$R"; }
tar_backup() { tar -C "$DATA" --xattrs --listed-incremental="$R/snar" -cf - . | zstd -q -T0 - -o "$R/$2.tar.zst"; }
tar_restore() {
  mkdir -p "$T/data"
  for n in 1 2 3; do
    zstd -q -dc "$R/$n.tar.zst" | tar -C "$T/data" --xattrs --listed-incremental=/dev/null -xf - || return
  done
}
qemu_init() { mkdir "$R"; }
qemu_backup() {
  if [ "$2" = 1 ]; then qemu-img convert -O qcow2 "$IMG" "$R/1.qcow2"
  else qemu-img create -q -f qcow2 -b "$IMG" -F raw "$R/$2.qcow2" \
    && qemu-img rebase -q -f qcow2 -b "$R/$(($2 - 1)).qcow2" -F qcow2 "$R/$2.qcow2"; fi
}
qemu_restore() { mkdir "$T" && qemu-img convert -O raw "$R/3.qcow2" "$T/disk.raw"; }

# one PART KIND TOOL ROUND [LABEL]: a fresh repository, three backups, its size, a restore
# (the results are recorded under LABEL, by default TOOL).
one() {
  local part=$1 kind=$2 tool=$3 round=$4 label=${5:-$3} plan root
  if [ "$kind" = tree ]; then plan=$WORK/tree.plan root=$DATA; else plan=$WORK/disk.plan root=$WORK/img; fi
  rm -rf "$R" "$T" "$WORK/cache"
  "${tool}_init" "$kind" >>"$LOG" 2>&1 || die "$tool: init failed: $(tail -c 600 "$LOG")"
  timed "$part" "$label" "first backup" "$round" "${tool}_backup" "$kind" 1
  record "$part" "$label" "size after 1st" "$round" "$(du -sb "$R" | cut -f1)"
  timed "$part" "$label" "unchanged" "$round" "${tool}_backup" "$kind" 2
  record "$part" "$label" "size after 2nd" "$round" "$(du -sb "$R" | cut -f1)"
  mutate apply "$root" "$plan"
  timed "$part" "$label" "10 % changed" "$round" "${tool}_backup" "$kind" 3
  sizes "$part" "$label" "$round" "$R"
  if [ "$tool" = ours ]; then
    record "$part" "$label" "new bytes (3rd)" "$round" \
      "$(tail -1 "$WORK/ours.jsonl" | python3 -c 'import json,sys; print(json.load(sys.stdin)["stats"]["new_bytes"])')"
  fi
  if [ "$part" != chunks ]; then
    timed "$part" "$label" "restore" "$round" "${tool}_restore" "$kind"
    if [ "$round" = 1 ]; then
      if [ "$kind" = tree ]; then
        [ "$(manifest "$T/data")" = "$TREE_SUM" ] || die "$tool restored a tree that differs from the source"
      else
        cmp -s "$T/disk.raw" "$IMG" || die "$tool restored a disk that differs from the source"
      fi
    fi
  else
    record "$part" "$label" "chunks" "$round" "$(find "$R/chunks" -type f | wc -l)"
  fi
  mutate revert "$root" "$plan"
  rm -rf "$R" "$T" "$WORK/cache"
}

# rounds PART KIND N TOOL...: N rounds, each running every tool once, the order rotating.
rounds() {
  local part=$1 kind=$2 n=$3 r k i; shift 3
  local tools=("$@")
  for r in $(seq 1 "$n"); do
    for k in $(seq 0 $((${#tools[@]} - 1))); do
      i=$(( (k + r - 1) % ${#tools[@]} ))
      if [ "$part" = chunks ]; then AVG=${tools[$i]} one chunks tree ours "$r" "avg ${tools[$i]}"
      else one "$part" "$kind" "${tools[$i]}" "$r"; fi
      echo "  $part round $r: ${tools[$i]} done ($(date +%T))" >&2
    done
  done
}

for p in $PARTS; do
  case $p in
    tree) rounds tree tree "$RUNS" ours restic borg tar ;;
    disk) rounds disk disk "$RUNS" ours restic borg qemu ;;
    chunks) rounds chunks tree "$CHUNK_RUNS" $AVGS ;;
  esac
done

python3 - "$RES" "${TREE_BYTES:-0}" "${DISK_BYTES:-0}" <<'PY'
import sys, statistics as st
from collections import defaultdict, OrderedDict
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1])]
data = {"tree": int(sys.argv[2]), "disk": int(sys.argv[3])}
v = defaultdict(list); tools = OrderedDict(); measures = OrderedDict()
for part, tool, m, r, x in rows:
    v[(part, tool, m)].append(float(x)); tools.setdefault(part, OrderedDict())[tool] = 1
    measures.setdefault(part, OrderedDict())[m] = 1
med = lambda part, tool, m: st.median(v[(part, tool, m)]) if v[(part, tool, m)] else None
times = ("first backup", "unchanged", "10 % changed", "restore")
order = times + ("size after 1st", "size after 2nd", "size after 3rd", "on disk, 3rd", "new bytes (3rd)", "chunks")
for part in measures:
    measures[part] = sorted(measures[part], key=lambda m: order.index(m) if m in order else len(order))
for part in ("tree", "disk"):
    if part not in tools: continue
    ts = list(tools[part]); peers = ts[1:]
    n = len(v[(part, "ours", "first backup")])
    print(f"== {part}: medians of {n} rounds; time ratios ours / peer (below 1: ours is faster), size ratios ours / peer (below 1: ours is smaller)")
    print("measure".ljust(16) + "".join(t.rjust(12) for t in ts) + "".join(f"ours/{p}".rjust(14) for p in peers))
    for m in measures[part]:
        cells = [med(part, t, m) for t in ts]
        unit = (lambda x: f"{x:.2f} s") if m in times else (lambda x: f"{x / 1e6:.1f} MB")
        line = m.ljust(16) + "".join((unit(c) if c is not None else "-").rjust(12) for c in cells)
        line += "".join((f"{cells[0] / c:.2f}" if c else "-").rjust(14) for c in cells[1:])
        print(line)
        if m == "first backup":
            print("  MB/s".ljust(16) + "".join(f"{data[part] / c / 1e6:.0f}".rjust(12) for c in cells))
        if m in times:
            print("  rounds".ljust(16) + "".join(" ".join(f"{x:.1f}" for x in v[(part, t, m)]).rjust(12) for t in ts))
    g = lambda t, m: med(part, t, m)
    print(f"goals ({part}): first backup throughput ours / restic = {g('restic', 'first backup') / g('ours', 'first backup'):.2f} (goal >= 1.0); "
          f"unchanged ours / restic = {g('ours', 'unchanged') / g('restic', 'unchanged'):.2f}, "
          f"10 % changed ours / restic = {g('ours', '10 % changed') / g('restic', '10 % changed'):.2f} (goal <= 0.5); "
          f"size ours / borg = {g('ours', 'size after 3rd') / g('borg', 'size after 3rd'):.2f}, on disk {g('ours', 'on disk, 3rd') / g('borg', 'on disk, 3rd'):.2f} (goal <= 1.05)")
if "chunks" in tools:
    print("== chunks: our store with each FastCDC average (min avg/4, max avg*4), the tree; medians")
    ms = list(measures["chunks"])
    w = [max(16, len(m) + 2) for m in ms]
    print("average".ljust(16) + "".join(m.rjust(k) for m, k in zip(ms, w)))
    for t in tools["chunks"]:
        cells = []
        for m in ms:
            x = med("chunks", t, m)
            cells.append(f"{x:.2f} s" if m in times else f"{x:.0f}" if m == "chunks" else f"{x / 1e6:.1f} MB")
        print(t.ljust(16) + "".join(c.rjust(k) for c, k in zip(cells, w)))
PY
