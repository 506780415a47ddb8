#!/usr/bin/env bash
# Runs the whole test suite: formatting, lints, build, unit and end-to-end tests (as root).
REPO=$(cd "$(dirname "$0")/.." && pwd)
. "$REPO/scripts/lib.sh"
require_root
install_packages
require_node
require_cargo
cd "$REPO"

step "dashboard: ui/build.sh (npm ci, then ui/dist, embedded by the daemon's build)"
./ui/build.sh
step "cargo fmt --check"
cargo fmt --all -- --check
step "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
step "cargo build"
cargo build --workspace --locked
step "static guest agent"
./scripts/build-agent.sh
step "cargo test (test binaries in ${VESSEL_TEST_LANES:-2} lanes: scripts/test-lanes.py)"
/usr/bin/python3 scripts/test-lanes.py --lanes "${VESSEL_TEST_LANES:-2}" -- --test-threads=2
