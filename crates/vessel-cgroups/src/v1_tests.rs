//! The v1 backend's rendering and cpuset copy-down against temporary directories that imitate
//! the v1 hierarchies (the real hierarchies are exercised by `tests/real_cgroups.rs`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{
    LinuxBlockIoBuilder, LinuxCpuBuilder, LinuxMemoryBuilder, LinuxPidsBuilder,
    LinuxResourcesBuilder, LinuxThrottleDeviceBuilder,
};

use super::*;

/// Temporary v1 mounts, one directory per controller (cpu and cpuacct co-mounted), removed on
/// drop.
struct FakeMounts {
    base: PathBuf,
    mounts: BTreeMap<String, PathBuf>,
}

impl FakeMounts {
    fn new(name: &str) -> Self {
        let base = std::env::temp_dir().join(format!("vessel-cg-v1-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let mut mounts = BTreeMap::new();
        for (c, dir) in [
            ("cpu", "cpu,cpuacct"),
            ("cpuacct", "cpu,cpuacct"),
            ("cpuset", "cpuset"),
            ("memory", "memory"),
            ("pids", "pids"),
            ("blkio", "blkio"),
            ("devices", "devices"),
        ] {
            let d = base.join(dir);
            std::fs::create_dir_all(&d).unwrap();
            mounts.insert(c.to_owned(), d);
        }
        std::fs::write(base.join("cpuset/cpuset.cpus"), "0-3\n").unwrap();
        std::fs::write(base.join("cpuset/cpuset.mems"), "0\n").unwrap();
        std::fs::write(base.join("cpuset/cpuset.effective_cpus"), "0-3\n").unwrap();
        FakeMounts { base, mounts }
    }

    /// The files the kernel would show in `rel` of each hierarchy.
    fn cgroup(&self, rel: &str) {
        let files: [(&str, &[(&str, &str)]); 6] = [
            (
                "cpu,cpuacct",
                &[
                    ("cpu.shares", "1024"),
                    ("cpu.cfs_quota_us", "-1"),
                    ("cpu.cfs_period_us", "100000"),
                    ("cpuacct.usage", "0"),
                ],
            ),
            (
                "cpuset",
                &[
                    ("cpuset.cpus", ""),
                    ("cpuset.mems", ""),
                    ("cpuset.effective_cpus", ""),
                ],
            ),
            (
                "memory",
                &[
                    ("memory.limit_in_bytes", "9223372036854771712"),
                    ("memory.memsw.limit_in_bytes", "9223372036854771712"),
                    (
                        "memory.oom_control",
                        "oom_kill_disable 0\nunder_oom 0\noom_kill 0\n",
                    ),
                    ("memory.usage_in_bytes", "0"),
                    ("memory.max_usage_in_bytes", "0"),
                ],
            ),
            ("pids", &[("pids.max", "max"), ("pids.current", "0")]),
            (
                "blkio",
                &[
                    ("blkio.bfq.weight", "100"),
                    ("blkio.bfq.weight_device", ""),
                    ("blkio.throttle.read_bps_device", ""),
                ],
            ),
            ("devices", &[("devices.allow", ""), ("devices.deny", "")]),
        ];
        for (hier, list) in files {
            let dir = self.base.join(hier).join(rel);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("cgroup.procs"), "").unwrap();
            for (f, v) in list {
                std::fs::write(dir.join(f), format!("{v}\n")).unwrap();
            }
        }
    }
}

impl Drop for FakeMounts {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.base);
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap().trim().to_owned()
}

fn names(w: &[(PathBuf, String)]) -> Vec<(String, String)> {
    w.iter()
        .map(|(p, v)| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                v.clone(),
            )
        })
        .collect()
}

#[test]
fn create_copies_cpuset_down_every_level() {
    let f = FakeMounts::new("cpuset");
    f.cgroup("vessel");
    f.cgroup("vessel/c1");
    let m = V1Manager::with_mounts(&f.mounts, "vessel/c1").unwrap();
    m.create().unwrap();
    for rel in ["vessel", "vessel/c1"] {
        assert_eq!(
            read(&f.base.join("cpuset").join(rel).join("cpuset.cpus")),
            "0-3"
        );
        assert_eq!(
            read(&f.base.join("cpuset").join(rel).join("cpuset.mems")),
            "0"
        );
    }
    // An already populated cpuset is left as it is.
    std::fs::write(f.base.join("cpuset/vessel/c1/cpuset.cpus"), "1\n").unwrap();
    m.create().unwrap();
    assert_eq!(read(&f.base.join("cpuset/vessel/c1/cpuset.cpus")), "1");
    assert_eq!(m.path(), "/vessel/c1");
    assert_eq!(m.dir("memory"), Some(f.base.join("memory/vessel/c1")));
    assert_eq!(m.dir("cpuacct"), Some(f.base.join("cpu,cpuacct/vessel/c1")));
    assert_eq!(m.dir("freezer"), None);
    // Co-mounted cpu and cpuacct are one hierarchy.
    assert_eq!(m.hierarchies().len(), 6);
}

#[test]
fn memory_and_swap_are_written_in_an_order_the_kernel_accepts() {
    let f = FakeMounts::new("memsw");
    f.cgroup("c");
    let m = V1Manager::with_mounts(&f.mounts, "c").unwrap();
    let mem = |limit: i64, swap: i64| {
        let r = LinuxResourcesBuilder::default()
            .memory(
                LinuxMemoryBuilder::default()
                    .limit(limit)
                    .swap(swap)
                    .build()
                    .unwrap(),
            )
            .build()
            .unwrap();
        m.render(&resources::plan(&r).unwrap()).unwrap()
    };
    // Lowering from unlimited: the limit first, then memsw.
    let w = names(&mem(64 << 20, 128 << 20));
    assert_eq!(
        w[0],
        ("memory.limit_in_bytes".into(), (64u64 << 20).to_string())
    );
    assert_eq!(
        w[1],
        (
            "memory.memsw.limit_in_bytes".into(),
            (128u64 << 20).to_string()
        )
    );
    for (p, v) in mem(64 << 20, 128 << 20) {
        std::fs::write(p, v).unwrap();
    }
    // Raising above the current limit: memsw first.
    let w = names(&mem(256 << 20, 512 << 20));
    assert_eq!(w[0].0, "memory.memsw.limit_in_bytes");
    assert_eq!(w[1].0, "memory.limit_in_bytes");
    // Unlimited: -1 for both, memsw first.
    let w = names(&mem(-1, -1));
    assert_eq!(
        w,
        vec![
            ("memory.memsw.limit_in_bytes".into(), "-1".into()),
            ("memory.limit_in_bytes".into(), "-1".into()),
        ]
    );

    // Without swap accounting a swap limit is refused, and says why.
    std::fs::remove_file(f.base.join("memory/c/memory.memsw.limit_in_bytes")).unwrap();
    let r = LinuxResourcesBuilder::default()
        .memory(
            LinuxMemoryBuilder::default()
                .limit(1 << 20)
                .swap(2 << 20)
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    let e = m.apply(&r).unwrap_err();
    assert!(matches!(e, CgroupError::Unsupported(_)), "{e:?}");
    assert!(e.to_string().contains("no swap accounting"), "{e}");
    assert_eq!(
        read(&f.base.join("memory/c/memory.limit_in_bytes")),
        (64u64 << 20).to_string(),
        "a refused block must not write the memory limit"
    );
    // A limit alone still works there.
    let r = LinuxResourcesBuilder::default()
        .memory(LinuxMemoryBuilder::default().limit(-1).build().unwrap())
        .build()
        .unwrap();
    m.apply(&r).unwrap();
    assert_eq!(read(&f.base.join("memory/c/memory.limit_in_bytes")), "-1");
}

#[test]
fn cpu_pids_blkio_and_devices_files() {
    let f = FakeMounts::new("files");
    f.cgroup("c");
    let m = V1Manager::with_mounts(&f.mounts, "c").unwrap();
    let r = LinuxResourcesBuilder::default()
        .cpu(
            LinuxCpuBuilder::default()
                .quota(20_000)
                .period(100_000u64)
                .shares(512u64)
                .cpus("1-2")
                .build()
                .unwrap(),
        )
        .pids(LinuxPidsBuilder::default().limit(-1).build().unwrap())
        .block_io(
            LinuxBlockIoBuilder::default()
                .weight(300u16)
                .throttle_read_bps_device(vec![LinuxThrottleDeviceBuilder::default()
                    .major(8)
                    .minor(0)
                    .rate(1_048_576u64)
                    .build()
                    .unwrap()])
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    let w = names(&m.render(&resources::plan(&r).unwrap()).unwrap());
    assert_eq!(
        w,
        vec![
            ("cpu.shares".into(), "512".into()),
            ("cpu.cfs_period_us".into(), "100000".into()),
            ("cpu.cfs_quota_us".into(), "20000".into()),
            ("cpuset.cpus".into(), "1-2".into()),
            ("pids.max".into(), "max".into()),
            // No CFQ blkio.weight here: BFQ's file takes the OCI weight as it is.
            ("blkio.bfq.weight".into(), "300".into()),
            (
                "blkio.throttle.read_bps_device".into(),
                "8:0 1048576".into()
            ),
        ]
    );
    let mut u = std::collections::HashMap::new();
    u.insert("memory.high".to_owned(), "1".to_owned());
    let r = LinuxResourcesBuilder::default().unified(u).build().unwrap();
    assert!(matches!(m.apply(&r), Err(CgroupError::Unsupported(_))));
    // No freezer mounted: freezing says so.
    let e = m.freeze().unwrap_err();
    assert!(e.to_string().contains("freezer"), "{e}");
}

#[test]
fn stats_read_v1_files() {
    let f = FakeMounts::new("stats");
    f.cgroup("c");
    let m = V1Manager::with_mounts(&f.mounts, "c").unwrap();
    std::fs::write(f.base.join("cpu,cpuacct/c/cpuacct.usage"), "123456789\n").unwrap();
    std::fs::write(f.base.join("memory/c/memory.usage_in_bytes"), "4096\n").unwrap();
    std::fs::write(f.base.join("memory/c/memory.max_usage_in_bytes"), "8192\n").unwrap();
    std::fs::write(
        f.base.join("memory/c/memory.oom_control"),
        "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
    )
    .unwrap();
    std::fs::write(f.base.join("pids/c/pids.current"), "3\n").unwrap();
    std::fs::write(
        f.base.join("blkio/c/blkio.throttle.io_service_bytes"),
        "8:0 Read 4096\n8:0 Write 512\n8:0 Total 4608\n7:1 Read 100\nTotal 4708\n",
    )
    .unwrap();
    assert_eq!(
        m.stats().unwrap(),
        CgroupStats {
            cpu_usage_ns: 123_456_789,
            memory_usage_bytes: 4096,
            memory_peak_bytes: Some(8192),
            oom_kills: 2,
            pids: 3,
            io_read_bytes: 4196,
            io_write_bytes: 512,
        }
    );
    std::fs::write(f.base.join("pids/c/cgroup.procs"), "5\n").unwrap();
    std::fs::write(f.base.join("memory/c/cgroup.procs"), "5\n6\n").unwrap();
    assert_eq!(m.pids().unwrap(), vec![5, 6]);
}

#[test]
fn delegate_hands_over_only_the_name_systemd_and_hybrid_cgroup2_directories() {
    use std::os::unix::fs::MetadataExt;
    let f = FakeMounts::new("delegate");
    let mut mounts = f.mounts.clone();
    let systemd = f.base.join("systemd");
    let unified = f.base.join("unified");
    mounts.insert("name=systemd".into(), systemd.clone());
    f.cgroup("vessel/c1");
    for (dir, files) in [
        (
            &systemd,
            &["cgroup.procs", "tasks", "notify_on_release"][..],
        ),
        (
            &unified,
            &["cgroup.procs", "cgroup.threads", "memory.max"][..],
        ),
    ] {
        let d = dir.join("vessel/c1");
        std::fs::create_dir_all(&d).unwrap();
        for file in files {
            std::fs::write(d.join(file), "").unwrap();
        }
    }
    let m = V1Manager::with_mounts(&mounts, "vessel/c1")
        .unwrap()
        .with_hybrid(Some(unified.clone()));
    let dirs = m.delegate(100_000, 100_000).unwrap();
    assert_eq!(dirs, [systemd.join("vessel/c1"), unified.join("vessel/c1")]);
    let uid = |p: PathBuf| std::fs::metadata(p).unwrap().uid();
    assert_eq!(uid(systemd.join("vessel/c1")), 100_000);
    assert_eq!(uid(systemd.join("vessel/c1/cgroup.procs")), 100_000);
    assert_eq!(uid(systemd.join("vessel/c1/tasks")), 100_000);
    assert_eq!(uid(systemd.join("vessel/c1/notify_on_release")), 0);
    assert_eq!(uid(unified.join("vessel/c1")), 100_000);
    assert_eq!(uid(unified.join("vessel/c1/cgroup.threads")), 100_000);
    assert_eq!(uid(unified.join("vessel/c1/memory.max")), 0);
    // The controllers' hierarchies, where the limits are, stay root's.
    for h in ["memory", "pids", "cpu,cpuacct", "devices"] {
        assert_eq!(uid(f.base.join(h).join("vessel/c1")), 0, "{h}");
        assert_eq!(uid(f.base.join(h).join("vessel/c1/cgroup.procs")), 0, "{h}");
    }
    // Without name=systemd or a hybrid cgroup2 there is nothing to delegate.
    let plain = V1Manager::with_mounts(&f.mounts, "vessel/c1").unwrap();
    assert!(plain.delegate(100_000, 100_000).unwrap().is_empty());
}
