#!/usr/bin/env bash
# The cluster: two members (each its own network namespace, daemon and root, on an underlay
# bridge in a third namespace) and a one-member etcd (Debian's etcd-server).
#  - cold move of a running busybox container from m0 to m1 (`vessel move --target`)
#    against the same steps by hand (stop, export, delete, import --start on the other
#    member), in interleaved rounds;
#  - forwarding: `vessel exec` of an instance on the other member (through m0 to m1) against
#    the same exec asked of its own member;
#  - live move of a running 512 MiB VM (vm/busybox under TCG) from m0 to m1 (`vessel move`)
#    against QEMU migrating the same guest by hand between the two namespaces (plain TCP,
#    the settings Vessel uses; the target QEMU's start timed too): total time, and the
#    guest's pause;
#  - failover: m1's daemon SIGKILLed and its namespace's packets dropped while an HA
#    container runs there; the time until it answers an exec on m0 (threshold 2 s, lease
#    TTL 6 s). No peer runs here: docs/PERFORMANCE.md compares with their documented
#    defaults;
#  - failover-vm: the same with an HA VM (vm/busybox, TCG) whose disk is a volume of a pool
#    replicated to m0: m0 adopts the pool and starts the VM with its disk; until the VM
#    answers an exec on m0;
#  - the scheduler: 10,000 instances over 100 simulated members (vessel-placement's example).
. "$(dirname "$0")/lib.sh"
ROUNDS=${ROUNDS:-5}
PARTS=${PARTS:-"move exec live failover failover-vm placement"}
part() { [[ " $PARTS " == *" $1 "* ]]; }
EXECS=${EXECS:-20}
command -v etcd >/dev/null || [ -x /usr/bin/etcd ] || die "etcd missing: apt-get install etcd-server"
WORK=$(mktemp -d /tmp/vessel-cluster.XXXXXX)
chmod 755 "$WORK"
TAG=vcb$$
U=$TAG-u
NS=("$TAG-0" "$TAG-1")
ADDR=(10.231.0.1 10.231.0.2)
PIDS=()
V0() { VESSEL_SOCKET=$WORK/s0.sock "$BIN/vessel" "$@"; }
V1() { VESSEL_SOCKET=$WORK/s1.sock "$BIN/vessel" "$@"; }
cleanup() {
  for c in c1 x0 x1 lv hv; do V0 delete --force "$c" >/dev/null 2>&1 || true; done
  V1 delete --force lv >/dev/null 2>&1 || true
  for f in "$WORK"/q-*.pid; do [ -f "$f" ] && kill -9 "$(cat "$f")" 2>/dev/null || true; done
  V0 delete --force ha >/dev/null 2>&1 || true
  [ -f "$WORK/vesseld1.pid" ] && kill "$(cat "$WORK/vesseld1.pid")" 2>/dev/null || true
  pkill -f "fence-watchdog $WORK" 2>/dev/null || true
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  for n in "${NS[@]}" "$U"; do ip netns del "$n" 2>/dev/null || true; done
  [ -n "${KEEP_WORK:-}" ] || rm -rf "$WORK"
}
trap cleanup EXIT
show_logs() { for f in "$WORK"/*.log; do echo "== $f"; tail -5 "$f"; done; }
trap 'show_logs' ERR

# The underlay: a bridge in its own namespace, one veth to each member's namespace.
ip netns add "$U"
ip -n "$U" link add br0 type bridge
ip -n "$U" link set br0 up
for i in 0 1; do
  ip netns add "${NS[$i]}"
  ip -n "${NS[$i]}" link set lo up
  ip link add "$TAG-$i" type veth peer name u0 netns "${NS[$i]}"
  ip link set "$TAG-$i" netns "$U"
  ip -n "$U" link set "$TAG-$i" master br0 up
  ip -n "${NS[$i]}" addr add "${ADDR[$i]}/24" dev u0
  ip -n "${NS[$i]}" link set u0 up
done
ETCD=http://${ADDR[0]}:2379
nsenter --net=/run/netns/"${NS[0]}" -- etcd --name e0 --data-dir "$WORK/etcd" \
  --listen-client-urls "$ETCD" --advertise-client-urls "$ETCD" \
  --listen-peer-urls "http://${ADDR[0]}:2380" \
  --initial-advertise-peer-urls "http://${ADDR[0]}:2380" \
  --initial-cluster "e0=http://${ADDR[0]}:2380" >"$WORK/etcd.log" 2>&1 &
PIDS+=($!)
nsenter --net=/run/netns/"${NS[0]}" -- env VESSEL_LIBEXEC="$BIN" "$BIN/vesseld" \
  --root-dir "$WORK/r0" --run-dir "$WORK/run0" --socket "$WORK/s0.sock" \
  --no-default-network --listen "${ADDR[0]}:8443" >"$WORK/vesseld0.log" 2>&1 &
PIDS+=($!)
# m1's daemon is started (again) by a script: the failover rounds kill it.
cat > "$WORK/m1-up.sh" <<SH
nsenter --net=/run/netns/${NS[1]} -- env VESSEL_LIBEXEC="$BIN" "$BIN/vesseld" \
  --root-dir "$WORK/r1" --run-dir "$WORK/run1" --socket "$WORK/s1.sock" \
  --no-default-network --listen "${ADDR[1]}:8443" >>"$WORK/vesseld1.log" 2>&1 &
echo \$! > "$WORK/vesseld1.pid"
SH
bash "$WORK/m1-up.sh"
# m1 whole again (the failover rounds kill it and cut its namespace off), and connected.
cat > "$WORK/m1-whole.sh" <<SH
ip netns exec ${NS[1]} nft delete table inet cut 2>/dev/null || true
kill -0 "\$(cat "$WORK/vesseld1.pid")" 2>/dev/null || bash "$WORK/m1-up.sh"
for _ in \$(seq 1 150); do
  VESSEL_SOCKET=$WORK/s1.sock "$BIN/vessel" cluster info --format json 2>/dev/null \
    | jq -e '.connected and (.fenced | not)' >/dev/null && break
  sleep 0.2
done
SH
# kill_script NAME FILE TRIES: writes FILE, which kills m1's daemon, cuts m1's namespace off
# and waits (TRIES times 0.1 s) for instance NAME to answer an exec on m0.
kill_script() {
  cat > "$2" <<SH
set -e
kill -9 "\$(cat "$WORK/vesseld1.pid")"
ip netns exec ${NS[1]} nft -f - <<NFT
table inet cut {
 chain in { type filter hook input priority -300; policy drop; }
 chain out { type filter hook output priority -300; policy drop; }
}
NFT
export VESSEL_SOCKET=$WORK/s0.sock
for _ in \$(seq 1 $3); do
  [ "\$("$BIN/vessel" info $1 --format json 2>/dev/null | jq -r .location)" = m0 ] \
    && "$BIN/vessel" exec $1 -T -- true 2>/dev/null && exit 0
  sleep 0.1
done
echo "$1 did not come back on m0" >&2; exit 1
SH
}
for _ in $(seq 1 100); do V0 info >/dev/null 2>&1 && V1 info >/dev/null 2>&1 && break; sleep 0.1; done
for _ in $(seq 1 100); do
  V0 cluster init m0 --address "${ADDR[0]}:8443" --etcd "$ETCD" >/dev/null 2>&1 && break
  sleep 0.2
done
TOKEN=$(V0 cluster add m1 --format json | jq -r .token)
V1 cluster join "$TOKEN" --address "${ADDR[1]}:8443" >/dev/null
V0 image build busybox >/dev/null
V1 image build busybox >/dev/null

# Each round starts with c1 running on m0 (the name is free once the index lets it go).
cat > "$WORK/place.sh" <<SH
VESSEL_SOCKET=$WORK/s0.sock "$BIN/vessel" delete --force c1 >/dev/null 2>&1 || true
for _ in \$(seq 1 50); do
  VESSEL_SOCKET=$WORK/s0.sock "$BIN/vessel" launch busybox c1 --no-network --target m0 >/dev/null 2>&1 && exit 0
  sleep 0.2
done
echo "c1 not placed on m0" >&2; exit 1
SH
cat > "$WORK/by-hand.sh" <<SH
set -e
export VESSEL_SOCKET=$WORK/s0.sock
"$BIN/vessel" stop c1 >/dev/null
"$BIN/vessel" export c1 "$WORK/c1.vessel" >/dev/null
"$BIN/vessel" delete c1 >/dev/null
VESSEL_SOCKET=$WORK/s1.sock "$BIN/vessel" import "$WORK/c1.vessel" --start >/dev/null
rm -f "$WORK/c1.vessel"
SH
if part move; then
echo "cold move of a running container, m0 to m1, $ROUNDS rounds:"
interleave "$ROUNDS" "$WORK" \
  "move" "bash '$WORK/place.sh'" "VESSEL_SOCKET='$WORK/s0.sock' '$BIN/vessel' move c1 --target m1 >/dev/null" \
  "by-hand" "bash '$WORK/place.sh'" "bash '$WORK/by-hand.sh'"

fi

if part exec; then
V0 launch busybox x1 --no-network --target m1 >/dev/null
cat > "$WORK/exec.sh" <<SH
for _ in \$(seq 1 $EXECS); do VESSEL_SOCKET=\$1 "$BIN/vessel" exec x1 -T -- true; done
SH
echo "$EXECS execs of an instance on m1:"
interleave "$ROUNDS" "$WORK" \
  "through-m0" ":" "bash '$WORK/exec.sh' '$WORK/s0.sock'" \
  "on-m1" ":" "bash '$WORK/exec.sh' '$WORK/s1.sock'"

fi

if part live; then
# Live moves. The VM image is built by a daemon outside the namespaces (its kernel comes
# from Debian's mirror) and imported on m0.
B=$WORK/builder
AGENT=$("$REPO/scripts/build-agent.sh")
env VESSEL_AGENT="$AGENT" VESSEL_LIBEXEC="$BIN" "$BIN/vesseld" --root-dir "$B/root" --run-dir "$B/run" \
  --socket "$B/s.sock" --no-default-network >"$WORK/builder.log" 2>&1 &
BPID=$!
for _ in $(seq 1 100); do VESSEL_SOCKET=$B/s.sock "$BIN/vessel" info >/dev/null 2>&1 && break; sleep 0.1; done
VESSEL_SOCKET=$B/s.sock "$BIN/vessel" image build vm >/dev/null
VESSEL_SOCKET=$B/s.sock "$BIN/vessel" image export vm/busybox "$WORK/vm.tar" >/dev/null
kill "$BPID"; wait "$BPID" 2>/dev/null || true
V0 image import "$WORK/vm.tar" --alias vm/busybox >/dev/null
V0 launch vm/busybox lv --vm -l memory=512MiB --no-network --target m0 >/dev/null
for _ in $(seq 1 90); do V0 exec lv -T -- true >/dev/null 2>&1 && break; sleep 2; done
V0 exec lv -T -- true >/dev/null || die "the VM did not boot"
cat > "$WORK/live-place.sh" <<SH
export VESSEL_SOCKET=$WORK/s0.sock
if [ "\$("$BIN/vessel" info lv --format json | jq -r .location)" = m1 ]; then
  "$BIN/vessel" move lv --target m0 >/dev/null
fi
SH
cat > "$WORK/live-move.sh" <<SH
set -o pipefail
VESSEL_SOCKET=$WORK/s0.sock "$BIN/vessel" move lv --target m1 | tee -a "$WORK/vessel.out" \
  | grep -o 'paused [0-9]* ms' | awk '{print \$2}' >> "$WORK/paused.vessel"
SH
# By hand: the same kernel, initramfs and memory, booted by QEMU directly in m0's namespace
# and migrated to a QEMU started waiting in m1's (plain TCP on the underlay).
IMG=$(dirname "$(find "$WORK/r0" -name image.json -path '*images*' | head -1)")
KERNEL=$IMG/$(jq -r .kernel "$IMG/image.json")
INITRD=$IMG/$(jq -r .initrd "$IMG/image.json")
APPEND="console=ttyS0 $(jq -r .cmdline "$IMG/image.json" | tr ' ' '\n' | grep -v '^console=' | tr '\n' ' ')vessel.hostname=hand"
cat > "$WORK/hand-place.sh" <<SH
set -e
for f in "$WORK"/q-*.pid; do [ -f "\$f" ] && kill -9 "\$(cat "\$f")" 2>/dev/null || true; done
rm -f "$WORK"/q-*
qemu() {
  nsenter --net=/run/netns/\$1 -- qemu-system-x86_64 -machine q35 -accel tcg -m 512 -smp 1 \
    -nodefaults -no-user-config -display none -kernel "$KERNEL" -initrd "$INITRD" \
    -append "$APPEND" -serial file:"$WORK/q-\$2.log" \
    -qmp unix:"$WORK/q-\$2.qmp",server=on,wait=off -pidfile "$WORK/q-\$2.pid" \
    -daemonize "\${@:3}"
}
qemu "${NS[0]}" src
for _ in \$(seq 1 600); do grep -q VESSEL-READY "$WORK/q-src.log" 2>/dev/null && break; sleep 0.2; done
grep -q VESSEL-READY "$WORK/q-src.log"
SH
# Timed: the target started waiting in m1's namespace, then the migration.
cat > "$WORK/hand-move.sh" <<SH
set -e
$(sed -n '/^qemu() {/,/^}/p' "$WORK/hand-place.sh")
qemu "${NS[1]}" dst -incoming defer
/usr/bin/python3 "$REPO/bench/migrate-by-hand.py" "$WORK/q-src.qmp" "$WORK/q-dst.qmp" \
  tcp:${ADDR[1]}:4444 >> "$WORK/hand.json"
SH
: > "$WORK/paused.vessel"; : > "$WORK/hand.json"
echo "live move of a running 512 MiB VM (TCG), m0 to m1, $ROUNDS rounds:"
interleave "$ROUNDS" "$WORK" \
  "move-live" "bash '$WORK/live-place.sh'" "bash '$WORK/live-move.sh'" \
  "qemu-by-hand" "bash '$WORK/hand-place.sh'" "bash '$WORK/hand-move.sh'"
echo "guest paused, Vessel (source stopped to target running, as the daemon measures it): \
$(tail -n +2 "$WORK/paused.vessel" | sort -n | tr '\n' ' ')ms"
echo "guest paused, QEMU by hand (QEMU's downtime + completed to target running): \
$(tail -n +2 "$WORK/hand.json" | jq -r '.downtime_ms + .to_running_ms' | sort -n | tr '\n' ' ')ms"
echo "QEMU by hand, raw: $(tail -n +2 "$WORK/hand.json" | tr '\n' ' ')"
echo "Vessel, raw: $(tail -n +2 "$WORK/vessel.out" | tr '\n' ' ')"

fi

if part failover; then
V0 cluster healing 2 >/dev/null
V1 launch busybox ha --no-network --target m1 -c cluster.ha=true -- \
  sh -c "trap 'exit 0' TERM; sleep 86397 & wait" >/dev/null
# Each round starts with ha running on m1, m1 whole, and the index holding ha's restart
# request (its pass runs every 2 s).
cat > "$WORK/ha-place.sh" <<SH
set -e
export VESSEL_SOCKET=$WORK/s0.sock
bash "$WORK/m1-whole.sh"
# (m1 deletes its stale copy first, once it is back)
for _ in \$(seq 1 40); do
  [ "\$("$BIN/vessel" info ha --format json | jq -r .location)" = m1 ] && break
  "$BIN/vessel" move ha --target m1 >/dev/null 2>&1 || sleep 0.5
done
# (a move refused while m1 still held its stale copy left ha stopped, and the next one
# moved it so)
[ "\$("$BIN/vessel" info ha --format json | jq -r .status)" = running ] || "$BIN/vessel" start ha >/dev/null
"$BIN/vessel" exec ha -T -- true
sleep 3
SH
kill_script ha "$WORK/ha-kill.sh" 600
echo "failover of an HA container from a killed member (threshold 2 s, TTL 6 s), $ROUNDS rounds:"
interleave "$ROUNDS" "$WORK" "failover" "bash '$WORK/ha-place.sh'" "bash '$WORK/ha-kill.sh'"
fi

if part failover-vm; then
# An HA VM whose disk is a volume of a pool replicated to m0: m1 killed and cut off, m0
# adopts the pool and starts the VM with its disk. Each round makes the pool and the VM
# afresh on m1 (what the last one left, on both members, deleted first).
if [ ! -f "$WORK/vm.tar" ]; then
  B=$WORK/builder
  AGENT=$("$REPO/scripts/build-agent.sh")
  env VESSEL_AGENT="$AGENT" VESSEL_LIBEXEC="$BIN" "$BIN/vesseld" --root-dir "$B/root" \
    --run-dir "$B/run" --socket "$B/s.sock" --no-default-network >"$WORK/builder.log" 2>&1 &
  BPID=$!
  for _ in $(seq 1 100); do VESSEL_SOCKET=$B/s.sock "$BIN/vessel" info >/dev/null 2>&1 && break; sleep 0.1; done
  VESSEL_SOCKET=$B/s.sock "$BIN/vessel" image build vm >/dev/null
  VESSEL_SOCKET=$B/s.sock "$BIN/vessel" image export vm/busybox "$WORK/vm.tar" >/dev/null
  kill "$BPID"; wait "$BPID" 2>/dev/null || true
fi
# m1 whole (the container rounds leave it killed and cut off).
bash "$WORK/m1-whole.sh"
for v in V0 V1; do
  $v image info vm/busybox >/dev/null 2>&1 || $v image import "$WORK/vm.tar" --alias vm/busybox >/dev/null
done
V0 cluster healing 2 >/dev/null
cat > "$WORK/hv-place.sh" <<SH
set -e
v0() { VESSEL_SOCKET=$WORK/s0.sock "$BIN/vessel" "\$@"; }
v1() { VESSEL_SOCKET=$WORK/s1.sock "$BIN/vessel" "\$@"; }
bash "$WORK/m1-whole.sh"
# What the last round left: the VM and the adopted pool on m0; m1's stale copy (which it
# deletes itself: waited for, so that each round starts clean) and its stale pool.
for _ in \$(seq 1 150); do
  [ "\$(v1 list --format json 2>/dev/null | jq -c '[.[] | select(.name == "hv") | .location]')" != '["m1"]' ] \
    && [ "\$(v1 list --format json 2>/dev/null | jq '[.[] | select(.name == "hv")] | length')" -le 1 ] && break
  sleep 0.2
done
v0 delete --force hv >/dev/null 2>&1 || true
for _ in \$(seq 1 150); do v0 info hv >/dev/null 2>&1 || v1 info hv >/dev/null 2>&1 || break; sleep 0.2; done
# (m1's pool is taken for stale once m1 sees in etcd that its copy was adopted)
for _ in \$(seq 1 100); do
  v1 storage pool info rp >/dev/null 2>&1 || break
  v1 storage pool info rp 2>/dev/null | grep -q stale && break
  sleep 0.2
done
for v in v0 v1; do
  \$v storage volume delete rp data >/dev/null 2>&1 || true
  \$v storage pool delete rp >/dev/null 2>&1 || true
done
v1 storage pool create rp raid --level raid1 --size 64MiB --replica m0 >/dev/null
v1 storage volume create rp data --type block --size 16MiB >/dev/null
v1 create vm/busybox hv --vm -l memory=256MiB --no-network --target m1 -c cluster.ha=true >/dev/null
v1 storage volume attach rp data hv >/dev/null
v1 start hv >/dev/null
for _ in \$(seq 1 90); do v1 exec hv -T -- true >/dev/null 2>&1 && break; sleep 1; done
v1 exec hv -T -- sh -c 'echo written > /dev/vdb && sync' >/dev/null
sleep 3
SH
kill_script hv "$WORK/hv-kill.sh" 900
echo "failover of an HA VM with its disk on a replicated pool (threshold 2 s, TTL 6 s), $ROUNDS rounds:"
interleave "$ROUNDS" "$WORK" "failover-vm" "bash '$WORK/hv-place.sh'" "bash '$WORK/hv-kill.sh'"
fi

if part placement; then
echo "scheduler:"
(cd "$REPO" && cargo run --release --locked -q -p vessel-placement --example placement-bench)
fi
