#!/usr/bin/env bash
# The chaos test at length: the daemon SIGKILLed at random points (a third within the first
# 100 ms of the operations in flight) while containers, a VM, networks, forwards and balancers
# change under CPU load, for ITERATIONS kills (default 300; the test suite runs 30). After every
# restart the host's state must match the store; at the end deleting everything must leave
# nothing. A failure prints the seed: SEED=N replays the same run.
#   ITERATIONS=300 SEED=N bench/chaos.sh
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
[ "$(id -u)" = 0 ] || { echo "error: run as root" >&2; exit 1; }
cd "$REPO"
export VESSEL_CHAOS_ITERATIONS=${ITERATIONS:-300}
[ -n "${SEED:-}" ] && export VESSEL_CHAOS_SEED=$SEED
start=$(date +%s)
LOG=$(mktemp /tmp/vessel-chaos.XXXXXX.log)
rc=0
cargo test --locked -p vesseld --test chaos -- --nocapture >"$LOG" 2>&1 || rc=$?
grep -E '^chaos:|^test result' "$LOG" || true
if [ "$rc" != 0 ]; then
  # The failure with its context (the stack trace lines left out); the whole log is kept.
  grep -v -E '^ +[0-9]+: |^ +at ' "$LOG" | grep -A 40 panicked | head -60
  echo "full log: $LOG"
else
  rm -f "$LOG"
fi
echo "wall time: $(( $(date +%s) - start )) s"
exit "$rc"
