//! Limits proven with real processes in real cgroups of this host (as root). Each test works
//! in `vessel-test/<name>-<pid>` and cleans up through [`support::TestCgroup`], also when it
//! fails. The tests run one at a time (they measure cpu time).

mod support;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use oci_spec::runtime::{
    LinuxBlockIoBuilder, LinuxCpuBuilder, LinuxDeviceCgroupBuilder, LinuxMemoryBuilder,
    LinuxPidsBuilder, LinuxResources, LinuxResourcesBuilder,
};
use support::{cpu_passes, cpu_seconds, dead, serial, Proc, TestCgroup};
use vessel_cgroups::{CgroupError, CgroupVersion, V2Manager};

fn pids_limit(n: i64) -> LinuxResources {
    LinuxResourcesBuilder::default()
        .pids(LinuxPidsBuilder::default().limit(n).build().unwrap())
        .build()
        .unwrap()
}

/// Expected answer of `detect()` from the mount table alone: what is mounted last on
/// /sys/fs/cgroup decides.
fn mountinfo_says() -> (CgroupVersion, BTreeMap<String, PathBuf>) {
    let text = std::fs::read_to_string("/proc/self/mountinfo").expect("read mountinfo");
    let mut root_fs = None;
    let mut v1 = BTreeMap::new();
    for line in text.lines() {
        let (left, right) = line.split_once(" - ").expect("mountinfo line has ' - '");
        let left: Vec<&str> = left.split(' ').collect();
        let right: Vec<&str> = right.split(' ').collect();
        if left[4] == "/sys/fs/cgroup" {
            root_fs = Some(right[0].to_owned());
        }
        if right[0] == "cgroup" && left[3] == "/" {
            for opt in right[2].split(',') {
                if !matches!(opt, "rw" | "ro" | "clone_children" | "noprefix" | "xattr")
                    && !opt.starts_with("release_agent=")
                {
                    v1.entry(opt.to_owned())
                        .or_insert_with(|| PathBuf::from(left[4]));
                }
            }
        }
    }
    let root_fs = root_fs.expect("nothing is mounted on /sys/fs/cgroup");
    let version = if root_fs == "cgroup2" {
        CgroupVersion::V2
    } else {
        assert!(
            !v1.is_empty(),
            "/sys/fs/cgroup is {root_fs} but no v1 controller is mounted"
        );
        CgroupVersion::V1
    };
    (version, v1)
}

#[test]
fn detect_matches_the_mount_table() {
    let _s = serial();
    let (expected, v1) = mountinfo_says();
    assert_eq!(vessel_cgroups::detect().unwrap(), expected);
    if expected == CgroupVersion::V1 {
        let found = vessel_cgroups::v1_mounts().unwrap();
        for (controller, mount) in &v1 {
            assert_eq!(
                found.get(controller),
                Some(mount),
                "controller {controller}"
            );
        }
        for c in ["cpu", "cpuacct", "cpuset", "memory", "pids", "freezer"] {
            assert!(
                found.contains_key(c),
                "v1 host without the {c} controller mounted: the tests below need it"
            );
        }
    }
    let m = vessel_cgroups::manager("vessel-test/detect").unwrap();
    assert_eq!(m.version(), expected);
    assert_eq!(m.path(), "/vessel-test/detect");
    assert!(vessel_cgroups::manager("vessel-test/../x").is_err());
    assert!(vessel_cgroups::manager("/").is_err());
}

#[test]
fn process_joins_every_hierarchy_and_destroy_is_idempotent() {
    let _s = serial();
    let t = TestCgroup::new("join");
    assert!(t.cg.exists());
    let mut p = Proc::start_in(&*t.cg, "echo in; exec sleep 30", Stdio::null());
    assert_eq!(p.ask(""), "in");
    // Every hierarchy shows the process in our cgroup (v1: cpu, memory, devices, ..., and for
    // placement the name=systemd hierarchy and a hybrid host's cgroup2, as runc does).
    let own = std::fs::read_to_string(format!("/proc/{}/cgroup", p.pid())).unwrap();
    let wanted = [
        "cpu",
        "cpuacct",
        "cpuset",
        "memory",
        "pids",
        "blkio",
        "devices",
        "freezer",
        "name=systemd",
    ];
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let hybrid = mountinfo
        .lines()
        .any(|l| l.contains(" - cgroup2 ") && t.cg.version() == CgroupVersion::V1);
    let mut seen = 0;
    for line in own.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next(), parts.next().unwrap(), parts.next().unwrap());
        let ours = controllers.is_empty() && (t.cg.version() == CgroupVersion::V2 || hybrid)
            || controllers.split(',').any(|c| wanted.contains(&c));
        if ours {
            assert_eq!(path, t.cg.path(), "{line}");
            seen += 1;
        }
    }
    if t.cg.version() == CgroupVersion::V1 {
        let systemd = mountinfo.contains(",name=systemd");
        assert!(
            seen >= 6 + usize::from(systemd) + usize::from(hybrid),
            "in too few hierarchies: {own}"
        );
    }
    assert_eq!(t.cg.pids().unwrap(), vec![p.pid()]);
    assert!(!t.cg.is_frozen().unwrap());
    if t.cg.version() == CgroupVersion::V1 {
        // The cpuset was populated from its parent, all the way down.
        let mounts = vessel_cgroups::v1_mounts().unwrap();
        let cpuset = &mounts["cpuset"];
        for dir in [cpuset.join(support::PARENT), cpuset.join(&t.path)] {
            let cpus = std::fs::read_to_string(dir.join("cpuset.cpus")).unwrap();
            assert!(!cpus.trim().is_empty(), "{} has no cpus", dir.display());
        }
    }
    let dirs: Vec<std::path::PathBuf> = std::fs::read_dir("/sys/fs/cgroup")
        .unwrap()
        .flatten()
        .map(|e| e.path().join(&t.path))
        .filter(|d| d.is_dir())
        .collect();
    t.cg.destroy().unwrap();
    assert!(!t.cg.exists());
    for d in dirs {
        assert!(!d.exists(), "{} left after destroy", d.display());
    }
    assert!(
        p.wait_for_exit(Duration::from_secs(5)).code().is_none(),
        "killed by a signal"
    );
    t.cg.destroy().unwrap();
    assert!(t.cg.pids().is_err(), "pids of a removed cgroup");
}

#[test]
fn pids_limit_holds_background_spawning_and_destroy_kills_all() {
    let _s = serial();
    let t = TestCgroup::new("pids-loop");
    t.cg.apply(&pids_limit(20)).unwrap();
    let mut p = Proc::start_in(
        &*t.cg,
        "i=0; while [ $i -lt 100 ]; do sleep 30 >/dev/null 2>&1 & i=$((i+1)); done; echo spawned all; wait",
        Stdio::piped(),
    );
    let status = p.wait_for_exit(Duration::from_secs(10));
    let mut err = String::new();
    std::io::Read::read_to_string(p.child.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert!(!status.success(), "the shell should fail to fork");
    assert!(err.to_lowercase().contains("fork"), "stderr: {err}");
    let stats = t.cg.stats().unwrap();
    assert!(
        stats.pids <= 20,
        "pids.current {} above the limit",
        stats.pids
    );
    let sleepers = t.cg.pids().unwrap();
    assert!(
        (15..=20).contains(&sleepers.len()),
        "expected up to 19 sleeps left, found {}",
        sleepers.len()
    );
    t.cg.destroy().unwrap();
    assert!(!t.cg.exists());
    for pid in sleepers {
        assert!(dead(pid), "pid {pid} survived destroy");
    }
}

#[test]
fn fork_bomb_is_held_by_pids_limit_and_destroyed() {
    let _s = serial();
    let t = TestCgroup::new("fork-bomb");
    let mut r = pids_limit(20);
    // Keep the churning bomb from starving the machine while it runs.
    r.set_cpu(Some(
        LinuxCpuBuilder::default()
            .quota(50_000)
            .period(100_000u64)
            .build()
            .unwrap(),
    ));
    t.cg.apply(&r).unwrap();
    let _bomb = Proc::start_in(&*t.cg, "f() { f | f & }; f; sleep 5", Stdio::null());
    let start = Instant::now();
    let mut highest = 0;
    while start.elapsed() < Duration::from_millis(1500) {
        highest = highest.max(t.cg.stats().unwrap().pids);
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(highest <= 20, "pids.current reached {highest}");
    assert!(
        highest >= 10,
        "the bomb never got going (highest {highest})"
    );
    let seen = t.cg.pids().unwrap();
    t.cg.destroy().unwrap();
    assert!(!t.cg.exists());
    for pid in seen {
        assert!(dead(pid), "pid {pid} survived destroy");
    }
}

#[test]
fn memory_hog_is_oom_killed_inside_its_cgroup_only() {
    let _s = serial();
    const LIMIT: i64 = 64 << 20;
    let neighbour = TestCgroup::new("oom-neighbour");
    let hog = TestCgroup::new("oom-hog");
    let limited = |swap: bool| {
        let mut m = LinuxMemoryBuilder::default().limit(LIMIT);
        if swap {
            // memory+swap = memory: no swapping out of trouble.
            m = m.swap(LIMIT);
        }
        LinuxResourcesBuilder::default()
            .memory(m.build().unwrap())
            .build()
            .unwrap()
    };
    match hog.cg.apply(&limited(true)) {
        Ok(()) => {}
        Err(CgroupError::Unsupported(why)) => {
            eprintln!("no swap limit on this host ({why}); relying on the memory limit");
            hog.cg.apply(&limited(false)).unwrap();
        }
        Err(e) => panic!("apply: {e:?}"),
    }
    neighbour.cg.apply(&limited(false)).unwrap();
    let own_oom_before = own_oom_kills();

    let mut calm = Proc::start_in(
        &*neighbour.cg,
        "while read x; do echo alive; done",
        Stdio::null(),
    );
    assert_eq!(calm.ask("hello"), "alive");
    let before = hog.cg.stats().unwrap().oom_kills;
    let mut p = Proc::start_in(&*hog.cg, "head -c 300M /dev/zero | tail", Stdio::null());
    let status = p.wait_for_exit(Duration::from_secs(30));
    // tail was SIGKILLed: the shell reports 128 + 9.
    assert_eq!(status.code(), Some(137), "hog exit: {status:?}");
    let stats = hog.cg.stats().unwrap();
    assert!(stats.oom_kills > before, "no OOM kill counted: {stats:?}");
    if let Some(peak) = stats.memory_peak_bytes {
        assert!(peak <= LIMIT as u64, "peak {peak} above the limit");
    }
    assert!(calm.running(), "the neighbour died");
    assert_eq!(calm.ask("still there?"), "alive");
    assert_eq!(neighbour.cg.stats().unwrap().oom_kills, 0);
    assert_eq!(
        own_oom_kills(),
        own_oom_before,
        "the test process's cgroup saw an OOM kill"
    );
}

/// OOM kills in this test process's own memory cgroup (v1), if it can be read.
fn own_oom_kills() -> Option<u64> {
    let own = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let path = own.lines().find_map(|l| {
        let mut parts = l.splitn(3, ':');
        let _ = parts.next();
        (parts.next()? == "memory").then(|| parts.next().map(str::to_owned))?
    })?;
    let mounts = vessel_cgroups::v1_mounts().ok()?;
    let file = mounts
        .get("memory")?
        .join(path.trim_start_matches('/'))
        .join("memory.oom_control");
    let text = std::fs::read_to_string(file).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("oom_kill ")?.trim().parse().ok())
}

#[test]
fn cpu_quota_holds_a_busy_loop() {
    let _s = serial();
    let limited = TestCgroup::new("cpu-limited");
    let free = TestCgroup::new("cpu-free");
    limited
        .cg
        .apply(
            &LinuxResourcesBuilder::default()
                .cpu(
                    LinuxCpuBuilder::default()
                        .quota(20_000)
                        .period(100_000u64)
                        .shares(512u64)
                        .build()
                        .unwrap(),
                )
                .build()
                .unwrap(),
        )
        .unwrap();
    let busy = "while :; do :; done";
    let start = Instant::now();
    let _a = Proc::start_in(&*limited.cg, busy, Stdio::null());
    let _b = Proc::start_in(&*free.cg, busy, Stdio::null());
    std::thread::sleep(Duration::from_millis(1900));
    let used_limited = cpu_seconds(&*limited.cg);
    let wall = start.elapsed().as_secs_f64();
    let used_free = cpu_seconds(&*free.cg);
    eprintln!(
        "{wall:.3} s of busy loop: {used_limited:.3} s cpu at 0.2 cores, {used_free:.3} s unlimited"
    );
    // Periods cut by the start and the end of the window can each give a full quota (0.02 s).
    assert!(
        used_limited <= 0.2 * wall + 0.05,
        "0.2 cores used {used_limited:.3} s in {wall:.3} s"
    );
    assert!(
        used_limited < 0.5,
        "0.2 cores used {used_limited:.3} s in {wall:.3} s"
    );
    assert!(
        used_limited > 0.05,
        "the limited loop barely ran: {used_limited:.3} s"
    );
    // (Beside other work on a loaded machine, the unlimited loop may get well under a
    // core, but more than the limited one.)
    assert!(
        used_free > used_limited,
        "the unlimited loop used only {used_free:.3} s in 2 s, the limited one {used_limited:.3}"
    );
}

#[test]
fn freeze_stops_and_thaw_resumes() {
    let _s = serial();
    let t = TestCgroup::new("freeze");
    let mut p = Proc::start_in(&*t.cg, "while :; do :; done", Stdio::null());
    std::thread::sleep(Duration::from_millis(200));
    t.cg.freeze().unwrap();
    assert!(t.cg.is_frozen().unwrap());
    let frozen_at = cpu_seconds(&*t.cg);
    std::thread::sleep(Duration::from_millis(500));
    let still = cpu_seconds(&*t.cg);
    assert!(
        still - frozen_at < 0.005,
        "cpu use grew by {:.4} s while frozen",
        still - frozen_at
    );
    assert!(p.running());
    t.cg.thaw().unwrap();
    assert!(!t.cg.is_frozen().unwrap());
    cpu_passes(&*t.cg, still + 0.05, "the loop did not resume");
    // Destroy of a frozen cgroup thaws it first.
    t.cg.freeze().unwrap();
    t.cg.destroy().unwrap();
    assert!(p.wait_for_exit(Duration::from_secs(5)).code().is_none());
}

/// The limit files an invalid block must leave alone.
fn limit_files(t: &TestCgroup) -> BTreeMap<PathBuf, String> {
    let mut files = Vec::new();
    match t.cg.version() {
        CgroupVersion::V1 => {
            let mounts = vessel_cgroups::v1_mounts().unwrap();
            for (c, f) in [
                ("cpu", "cpu.cfs_quota_us"),
                ("cpu", "cpu.cfs_period_us"),
                ("cpu", "cpu.shares"),
                ("cpuset", "cpuset.cpus"),
                ("memory", "memory.limit_in_bytes"),
                ("memory", "memory.memsw.limit_in_bytes"),
                ("pids", "pids.max"),
                ("blkio", "blkio.bfq.weight"),
                ("blkio", "blkio.weight"),
                ("devices", "devices.list"),
            ] {
                if let Some(m) = mounts.get(c) {
                    files.push(m.join(&t.path).join(f));
                }
            }
        }
        CgroupVersion::V2 => {
            let dir = PathBuf::from(vessel_cgroups::CGROUP_ROOT).join(&t.path);
            for f in [
                "cpu.max",
                "cpu.weight",
                "cpuset.cpus",
                "memory.max",
                "memory.swap.max",
                "pids.max",
                "io.weight",
            ] {
                files.push(dir.join(f));
            }
        }
    }
    files
        .into_iter()
        .filter_map(|f| std::fs::read_to_string(&f).ok().map(|v| (f, v)))
        .collect()
}

#[test]
fn invalid_limits_are_refused_and_change_nothing() {
    let _s = serial();
    let t = TestCgroup::new("invalid");
    let mut good = pids_limit(50);
    good.set_memory(Some(
        LinuxMemoryBuilder::default()
            .limit(128i64 << 20)
            .build()
            .unwrap(),
    ));
    t.cg.apply(&good).unwrap();
    let before = limit_files(&t);
    assert!(before.len() >= 4, "limit files not found: {before:?}");

    // Every block also carries a valid pids limit that must not be written either.
    let cpu = |b: LinuxCpuBuilder| {
        let mut r = pids_limit(7);
        r.set_cpu(Some(b.build().unwrap()));
        r
    };
    let mem = |b: LinuxMemoryBuilder| {
        let mut r = pids_limit(7);
        r.set_memory(Some(b.build().unwrap()));
        r
    };
    let mut bad_weight = pids_limit(7);
    bad_weight.set_block_io(Some(
        LinuxBlockIoBuilder::default().weight(5u16).build().unwrap(),
    ));
    let mut bad_device = pids_limit(7);
    bad_device.set_devices(Some(vec![LinuxDeviceCgroupBuilder::default()
        .allow(false)
        .access("rwx")
        .build()
        .unwrap()]));
    let cases: Vec<(LinuxResources, &str)> = vec![
        (
            cpu(LinuxCpuBuilder::default().quota(500)),
            "cpu quota 500 is below the kernel's minimum of 1000 microseconds",
        ),
        (
            cpu(LinuxCpuBuilder::default().period(10u64)),
            "cpu period 10 is outside the kernel's range of 1000 to 1000000 microseconds",
        ),
        (
            cpu(LinuxCpuBuilder::default().shares(1u64)),
            "cpu shares 1 is outside the kernel's range of 2 to 262144",
        ),
        (
            cpu(LinuxCpuBuilder::default().cpus("0-4095")),
            "may not use",
        ),
        (
            cpu(LinuxCpuBuilder::default().cpus("zero")),
            "is not a number",
        ),
        (
            mem(LinuxMemoryBuilder::default().limit(-5)),
            "memory limit -5 is negative",
        ),
        (
            mem(LinuxMemoryBuilder::default()
                .limit(64i64 << 20)
                .swap(32i64 << 20)),
            "below the memory limit",
        ),
        (
            bad_weight,
            "block io weight 5 is outside the range 10 to 1000",
        ),
        (bad_device, "must be made of r, w and m"),
    ];
    for (r, expected) in cases {
        match t.cg.apply(&r) {
            Err(CgroupError::InvalidLimit(msg)) => {
                assert!(msg.contains(expected), "message {msg:?} lacks {expected:?}")
            }
            other => panic!("expected InvalidLimit containing {expected:?}, got {other:?}"),
        }
        assert_eq!(
            limit_files(&t),
            before,
            "a refused block changed the cgroup"
        );
    }
    // A valid block still goes through afterwards.
    t.cg.apply(&pids_limit(7)).unwrap();
    assert_ne!(limit_files(&t), before);
}

/// A cgroup2 mount to run the v2 backend on: /sys/fs/cgroup on a v2 host, the (controller-less)
/// unified mount of a hybrid host otherwise.
fn cgroup2_mount() -> PathBuf {
    if vessel_cgroups::detect().unwrap() == CgroupVersion::V2 {
        return PathBuf::from(vessel_cgroups::CGROUP_ROOT);
    }
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    text.lines()
        .find_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            let left: Vec<&str> = left.split(' ').collect();
            (right.starts_with("cgroup2 ") && left[3] == "/").then(|| PathBuf::from(left[4]))
        })
        .expect(
            "this v1 host has no cgroup2 mount (hybrid /sys/fs/cgroup/unified) to test the v2 \
             backend's freezer, kill and process handling on",
        )
}

#[test]
fn v2_backend_freezes_kills_and_removes_on_a_real_cgroup2_mount() {
    let _s = serial();
    let root = cgroup2_mount();
    let path = format!("{}/v2-{}", support::PARENT, std::process::id());
    let cg = V2Manager::with_root(&root, &path).unwrap();
    let t =
        support::TestCgroup::custom(Box::new(cg), path.clone(), vec![root.join(support::PARENT)]);
    assert_eq!(t.cg.version(), CgroupVersion::V2);

    let mut p = Proc::start_in(&*t.cg, "sleep 30 & while :; do :; done", Stdio::null());
    let own = std::fs::read_to_string(format!("/proc/{}/cgroup", p.pid())).unwrap();
    assert!(
        own.lines().any(|l| l == format!("0::{}", t.cg.path())),
        "process not in {}: {own}",
        t.cg.path()
    );
    cpu_passes(&*t.cg, 0.05, "cpu.stat usage_usec did not grow");
    assert_eq!(t.cg.pids().unwrap().len(), 2, "the shell and its sleep");

    t.cg.freeze().unwrap();
    assert!(t.cg.is_frozen().unwrap());
    let frozen_at = cpu_seconds(&*t.cg);
    std::thread::sleep(Duration::from_millis(400));
    assert!(
        cpu_seconds(&*t.cg) - frozen_at < 0.005,
        "cpu use grew while frozen"
    );
    t.cg.thaw().unwrap();
    assert!(!t.cg.is_frozen().unwrap());
    cpu_passes(&*t.cg, frozen_at + 0.05, "the loop did not resume");

    // A limit needs its controller: offered by the parent, or refused with the file named.
    let offered = std::fs::read_to_string(root.join(support::PARENT).join("cgroup.controllers"))
        .unwrap_or_default();
    match t.cg.apply(&pids_limit(20)) {
        Ok(()) => assert!(
            offered.contains("pids"),
            "applied without a pids controller"
        ),
        Err(CgroupError::Unsupported(msg)) => {
            assert!(!offered.contains("pids"), "refused though offered: {msg}");
            assert!(msg.contains("pids.max"), "{msg}");
        }
        Err(e) => panic!("apply: {e:?}"),
    }

    t.cg.freeze().unwrap();
    let pids = t.cg.pids().unwrap();
    t.cg.destroy().unwrap();
    assert!(!t.cg.exists());
    assert!(p.wait_for_exit(Duration::from_secs(5)).code().is_none());
    for pid in pids {
        assert!(dead(pid), "pid {pid} survived destroy");
    }
    t.cg.destroy().unwrap();
}
