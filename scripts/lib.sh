# Shared by setup.sh and test.sh. Fails loudly: a missing prerequisite is never skipped.
set -euo pipefail

die() { echo "error: $*" >&2; exit 1; }
step() { printf '\n==> %s\n' "$*" >&2; }

require_root() {
  [ "$(id -u)" = 0 ] || die "run this as root (Vessel manages namespaces, cgroups and mounts): su -c $0, or sudo $0"
}

# The listed packages that dpkg does not call installed.
missing_packages() {
  local p
  for p in $(grep -v '^#' "$REPO/scripts/debian-packages.txt" | grep -v '^$'); do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || echo "$p"
  done
}

install_packages() {
  local missing pass
  command -v apt-get >/dev/null || die "apt-get not found: Vessel's setup expects Debian 12"
  # Two passes: installing one package can remove another that was there before (a newer
  # qemu-utils from backports makes way for the qemu-system-x86 of Debian 12), which the
  # second pass puts back at the version that fits.
  for pass in 1 2; do
    missing=$(missing_packages | tr '\n' ' ')
    [ -n "${missing// /}" ] || return 0
    step "installing Debian packages: $missing"
    if [ "$pass" = 1 ]; then
      DEBIAN_FRONTEND=noninteractive apt-get update -qq \
        || die "apt-get update failed: check the network and /etc/apt/sources.list"
    fi
    # shellcheck disable=SC2086
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null \
      || die "apt-get install $missing failed"
  done
  missing=$(missing_packages | tr '\n' ' ')
  [ -z "${missing// /}" ] || die "still not installed after two apt-get runs: $missing"
}

# Node.js and npm build the dashboard (ui/build.sh) and run its browser test. A machine that
# has them (any recent Node.js) keeps its own; one without gets Debian's.
require_node() {
  if ! command -v npm >/dev/null || ! command -v node >/dev/null; then
    step "installing Debian's nodejs and npm (for the dashboard)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null \
      || die "apt-get install nodejs npm failed"
  fi
}

require_cargo() {
  if ! command -v cargo >/dev/null; then
    for d in "$HOME/.cargo/bin" /root/.cargo/bin; do
      [ -x "$d/cargo" ] && export PATH="$d:$PATH" && break
    done
  fi
  command -v cargo >/dev/null || die "cargo not found: install a Rust toolchain >= 1.87 with rustup (Debian 12's rustc is too old)"
  local v
  v=$(rustc --version | awk '{print $2}')
  case "$v" in
    1.[0-7][0-9].*|1.8[0-6].*) die "rustc $v is too old: Vessel needs >= 1.87 (rustup update)";;
  esac
}
