//! Failover of an HA VM whose disk is a volume of a replicated pool (a real 3-member etcd,
//! three daemons in their own network namespaces): the pool is on m1, its far copy on m0.
//! The guest writes a numbered record with its boot id into the disk five times a second,
//! each synced before the next. m1 is cut off from etcd, alive: it fences itself (its VM
//! stops), and m0, the keeper of the far copy, adopts the pool and starts the VM with the
//! disk attached, timed from the cut. The adopted pool is given a new far copy on m2; then
//! m0's daemon is killed and its network cut: its watchdog stops the VM and m2 adopts the
//! pool and starts it. The records on the disk are the proof: one unbroken count, each
//! boot's records from where the one before stopped, at least up to the last one seen
//! acknowledged before the cut or kill, never two boots interleaved; and no QEMU of the VM
//! is ever seen running twice on the host. A member back deletes its stale copy and finds its
//! pool stale.

mod common;

use std::time::{Duration, Instant};

use common::cluster::{
    answering, json, members, nft, processes, wait, Watch, CUT_ALL, CUT_ETCD, UNCUT,
};
use common::Daemon;

/// Finds the 16 MiB data disk as `$D` (32768 sectors).
const DISK: &str =
    "for b in /sys/block/vd*; do [ \"$(cat $b/size)\" = 32768 ] && D=/dev/${b##*/}; done; \
     [ -n \"$D\" ] || { echo no data disk; exit 1; }";

/// The guest's loop: record `N BOOT` in sector N, then N in sector 0, each synced, five
/// times a second, from what sector 0 says; stops at the first failed write.
fn writer() -> String {
    format!(
        "{DISK}; B=$(cut -c1-8 /proc/sys/kernel/random/boot_id); \
         setsid sh -c \"n=\\$(dd if=$D bs=512 count=1 iflag=direct 2>/dev/null | tr -dc 0-9); \
           n=\\${{n:-0}}; \
           while :; do n=\\$((n+1)); \
             printf '%s %s\\n' \\$n $B | dd of=$D bs=512 seek=\\$n conv=sync,fsync oflag=direct 2>/dev/null || exit 1; \
             printf '%s\\n' \\$n | dd of=$D bs=512 conv=sync,fsync oflag=direct 2>/dev/null || exit 1; \
             sleep 0.2; done\" </dev/null >/dev/null 2>&1 &"
    )
}

/// The count in sector 0, through `d`.
fn count(d: &Daemon) -> u64 {
    let (code, out) = d.sh(
        "ha1",
        &format!("{DISK}; dd if=$D bs=512 count=1 iflag=direct 2>/dev/null | tr -dc 0-9"),
    );
    assert_eq!(code, 0, "{out}");
    out.trim().parse().unwrap_or(0)
}

/// The records on the disk, through `d`: (number, boot) of sectors 1..=count.
fn records(d: &Daemon) -> Vec<(u64, String)> {
    let n = count(d);
    let (code, out) = d.sh(
        "ha1",
        &format!(
            "{DISK}; dd if=$D bs=512 skip=1 count={n} iflag=direct 2>/dev/null | tr -d '\\000'"
        ),
    );
    assert_eq!(code, 0, "{out}");
    out.lines()
        .map(|l| {
            let (n, b) = l.split_once(' ').unwrap_or_else(|| panic!("record {l:?}"));
            (n.parse().unwrap(), b.to_string())
        })
        .collect()
}

/// The guest's boot id as the records name it, through `d`.
fn boot(d: &Daemon) -> String {
    let (code, out) = d.sh("ha1", "cut -c1-8 /proc/sys/kernel/random/boot_id");
    assert_eq!(code, 0, "{out}");
    out.trim().to_string()
}

/// How many QEMU processes on the host are `ha1`'s.
fn qemus() -> usize {
    let has = |args: &[&[u8]], s: &str| args.iter().any(|a| String::from_utf8_lossy(a).contains(s));
    processes(|args| has(args, "qemu-system") && has(args, "ha1"))
}

/// Checks the records `d` reads: one unbroken count from 1, boot `boots[k].0` from record
/// `boots[k].1` on; returns how many there are.
fn check(d: &Daemon, boots: &[(&str, u64)]) -> u64 {
    let all = records(d);
    for (i, (n, b)) in all.iter().enumerate() {
        let n_want = i as u64 + 1;
        assert_eq!(*n, n_want, "records {all:?}");
        let want = boots
            .iter()
            .rev()
            .find(|(_, from)| *from <= n_want)
            .unwrap()
            .0;
        assert_eq!(b, want, "record {n} of the wrong boot: {all:?}");
    }
    all.len() as u64
}

/// Waits for `ha1` to answer through `d` after `since`; where it runs.
fn answers_again(d: &Daemon, since: Instant, what: &str, log: &Daemon) -> String {
    loop {
        assert!(
            since.elapsed() < Duration::from_secs(90),
            "ha1 not running elsewhere 90 s after {what}\n{}",
            log.log()
        );
        if let Some(at) = answering(d, "ha1") {
            return at;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Starts the guest's writer through `d` and waits until it wrote ten more records. If it
/// does not, says what the guest shows: the count, whether the writer still runs (it stops
/// at the first failed write), the kernel's last lines, and the daemon's log.
fn write_on(d: &Daemon, from: u64) {
    let (code, out) = d.sh("ha1", &writer());
    assert_eq!(code, 0, "{out}");
    let start = Instant::now();
    while count(d) < from + 10 {
        if start.elapsed() > Duration::from_secs(90) {
            // The writer's processes (its shell and its dd writes, all with oflag=direct)
            // with their state and where they sleep (D and a block-layer wait: a write
            // hangs; gone: a write failed, or the writer was killed).
            let (_, ps) = d.sh(
                "ha1",
                "for p in /proc/[0-9]*; do case \"$(tr '\\0' ' ' < $p/cmdline 2>/dev/null)\" in \
                 *oflag=direc[t]*) echo \"${p#/proc/} $(cut -d' ' -f3 $p/stat) $(cat $p/wchan 2>/dev/null)\"; \
                 found=1;; esac; done; [ -n \"$found\" ] || echo no writer",
            );
            let (_, dmesg) = d.sh("ha1", "dmesg | tail -n 30");
            panic!(
                "ten more records from {from}: not within 90 s; count {}\n\
                 writer: {ps}\nguest kernel:\n{dmesg}\ndaemon log:\n{}",
                count(d),
                d.log()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn an_ha_vm_fails_over_with_its_replicated_disk_and_no_acknowledged_write_is_lost() {
    // The sandbox has no way to Debian's mirror: a daemon outside builds the VM image.
    let builder = Daemon::start();
    builder.ok(&["image", "build", "vm"]);
    let bundle = builder.dir.join("vm.tar");
    builder.ok(&["image", "export", "vm/busybox", bundle.to_str().unwrap()]);
    let (sb, etcd, mut d) = members(3);
    for di in &d {
        di.ok(&[
            "image",
            "import",
            bundle.to_str().unwrap(),
            "--alias",
            "vm/busybox",
        ]);
    }
    drop(builder);
    d[2].ok(&["cluster", "healing", "2"]);

    d[1].ok(&[
        "storage",
        "pool",
        "create",
        "rp",
        "raid",
        "--level",
        "raid1",
        "--size",
        "64MiB",
        "--replica",
        "m0",
    ]);
    d[1].ok(&[
        "storage", "volume", "create", "rp", "data", "--type", "block", "--size", "16MiB",
    ]);
    d[1].ok(&[
        "create",
        "vm/busybox",
        "ha1",
        "--vm",
        "-l",
        "memory=256MiB",
        "--no-network",
        "--target",
        "m1",
        "-c",
        "cluster.ha=true",
    ]);
    d[1].ok(&["storage", "volume", "attach", "rp", "data", "ha1"]);
    d[1].ok(&["start", "ha1"]);
    d[1].wait_for("ha1's agent", Duration::from_secs(180), || {
        answering(&d[1], "ha1").as_deref() == Some("m1")
    });
    let first = boot(&d[1]);
    write_on(&d[1], 0);
    let watch = Watch::start(qemus);
    // The index holds the volumes and their far copy (written within its next pass).
    etcd.wait_value(
        "/vessel/instances/default/ha1",
        "\"replicas\"",
        Duration::from_secs(30),
    );

    // Partition: m1 cut off from etcd, alive. The last record seen written before the cut
    // is acknowledged: it must survive.
    let acked = count(&d[1]);
    nft(&sb.hosts[1], CUT_ETCD);
    let cut = Instant::now();
    wait(
        "m1 fences itself (ha1's QEMU stops)",
        Duration::from_secs(15),
        || qemus() == 0,
    );
    let fenced_after = cut.elapsed();
    let at = answers_again(&d[2], cut, "m1 was cut off", &d[0]);
    eprintln!(
        "partition: m1 fenced {:.1} s after the cut, ha1 answers on {at} {:.1} s after it",
        fenced_after.as_secs_f64(),
        cut.elapsed().as_secs_f64()
    );
    assert_eq!(at, "m0", "the far copy's keeper takes it");
    assert!(
        d[0].log().contains("pool adopted from a far copy"),
        "{}",
        d[0].log()
    );
    // The disk as the first boot left it, every acknowledged record there; the second boot
    // counts on from there.
    let resumed = check(&d[0], &[(&first, 1)]);
    assert!(resumed >= acked, "{resumed} records, {acked} acknowledged");
    let second = boot(&d[0]);
    assert_ne!(second, first);
    write_on(&d[0], resumed);
    check(&d[0], &[(&first, 1), (&second, resumed + 1)]);
    let status = json(&d[0].ok(&["storage", "pool", "status", "rp", "--format", "json"]));
    assert_eq!(status["status"], "degraded", "{status}");

    // m1 back: its copy of ha1 is stale and goes, its pool is stale.
    nft(&sb.hosts[1], UNCUT);
    wait("m1's stale copy deleted", Duration::from_secs(60), || {
        d[1].log().contains("deleting the stale copy")
            && answering(&d[1], "ha1").as_deref() == Some("m0")
    });
    wait("m1's pool stale", Duration::from_secs(30), || {
        d[1].ok(&["storage", "pool", "info", "rp"])
            .contains("stale")
    });
    d[1].ok(&["storage", "pool", "delete", "rp"]);

    // The adopted pool gets a far copy on m2 (in the lost copy's slot) while the VM writes.
    d[0].ok(&[
        "storage",
        "pool",
        "repair",
        "rp",
        "replace",
        "--member",
        "0",
        "--replica",
        "m2",
    ]);
    wait("the new far copy current", Duration::from_secs(60), || {
        d[0].log().contains("far copy back: resynced and current")
    });
    // The index names the new far copy (the adopted pool's, `m0.rp`) within its next pass.
    etcd.wait_value(
        "/vessel/instances/default/ha1",
        "\"m0.rp\"",
        Duration::from_secs(30),
    );

    // Failover: m0's daemon killed and every packet of its namespace dropped.
    let acked = count(&d[0]);
    d[0].kill(libc::SIGKILL);
    nft(&sb.hosts[0], CUT_ALL);
    let killed = Instant::now();
    wait(
        "m0's watchdog stops ha1's QEMU",
        Duration::from_secs(10),
        || qemus() == 0,
    );
    let at = answers_again(&d[1], killed, "m0 was killed", &d[2]);
    eprintln!(
        "failover: ha1 answers on {at} {:.1} s after the kill",
        killed.elapsed().as_secs_f64()
    );
    assert_eq!(at, "m2", "the new far copy's keeper takes it");
    let third = boot(&d[2]);
    let resumed2 = check(&d[2], &[(&first, 1), (&second, resumed + 1)]);
    assert!(
        resumed2 >= acked,
        "{resumed2} records, {acked} acknowledged"
    );
    write_on(&d[2], resumed2);
    check(
        &d[2],
        &[(&first, 1), (&second, resumed + 1), (&third, resumed2 + 1)],
    );

    // m0 back: its copy and its pool are stale.
    nft(&sb.hosts[0], UNCUT);
    d[0].spawn();
    wait("m0's stale copy deleted", Duration::from_secs(60), || {
        d[0].log().contains("deleting the stale copy")
            && answering(&d[0], "ha1").as_deref() == Some("m2")
    });
    wait("m0's pool stale", Duration::from_secs(30), || {
        d[0].ok(&["storage", "pool", "info", "rp"])
            .contains("stale")
    });
    d[0].ok(&["storage", "pool", "delete", "rp"]);
    assert_eq!(
        watch.most(),
        1,
        "two QEMUs of ha1 ran at once at some moment"
    );
    drop(watch);
    assert_eq!(qemus(), 1);

    d[2].ok(&["delete", "ha1", "--force"]);
    d[2].ok(&["storage", "volume", "delete", "rp", "data"]);
    d[2].ok(&["storage", "pool", "delete", "rp"]);
}
