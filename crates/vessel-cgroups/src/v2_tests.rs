//! The v2 backend against a temporary directory that imitates the unified hierarchy's files
//! (the host these tests run on has no controllers delegated to its cgroup2 mount).

use std::path::{Path, PathBuf};

use oci_spec::runtime::{
    LinuxBlockIoBuilder, LinuxCpuBuilder, LinuxMemoryBuilder, LinuxPidsBuilder,
    LinuxResourcesBuilder, LinuxThrottleDeviceBuilder, LinuxWeightDeviceBuilder,
};

use super::*;

/// A temporary fake cgroup2 root, removed on drop.
struct FakeRoot(PathBuf);

impl FakeRoot {
    fn new(name: &str, controllers: &str) -> Self {
        let root = std::env::temp_dir().join(format!("vessel-cg-v2-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        fake_cgroup(&root, controllers);
        std::fs::write(root.join("cpuset.cpus.effective"), "0-3\n").unwrap();
        std::fs::write(root.join("cpuset.mems.effective"), "0\n").unwrap();
        FakeRoot(root)
    }
}

impl Drop for FakeRoot {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The files the kernel shows in a cgroup2 directory with `controllers` enabled by its parent.
fn fake_cgroup(dir: &Path, controllers: &str) {
    std::fs::create_dir_all(dir).unwrap();
    let mut files = vec![
        ("cgroup.controllers", format!("{controllers}\n")),
        ("cgroup.subtree_control", "\n".into()),
        ("cgroup.procs", String::new()),
        ("cgroup.freeze", "0\n".into()),
        ("cgroup.events", "populated 0\nfrozen 0\n".into()),
        (
            "cpu.stat",
            "usage_usec 0\nuser_usec 0\nsystem_usec 0\n".into(),
        ),
    ];
    for c in controllers.split_whitespace() {
        match c {
            "cpu" => {
                files.push(("cpu.max", "max 100000\n".into()));
                files.push(("cpu.weight", "100\n".into()));
            }
            "cpuset" => {
                files.push(("cpuset.cpus", "\n".into()));
                files.push(("cpuset.mems", "\n".into()));
            }
            "memory" => {
                files.push(("memory.max", "max\n".into()));
                files.push(("memory.swap.max", "max\n".into()));
                files.push(("memory.low", "0\n".into()));
                files.push(("memory.high", "max\n".into()));
                files.push(("memory.current", "0\n".into()));
                files.push((
                    "memory.events",
                    "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\n".into(),
                ));
            }
            "pids" => {
                files.push(("pids.max", "max\n".into()));
                files.push(("pids.current", "0\n".into()));
            }
            "io" => {
                files.push(("io.weight", "default 100\n".into()));
                files.push(("io.max", String::new()));
            }
            _ => {}
        }
    }
    for (name, text) in files {
        std::fs::write(dir.join(name), text).unwrap();
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap().trim().to_owned()
}

const ALL: &str = "cpuset cpu io memory pids";

#[test]
fn create_enables_only_offered_controllers_in_every_ancestor() {
    let root = FakeRoot::new("create", "cpu memory pids hugetlb");
    // The kernel would create these files on mkdir; the fake makes the ancestor beforehand.
    fake_cgroup(&root.0.join("vessel"), "cpu memory");
    std::fs::write(root.0.join("vessel/cgroup.subtree_control"), "memory\n").unwrap();
    let m = V2Manager::with_root(&root.0, "vessel/c1").unwrap();
    assert!(!m.exists());
    m.create().unwrap();
    assert!(m.exists());
    assert_eq!(
        read(&root.0.join("cgroup.subtree_control")),
        "+cpu +memory +pids"
    );
    // Already enabled memory is left alone; pids is not offered there.
    assert_eq!(read(&root.0.join("vessel/cgroup.subtree_control")), "+cpu");
    // The leaf's own subtree_control is never touched: it holds processes.
    assert!(!root.0.join("vessel/c1/cgroup.subtree_control").exists());
    assert_eq!(m.path(), "/vessel/c1");
    assert_eq!(m.version(), CgroupVersion::V2);
}

fn leaf(root: &FakeRoot, controllers: &str) -> V2Manager {
    fake_cgroup(&root.0.join("vessel"), ALL);
    fake_cgroup(&root.0.join("vessel/c1"), controllers);
    std::fs::write(root.0.join("vessel/cpuset.cpus.effective"), "0-1\n").unwrap();
    std::fs::write(root.0.join("vessel/cpuset.mems.effective"), "0\n").unwrap();
    V2Manager::with_root(&root.0, "/vessel/c1/").unwrap()
}

#[test]
fn apply_renders_every_file() {
    let root = FakeRoot::new("apply", ALL);
    let m = leaf(&root, ALL);
    let r = LinuxResourcesBuilder::default()
        .cpu(
            LinuxCpuBuilder::default()
                .quota(20_000)
                .period(50_000u64)
                .shares(1024u64)
                .cpus("1")
                .mems("0")
                .build()
                .unwrap(),
        )
        .memory(
            LinuxMemoryBuilder::default()
                .limit(64 << 20)
                .swap(96 << 20)
                .reservation(32 << 20)
                .build()
                .unwrap(),
        )
        .pids(LinuxPidsBuilder::default().limit(20).build().unwrap())
        .build()
        .unwrap();
    m.apply(&r).unwrap();
    let d = m.dir();
    assert_eq!(read(&d.join("cpu.max")), "20000 50000");
    assert_eq!(read(&d.join("cpu.weight")), "39");
    assert_eq!(read(&d.join("cpuset.cpus")), "1");
    assert_eq!(read(&d.join("cpuset.mems")), "0");
    assert_eq!(read(&d.join("memory.max")), (64u64 << 20).to_string());
    // OCI swap is memory+swap; v2 limits swap alone.
    assert_eq!(read(&d.join("memory.swap.max")), (32u64 << 20).to_string());
    assert_eq!(read(&d.join("memory.low")), (32u64 << 20).to_string());
    assert_eq!(read(&d.join("pids.max")), "20");

    // A period alone keeps the quota in force; unlimited values spell "max".
    let r = LinuxResourcesBuilder::default()
        .cpu(
            LinuxCpuBuilder::default()
                .period(200_000u64)
                .build()
                .unwrap(),
        )
        .memory(LinuxMemoryBuilder::default().limit(-1).build().unwrap())
        .pids(LinuxPidsBuilder::default().limit(-1).build().unwrap())
        .build()
        .unwrap();
    m.apply(&r).unwrap();
    assert_eq!(read(&d.join("cpu.max")), "20000 200000");
    assert_eq!(read(&d.join("memory.max")), "max");
    assert_eq!(read(&d.join("memory.swap.max")), "max");
    assert_eq!(read(&d.join("pids.max")), "max");
    let r = LinuxResourcesBuilder::default()
        .cpu(LinuxCpuBuilder::default().quota(-1).build().unwrap())
        .build()
        .unwrap();
    m.apply(&r).unwrap();
    assert_eq!(read(&d.join("cpu.max")), "max 200000");
}

#[test]
fn io_weight_and_io_max() {
    let root = FakeRoot::new("io", ALL);
    let m = leaf(&root, ALL);
    let t = |major: i64, rate: u64| {
        LinuxThrottleDeviceBuilder::default()
            .major(major)
            .minor(0)
            .rate(rate)
            .build()
            .unwrap()
    };
    let bio = LinuxBlockIoBuilder::default()
        .weight(500u16)
        .throttle_read_bps_device(vec![t(8, 1_048_576), t(254, 0)])
        .throttle_write_iops_device(vec![t(8, 100)])
        .build()
        .unwrap();
    let plan = resources::plan(
        &LinuxResourcesBuilder::default()
            .block_io(bio)
            .build()
            .unwrap(),
    )
    .unwrap();
    let w = m.render(&plan).unwrap();
    let rendered: Vec<(String, String)> = w
        .iter()
        .map(|(p, v)| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                v.clone(),
            )
        })
        .collect();
    assert_eq!(
        rendered,
        vec![
            ("io.weight".to_owned(), "4950".to_owned()),
            ("io.max".to_owned(), "8:0 rbps=1048576 wiops=100".to_owned()),
            ("io.max".to_owned(), "254:0 rbps=max".to_owned()),
        ]
    );

    // With BFQ the OCI weight goes to io.bfq.weight unconverted.
    std::fs::write(m.dir().join("io.bfq.weight"), "default 100\n").unwrap();
    let bio = LinuxBlockIoBuilder::default()
        .weight(500u16)
        .weight_device(vec![LinuxWeightDeviceBuilder::default()
            .major(8)
            .minor(16)
            .weight(200u16)
            .build()
            .unwrap()])
        .build()
        .unwrap();
    let plan = resources::plan(
        &LinuxResourcesBuilder::default()
            .block_io(bio)
            .build()
            .unwrap(),
    )
    .unwrap();
    let w = m.render(&plan).unwrap();
    let values: Vec<&str> = w.iter().map(|(_, v)| v.as_str()).collect();
    assert_eq!(values, vec!["500", "8:16 200"]);
    assert!(w.iter().all(|(p, _)| p.ends_with("io.bfq.weight")));
}

#[test]
fn missing_controllers_and_swap_accounting_are_named() {
    let root = FakeRoot::new("missing", ALL);
    let m = leaf(&root, "cpu pids");
    let r = LinuxResourcesBuilder::default()
        .memory(
            LinuxMemoryBuilder::default()
                .limit(1i64 << 30)
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    let e = m.apply(&r).unwrap_err();
    assert!(matches!(e, CgroupError::Unsupported(_)), "{e:?}");
    assert!(
        e.to_string().contains("memory controller is not enabled"),
        "{e}"
    );

    let m = leaf(&root, ALL);
    std::fs::remove_file(m.dir().join("memory.swap.max")).unwrap();
    let r = LinuxResourcesBuilder::default()
        .memory(
            LinuxMemoryBuilder::default()
                .limit(1i64 << 30)
                .swap(2i64 << 30)
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    let e = m.apply(&r).unwrap_err();
    assert!(e.to_string().contains("no swap accounting"), "{e}");
    // Nothing was written: the memory limit stays as it was.
    assert_eq!(read(&m.dir().join("memory.max")), "max");

    let r = LinuxResourcesBuilder::default()
        .memory(
            LinuxMemoryBuilder::default()
                .swap(2i64 << 30)
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    let e = m.apply(&r).unwrap_err();
    assert!(matches!(e, CgroupError::InvalidLimit(_)), "{e:?}");
    assert!(e.to_string().contains("needs a memory limit"), "{e}");

    let r = LinuxResourcesBuilder::default()
        .cpu(
            LinuxCpuBuilder::default()
                .realtime_runtime(1000)
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    assert!(matches!(m.apply(&r), Err(CgroupError::Unsupported(_))));
}

#[test]
fn invalid_limits_leave_files_untouched() {
    let root = FakeRoot::new("invalid", ALL);
    let m = leaf(&root, ALL);
    let r = LinuxResourcesBuilder::default()
        .pids(LinuxPidsBuilder::default().limit(10).build().unwrap())
        .cpu(LinuxCpuBuilder::default().quota(500).build().unwrap())
        .build()
        .unwrap();
    let e = m.apply(&r).unwrap_err();
    assert_eq!(
        e.to_string(),
        "invalid limit: cpu quota 500 is below the kernel's minimum of 1000 microseconds"
    );
    assert_eq!(read(&m.dir().join("pids.max")), "max");
    // cpus outside the parent's effective set (0-1).
    let r = LinuxResourcesBuilder::default()
        .pids(LinuxPidsBuilder::default().limit(10).build().unwrap())
        .cpu(LinuxCpuBuilder::default().cpus("0-3").build().unwrap())
        .build()
        .unwrap();
    let e = m.apply(&r).unwrap_err();
    assert!(e.to_string().contains("available: \"0-1\""), "{e}");
    assert_eq!(read(&m.dir().join("pids.max")), "max");
    assert_eq!(read(&m.dir().join("cpuset.cpus")), "");
}

#[test]
fn stats_pids_and_freezer_state_are_read() {
    let root = FakeRoot::new("stats", ALL);
    let m = leaf(&root, ALL);
    let d = m.dir().to_path_buf();
    std::fs::write(d.join("cpu.stat"), "usage_usec 1500\nuser_usec 1000\n").unwrap();
    std::fs::write(d.join("memory.current"), "4096\n").unwrap();
    std::fs::write(d.join("memory.peak"), "8192\n").unwrap();
    std::fs::write(d.join("memory.events"), "low 0\noom 2\noom_kill 3\n").unwrap();
    std::fs::write(d.join("pids.current"), "7\n").unwrap();
    std::fs::write(
        d.join("io.stat"),
        "8:0 rbytes=1000 wbytes=24 rios=3 wios=1 dbytes=0 dios=0\n7:2 rbytes=5 wbytes=0\n",
    )
    .unwrap();
    assert_eq!(
        m.stats().unwrap(),
        CgroupStats {
            cpu_usage_ns: 1_500_000,
            memory_usage_bytes: 4096,
            memory_peak_bytes: Some(8192),
            oom_kills: 3,
            pids: 7,
            io_read_bytes: 1005,
            io_write_bytes: 24,
        }
    );
    std::fs::remove_file(d.join("memory.peak")).unwrap();
    assert_eq!(m.stats().unwrap().memory_peak_bytes, None);

    std::fs::write(d.join("cgroup.procs"), "10\n11\n").unwrap();
    fake_cgroup(&d.join("inner"), "");
    std::fs::write(d.join("inner/cgroup.procs"), "12\n").unwrap();
    assert_eq!(m.pids().unwrap(), vec![10, 11, 12]);

    assert!(!m.is_frozen().unwrap());
    std::fs::write(d.join("cgroup.events"), "populated 1\nfrozen 1\n").unwrap();
    assert!(m.is_frozen().unwrap());
    // Already reported frozen: freeze returns at once and asks the kernel via cgroup.freeze.
    m.freeze().unwrap();
    assert_eq!(read(&d.join("cgroup.freeze")), "1");
}

#[test]
fn unified_keys_must_name_existing_files() {
    let root = FakeRoot::new("unified", ALL);
    let m = leaf(&root, ALL);
    let mut u = std::collections::HashMap::new();
    u.insert("memory.high".to_owned(), "1000000".to_owned());
    let r = LinuxResourcesBuilder::default().unified(u).build().unwrap();
    m.apply(&r).unwrap();
    assert_eq!(read(&m.dir().join("memory.high")), "1000000");
    let mut u = std::collections::HashMap::new();
    u.insert("hugetlb.2MB.max".to_owned(), "0".to_owned());
    let r = LinuxResourcesBuilder::default().unified(u).build().unwrap();
    let e = m.apply(&r).unwrap_err();
    assert!(e.to_string().contains("does not exist"), "{e}");
}

#[test]
fn missing_cgroup_is_reported_and_destroy_is_idempotent() {
    let root = FakeRoot::new("gone", ALL);
    let m = V2Manager::with_root(&root.0, "vessel/none").unwrap();
    assert!(!m.exists());
    m.destroy().unwrap();
    m.destroy().unwrap();
    let e = m.add_process(1).unwrap_err();
    assert!(e.to_string().contains("add a process"), "{e}");
    assert!(m.stats().is_err());
    assert!(V2Manager::with_root(&root.0, "../etc").is_err());
}

#[test]
fn delegate_hands_over_the_directory_and_the_kernels_delegatable_files_only() {
    let root = FakeRoot::new("delegate", ALL);
    let m = leaf(&root, ALL);
    assert!(V2Manager::with_root(&root.0, "vessel/none")
        .unwrap()
        .delegate(100_000, 100_000)
        .is_err());
    let dirs = m.delegate(100_000, 100_001).unwrap();
    assert_eq!(dirs, [m.dir().to_path_buf()]);
    use std::os::unix::fs::MetadataExt;
    let owner = |f: &str| {
        let md = std::fs::metadata(m.dir().join(f)).unwrap();
        (md.uid(), md.gid())
    };
    assert_eq!(owner(""), (100_000, 100_001));
    assert_eq!(owner("cgroup.procs"), (100_000, 100_001));
    assert_eq!(owner("cgroup.subtree_control"), (100_000, 100_001));
    for limit in ["memory.max", "pids.max", "cpu.max", "cgroup.freeze"] {
        assert_eq!(owner(limit), (0, 0), "{limit} stays root's");
    }
}
