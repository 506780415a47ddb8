#!/usr/bin/env bash
# VM launch overhead: time from `vessel launch --vm` to the guest's first console line and to
# its ready line, against the very same QEMU command line (taken from a Vessel-launched VM)
# started by hand, alternating, same run. Then host memory per idle VM beyond the guest's RAM.
. "$(dirname "$0")/lib.sh"
RUNS=${RUNS:-5}
WORK=$(mktemp -d /tmp/vessel-vmbench.XXXXXX)
chmod 755 "$WORK"
SOCK=$WORK/s.sock
V() { "$BIN/vessel" --socket "$SOCK" "$@"; }
cleanup() {
  for n in $(V list --format json 2>/dev/null | jq -r '.[].name'); do V delete -f "$n" >/dev/null 2>&1; done
  [ -n "${DPID:-}" ] && kill "$DPID" 2>/dev/null && wait "$DPID" 2>/dev/null
  pkill -f "$WORK/hand" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
AGENT=$("$REPO/scripts/build-agent.sh")
VESSEL_AGENT=$AGENT VESSEL_LIBEXEC=$BIN "$BIN/vesseld" --root-dir "$WORK/root" --run-dir "$WORK/run" \
  --socket "$SOCK" >"$WORK/vesseld.log" 2>&1 & DPID=$!
for _ in $(seq 1 100); do V info >/dev/null 2>&1 && break; sleep 0.1; done
V image build vm >/dev/null
now() { date +%s%N; }
# wait_for FILE PATTERN: seconds until FILE holds PATTERN (120 s at most).
wait_for() {
  local t0=$1 file=$2 pat=$3
  for _ in $(seq 1 12000); do
    grep -qa -- "$pat" "$file" 2>/dev/null && { echo "scale=3; ($(now) - $t0) / 1000000000" | bc; return; }
    sleep 0.01
  done
  die "$pat never appeared in $file"
}
# One Vessel launch, kept to copy its QEMU command line.
V launch vm/busybox probe --vm -l memory=256MiB >/dev/null
LOG=$WORK/run/vms/probe/console.log
wait_for "$(now)" "$LOG" VESSEL-READY >/dev/null
QPID=$(V info probe --format json | jq -r .state.pid)
mapfile -d '' ARGS < "/proc/$QPID/cmdline"
V delete -f probe >/dev/null
# The same command line by hand, its run directory moved aside.
# Vessel starts QEMU paused (-S) and continues it over QMP once it sits in its cgroup; by hand
# it starts running at once.
HAND=()
for a in "${ARGS[@]}"; do
  [ "$a" = "-S" ] && continue
  HAND+=("${a//$WORK\/run\/vms\/probe/$WORK/hand}")
done
printf 'vessel_first vessel_ready hand_first hand_ready\n' > "$WORK/times"
for i in $(seq 1 "$RUNS"); do
  t0=$(now); V launch vm/busybox "b$i" --vm -l memory=256MiB >/dev/null
  L=$WORK/run/vms/b$i/console.log
  vf=$(wait_for "$t0" "$L" "Linux version\|VESSEL-"); vr=$(wait_for "$t0" "$L" VESSEL-READY)
  V delete -f "b$i" >/dev/null
  rm -rf "$WORK/hand"; mkdir -p "$WORK/hand"
  t0=$(now); "${HAND[@]}" >/dev/null 2>&1 &
  HP=$!
  hf=$(wait_for "$t0" "$WORK/hand/console.log" "Linux version\|VESSEL-"); hr=$(wait_for "$t0" "$WORK/hand/console.log" VESSEL-READY)
  kill "$HP" 2>/dev/null; wait "$HP" 2>/dev/null || true
  # QEMU may have detached itself: end every QEMU of the hand-made directory.
  pkill -f "$WORK/hand" 2>/dev/null || true
  echo "$vf $vr $hf $hr" >> "$WORK/times"
done
python3 - "$WORK/times" <<'PY'
import sys, statistics as st
rows=[l.split() for l in open(sys.argv[1]).read().splitlines()[1:]]
cols=list(zip(*[[float(x) for x in r] for r in rows]))
m=[st.median(c) for c in cols]
print(f"first console line: vessel {m[0]:.2f} s, by hand {m[2]:.2f} s, ratio {m[0]/m[2]:.2f}")
print(f"ready line:         vessel {m[1]:.2f} s, by hand {m[3]:.2f} s, ratio {m[1]/m[3]:.2f}")
PY
# Memory per idle VM beyond the guest's RAM: QEMU's proportional set size outside the
# 256 MiB guest-RAM mapping, and the daemon's growth, with 3 idle VMs.
D0=$(awk '/^Pss:/ {s+=$2} END {print s}' "/proc/$DPID/smaps_rollup")
for i in 1 2 3; do V launch vm/busybox "idle$i" --vm -l memory=256MiB >/dev/null; done
for i in 1 2 3; do wait_for "$(now)" "$WORK/run/vms/idle$i/console.log" VESSEL-READY >/dev/null; done
sleep 5
D1=$(awk '/^Pss:/ {s+=$2} END {print s}' "/proc/$DPID/smaps_rollup")
for i in 1 2 3; do
  p=$(V info "idle$i" --format json | jq -r .state.pid)
  python3 - "$p" <<'PY'
import sys
pid=sys.argv[1]; guest=256*1024; other=0; ram=0
size=None
for line in open(f"/proc/{pid}/smaps"):
    f=line.split()
    if f[0]=="Size:": size=int(f[1])
    elif f[0]=="Pss:":
        if size==guest: ram+=int(f[1])
        else: other+=int(f[1])
print(f"QEMU {pid}: guest RAM touched {ram} KiB, beyond guest RAM {other} KiB")
PY
done
echo "daemon PSS growth per VM: $(( (D1 - D0) / 3 )) KiB"
