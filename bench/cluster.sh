#!/usr/bin/env bash
# The cluster: two members (each its own network namespace, daemon and root, on an underlay
# bridge in a third namespace) and a one-member etcd (Debian's etcd-server).
#  - cold move of a running busybox container from m0 to m1 (`vessel move --target`)
#    against the same steps by hand (stop, export, delete, import --start on the other
#    member), in interleaved rounds;
#  - forwarding: `vessel exec` of an instance on the other member (through m0 to m1) against
#    the same exec asked of its own member;
#  - the scheduler: 10,000 instances over 100 simulated members (vessel-placement's example).
# Failover and live migration are not built yet (docs/cluster.md).
. "$(dirname "$0")/lib.sh"
ROUNDS=${ROUNDS:-5}
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
  for c in c1 x0 x1; do V0 delete --force "$c" >/dev/null 2>&1 || true; done
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  for n in "${NS[@]}" "$U"; do ip netns del "$n" 2>/dev/null || true; done
  rm -rf "$WORK"
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
for i in 0 1; do
  nsenter --net=/run/netns/"${NS[$i]}" -- env VESSEL_LIBEXEC="$BIN" "$BIN/vesseld" \
    --root-dir "$WORK/r$i" --run-dir "$WORK/run$i" --socket "$WORK/s$i.sock" \
    --no-default-network --listen "${ADDR[$i]}:8443" >"$WORK/vesseld$i.log" 2>&1 &
  PIDS+=($!)
done
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
echo "cold move of a running container, m0 to m1, $ROUNDS rounds:"
interleave "$ROUNDS" "$WORK" \
  "move" "bash '$WORK/place.sh'" "VESSEL_SOCKET='$WORK/s0.sock' '$BIN/vessel' move c1 --target m1 >/dev/null" \
  "by-hand" "bash '$WORK/place.sh'" "bash '$WORK/by-hand.sh'"

V0 launch busybox x1 --no-network --target m1 >/dev/null
cat > "$WORK/exec.sh" <<SH
for _ in \$(seq 1 $EXECS); do VESSEL_SOCKET=\$1 "$BIN/vessel" exec x1 -T -- true; done
SH
echo "$EXECS execs of an instance on m1:"
interleave "$ROUNDS" "$WORK" \
  "through-m0" ":" "bash '$WORK/exec.sh' '$WORK/s0.sock'" \
  "on-m1" ":" "bash '$WORK/exec.sh' '$WORK/s1.sock'"

echo "scheduler:"
(cd "$REPO" && cargo run --release --locked -q -p vessel-placement --example placement-bench)
