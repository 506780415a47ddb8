#!/usr/bin/env bash
# Time from a live limit change to the new limit holding, container against container: Vessel
# (`vessel config set c limits.memory=X`) against podman from Debian (`podman update --memory
# X`), each on a running busybox container, both timed until the kernel's cgroup file shows
# the new limit. Interleaved rounds alternate between two values so every round changes it.
# Prints medians and the ratio (below 1: Vessel is faster).
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
  V delete -f c >/dev/null 2>&1 || true
  [ -n "${DPID:-}" ] && kill "$DPID" 2>/dev/null && wait "$DPID" 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT
VESSEL_LIBEXEC=$BIN "$BIN/vesseld" --root-dir "$WORK/root" --run-dir "$WORK/run" --socket "$SOCK" \
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
