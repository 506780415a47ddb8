#!/usr/bin/env bash
# The dashboard and the metrics at 1,000 instances: a private vesseld (release build, the
# dashboard embedded) with N (1000) instances, RUNNING (100) of them running busybox.
# 1. One scrape of /1.0/metrics over HTTPS (admin token), uncached (each timed scrape waits
#    out the cache first), against Debian's node_exporter scraped on the same host in the
#    same interleaved rounds (its whole default collector set): milliseconds and bytes.
# 2. Time to first paint of the instance list: Debian's chromium (playwright-core) opens
#    #/instances with a token in the session and waits until all N rows are drawn; against
#    the API call alone (GET /1.0/instances?recursion=1) and `vessel list`, in the same rounds.
. "$(dirname "$0")/lib.sh"
N=${N:-1000}
RUNNING=${RUNNING:-100}
ROUNDS=${ROUNDS:-10}
PORT=${PORT:-18543}
NE_PORT=${NE_PORT:-19100}
NE=/usr/bin/prometheus-node-exporter
[ -x "$NE" ] || die "$NE missing: apt-get install prometheus-node-exporter"
[ -d "$REPO/ui/node_modules/playwright-core" ] || die "ui/node_modules missing: run ui/build.sh"
[ -x /usr/bin/chromium ] || die "/usr/bin/chromium missing: apt-get install chromium"
WORK=$(mktemp -d /tmp/vessel-dash.XXXXXX)
chmod 755 "$WORK"
SOCK=$WORK/vessel.sock
V() { "$BIN/vessel" --socket "$SOCK" "$@"; }
cleanup() {
  [ -n "${NEPID:-}" ] && kill "$NEPID" 2>/dev/null
  if [ -n "${DPID:-}" ]; then
    for i in $(seq 1 "$RUNNING"); do V stop "i$i" --force >/dev/null 2>&1 || true; done
    kill "$DPID" 2>/dev/null && wait "$DPID" 2>/dev/null
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT
VESSEL_LIBEXEC=$BIN "$BIN/vesseld" --root-dir "$WORK/root" --run-dir "$WORK/run" --socket "$SOCK" \
  --no-default-network --listen "127.0.0.1:$PORT" >"$WORK/vesseld.log" 2>&1 &
DPID=$!
for _ in $(seq 1 100); do V info >/dev/null 2>&1 && break; sleep 0.1; done
V image build busybox >/dev/null
echo "creating $N instances, starting $RUNNING..."
t0=$(date +%s)
for i in $(seq 1 "$N"); do V create busybox "i$i" --no-network >/dev/null; done
for i in $(seq 1 "$RUNNING"); do V start "i$i" >/dev/null; done
echo "  took $(( $(date +%s) - t0 )) s"
TOKEN=$(V auth token create bench --role admin --format json | jq -r .token)
[ -n "$TOKEN" ] && [ "$TOKEN" != null ] || die "no token"
CERT=$WORK/root/server.crt
"$NE" --web.listen-address="127.0.0.1:$NE_PORT" >"$WORK/ne.log" 2>&1 &
NEPID=$!
for _ in $(seq 1 50); do curl -sf "http://127.0.0.1:$NE_PORT/metrics" >/dev/null && break; sleep 0.1; done
export TOKEN CERT PORT NE_PORT WORK
curl -sS --cacert "$CERT" -H "Authorization: Bearer $TOKEN" "https://127.0.0.1:$PORT/1.0/metrics" > "$WORK/ours.txt"
curl -sS "http://127.0.0.1:$NE_PORT/metrics" > "$WORK/ne.txt"
echo "scrape sizes: vessel $(wc -c < "$WORK/ours.txt") bytes, $(grep -vc '^#' "$WORK/ours.txt") samples" \
  "($N instances, $RUNNING running); node_exporter $(wc -c < "$WORK/ne.txt") bytes," \
  "$(grep -vc '^#' "$WORK/ne.txt") samples"
echo "metrics scrape (uncached: each waits out the 3 s cache first):"
interleave "$ROUNDS" "$WORK" \
  "vessel-metrics" "sleep 3.2" "curl -sS --cacert \"\$CERT\" -H \"Authorization: Bearer \$TOKEN\" -o /dev/null https://127.0.0.1:\$PORT/1.0/metrics" \
  "node-exporter" ":" "curl -sS -o /dev/null http://127.0.0.1:\$NE_PORT/metrics"
echo "cached scrape (within the 3 s):"
interleave "$ROUNDS" "$WORK" \
  "vessel-metrics-cached" ":" "curl -sS --cacert \"\$CERT\" -H \"Authorization: Bearer \$TOKEN\" -o /dev/null https://127.0.0.1:\$PORT/1.0/metrics" \
  "node-exporter" ":" "curl -sS -o /dev/null http://127.0.0.1:\$NE_PORT/metrics"
echo "first paint of the instance list ($N rows), median of $ROUNDS page loads in one browser:"
node "$REPO/bench/dashboard-paint.mjs" "https://127.0.0.1:$PORT" "$TOKEN" "$N" "$ROUNDS"
interleave "$ROUNDS" "$WORK" \
  "api-list" ":" "curl -sS --cacert \"\$CERT\" -H \"Authorization: Bearer \$TOKEN\" -o /dev/null \"https://127.0.0.1:\$PORT/1.0/instances?recursion=1\"" \
  "vessel-list" ":" "'$BIN/vessel' --socket '$SOCK' list"
