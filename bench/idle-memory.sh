#!/usr/bin/env bash
# Memory the platform spends per idle container: N busybox containers through a private
# vesseld; reports the monitors' proportional set size (PSS) per container and the daemon's
# growth in PSS from 0 to N containers.
. "$(dirname "$0")/lib.sh"
N=${N:-100}
WORK=$(mktemp -d /tmp/vessel-mem.XXXXXX)
chmod 755 "$WORK"   # unprivileged containers walk down to their files
SOCK=$WORK/vessel.sock
V() { "$BIN/vessel" --socket "$SOCK" "$@"; }
pss() { awk '/^Pss:/ {s+=$2} END {print s+0}' "/proc/$1/smaps_rollup"; }
P() { podman --root "$WORK/proot" --runroot "$WORK/prun" --storage-driver vfs \
  --cgroup-manager cgroupfs --runtime runc "$@"; }
cleanup() {
  for i in $(seq 1 "$N"); do V delete --force "idle$i" >/dev/null 2>&1 || true; done
  if command -v podman >/dev/null; then P rm -af -t 0 >/dev/null 2>&1 || true; fi
  # conmon's exit commands (podman container cleanup) still write there for a moment.
  for _ in $(seq 1 100); do pgrep -f "$WORK" >/dev/null || break; sleep 0.2; done
  umount -R "$WORK/proot" "$WORK/prun" 2>/dev/null || true
  [ -n "${DPID:-}" ] && kill "$DPID" 2>/dev/null && wait "$DPID" 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT
VESSEL_LIBEXEC=$BIN "$BIN/vesseld" --root-dir "$WORK/root" --run-dir "$WORK/run" --socket "$SOCK" \
  --no-default-network \
  >"$WORK/vesseld.log" 2>&1 &
DPID=$!
for _ in $(seq 1 100); do V info >/dev/null 2>&1 && break; sleep 0.1; done
V image build busybox >/dev/null
V launch busybox warm >/dev/null && V delete --force warm >/dev/null
sleep 1
d0=$(pss $DPID)
start=$(date +%s.%N)
for i in $(seq 1 "$N"); do V launch busybox "idle$i" >/dev/null; done
end=$(date +%s.%N)
sleep 2
V list >/dev/null
d1=$(pss $DPID)
mon=0; inits=0
for p in "$WORK"/run/monitors/*.pid; do mon=$((mon + $(pss "$(cat "$p")"))); done
echo "containers: $N (launched in $(echo "$end - $start" | bc) s)"
echo "monitor PSS per container: $((mon / N)) KiB"
echo "daemon PSS growth per container: $(( (d1 - d0) / N )) KiB (from $d0 to $d1 KiB)"
ours=$(( (mon + d1 - d0) / N ))
echo "platform overhead per idle container: $ours KiB"
for i in $(seq 1 "$N"); do V delete --force "idle$i" >/dev/null; done

# The peer: podman's per-container monitor, conmon, over runc, with the same busybox tree.
command -v podman >/dev/null || die "podman missing: apt-get install podman"
# The same image: exported by Vessel as a docker archive, loaded by podman.
V image export busybox "$WORK/busybox.tar" >/dev/null
P load -i "$WORK/busybox.tar" >/dev/null
P tag busybox:latest bench-busybox >/dev/null
# This sandbox lacks CAP_SYS_RESOURCE: podman's default ulimits (1048576) cannot be set here.
start=$(date +%s.%N)
for i in $(seq 1 "$N"); do
  P run -d --network none --ulimit nofile=1024:1024 --ulimit nproc=1024:1024 \
    --name "pidle$i" bench-busybox /bin/sleep 1000000 >/dev/null
done
end=$(date +%s.%N)
sleep 2
cm=0; n=0
for p in $(pgrep -f "conmon.*$WORK"); do cm=$((cm + $(pss "$p"))); n=$((n + 1)); done
[ "$n" = "$N" ] || die "found $n conmon processes for $N podman containers"
echo "podman: $N containers launched in $(echo "$end - $start" | bc) s; conmon PSS per container: $((cm / N)) KiB"
echo "ratio vessel-monitor+daemon / conmon: $(echo "scale=2; $ours / ($cm / $N)" | bc)"
