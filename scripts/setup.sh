#!/usr/bin/env bash
# Installs Vessel's host dependencies from Debian, builds and installs Vessel, starts the daemon
# on the embedded store and launches a demo container.
REPO=$(cd "$(dirname "$0")/.." && pwd)
. "$REPO/scripts/lib.sh"
require_root
install_packages
require_node
require_cargo

step "building the dashboard (npm packages pinned in ui/package-lock.json)"
cd "$REPO"
./ui/build.sh
step "building Vessel (release)"
cargo build --release --locked --workspace
install -m 0755 target/release/vessel target/release/vesseld target/release/vessel-monitor \
  target/release/vessel-runc target/release/vessel-nbd target/release/vessel-nfs /usr/local/bin/
install -m 0755 "$(./scripts/build-agent.sh)" /usr/local/bin/vessel-agent

SOCK=/run/vessel/vessel.sock
# A daemon from an earlier install is restarted on the new binaries; instances keep running
# and the new daemon adopts them.
if vessel info >/dev/null 2>&1; then
  step "restarting vesseld on the new binaries"
  if [ -d /run/systemd/system ] && systemctl is-active -q vesseld 2>/dev/null; then
    systemctl restart vesseld
  else
    OLD=$(vessel info --format json | jq -r .pid)
    kill -TERM "$OLD"
    for _ in $(seq 1 100); do kill -0 "$OLD" 2>/dev/null || break; sleep 0.1; done
  fi
fi
if ! vessel info >/dev/null 2>&1; then
  step "starting vesseld"
  if [ -d /run/systemd/system ]; then
    install -m 0644 "$REPO/scripts/vesseld.service" /etc/systemd/system/vesseld.service
    systemctl daemon-reload
    systemctl enable --now vesseld
  else
    mkdir -p /var/log
    nohup /usr/local/bin/vesseld >>/var/log/vesseld.log 2>&1 </dev/null &
  fi
  for _ in $(seq 1 100); do [ -S "$SOCK" ] && vessel info >/dev/null 2>&1 && break; sleep 0.1; done
  vessel info >/dev/null || die "vesseld did not start; see /var/log/vesseld.log or journalctl -u vesseld"
fi

step "building the busybox image"
vessel image info busybox >/dev/null 2>&1 || vessel image build busybox

step "launching the demo container"
if ! vessel info demo >/dev/null 2>&1; then
  vessel launch busybox demo --limit memory=128MiB --limit pids=100
fi
vessel list

cat <<'TXT'

Vessel is running, with a demo container. Try:
  vessel exec demo -- ps            # run a command inside
  vessel exec demo -- sh            # an interactive shell
  vessel console demo               # the console (detach: Ctrl-a q)
  vessel info demo                  # live cpu, memory and pids
  vessel launch busybox c2 -l cpu=0.5 -l memory=64MiB
  vessel stop demo && vessel delete demo
  vessel --help
TXT
