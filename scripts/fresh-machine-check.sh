#!/usr/bin/env bash
# Runs the README's second command as a fresh Debian 12 machine would: in a minimal Debian 12
# (debootstrap minbase) holding nothing but what scripts/setup installs from
# scripts/debian-packages.txt, on a fresh clone of the committed tree, with an empty /boot and
# /dev/net/tun at 0600, inside a private mount namespace so nothing stays mounted on the host.
# The Rust toolchain (rustup, not a Debian package) is the host's, bind-mounted.
#
#   ./scripts/fresh-machine-check.sh          # as root; FRESH=/var/tmp/vessel-fresh by default
#   KEEP=1 ./scripts/fresh-machine-check.sh   # keep the tree for a second run (reuses apt's cache)
#
# See docs/fresh-machine.md for what this proves and what it cannot.
REPO=$(cd "$(dirname "$0")/.." && pwd)
. "$REPO/scripts/lib.sh"
require_root
FRESH=${FRESH:-/var/tmp/vessel-fresh}
RUSTUP_HOME=${RUSTUP_HOME:-$HOME/.rustup}
CARGO_HOME=${CARGO_HOME:-$HOME/.cargo}
[ -x "$CARGO_HOME/bin/cargo" ] || die "no cargo under $CARGO_HOME: install Rust with rustup first"
command -v debootstrap >/dev/null || die "debootstrap missing: ./scripts/setup.sh installs it"
command -v unshare >/dev/null || die "unshare missing: apt-get install util-linux"

if [ ! -x "$FRESH/usr/bin/apt-get" ]; then
  step "debootstrap a minimal Debian 12 into $FRESH"
  rm -rf "$FRESH"
  debootstrap --variant=minbase bookworm "$FRESH" http://deb.debian.org/debian >/dev/null \
    || die "debootstrap failed"
  echo "deb http://deb.debian.org/debian-security bookworm-security main" \
    >>"$FRESH/etc/apt/sources.list"
fi
step "a fresh clone of $(git -C "$REPO" rev-parse --short HEAD) (committed work only)"
rm -rf "$FRESH/root/vessel"
git clone -q "$REPO" "$FRESH/root/vessel"
cp /etc/resolv.conf "$FRESH/etc/resolv.conf"

step "the suite inside the fresh tree"
rc=0
unshare --mount --propagation private -- bash -euo pipefail -c '
  F=$1 RUSTUP=$2 CARGO=$3
  # The tree becomes / of this mount namespace (pivot_root, not chroot: the kernel refuses
  # user namespaces to a chrooted process, and `ip netns exec` and podman remount /, which
  # must be a mount point), as a machine'"'"'s / is.
  mount --bind "$F" "$F"
  mount --rbind /proc "$F/proc"
  mount --rbind /sys "$F/sys"
  mount --rbind /dev "$F/dev"
  # A 0600 tun node, as on a fresh Debian, whatever the host has.
  mknod -m 0600 "$F/run-tun" c 10 200 2>/dev/null || true
  mount --bind "$F/run-tun" "$F/dev/net/tun"
  mount -t tmpfs tmpfs "$F/run"
  mount -t tmpfs tmpfs "$F/tmp"
  mount -t tmpfs tmpfs "$F/boot"
  mkdir -p "$F/root/.rustup" "$F/root/.cargo" "$F/.old-root"
  mount --bind "$RUSTUP" "$F/root/.rustup"
  mount --bind "$CARGO" "$F/root/.cargo"
  cd "$F"
  pivot_root . .old-root
  cd /
  umount -l /.old-root
  rmdir /.old-root
  exec /usr/bin/env -i HOME=/root TERM=dumb \
    PATH=/root/.cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    bash -c "cd /root/vessel && ./scripts/test.sh"
' fresh "$FRESH" "$RUSTUP_HOME" "$CARGO_HOME" || rc=$?
# The namespace is gone: the host sees plain directories, never the bind-mounted toolchain.
[ -n "${KEEP:-}" ] || rm -rf "$FRESH"
[ "$rc" = 0 ] && step "the suite passed on a fresh Debian 12 tree" || echo "error: the suite failed ($rc)" >&2
exit "$rc"
