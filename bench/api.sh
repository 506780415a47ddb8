#!/usr/bin/env bash
# The API's cost over HTTPS against the unix socket: a private vesseld with N (1000) stopped
# instances; ROUNDS rounds, alternating which transport goes first, each of REQ sequential
# keep-alive requests of `GET /1.0/instances?recursion=1` (the client is Python's http.client,
# over OpenSSL for HTTPS, with a bearer token); then `vessel list` timed over both.
# Reports requests per second and p50/p99 latency per transport, and the ratios.
. "$(dirname "$0")/lib.sh"
N=${N:-1000}
REQ=${REQ:-200}
ROUNDS=${ROUNDS:-5}
PY=/usr/bin/python3
[ -x "$PY" ] || die "$PY missing: apt-get install python3"
WORK=$(mktemp -d /tmp/vessel-api.XXXXXX)
chmod 755 "$WORK"
SOCK=$WORK/vessel.sock
PORT=${PORT:-18443}
V() { "$BIN/vessel" --socket "$SOCK" "$@"; }
cleanup() {
  [ -n "${DPID:-}" ] && kill "$DPID" 2>/dev/null && wait "$DPID" 2>/dev/null
  # Stopped instances hold no mounts or processes: their files go with the directory.
  rm -rf "$WORK"
}
trap cleanup EXIT
VESSEL_LIBEXEC=$BIN "$BIN/vesseld" --root-dir "$WORK/root" --run-dir "$WORK/run" --socket "$SOCK" \
  --no-default-network --listen "127.0.0.1:$PORT" >"$WORK/vesseld.log" 2>&1 &
DPID=$!
for _ in $(seq 1 100); do V info >/dev/null 2>&1 && break; sleep 0.1; done
V image build busybox >/dev/null
echo "creating $N stopped instances..."
t0=$(date +%s)
for i in $(seq 1 "$N"); do V create busybox "i$i" --no-network >/dev/null; done
echo "  took $(( $(date +%s) - t0 )) s"
TOKEN=$(curl -sS --unix-socket "$SOCK" -H 'Content-Type: application/json' \
  -d '{"name":"bench","role":"viewer"}' http://v/1.0/auth/tokens | jq -r .token)
[ -n "$TOKEN" ] && [ "$TOKEN" != null ] || die "no token"
CERT=$WORK/root/server.crt
P='/1.0/instances?recursion=1'
: > "$WORK/unix.jsonl"; : > "$WORK/https.jsonl"
for r in $(seq 1 "$ROUNDS"); do
  if [ $((r % 2)) = 1 ]; then order="unix https"; else order="https unix"; fi
  for t in $order; do
    if [ "$t" = unix ]; then
      "$PY" "$REPO/bench/api_load.py" unix "$SOCK" "$P" "$REQ" >> "$WORK/unix.jsonl"
    else
      "$PY" "$REPO/bench/api_load.py" https "127.0.0.1:$PORT" "$CERT" "$TOKEN" "$P" "$REQ" >> "$WORK/https.jsonl"
    fi
  done
done
summary() {  # FILE: median rps, p50 and p99 over the rounds
  jq -s '{rps: (map(.rps)|sort|.[length/2|floor]), p50_ms: (map(.p50_ms)|sort|.[length/2|floor]),
          p99_ms: (map(.p99_ms)|sort|.[length/2|floor]), bytes: .[0].bytes}' -c "$1"
}
U=$(summary "$WORK/unix.jsonl"); H=$(summary "$WORK/https.jsonl")
echo "GET $P with $N instances, $REQ requests x $ROUNDS rounds (medians of rounds):"
echo "  unix socket: $U"
echo "  https:       $H"
echo "  https/unix time per request (p50) = $(echo "scale=2; $(jq .p50_ms <<<"$H") / $(jq .p50_ms <<<"$U")" | bc)"
echo "  https/unix p99 = $(echo "scale=2; $(jq .p99_ms <<<"$H") / $(jq .p99_ms <<<"$U")" | bc)"
echo "  unix/https requests per second = $(echo "scale=2; $(jq .rps <<<"$U") / $(jq .rps <<<"$H")" | bc)"
# vessel list, over the socket and over HTTPS (a remote added with its pin).
export VESSEL_CONFIG_DIR=$WORK/client
FP=$(openssl x509 -in "$CERT" -outform DER | sha256sum | cut -d' ' -f1)
V remote add bench "https://127.0.0.1:$PORT" --token "$TOKEN" --accept-certificate >/dev/null \
  || die "vessel remote add failed"
interleave 10 "$WORK" \
  "vessel-list-unix" ":" "'$BIN/vessel' --socket '$SOCK' list" \
  "vessel-list-https" ":" "VESSEL_CONFIG_DIR='$WORK/client' '$BIN/vessel' list bench:"
echo "(server certificate $FP)"
