#!/usr/bin/env bash
# Networks: TCP throughput (iperf3) between two containers on a Vessel bridge and across a
# Vessel VXLAN overlay, each against bare references in the same run (a veth pair; the same
# veth+bridge by hand; the overlay's own underlay and VXLAN by hand on it); then the time to
# give NICS running containers a NIC (`vessel network attach`) against the same wiring done
# with iproute2.
# Everything happens inside network namespaces made here and removed on exit.
#   RUNS=3 SECS=5 NICS=100 REVERSE=0 (1: also measure each path with iperf3 -R) JSON=FILE
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"
RUNS=${RUNS:-3}
SECS=${SECS:-5}
NICS=${NICS:-100}
REVERSE=${REVERSE:-0}
JSON=${JSON:-}
for c in iperf3 jq nsenter unshare ip ss bc; do
  command -v "$c" >/dev/null || die "$c missing (iperf3, jq, util-linux, iproute2, bc)"
done
[ -x /bin/busybox ] || die "/bin/busybox missing: apt-get install busybox-static"
[ "$NICS" -le 250 ] || die "NICS=$NICS: at most 250 (one /24)"

T=vnb$$                                  # prefix of every namespace made here
NS_A=$T-a NS_B=$T-b                      # bare veth pair
NS_M=$T-m NS_C=$T-c NS_D=$T-d            # bridge by hand (in M) with C and D on it
NS_W=$T-w NS_H0=$T-h0 NS_H1=$T-h1        # underlay bridge (W) and two hosts with a daemon each
NS_H2=$T-h2 NS_H3=$T-h3 NS_E2=$T-e2 NS_E3=$T-e3  # two more hosts with VXLAN by hand, an end each
ALL_NS=("$NS_A" "$NS_B" "$NS_C" "$NS_D" "$NS_M" "$NS_E2" "$NS_E3" "$NS_H0" "$NS_H1" "$NS_H2"
  "$NS_H3" "$NS_W")
WORK=$(mktemp -d /tmp/vessel-net.XXXXXX)
chmod 755 "$WORK"   # unprivileged containers walk down to their files
RES=$WORK/results
mkdir -p "$RES"
PIDS=()             # background processes of ours (iperf3 servers, sleepers)
DPIDS=()            # the daemons

V() { local d=$1; shift; "$BIN/vessel" --socket "$WORK/d$d/vessel.sock" "$@"; }
netns() { echo "/run/netns/$1"; }
in_ns() { local ns=$1; shift; nsenter --net="$ns" -- "$@"; }
median() { sort -n | awk '{a[NR]=$1} END {if (NR % 2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }

cleanup() {
  set +e
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
  for d in 0 1; do
    [ -S "$WORK/d$d/vessel.sock" ] || continue
    mapfile -t names < <(V "$d" list --format json 2>/dev/null | jq -r '.[].name' 2>/dev/null)
    [ "${#names[@]}" -gt 0 ] && V "$d" delete --force "${names[@]}" >/dev/null 2>&1
  done
  for p in "${DPIDS[@]}"; do kill "$p" 2>/dev/null && wait "$p" 2>/dev/null; done
  # Helpers the daemons started (monitors, dnsmasq) name files of $WORK.
  for _ in $(seq 1 50); do
    mapfile -t left < <(pgrep -f "$WORK")
    [ "${#left[@]}" = 0 ] && break
    kill "${left[@]}" 2>/dev/null
    sleep 0.1
  done
  awk -v w="$WORK" 'index($5, w) == 1 {print $5}' /proc/self/mountinfo | sort -r |
    while read -r m; do umount -l "$m"; done
  for d in 0 1; do
    h=$(printf %s "$WORK/d$d/root" | sha256sum | cut -c1-10)
    for c in /sys/fs/cgroup/*/"vessel-$h" /sys/fs/cgroup/"vessel-$h"; do
      [ -d "$c" ] && find "$c" -depth -type d -exec rmdir {} + 2>/dev/null
    done
  done
  for n in "${ALL_NS[@]}"; do ip netns del "$n" 2>/dev/null; done
  rm -rf "$WORK"
}
trap cleanup EXIT

# --- Namespaces --------------------------------------------------------------------------
for n in "${ALL_NS[@]}"; do
  ip netns add "$n"
  ip -n "$n" link set lo up
done
# Bare veth pair: A 10.99.1.1 <-> B 10.99.1.2.
ip -n "$NS_A" link add v0 type veth peer name v1 netns "$NS_B"
ip -n "$NS_A" addr add 10.99.1.1/24 dev v0 && ip -n "$NS_A" link set v0 up
ip -n "$NS_B" addr add 10.99.1.2/24 dev v1 && ip -n "$NS_B" link set v1 up
# The same by hand with a bridge between, as a Vessel bridge network wires two containers:
# C 10.99.2.2 -> veth -> bridge br0 in M -> veth -> D 10.99.2.3. M has no firewall rules.
ip -n "$NS_M" link add br0 type bridge
ip -n "$NS_M" addr add 10.99.2.1/24 dev br0 && ip -n "$NS_M" link set br0 up
for x in C:2 D:3; do
  var=NS_${x%:*}; ns=${!var}
  ip -n "$ns" link add eth0 type veth peer name "h${x%:*}" netns "$NS_M"
  ip -n "$NS_M" link set "h${x%:*}" master br0 up
  ip -n "$ns" addr add "10.99.2.${x#*:}/24" dev eth0 && ip -n "$ns" link set eth0 up
done
# The underlay, as in crates/vesseld/tests/network.rs: bridge ul in W, host i at 198.51.100.(i+2).
ip -n "$NS_W" link add ul type bridge
ip -n "$NS_W" addr add 198.51.100.1/24 dev ul && ip -n "$NS_W" link set ul up
for i in 0 1 2 3; do
  var=NS_H$i; ns=${!var}
  ip -n "$ns" link add up0 type veth peer name "p$i" netns "$NS_W"
  ip -n "$NS_W" link set "p$i" master ul up
  ip -n "$ns" addr add "198.51.100.$((i + 2))/24" dev up0 && ip -n "$ns" link set up0 up
  ip -n "$ns" route add default via 198.51.100.1
done
# Hosts 2 and 3: the overlay by hand, as docs/networking.md describes Vessel's (VNI, port 4789,
# learning off, MTU 1450, an all-zero FDB entry per peer, on a bridge), with an end each:
# E2 10.99.3.2 -> veth -> bridge -> vxlan -> underlay -> vxlan -> bridge -> veth -> E3 10.99.3.3.
for i in 2 3; do
  var=NS_H$i; ns=${!var}
  var=NS_E$i; end=${!var}
  ip -n "$ns" link add vx0 mtu 1450 type vxlan id 5999 local "198.51.100.$((i + 2))" dstport 4789 nolearning
  bridge -n "$ns" fdb append 00:00:00:00:00:00 dev vx0 dst "198.51.100.$((7 - i))"
  ip -n "$ns" link add br0 type bridge
  ip -n "$ns" link set vx0 master br0 up && ip -n "$ns" link set br0 up
  ip -n "$end" link add eth0 mtu 1450 type veth peer name "he$i" mtu 1450 netns "$ns"
  ip -n "$ns" link set "he$i" master br0 up
  ip -n "$end" addr add "10.99.3.$i/24" dev eth0 && ip -n "$end" link set eth0 up
done

# --- Daemons, networks, containers --------------------------------------------------------
for d in 0 1; do
  var=NS_H$d
  mkdir -p "$WORK/d$d"
  # nsenter joins only the network namespace (`ip netns exec` would remount /sys, without
  # the cgroup mounts).
  VESSEL_LIBEXEC=$BIN nsenter --net="$(netns "${!var}")" -- "$BIN/vesseld" \
    --root-dir "$WORK/d$d/root" --run-dir "$WORK/d$d/run" --socket "$WORK/d$d/vessel.sock" \
    --no-default-network \
    >"$WORK/d$d/vesseld.log" 2>&1 &
  DPIDS+=($!)
done
for d in 0 1; do
  for _ in $(seq 1 100); do V "$d" info >/dev/null 2>&1 && break; sleep 0.1; done
  V "$d" info >/dev/null || die "daemon $d did not answer: $(tail -5 "$WORK/d$d/vesseld.log")"
  V "$d" image build busybox >/dev/null
done
V 0 network create lan --subnet 10.42.0.0/24 >/dev/null
V 0 network create ov --subnet 10.50.0.0/24 --vni 5000 --local 198.51.100.2 --peer 198.51.100.3 >/dev/null
V 1 network create ov --subnet 10.50.0.0/24 --vni 5000 --local 198.51.100.3 --peer 198.51.100.2 >/dev/null
# container DAEMON NAME NETWORK IP: a sleeping busybox container with one NIC.
container() {
  V "$1" create busybox "$2" -- sleep 3600 >/dev/null
  V "$1" network attach "$3" "$2" --ip "$4" >/dev/null
  V "$1" start "$2" >/dev/null
}
container 0 b1 lan 10.42.0.11
container 0 b2 lan 10.42.0.12
container 0 x0 ov 10.50.0.10
container 1 x1 ov 10.50.0.11
# The init's network namespace: iperf3 (the host's binary; the busybox image has none) runs
# in exactly the container's network path through nsenter.
ctr_ns() {
  local pid
  pid=$(V "$1" info "$2" --format json | jq -r '.state.pid // empty')
  [ -n "$pid" ] || die "no init pid for $2"
  echo "/proc/$pid/ns/net"
}
B1=$(ctr_ns 0 b1) B2=$(ctr_ns 0 b2) X0=$(ctr_ns 0 x0) X1=$(ctr_ns 1 x1)
mtu() { in_ns "$1" ip -o link show "$2" | sed 's/.* mtu \([0-9]*\).*/\1/'; }

# --- Throughput ---------------------------------------------------------------------------
# case NAME SERVER_NS CLIENT_NS SERVER_ADDR
CASES=(
  "veth $(netns "$NS_B") $(netns "$NS_A") 10.99.1.2"
  "bridge-by-hand $(netns "$NS_D") $(netns "$NS_C") 10.99.2.3"
  "vessel-bridge $B2 $B1 10.42.0.12"
  "underlay $(netns "$NS_H1") $(netns "$NS_H0") 198.51.100.3"
  "vxlan-by-hand $(netns "$NS_E3") $(netns "$NS_E2") 10.99.3.3"
  "vessel-overlay $X1 $X0 10.50.0.11"
)
# Every path answers first (ARP, the overlay's FDB), so no iperf3 run pays for that.
for c in "${CASES[@]}"; do
  read -r name srv cli addr <<<"$c"
  ok=0
  for _ in $(seq 1 20); do in_ns "$cli" busybox ping -c 1 -W 1 "$addr" >/dev/null 2>&1 && { ok=1; break; }; done
  [ $ok = 1 ] || die "$name: no ping from client to $addr"
done
# iperf SERVER_NS CLIENT_NS ADDR [-R]: bits per second received, into $BPS.
iperf() {
  local srv=$1 cli=$2 addr=$3 out
  shift 3
  nsenter --net="$srv" -- iperf3 -s -1 -p 5201 >/dev/null 2>&1 &
  local spid=$!
  PIDS+=("$spid")
  for _ in $(seq 1 50); do
    [ -n "$(in_ns "$srv" ss -Hltn 'sport = :5201')" ] && break
    sleep 0.1
  done
  out=$(in_ns "$cli" iperf3 -c "$addr" -p 5201 -t "$SECS" -J "$@") || die "iperf3 to $addr: $out"
  wait "$spid" 2>/dev/null || true
  BPS=$(jq -r '.end.sum_received.bits_per_second' <<<"$out")
}
dirs=("")
[ "$REVERSE" = 1 ] && dirs+=("-R")
echo "throughput: iperf3 -t $SECS, one TCP stream, $RUNS rounds (paths interleaved)" >&2
for r in $(seq 1 "$RUNS"); do
  for c in "${CASES[@]}"; do
    read -r name srv cli addr <<<"$c"
    for dir in "${dirs[@]}"; do
      iperf "$srv" "$cli" "$addr" ${dir:+"$dir"}
      echo "$BPS" >>"$RES/tput-$name$dir"
      printf '  round %s %-16s %-3s %8.2f Gbit/s\n' "$r" "$name" "$dir" "$(echo "$BPS / 10^9" | bc -l)" >&2
    done
  done
done

# --- Time to create NICS NICs ---------------------------------------------------------------
# Vessel: NICS running containers without NICs (launching them is not timed), then one
# `vessel network attach` each. Hot add lands after the daemon allowed it; before that the
# daemon refuses running instances, and the fallback times attach to stopped ones + start.
V 0 network create nics --subnet 10.60.0.0/24 >/dev/null
for i in $(seq 1 "$NICS"); do V 0 create busybox "n$i" -- sleep 3600 >/dev/null; done
HOT=1
V 0 launch busybox probe -- sleep 3600 >/dev/null
if ! err=$(V 0 network attach nics probe 2>&1); then
  case $err in *"stop it before"*) HOT=0 ;; *) die "attach: $err" ;; esac
fi
V 0 delete --force probe >/dev/null
if [ $HOT = 1 ]; then
  for i in $(seq 1 "$NICS"); do V 0 start "n$i" >/dev/null; done
  sleep 1
  t0=$(date +%s.%N)
  for i in $(seq 1 "$NICS"); do V 0 network attach nics "n$i" >/dev/null; done
  t1=$(date +%s.%N)
  vessel_s=$(echo "$t1 - $t0" | bc)
  vessel_what="attach to running containers (hot add)"
else
  t0=$(date +%s.%N)
  for i in $(seq 1 "$NICS"); do V 0 network attach nics "n$i" >/dev/null; done
  t1=$(date +%s.%N)
  for i in $(seq 1 "$NICS"); do V 0 start "n$i" >/dev/null; done
  t2=$(date +%s.%N)
  vessel_s=$(echo "$t2 - $t0" | bc)
  attach_only_s=$(echo "$t1 - $t0" | bc)
  vessel_what="attach to stopped containers + their start (no hot add yet)"
fi
# Every NIC works: each container reaches the gateway.
host_ends=$(ip -n "$NS_H0" -o link show master vbr-nics | grep -c ' vh')
[ "$host_ends" = "$NICS" ] || die "$host_ends host ends on vbr-nics for $NICS NICs"
for i in 1 "$NICS"; do
  in_ns "$(ctr_ns 0 "n$i")" busybox ping -c 1 -W 2 10.60.0.1 >/dev/null || die "n$i does not reach its gateway"
done

# iproute2: NICS sleeping processes, each in a new network namespace (not timed); then per
# NIC what the daemon does: a veth pair with its MAC and MTU, the host end on a bridge and up,
# the inner end with its address, up, and a default route.
ip -n "$NS_M" link add br1 type bridge
ip -n "$NS_M" addr add 10.61.0.1/24 dev br1 && ip -n "$NS_M" link set br1 up
SLEEPERS=()
for i in $(seq 1 "$NICS"); do
  unshare --net sleep 3600 &
  SLEEPERS+=($!)
  PIDS+=($!)
done
self=$(readlink /proc/self/ns/net)
for p in "${SLEEPERS[@]}"; do
  for _ in $(seq 1 100); do [ "$(readlink "/proc/$p/ns/net")" != "$self" ] && break; sleep 0.05; done
done
export SLEEPERS_LIST="${SLEEPERS[*]}"
by_hand() {   # runs inside NS_M
  local i=0 p
  for p in $SLEEPERS_LIST; do
    i=$((i + 1))
    ip link add "hn$i" mtu 1500 type veth peer name eth0 address "0a:57:00:00:00:$(printf %02x "$i")" mtu 1500 netns "$p"
    ip link set "hn$i" master br1 up
    nsenter --net="/proc/$p/ns/net" ip -b - <<EOF
addr add 10.61.0.$((i + 1))/24 dev eth0
link set eth0 up
route add default via 10.61.0.1
EOF
  done
}
export -f by_hand
t0=$(date +%s.%N)
nsenter --net="$(netns "$NS_M")" bash -c by_hand
t1=$(date +%s.%N)
hand_s=$(echo "$t1 - $t0" | bc)
last=${SLEEPERS[-1]}
in_ns "/proc/$last/ns/net" busybox ping -c 1 -W 2 10.61.0.1 >/dev/null || die "by hand: no path to the bridge"

# --- Report -------------------------------------------------------------------------------
r2() { echo "scale=2; $1 / $2" | bc -l | sed 's/^\./0./'; }
gb() { echo "scale=2; $1 / 10^9" | bc -l | sed 's/^\./0./'; }
declare -A MED
for f in "$RES"/tput-*; do MED[${f#"$RES"/tput-}]=$(median <"$f"); done
echo
echo "kernel $(uname -r), $(nproc) CPUs; iperf3 $(iperf3 --version | awk 'NR==1 {print $2}'), -t $SECS, $RUNS rounds, medians"
echo "MTU: veth $(mtu "$(netns "$NS_A")" v0), vessel bridge $(mtu "$B1" eth0), underlay $(mtu "$(netns "$NS_H0")" up0), overlays $(mtu "$X0" eth0) (vessel) and $(mtu "$(netns "$NS_E2")" eth0) (by hand)"
printf '%-16s %-4s %12s %-40s\n' path dir Gbit/s "ratio"
for dir in "${dirs[@]}"; do
  d=${dir:-fwd}
  v=${MED[veth$dir]} hb=${MED[bridge-by-hand$dir]} vb=${MED[vessel-bridge$dir]}
  u=${MED[underlay$dir]} o=${MED[vessel-overlay$dir]} hx=${MED[vxlan-by-hand$dir]}
  printf '%-16s %-4s %12s %-40s\n' veth "$d" "$(gb "$v")" ""
  printf '%-16s %-4s %12s %-40s\n' bridge-by-hand "$d" "$(gb "$hb")" "by hand / veth = $(r2 "$hb" "$v")"
  printf '%-16s %-4s %12s %-40s\n' vessel-bridge "$d" "$(gb "$vb")" "vessel / veth = $(r2 "$vb" "$v"), / by hand = $(r2 "$vb" "$hb")"
  printf '%-16s %-4s %12s %-40s\n' underlay "$d" "$(gb "$u")" ""
  printf '%-16s %-4s %12s %-40s\n' vxlan-by-hand "$d" "$(gb "$hx")" "by hand / underlay = $(r2 "$hx" "$u")"
  printf '%-16s %-4s %12s %-40s\n' vessel-overlay "$d" "$(gb "$o")" "vessel / underlay = $(r2 "$o" "$u"), / by hand = $(r2 "$o" "$hx")"
done
echo
printf '%s NICs, vessel, %s: %.2f s, %.1f ms per NIC\n' "$NICS" "$vessel_what" "$vessel_s" \
  "$(echo "$vessel_s * 1000 / $NICS" | bc -l)"
if [ -n "${attach_only_s:-}" ]; then printf '  of which attach alone: %.2f s\n' "$attach_only_s"; fi
printf '%s NICs, iproute2 by hand: %.2f s, %.1f ms per NIC\n' "$NICS" "$hand_s" \
  "$(echo "$hand_s * 1000 / $NICS" | bc -l)"
echo "ratio vessel / iproute2: $(r2 "$vessel_s" "$hand_s")"

if [ -n "$JSON" ]; then
  {
    for f in "$RES"/tput-*; do
      jq -R -s --arg path "${f#"$RES"/tput-}" '{path: $path, bits_per_second: (split("\n") | map(select(. != "") | tonumber))}' "$f"
    done
  } | jq -s --arg kernel "$(uname -r)" --argjson secs "$SECS" --argjson runs "$RUNS" \
    --argjson nics "$NICS" --argjson hot "$HOT" --arg vs "$vessel_s" --arg hs "$hand_s" \
    --arg what "$vessel_what" --arg ao "${attach_only_s:-}" \
    '{kernel: $kernel, iperf_seconds: $secs, runs: $runs, throughput: .,
      nics: {count: $nics, hot_add: ($hot == 1), vessel: $what, vessel_seconds: ($vs | tonumber),
             vessel_attach_only_seconds: (if $ao == "" then null else ($ao | tonumber) end),
             iproute2_seconds: ($hs | tonumber)}}' >"$JSON"
  echo "raw figures: $JSON"
fi
