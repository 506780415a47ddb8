#!/usr/bin/env bash
# NBD export throughput: Vessel's NBD server against qemu-nbd and nbdkit (file plugin)
# serving the same image file over unix sockets to the same clients, same run:
# - nbdcopy (interleaved rounds): reads the whole export to null: and writes a whole image into it,
#   without and with a flush at the end (`--flush`);
# - fio's nbd engine (libnbd, one connection per job): 4 KiB randread and randwrite at queue
#   depth 1 and FIO_DEPTH, FIO_SECS each, servers in rotating order, FIO_RUNS times (medians);
#   then a randwrite job over FIO_VERIFY_MB with verify=crc32c (fails the bench on a mismatch).
# Every row is also run against block volumes of two `raid` pools (RAID_LEVEL, default raid0,
# MEMBERS members; RAID_LEVEL=none skips them) exported by a private vesseld, the product's
# own path: thin volume over our RAID engine over member files in the same directory; one
# pool with its members O_DIRECT (raid.cache=none, the default: `vraid`), one through the
# page cache as the peers' files are (raid.cache=writeback: `vraidc`).
# TLS=1: the three file servers listen on loopback TCP and require TLS with client
# certificates (vessel-nbd --tls-certificates, qemu-nbd tls-creds-x509 with verify-peer,
# nbdkit --tls=require --tls-verify-peer; certificates made with openssl for the run), the
# clients use nbds:// URIs with tls-certificates=; no raid rows.
. "$(dirname "$0")/lib.sh"
TLS=${TLS:-0}
[ "$TLS" = 0 ] || RAID_LEVEL=none
RAID_LEVEL=${RAID_LEVEL:-raid0}
MEMBERS=${MEMBERS:-4}
RUNS=${RUNS:-6}
SIZE_MB=${SIZE_MB:-256}
FIO_SECS=${FIO_SECS:-5}
FIO_RUNS=${FIO_RUNS:-3}
FIO_DEPTH=${FIO_DEPTH:-16}
FIO_VERIFY_MB=${FIO_VERIFY_MB:-64}
for t in qemu-nbd nbdkit nbdcopy; do
  command -v "$t" >/dev/null || die "$t missing: apt-get install qemu-utils nbdkit libnbd-bin"
done
command -v fio >/dev/null || die "fio missing: apt-get install fio"
fio --enghelp 2>/dev/null | grep -qx '[[:space:]]*nbd' \
  || die "this fio has no nbd engine (fio --enghelp): the fio part needs fio built with libnbd"
WORK=$(mktemp -d /tmp/vessel-nbdbench.XXXXXX)
chmod o+x "$WORK"  # vesseld wants its root reachable by unprivileged containers
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done; wait 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT
head -c "$((SIZE_MB << 20))" /dev/urandom > "$WORK/source.img"
# The servers' images start empty (sparse) and are filled through the servers themselves,
# as the raid volumes are below: how a file's pages entered the page cache (the size of the
# folios the writes made) changes what a 4 KiB buffered write into it costs later by up to a
# third, so every export starts with the history of its own server's writes.
for s in vessel qemu nbdkit; do truncate -s "${SIZE_MB}M" "$WORK/$s.img"; done
if [ "$TLS" = 0 ]; then
  "$BIN/vessel-nbd" --socket "$WORK/vessel.sock" "disk=$WORK/vessel.img" & PIDS+=($!)
  qemu-nbd -f raw -x disk --socket="$WORK/qemu.sock" --persistent --shared=8 \
    "$WORK/qemu.img" & PIDS+=($!)
  nbdkit -f -U "$WORK/nbdkit.sock" -e disk file "$WORK/nbdkit.img" & PIDS+=($!)
  for s in vessel qemu nbdkit; do
    for _ in $(seq 1 100); do [ -S "$WORK/$s.sock" ] && break; sleep 0.1; done
    [ -S "$WORK/$s.sock" ] || die "$s did not create its socket"
  done
else
  command -v openssl >/dev/null || die "openssl missing: apt-get install openssl"
  # A CA, a server certificate for 127.0.0.1 and a client certificate; the servers' directory
  # as nbdkit and QEMU read it (ca-cert.pem, server-cert.pem, server-key.pem), the clients'
  # as libnbd reads it (ca-cert.pem, client-cert.pem, client-key.pem).
  mkdir -p "$WORK/pki/server" "$WORK/pki/client"
  (cd "$WORK/pki"
   ossl() { openssl "$@" 2>/dev/null; }
   ossl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=bench-ca \
     -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign \
     -keyout ca-key.pem -out ca-cert.pem
   for who in server client; do
     ossl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=bench-$who" \
       -keyout "$who/$who-key.pem" -out "$who.csr"
     if [ $who = server ]; then ext="subjectAltName=IP:127.0.0.1
extendedKeyUsage=serverAuth"; else ext="extendedKeyUsage=clientAuth"; fi
     ossl x509 -req -in "$who.csr" -CA ca-cert.pem -CAkey ca-key.pem -CAcreateserial -days 2 \
       -extfile <(printf '%s\n' "$ext" "keyUsage=critical,digitalSignature") -out "$who/$who-cert.pem"
     cp ca-cert.pem "$who/"
   done) || die "making the certificates failed"
  [ -s "$WORK/pki/client/client-cert.pem" ] || die "openssl made no client certificate"
  PORTS=()
  for s in vessel qemu nbdkit; do
    PORTS+=("$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')")
  done
  "$BIN/vessel-nbd" --tcp "127.0.0.1:${PORTS[0]}" --tls-certificates "$WORK/pki/server" \
    "disk=$WORK/vessel.img" & PIDS+=($!)
  qemu-nbd -f raw -x disk -b 127.0.0.1 -p "${PORTS[1]}" --persistent --shared=8 \
    --object "tls-creds-x509,id=tls0,dir=$WORK/pki/server,endpoint=server,verify-peer=on" \
    --tls-creds tls0 "$WORK/qemu.img" & PIDS+=($!)
  nbdkit -f -i 127.0.0.1 -p "${PORTS[2]}" --tls=require --tls-certificates="$WORK/pki/server" \
    --tls-verify-peer -e disk file "$WORK/nbdkit.img" & PIDS+=($!)
  port_of() { case $1 in vessel) echo "${PORTS[0]}" ;; qemu) echo "${PORTS[1]}" ;; nbdkit) echo "${PORTS[2]}" ;; esac; }
  for s in vessel qemu nbdkit; do
    for _ in $(seq 1 100); do
      nbdinfo --size "nbds://127.0.0.1:$(port_of $s)/disk?tls-certificates=$WORK/pki/client" >/dev/null 2>&1 && break
      sleep 0.1
    done
    nbdinfo --size "nbds://127.0.0.1:$(port_of $s)/disk?tls-certificates=$WORK/pki/client" >/dev/null \
      || die "$s does not answer over TLS"
    # And refuses a client without TLS.
    ! nbdinfo --size "nbd://127.0.0.1:$(port_of $s)/disk" >/dev/null 2>&1 \
      || die "$s serves a client without TLS"
  done
fi
servers=(vessel qemu nbdkit)
uri() {
  local e=disk; case $1 in vraid*) e=$1 ;; esac
  if [ "$TLS" = 0 ]; then echo "nbd+unix:///$e?socket=$WORK/$1.sock"
  else echo "nbds://127.0.0.1:$(port_of "$1")/$e?tls-certificates=$WORK/pki/client"; fi
}
for s in "${servers[@]}"; do
  nbdcopy --flush "$WORK/source.img" "$(uri "$s")" || die "filling $s's image failed"
done
if [ "$RAID_LEVEL" != none ]; then
  SOCK=$WORK/vesseld.sock
  VESSEL_LIBEXEC=$BIN "$BIN/vesseld" --root-dir "$WORK/root" --run-dir "$WORK/run" --socket "$SOCK" \
    --no-default-network >"$WORK/vesseld.log" 2>&1 & PIDS+=($!)
  v() { "$BIN/vessel" --socket "$SOCK" "$@"; }
  for _ in $(seq 1 100); do v list >/dev/null 2>&1 && break; sleep 0.1; done
  v list >/dev/null || die "vesseld did not start: $(tail -5 "$WORK/vesseld.log")"
  # Member size: the volume plus a quarter for the thin pool's metadata and slack, spread
  # over the members that carry data.
  case $RAID_LEVEL in
    raid0) data=$MEMBERS ;; raid1) data=1 ;; raid5) data=$((MEMBERS - 1)) ;; raid6) data=$((MEMBERS - 2)) ;;
    *) die "RAID_LEVEL must be raid0, raid1, raid5, raid6 or none" ;;
  esac
  for cache in none writeback; do
    p=bench-$cache; s=vraid; [ $cache = none ] || s=vraidc
    v storage pool create "$p" raid --level "$RAID_LEVEL" --members "$MEMBERS" -c "raid.cache=$cache" \
      --size "$(( (SIZE_MB * 5 / 4) / data + 8 ))MiB" >/dev/null || die "raid pool create failed"
    v storage volume create "$p" disk --type block --size "${SIZE_MB}MiB" >/dev/null
    v storage export create "$s" "$p" disk --protocol nbd --listen "$WORK/$s.sock" >/dev/null
    nbdcopy --flush "$WORK/source.img" "nbd+unix:///$s?socket=$WORK/$s.sock" || die "filling the raid volume failed"
    servers+=("$s")
  done
  echo "raid volume: $RAID_LEVEL over $MEMBERS member files in $WORK/root, exported by vesseld" >&2
fi
echo "servers: vessel-nbd ($BIN/vessel-nbd), $(qemu-nbd --version | head -1), $(nbdkit --version); clients: $(nbdcopy --version | head -1), $(fio --version)$([ "$TLS" = 0 ] || echo '; over loopback TCP with TLS')" >&2
# `flushed`: a write that ends with NBD_CMD_FLUSH (`nbdcopy --flush`), as a copy that must be
# on disk when it returns (qemu-img convert flushes too): the time includes writing it back.
for f in read write flushed; do
  mkdir -p "$WORK/$f"
  if [ "$f" = read ]; then src() { uri "$1"; }; dst() { echo null:; }
  else src() { echo "$WORK/source.img"; }; dst() { uri "$1"; }; fi
  flag=; [ "$f" = flushed ] && flag=--flush
  echo "== nbdcopy $f ($SIZE_MB MiB), time ratios (below 1: vessel-nbd is faster)"
  # Each round starts with nothing dirty (untimed `sync`): what one server's copy left to
  # write back, or the flush ours makes after a client's disconnect, is not charged to the
  # next one.
  extra=()
  [ "$RAID_LEVEL" = none ] || extra=(vraid sync "nbdcopy $flag $(src vraid) $(dst vraid)" \
    vraidc sync "nbdcopy $flag $(src vraidc) $(dst vraidc)")
  interleave "$RUNS" "$WORK/$f" \
    vessel sync "nbdcopy $flag $(src vessel) $(dst vessel)" \
    qemu-nbd sync "nbdcopy $flag $(src qemu) $(dst qemu)" \
    nbdkit sync "nbdcopy $flag $(src nbdkit) $(dst nbdkit)" "${extra[@]}"
  names=(vessel qemu-nbd nbdkit); [ "$RAID_LEVEL" = none ] || names+=(vraid vraidc)
  for n in "${names[@]}"; do
    echo "$f $n: $(echo "scale=0; $SIZE_MB / $(bench_median "$WORK/$f/times.$n")" | bc) MB/s"
  done
  if [ "$RAID_LEVEL" != none ]; then
    for r in vraid vraidc; do for p in qemu-nbd nbdkit; do
      echo "$r / $p = $(echo "scale=2; $(bench_median "$WORK/$f/times.$p") / $(bench_median "$WORK/$f/times.$r")" | bc) (throughput; above 1: the raid volume is faster)"
    done; done
  fi
done

if [ "$TLS" != 0 ]; then
  # fio's nbd engine opens its URI with libnbd's default, which refuses the local files a
  # URI names (tls-certificates=): no fio rows over TLS.
  echo "fio: skipped over TLS (fio's nbd engine lets libnbd read no tls-certificates directory)"
  exit 0
fi
# fio's nbd engine. Every job gets its own connection; writes end with a flush (end_fsync).
fio_run() { # SERVER RW DEPTH: prints the job's IOPS
  local out=$WORK/fio-$1-$2-$3.json
  fio --output-format=json --output="$out" --name="$2-qd$3" --ioengine=nbd --uri="$(uri "$1")" \
    --rw="$2" --bs=4k --iodepth="$3" --time_based --runtime="$FIO_SECS" --randrepeat=0 \
    --end_fsync=1 >/dev/null || die "fio $2 against $1 failed"
  jq -r --arg rw "$2" '.jobs[0] | if $rw == "randread" then .read.iops else .write.iops end' "$out"
}
: > "$WORK/fio.tsv"
n=${#servers[@]}
for run in $(seq 1 "$FIO_RUNS"); do
  for test in "randread 1" "randread $FIO_DEPTH" "randwrite 1" "randwrite $FIO_DEPTH"; do
    set -- $test
    for i in $(seq 0 $((n - 1))); do  # rotate which server goes first
      s=${servers[$(( (i + run) % n ))]}
      printf '%s\t%s qd%s\t%s\n' "$s" "$1" "$2" "$(fio_run "$s" "$1" "$2")" >> "$WORK/fio.tsv"
    done
  done
done
# Verified writes: every block written once at random, then read back and checked.
for s in "${servers[@]}"; do
  out=$WORK/verify-$s.json
  fio --output-format=json --output="$out" --name=verify --ioengine=nbd --uri="$(uri "$s")" \
    --rw=randwrite --bs=4k --iodepth="$FIO_DEPTH" --size="${FIO_VERIFY_MB}M" --verify=crc32c \
    --do_verify=1 --verify_fatal=1 --verify_state_save=0 --end_fsync=1 >/dev/null \
    || die "fio verify=crc32c against $s failed: $(jq -r '.jobs[0].error' "$out" 2>/dev/null)"
  [ "$(jq '.jobs[0].error' "$out")" = 0 ] || die "fio verify=crc32c against $s reported an error"
  printf '%s\tverified randwrite qd%s (%s MiB)\t%s\n' "$s" "$FIO_DEPTH" "$FIO_VERIFY_MB" \
    "$(jq -r '.jobs[0].write.iops' "$out")" >> "$WORK/fio.tsv"
done
python3 - "$WORK/fio.tsv" <<'PY'
import sys, statistics as st
from collections import defaultdict
v = defaultdict(list); order = []
for line in open(sys.argv[1]):
    s, test, iops = line.rstrip("\n").split("\t")
    if test not in order: order.append(test)
    v[(test, s)].append(float(iops))
servers = [s for s in ("vessel", "qemu", "nbdkit", "vraid", "vraidc") if any(k[1] == s for k in v)]
for t in order:
    m = {s: st.median(v[(t, s)]) for s in servers if (t, s) in v}
    line = (f"fio {t}\tvessel {m['vessel']:.0f} IOPS\tqemu-nbd {m['qemu']:.0f}\tnbdkit {m['nbdkit']:.0f}"
            f"\tvessel / qemu-nbd = {m['vessel'] / m['qemu']:.2f}\tvessel / nbdkit = {m['vessel'] / m['nbdkit']:.2f}")
    for r in ("vraid", "vraidc"):
        if r in m:
            line += (f"\t{r} {m[r]:.0f}\t{r} / qemu-nbd = {m[r] / m['qemu']:.2f}"
                     f"\t{r} / nbdkit = {m[r] / m['nbdkit']:.2f}")
    print(line)
    print("  runs: " + "; ".join(f"{s} " + " ".join(f"{x:.0f}" for x in v[(t, s)]) for s in servers if (t, s) in v))
PY
echo "fio verify=crc32c passed against every server (${servers[*]})"
