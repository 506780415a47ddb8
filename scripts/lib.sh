# Shared by setup.sh and test.sh. Fails loudly: a missing prerequisite is never skipped.
set -euo pipefail

die() { echo "error: $*" >&2; exit 1; }
step() { printf '\n==> %s\n' "$*" >&2; }

require_root() {
  [ "$(id -u)" = 0 ] || die "run this as root (Vessel manages namespaces, cgroups and mounts): sudo $0"
}

install_packages() {
  local pkgs missing=()
  pkgs=$(grep -v '^#' "$REPO/scripts/debian-packages.txt" | grep -v '^$')
  for p in $pkgs; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    step "installing Debian packages: ${missing[*]}"
    command -v apt-get >/dev/null || die "apt-get not found: Vessel's setup expects Debian 12"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null \
      || die "apt-get install ${missing[*]} failed"
  fi
}

require_cargo() {
  if ! command -v cargo >/dev/null; then
    for d in "$HOME/.cargo/bin" /root/.cargo/bin; do
      [ -x "$d/cargo" ] && export PATH="$d:$PATH" && break
    done
  fi
  command -v cargo >/dev/null || die "cargo not found: install a Rust toolchain >= 1.85 with rustup (Debian 12's rustc is too old)"
  local v
  v=$(rustc --version | awk '{print $2}')
  case "$v" in
    1.[0-7][0-9].*|1.8[0-4].*) die "rustc $v is too old: Vessel needs >= 1.85 (rustup update)";;
  esac
}
