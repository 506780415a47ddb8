#!/usr/lib/vessel/busybox sh
# Vessel guest init (PID 1). Its contract with the host is in docs/vm-images.md:
# console lines VESSEL-ROOT/-NET/-AGENT/-READY/-ERROR, vessel.hostname=, DHCP on the first
# NIC, the agent hook on the virtio-serial port org.vessel.agent, a root shell on the console,
# and a clean power-off on SIGUSR2 (busybox poweroff), SIGUSR1 or the ACPI power button.
BB=/usr/lib/vessel/busybox
V=/usr/lib/vessel
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root TERM=linux

# The last value of KEY=VALUE on the kernel command line (the kernel's own rule for console=).
cmdline_value() {
    _v=
    set -f
    for _w in $(cat /proc/cmdline); do
        case "$_w" in "$1"=*) _v="${_w#*=}" ;; esac
    done
    set +f
    echo "$_v"
}

cmdline_has() {
    set -f
    for _w in $(cat /proc/cmdline); do
        [ "$_w" = "$1" ] && { set +f; return 0; }
    done
    set +f
    return 1
}

mount_api_filesystems() {
    $BB mkdir -p /proc /sys /dev /run /tmp
    [ -e /proc/self ] || $BB mount -t proc -o nosuid,nodev,noexec proc /proc
    [ -d /sys/kernel ] || $BB mount -t sysfs -o nosuid,nodev,noexec sysfs /sys
    $BB grep -q '^[^ ]* /dev ' /proc/mounts || $BB mount -t devtmpfs -o nosuid,mode=0755 devtmpfs /dev
    $BB mkdir -p /dev/pts /dev/shm
    $BB grep -q '^[^ ]* /dev/pts ' /proc/mounts \
        || $BB mount -t devpts -o nosuid,noexec,gid=5,mode=0620,ptmxmode=0666 devpts /dev/pts
    $BB grep -q '^[^ ]* /run ' /proc/mounts || $BB mount -t tmpfs -o nosuid,nodev,mode=0755 tmpfs /run
    [ -e /dev/fd ] || $BB ln -s /proc/self/fd /dev/fd
}

# Modules listed in dependency order at image build time (initramfs only; after switch_root
# they are loaded already).
load_modules() {
    [ -f $V/modules.list ] || return 0
    _kver=$($BB uname -r)
    while read -r _m; do
        [ -n "$_m" ] || continue
        $BB insmod "/lib/modules/$_kver/$_m" 2>/dev/null || echo "vessel-init: module $_m not loaded"
    done < $V/modules.list
}

# The console the user and the host talk to: the last console= (ttyS0, hvc0, ...), whose device
# may appear only once its driver (virtio_console) has bound.
CONSOLE=console
use_console() {
    _c=$(cmdline_value console)
    _c=${_c%%,*}
    [ -n "$_c" ] || return 0
    _i=0
    while [ ! -c "/dev/$_c" ] && [ $_i -lt 100 ]; do $BB sleep 0.05; _i=$((_i + 1)); done
    if [ -c "/dev/$_c" ]; then
        CONSOLE=$_c
        exec <"/dev/$_c" >"/dev/$_c" 2>&1
    fi
}

# Stage one, in the initramfs of a disk image: mount root= and switch into it.
switch_to_disk_root() {
    _root=$(cmdline_value root)
    [ -n "$_root" ] && [ -f $V/initramfs ] || return 0
    _i=0
    while [ ! -b "$_root" ] && [ $_i -lt 200 ]; do $BB sleep 0.05; _i=$((_i + 1)); done
    _type=$(cmdline_value rootfstype)
    _mode=rw
    cmdline_has ro && _mode=ro
    _init=$(cmdline_value vessel.init)
    $BB mkdir -p /newroot
    if ! $BB mount -t "${_type:-ext4}" -o "$_mode" "$_root" /newroot; then
        echo "VESSEL-ERROR cannot mount root $_root"
        return 0
    fi
    for _t in "$_init" /init /sbin/init; do
        [ -n "$_t" ] && [ -x "/newroot$_t" ] && break
        _t=
    done
    if [ -z "$_t" ]; then
        echo "VESSEL-ERROR no init in $_root"
        $BB umount /newroot
        return 0
    fi
    for _m in dev proc sys run; do
        $BB mkdir -p "/newroot/$_m"
        $BB mount --move "/$_m" "/newroot/$_m"
    done
    echo "VESSEL-ROOT $_root"
    exec $BB switch_root /newroot "$_t"
}

# SSH public keys for root: vessel.ssh_keys= carries authorized_keys in base64.
install_ssh_keys() {
    _k=$(cmdline_value vessel.ssh_keys)
    [ -n "$_k" ] || return 0
    $BB mkdir -p /root/.ssh
    $BB chmod 700 /root/.ssh
    if echo "$_k" | $BB base64 -d > /root/.ssh/authorized_keys 2>/dev/null; then
        $BB chmod 600 /root/.ssh/authorized_keys
        echo "VESSEL-SSH-KEYS $($BB wc -l < /root/.ssh/authorized_keys)"
    else
        echo "VESSEL-ERROR ssh keys: vessel.ssh_keys is not base64"
    fi
}

set_hostname() {
    _h=$(cmdline_value vessel.hostname)
    [ -n "$_h" ] || _h=$($BB cat /etc/hostname 2>/dev/null)
    HOSTNAME=${_h:-vessel}
    $BB hostname "$HOSTNAME"
}

# lo, then DHCP on the first Ethernet NIC: at most ~3 s in the foreground, then udhcpc keeps
# trying (and renewing) in the background. vessel.dhcp=off leaves the NIC unconfigured.
bring_up_network() {
    $BB ip link set lo up
    [ "$(cmdline_value vessel.dhcp)" = off ] && return 0
    for _d in /sys/class/net/*; do
        _n=${_d##*/}
        [ "$_n" = lo ] && continue
        [ "$($BB cat "$_d/type" 2>/dev/null)" = 1 ] || continue
        $BB ip link set "$_n" up
        export VESSEL_CONSOLE="/dev/$CONSOLE"
        $BB udhcpc -i "$_n" -s $V/udhcpc.script -p "/run/udhcpc.$_n.pid" -b -t 3 -T 1 \
            -x "hostname:$HOSTNAME" >/dev/null 2>&1
        return 0
    done
}

# /dev/virtio-ports/NAME links, as udev would make them. Ports are announced by the host
# after the driver binds, so wait briefly for WANT when a virtio-serial device exists.
link_virtio_ports() {
    _want=$1
    _i=0
    while :; do
        if [ -d /sys/class/virtio-ports ]; then
            $BB mkdir -p /dev/virtio-ports
            for _p in /sys/class/virtio-ports/vport*; do
                [ -f "$_p/name" ] || continue
                _n=$($BB cat "$_p/name")
                [ -n "$_n" ] && $BB ln -sfn "../${_p##*/}" "/dev/virtio-ports/$_n"
            done
        fi
        [ -n "$_want" ] || return 0
        [ -e "/dev/virtio-ports/$_want" ] && return 0
        $BB grep -qs '^0x0003$' /sys/bus/virtio/devices/*/device || return 0
        [ $_i -ge 40 ] && return 0
        $BB sleep 0.05
        _i=$((_i + 1))
    done
}

# The agent hook: /usr/bin/vessel-agent PORT, with VESSEL_AGENT_PORT=PORT, stdin /dev/null,
# output to /run/vessel-agent.log, restarted a second after it exits.
start_agent() {
    _agent=/usr/bin/vessel-agent
    _port=/dev/virtio-ports/org.vessel.agent
    if [ ! -x $_agent ]; then
        echo "VESSEL-AGENT absent $_agent"
        return 0
    fi
    link_virtio_ports org.vessel.agent
    if [ ! -e $_port ]; then
        echo "VESSEL-AGENT no-port org.vessel.agent"
        return 0
    fi
    (
        while :; do
            VESSEL_AGENT_PORT=$_port $_agent $_port </dev/null >>/run/vessel-agent.log 2>&1
            $BB sleep 1
        done
    ) &
    echo "VESSEL-AGENT started $_port"
}

# The ACPI power button (QMP system_powerdown) runs $V/acpi/PWRF/00000080, which signals us.
start_acpid() {
    [ -d $V/acpi ] && $BB ls /dev/input/event* >/dev/null 2>&1 || return 0
    # -a and -M name files that do not exist, so acpid keeps its built-in tables (power
    # button → PWRF/00000080) whatever the root file system has in /etc.
    $BB rm -f /run/acpid.pid
    $BB acpid -c $V/acpi -l /run/acpid.log -p /run/acpid.pid -a $V/acpid.conf -M $V/acpi.map
    # acpid forks at once and opens the event devices in the child, which then writes its
    # pid file: wait for it (up to 5 s), so that a power button pressed as soon as the host
    # sees VESSEL-READY is not lost.
    _i=0
    while [ ! -s /run/acpid.pid ] && [ $_i -lt 100 ]; do $BB sleep 0.05; _i=$((_i + 1)); done
}

shutdown() {
    trap '' USR1 USR2 TERM INT
    echo "VESSEL-SHUTDOWN $1"
    $BB kill -TERM -1 2>/dev/null
    $BB sleep 0.2
    $BB kill -KILL -1 2>/dev/null
    $BB sync
    $BB mount -o remount,ro / 2>/dev/null
    $BB "$1" -f
}

mount_api_filesystems
load_modules
use_console
switch_to_disk_root
trap 'shutdown poweroff' USR1 USR2
trap 'shutdown reboot' TERM INT
link_virtio_ports ''
set_hostname
install_ssh_keys
bring_up_network
start_acpid
start_agent
echo "VESSEL-READY"

# A root shell on the console, started again when it exits. It runs in the background so
# that the traps above fire while we wait.
SHELL_BIN=/bin/sh
[ -x $SHELL_BIN ] || SHELL_BIN="$BB sh"
export PS1='\h:\w\$ '
while :; do
    $BB setsid -c $SHELL_BIN -l <"/dev/$CONSOLE" >"/dev/$CONSOLE" 2>&1 &
    wait $!
    $BB sleep 0.5
done
