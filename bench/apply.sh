#!/usr/bin/env bash
# A stack of N (200) busybox instances brought about by one `vessel apply -f` (which makes
# four at once) against the same instances made by N `vessel launch` calls, one after
# another and four at once (xargs -P 4), in interleaved rounds (everything deleted
# between rounds, untimed); then a second apply of the unchanged stack (the no-op), and the
# planner on 10,000 instances over 100 simulated members (vessel-placement's example).
. "$(dirname "$0")/lib.sh"
N=${N:-200}
ROUNDS=${ROUNDS:-3}
WORK=$(mktemp -d /tmp/vessel-apply.XXXXXX)
chmod 755 "$WORK"
SOCK=$WORK/vessel.sock
export VESSEL_SOCKET=$SOCK
V() { "$BIN/vessel" "$@"; }
cleanup() {
  if [ -n "${DPID:-}" ]; then
    V destroy -f "$WORK/stack.yaml" >/dev/null 2>&1 || true
    for i in $(seq 1 "$N"); do V delete "l$i" --force >/dev/null 2>&1 || true; done
    kill "$DPID" 2>/dev/null && wait "$DPID" 2>/dev/null
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT
VESSEL_LIBEXEC=$BIN "$BIN/vesseld" --root-dir "$WORK/root" --run-dir "$WORK/run" --socket "$SOCK" \
  --no-default-network >"$WORK/vesseld.log" 2>&1 &
DPID=$!
for _ in $(seq 1 100); do V info >/dev/null 2>&1 && break; sleep 0.1; done
V image build busybox >/dev/null
{
  echo "name: bench"
  echo "instances:"
  for i in $(seq 1 "$N"); do
    printf '  s%d:\n    image: busybox\n    limits: {memory: 32MiB}\n' "$i"
  done
} > "$WORK/stack.yaml"
cat > "$WORK/launch.sh" <<SH
for i in \$(seq 1 $N); do "$BIN/vessel" launch busybox "l\$i" --no-network -l memory=32MiB >/dev/null; done
SH
cat > "$WORK/launch4.sh" <<SH
seq 1 $N | xargs -P 4 -I{} "$BIN/vessel" launch busybox "l{}" --no-network -l memory=32MiB >/dev/null
SH
cat > "$WORK/unlaunch.sh" <<SH
for i in \$(seq 1 $N); do "$BIN/vessel" delete "l\$i" --force >/dev/null 2>&1 || true; done
SH
echo "$N instances, $ROUNDS rounds:"
CLEAN="'$BIN/vessel' destroy -f '$WORK/stack.yaml' >/dev/null; bash '$WORK/unlaunch.sh'"
interleave "$ROUNDS" "$WORK" \
  "apply" "$CLEAN" "'$BIN/vessel' apply -f '$WORK/stack.yaml'" \
  "launch-calls" "$CLEAN" "bash '$WORK/launch.sh'" \
  "launch-calls-4-at-once" "$CLEAN" "bash '$WORK/launch4.sh'"
"$BIN/vessel" apply -f "$WORK/stack.yaml" >/dev/null
interleave "$ROUNDS" "$WORK" \
  "apply-again" ":" "'$BIN/vessel' apply -f '$WORK/stack.yaml'" \
  "list" ":" "'$BIN/vessel' list"
echo "planner:"
(cd "$REPO" && cargo run --release --locked -q -p vessel-placement --example placement-bench)
