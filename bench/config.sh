#!/usr/bin/env bash
# Time from a live limit change to the new limit holding, container against container: Vessel
# (`vessel config set c limits.memory=X`) against podman from Debian (`podman update --memory
# X`), each on a running busybox container, both timed until the kernel's cgroup file shows
# the new limit. Interleaved rounds alternate between two values so every round changes it.
# Prints medians and the ratio (below 1: Vessel is faster). Then a para VM's memory grown live
# (256 -> 512 MiB through virtio-mem), timed until the guest's MemTotal shows it (VM_RUNS
# rounds, shrunk back untimed in between); no peer on this host grows a VM live.
. "$(dirname "$0")/lib.sh"
RUNS=${RUNS:-30}
command -v podman >/dev/null || die "podman missing: apt-get install podman"
WORK=$(mktemp -d /tmp/vessel-config.XXXXXX)
chmod 755 "$WORK"
SOCK=$WORK/vessel.sock
V() { "$BIN/vessel" --socket "$SOCK" "$@"; }
P() { podman --root "$WORK/proot" --runroot "$WORK/prun" --storage-driver vfs \
  --cgroup-manager cgroupfs --runtime runc "$@"; }
cleanup() {
  P rm -f -t 0 vessel-bench-p >/dev/null 2>&1 || true
  V delete -f c g >/dev/null 2>&1 || true
  [ -n "${DPID:-}" ] && kill "$DPID" 2>/dev/null && wait "$DPID" 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT
AGENT=$("$REPO/scripts/build-agent.sh")
VESSEL_AGENT=$AGENT VESSEL_LIBEXEC=$BIN "$BIN/vesseld" --root-dir "$WORK/root" --run-dir "$WORK/run" --socket "$SOCK" \
  --no-default-network >"$WORK/vesseld.log" 2>&1 &
DPID=$!
for _ in $(seq 1 100); do V info >/dev/null 2>&1 && break; sleep 0.1; done
V image build busybox >/dev/null
V launch busybox c --no-network -l memory=64MiB -- sleep 3600 >/dev/null
make_bundle "$WORK/bundle"
# This sandbox lacks CAP_SYS_RESOURCE: podman's default ulimits (1048576) cannot be set here.
P run -d --network none --ulimit nofile=1024:1024 --ulimit nproc=1024:1024 --name vessel-bench-p \
  --memory 64m --rootfs "$WORK/bundle/rootfs" sleep 3600 >/dev/null

# memory_file PID: the memory cgroup file of the limit of process PID (v1 or v2).
memory_file() {
  local line
  if line=$(grep -E '^[0-9]+:memory:' "/proc/$1/cgroup"); then
    echo "/sys/fs/cgroup/memory${line#*:memory:}/memory.limit_in_bytes"
  else
    echo "/sys/fs/cgroup$(grep '^0::' "/proc/$1/cgroup" | cut -d: -f3)/memory.max"
  fi
}
VF=$(memory_file "$(V info c --format json | jq .state.pid)")
PF=$(memory_file "$(P inspect vessel-bench-p --format '{{.State.Pid}}')")
[ -f "$VF" ] && [ -f "$PF" ] || die "cgroup files not found: $VF $PF"
echo "vessel's limit in $VF, podman's in $PF"

# set_until TOOL: changes the limit to the value not set now and waits until the file shows it.
cat > "$WORK/set.sh" <<SH
#!/bin/bash
set -e
file=\$2
if [ "\$(cat "\$file")" = \$((96 << 20)) ]; then want=\$((128 << 20)); else want=\$((96 << 20)); fi
case \$1 in
  vessel) "$BIN/vessel" --socket "$SOCK" config set c limits.memory=\$want >/dev/null ;;
  podman) podman --root "$WORK/proot" --runroot "$WORK/prun" --storage-driver vfs \\
            --cgroup-manager cgroupfs --runtime runc update --memory \$want vessel-bench-p >/dev/null ;;
esac
until [ "\$(cat "\$file")" = \$want ]; do :; done
SH
chmod +x "$WORK/set.sh"
interleave "$RUNS" "$WORK" vessel ":" "$WORK/set.sh vessel $VF" podman ":" "$WORK/set.sh podman $PF"

# The VM.
VM_RUNS=${VM_RUNS:-5}
V image build vm >/dev/null
V launch vm/busybox g --vm --no-network -l memory=256MiB >/dev/null
until V logs g 2>/dev/null | grep -q VESSEL-READY; do sleep 0.2; done
memtotal() { V exec g -- grep MemTotal /proc/meminfo | awk '{print $2}'; }
BASE=$(memtotal)
: > "$WORK/times.vm"
for r in $(seq 1 "$VM_RUNS"); do
  t0=$(date +%s%N)
  V config set g limits.memory=512MiB >/dev/null
  until [ "$(memtotal)" -ge $((BASE + 256 * 1024)) ]; do :; done
  t1=$(date +%s%N)
  echo "scale=6; ($t1 - $t0) / 1000000000" | bc >> "$WORK/times.vm"
  V config set g limits.memory=256MiB >/dev/null
  until [ "$(memtotal)" -le $((BASE + 1024)) ]; do sleep 0.2; done
done
sort -n "$WORK/times.vm" | awk '{a[NR]=$1} END {
  m = (NR % 2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2
  printf "vm memory +256MiB live\t%.1f ms median\t(min %.1f, max %.1f; %d rounds)\n", m*1000, a[1]*1000, a[NR]*1000, NR }'
