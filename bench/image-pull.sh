#!/usr/bin/env bash
# Pull throughput: `vessel image pull` (download, verify, unpack into a layer) against
# `podman pull` (download, verify, unpack into vfs storage) and `skopeo copy` to an OCI layout
# (download and verify only), of the same image from the same local registry, cold every run.
. "$(dirname "$0")/lib.sh"
RUNS=${RUNS:-8}
SIZE_MB=${SIZE_MB:-96}
WORK=$(mktemp -d /tmp/vessel-pullbench.XXXXXX)
chmod 755 "$WORK"
P() { podman --root "$WORK/proot" --runroot "$WORK/prun" --storage-driver vfs "$@"; }
cleanup() {
  "$BIN/vessel" --socket "$WORK/s.sock" image delete bench >/dev/null 2>&1 || true
  [ -n "${DPID:-}" ] && kill "$DPID" 2>/dev/null && wait "$DPID" 2>/dev/null
  [ -n "${RPID:-}" ] && kill "$RPID" 2>/dev/null
  P rmi -af >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT
command -v skopeo >/dev/null || die "skopeo missing: apt-get install skopeo"
command -v docker-registry >/dev/null || die "docker-registry missing: apt-get install docker-registry"

# The image: busybox, ${SIZE_MB} MB of incompressible data and 2000 small files.
mkdir -p "$WORK/rootfs/bin" "$WORK/rootfs/data/small"
cp /bin/busybox "$WORK/rootfs/bin/"
ln -s busybox "$WORK/rootfs/bin/sh"
head -c "$((SIZE_MB << 20))" /dev/urandom > "$WORK/rootfs/data/random.bin"
for i in $(seq 1 2000); do echo "file $i" > "$WORK/rootfs/data/small/f$i"; done
tar -C "$WORK/rootfs" -cf "$WORK/rootfs.tar" .
P import "$WORK/rootfs.tar" localhost/bench:1 >/dev/null
P save --format oci-archive -o "$WORK/bench.tar" localhost/bench:1 >/dev/null
P rmi -af >/dev/null
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
printf 'version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: %s\nhttp:\n  addr: 127.0.0.1:%s\n' \
  "$WORK/registry" "$PORT" > "$WORK/registry.yml"
docker-registry serve "$WORK/registry.yml" >"$WORK/registry.log" 2>&1 & RPID=$!
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$PORT/v2/" >/dev/null && break; sleep 0.1; done
REF=127.0.0.1:$PORT/bench/img:1
skopeo copy --dest-tls-verify=false "oci-archive:$WORK/bench.tar" "docker://$REF" >/dev/null

VESSEL_LIBEXEC=$BIN "$BIN/vesseld" --root-dir "$WORK/root" --run-dir "$WORK/run" --socket "$WORK/s.sock" \
  --no-default-network \
  >"$WORK/vesseld.log" 2>&1 & DPID=$!
for _ in $(seq 1 100); do "$BIN/vessel" --socket "$WORK/s.sock" info >/dev/null 2>&1 && break; sleep 0.1; done

MB=$(du -sm "$WORK/rootfs" | cut -f1)
interleave "$RUNS" "$WORK" \
  vessel "$BIN/vessel --socket $WORK/s.sock image delete bench; true" \
    "$BIN/vessel --socket $WORK/s.sock image pull $REF --insecure --alias bench" \
  podman "podman --root $WORK/proot --runroot $WORK/prun --storage-driver vfs rmi -af; true" \
    "podman --root $WORK/proot --runroot $WORK/prun --storage-driver vfs pull --tls-verify=false -q $REF" \
  skopeo "rm -rf $WORK/oci" "skopeo copy -q --src-tls-verify=false docker://$REF oci:$WORK/oci:img"
for n in vessel podman skopeo; do
  echo "$n: $(echo "scale=1; $MB / $(bench_median "$WORK/times.$n")" | bc) MB/s"
done
