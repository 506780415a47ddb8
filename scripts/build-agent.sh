#!/usr/bin/env bash
# Builds the guest agent statically linked (it runs inside busybox initramfs guests, which have
# no C library), into its own target directory so that ordinary builds never overwrite it.
# Prints the binary's path.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO"
CARGO_TARGET_DIR="$REPO/target/agent" cargo rustc --locked -q -p vessel-agent --bin vessel-agent \
  --release -- -C target-feature=+crt-static >&2
BIN="$REPO/target/agent/release/vessel-agent"
if readelf -l "$BIN" | grep -q 'interpreter'; then
  echo "error: $BIN came out dynamically linked" >&2
  exit 1
fi
echo "$BIN"
