//! Failover of an HA VM whose disk is a volume of a replicated pool (a real 3-member etcd,
//! three daemons in their own network namespaces): the pool is on m1, its far copy on m0.
//! The guest writes a numbered record with its boot id into the disk five times a second,
//! each synced before the next. m1 is cut off from etcd, alive: it fences itself (its VM
//! stops), and m0, the keeper of the far copy, adopts the pool and starts the VM with the
//! disk attached, timed from the cut. The records on the disk are then the proof: one
//! unbroken count, the first boot's records up to at least the last one seen acknowledged
//! before the cut, then the second boot's, never the two interleaved; and no QEMU of the VM
//! is ever seen running twice on the host. m1 back deletes its stale copy and finds its pool
//! stale.

mod common;

use std::time::{Duration, Instant};

use common::cluster::{json, members, nft, wait, Watch, CUT_ETCD, UNCUT};
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
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            let c = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
            let c = String::from_utf8_lossy(&c);
            c.contains("qemu-system") && c.contains("ha1")
        })
        .count()
}

/// Where `ha1` runs as `d` sees it, once an exec through `d` works.
fn answering(d: &Daemon) -> Option<String> {
    let info = d.vessel(&["info", "ha1", "--format", "json"]);
    if !info.status.success() {
        return None;
    }
    let v = json(&String::from_utf8_lossy(&info.stdout));
    if v["status"] != "running" {
        return None;
    }
    let exec = d.vessel(&["exec", "ha1", "-T", "--", "true"]);
    exec.status
        .success()
        .then(|| v["location"].as_str().unwrap_or("?").to_string())
}

#[test]
fn an_ha_vm_fails_over_with_its_replicated_disk_and_no_acknowledged_write_is_lost() {
    // The sandbox has no way to Debian's mirror: a daemon outside builds the VM image.
    let builder = Daemon::start();
    builder.ok(&["image", "build", "vm"]);
    let bundle = builder.dir.join("vm.tar");
    builder.ok(&["image", "export", "vm/busybox", bundle.to_str().unwrap()]);
    let (sb, _etcd, d) = members(3);
    for di in &d[..2] {
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
        answering(&d[1]).as_deref() == Some("m1")
    });
    let first = boot(&d[1]);
    let (code, out) = d[1].sh("ha1", &writer());
    assert_eq!(code, 0, "{out}");
    wait("ten records", Duration::from_secs(60), || {
        count(&d[1]) >= 10
    });
    let watch = Watch::start(qemus);
    // The index holds the volumes and their far copy (written within its next pass).
    std::thread::sleep(Duration::from_secs(3));

    // The last record seen written before the cut: acknowledged, it must survive.
    let acked = count(&d[1]);
    nft(&sb.hosts[1], CUT_ETCD);
    let cut = Instant::now();
    wait(
        "m1 fences itself (ha1's QEMU stops)",
        Duration::from_secs(15),
        || qemus() == 0,
    );
    let fenced_after = cut.elapsed();
    let mut at = None;
    while at.is_none() {
        assert!(
            cut.elapsed() < Duration::from_secs(90),
            "ha1 not running elsewhere 90 s after m1 was cut off\nm0:\n{}",
            d[0].log()
        );
        at = answering(&d[2]);
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!(
        "partition: m1 fenced {:.1} s after the cut, ha1 answers on {} {:.1} s after it",
        fenced_after.as_secs_f64(),
        at.as_deref().unwrap_or("?"),
        cut.elapsed().as_secs_f64()
    );
    assert_eq!(at.as_deref(), Some("m0"), "the far copy's keeper takes it");
    assert!(
        d[0].log().contains("pool adopted from a far copy"),
        "{}",
        d[0].log()
    );

    // The disk as the first boot left it: every record up to the last acknowledged one.
    let before = records(&d[0]);
    assert!(
        before.len() as u64 >= acked,
        "{} records, {acked} acknowledged before the cut",
        before.len()
    );
    for (i, (n, b)) in before.iter().enumerate() {
        assert_eq!(*n, i as u64 + 1, "records {before:?}");
        assert_eq!(*b, first, "a record not of the first boot: {before:?}");
    }
    // The second boot counts on from there.
    let second = boot(&d[0]);
    assert_ne!(second, first);
    let (code, out) = d[0].sh("ha1", &writer());
    assert_eq!(code, 0, "{out}");
    let resumed = before.len() as u64;
    wait("the count goes on on m0", Duration::from_secs(60), || {
        count(&d[0]) >= resumed + 10
    });
    let all = records(&d[0]);
    for (i, (n, b)) in all.iter().enumerate() {
        assert_eq!(*n, i as u64 + 1, "records {all:?}");
        let want = if (i as u64) < resumed {
            &first
        } else {
            &second
        };
        assert_eq!(b, want, "record {n} of the wrong boot: {all:?}");
    }
    let status = json(&d[0].ok(&["storage", "pool", "status", "rp", "--format", "json"]));
    assert_eq!(status["status"], "degraded", "{status}");

    // m1 back: its copy of ha1 is stale and goes, its pool is stale.
    nft(&sb.hosts[1], UNCUT);
    wait("m1's stale copy deleted", Duration::from_secs(60), || {
        d[1].log().contains("deleting the stale copy")
            && d[1]
                .vessel(&["info", "ha1", "--format", "json"])
                .status
                .success()
            && answering(&d[1]).as_deref() == Some("m0")
    });
    wait("m1's pool stale", Duration::from_secs(30), || {
        let info = d[1].vessel(&["storage", "pool", "info", "rp", "--format", "json"]);
        String::from_utf8_lossy(&info.stdout).contains("stale")
    });
    d[1].ok(&["storage", "pool", "delete", "rp"]);
    assert_eq!(
        watch.most(),
        1,
        "two QEMUs of ha1 ran at once at some moment"
    );
    drop(watch);
    assert_eq!(qemus(), 1);

    d[0].ok(&["delete", "ha1", "--force"]);
    d[0].ok(&["storage", "volume", "delete", "rp", "data"]);
    d[0].ok(&["storage", "pool", "delete", "rp"]);
}
