//! Instance backups over the real daemon: taken while the instance runs, restored after it
//! is deleted (also by a second daemon standing for another host), a second backup of what
//! did not change adding almost nothing to the store, damage found by `verify` and refused
//! by restore.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;

fn backups(d: &Daemon, args: &[&str]) -> Vec<serde_json::Value> {
    let mut a = vec!["backup", "list", "--format", "json"];
    a.extend_from_slice(args);
    serde_json::from_str(&d.ok(&a)).unwrap()
}

/// Bytes under `dir`.
fn du(dir: &Path) -> u64 {
    let out = std::process::Command::new("du")
        .args(["-sb", dir.to_str().unwrap()])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn a_container_is_backed_up_running_and_restored_here_and_on_another_host() {
    let d = Daemon::start();
    d.busybox();
    d.ok(&[
        "launch",
        "busybox",
        "web",
        "--no-network",
        "-l",
        "disk=64MiB",
    ]);
    let (code, out) = d.sh(
        "web",
        "mkdir -p /srv && head -c 12000000 /dev/urandom > /srv/blob && \
         echo hello > /srv/note && chown 7:7 /srv/note && md5sum /srv/blob",
    );
    assert_eq!(code, 0, "{out}");
    let sum = out.split_whitespace().next().unwrap().to_string();
    // Taken while it runs; it runs on after.
    let first: serde_json::Value =
        serde_json::from_str(&d.ok(&["backup", "create", "web", "--format", "json"])).unwrap();
    assert!(first["size"].as_u64().unwrap() >= 12_000_000, "{first}");
    assert_eq!(d.info("web")["status"], "running");
    let store = d.root().join("backups");
    let after_first = du(&store);
    // Nothing changed: the second backup adds less than 1 % of the first's bytes.
    d.ok(&["backup", "create", "web"]);
    let grown = du(&store) - after_first;
    assert!(
        grown * 100 < after_first,
        "a second backup of the same files added {grown} bytes to {after_first}"
    );
    let list = backups(&d, &["web"]);
    assert_eq!(list.len(), 2, "{list:?}");
    // Gone, then back from its newest backup, with the same data and owners.
    d.ok(&["delete", "-f", "web"]);
    d.ok(&["backup", "restore", "web", "--start"]);
    let (code, out) = d.sh(
        "web",
        "md5sum /srv/blob; cat /srv/note; stat -c %u:%g /srv/note",
    );
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(&sum) && out.contains("hello") && out.contains("7:7"),
        "{out}"
    );
    // A copy beside it, from the first backup.
    let id = first["id"].as_str().unwrap();
    d.ok(&["backup", "restore", &format!("web/{id}"), "web2", "--start"]);
    assert!(d.sh("web2", "md5sum /srv/blob").1.contains(&sum));
    let err = d.fails(&["backup", "restore", &format!("web/{id}")]);
    assert!(err.contains("already exists"), "{err}");

    // Another host: a second daemon reads the same store directory.
    let shared = d.dir.join("shared-store");
    d.ok(&[
        "backup",
        "create",
        "web",
        "--store",
        shared.to_str().unwrap(),
    ]);
    let (other, port) = Daemon::start_https();
    other.busybox();
    other.ok(&[
        "backup",
        "restore",
        "web",
        "--start",
        "--store",
        shared.to_str().unwrap(),
    ]);
    let (code, out) = other.sh("web", "md5sum /srv/blob; cat /srv/note");
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(&sum) && out.contains("hello"), "{out}");
    other.ok(&["delete", "-f", "web"]);
    // Or reached as a remote: `--target` carries the backup over as one archive.
    let token: serde_json::Value = serde_json::from_str(&other.ok(&[
        "auth", "token", "create", "ops", "--role", "operator", "--format", "json",
    ]))
    .unwrap();
    let config = d.dir.join("client");
    let env = [("VESSEL_CONFIG_DIR", config.to_str().unwrap())];
    let url = format!("https://127.0.0.1:{port}");
    let out = d.vessel_env(
        &[
            "remote",
            "add",
            "far",
            &url,
            "--token",
            token["token"].as_str().unwrap(),
            "--accept-certificate",
        ],
        &env,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = d.vessel_env(
        &[
            "backup", "restore", "web", "moved", "--target", "far", "--start",
        ],
        &env,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (code, out) = other.sh("moved", "md5sum /srv/blob; cat /srv/note");
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(&sum) && out.contains("hello"), "{out}");
    other.ok(&["delete", "-f", "moved"]);

    // Prune keeps the newest; gc frees what no backup names.
    let pruned = d.ok(&["backup", "prune", "web", "--keep-last", "1"]);
    assert!(pruned.contains("deleted"), "{pruned}");
    assert_eq!(backups(&d, &["web"]).len(), 1);
    for n in ["web", "web2"] {
        d.ok(&["delete", "-f", n]);
    }
}

#[test]
fn damage_is_found_by_verify_and_a_damaged_backup_is_not_restored() {
    let d = Daemon::start();
    d.busybox();
    d.ok(&[
        "create",
        "busybox",
        "c1",
        "--no-network",
        "--",
        "sleep",
        "3600",
    ]);
    d.ok(&["start", "c1"]);
    d.sh("c1", "echo precious > /root-note");
    d.ok(&["backup", "create", "c1"]);
    d.ok(&["backup", "verify"]);
    // One byte of one chunk flipped.
    let chunks = d.root().join("backups/chunks");
    let mut files: Vec<_> = walk(&chunks);
    files.sort();
    let victim = files
        .iter()
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap()
        .clone();
    let mut data = std::fs::read(&victim).unwrap();
    let at = data.len() / 2;
    data[at] ^= 0x10;
    std::fs::write(&victim, &data).unwrap();
    let out = d.vessel(&["backup", "verify"]);
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(text.contains("DAMAGED"), "{text}");
    let err = d.fails(&["backup", "restore", "c1", "c2"]);
    assert!(
        err.contains("no sound backup") || err.contains("damaged"),
        "{err}"
    );
    assert!(d.fails(&["info", "c2"]).contains("not found"));
    // Put right, verify clears the mark.
    data[at] ^= 0x10;
    std::fs::write(&victim, &data).unwrap();
    d.ok(&["backup", "verify"]);
    d.ok(&["backup", "restore", "c1", "c2"]);
    d.ok(&["start", "c2"]);
    assert_eq!(d.sh("c2", "cat /root-note").1.trim(), "precious");
    for n in ["c1", "c2"] {
        d.ok(&["delete", "-f", n]);
    }
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// A running VM backed up (paused meanwhile, running after), deleted, and restored: the
/// file its guest wrote is back on its disk.
#[test]
fn a_vm_is_backed_up_running_and_restored_with_its_disk() {
    let mut d = Daemon::start();
    d.ok(&["image", "build", "vm", "--layout", "disk"]);
    d.ok(&[
        "launch",
        "vm/busybox-disk",
        "g",
        "--vm",
        "-l",
        "memory=256MiB",
    ]);
    wait_console(&d, "g", "VESSEL-READY", Duration::from_secs(180));
    let (code, out) = d.sh(
        "g",
        "head -c 3000000 /dev/urandom > /root/blob && md5sum /root/blob && sync",
    );
    assert_eq!(code, 0, "{out}");
    let sum = out.split_whitespace().next().unwrap().to_string();
    let b: serde_json::Value =
        serde_json::from_str(&d.ok(&["backup", "create", "g", "--format", "json"])).unwrap();
    // The disk as the guest sees it, read from a snapshot while the guest ran on.
    assert_eq!(b["archives"][1]["name"], "root.raw", "{b}");
    assert_eq!(d.info("g")["status"], "running");
    assert_eq!(
        d.sh("g", "echo alive").1.trim(),
        "alive",
        "the guest runs on"
    );
    let disk_size = b["archives"][1]["size"].as_u64().unwrap();
    let first_read: u64 = b["labels"]["read"].as_str().unwrap().parse().unwrap();
    assert!(
        first_read > 3_000_000,
        "the first backup read the disk: {b}"
    );
    assert!(
        b["labels"]["disk.bitmap"].is_string(),
        "QEMU tracks changes from here: {b}"
    );
    // Again, unchanged: little is read (QEMU's dirty bitmap says what changed), the disk's
    // unchanged regions are stored once.
    let read_of =
        |b: &serde_json::Value| -> u64 { b["labels"]["read"].as_str().unwrap().parse().unwrap() };
    let store = d.root().join("backups");
    let before = du(&store);
    let b2: serde_json::Value =
        serde_json::from_str(&d.ok(&["backup", "create", "g", "--format", "json"])).unwrap();
    let grown = du(&store) - before;
    assert!(
        grown * 20 < before,
        "a second backup added {grown} bytes to {before}"
    );
    assert!(
        read_of(&b2) * 20 < disk_size,
        "an unchanged disk of {disk_size} bytes: {b2}\n{}",
        d.log()
    );
    assert_ne!(b2["labels"]["disk.bitmap"], b["labels"]["disk.bitmap"]);
    // The guest writes a little more: the next backup reads that, not the whole disk.
    let (code, out) = d.sh(
        "g",
        "head -c 1000000 /dev/urandom > /root/more && md5sum /root/more && sync",
    );
    assert_eq!(code, 0, "{out}");
    let sum2 = out.split_whitespace().next().unwrap().to_string();
    let b3: serde_json::Value =
        serde_json::from_str(&d.ok(&["backup", "create", "g", "--format", "json"])).unwrap();
    let read = read_of(&b3);
    assert!(
        read >= 1_000_000 && read * 4 < disk_size,
        "the third backup read {read} bytes of a {disk_size}-byte disk: {b3}"
    );
    d.ok(&["delete", "-f", "g"]);
    d.ok(&["backup", "restore", "g", "--start"]);
    wait_console(&d, "g", "VESSEL-READY", Duration::from_secs(180));
    let (code, out) = d.sh("g", "md5sum /root/blob /root/more");
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(&sum) && out.contains(&sum2), "{out}");
    // Restarted, QEMU has no bitmap: the next backup reads the whole disk again.
    let b4: serde_json::Value =
        serde_json::from_str(&d.ok(&["backup", "create", "g", "--format", "json"])).unwrap();
    assert!(read_of(&b4) > 3_000_000, "a new QEMU, a full read: {b4}");
    // Exported with its disk snapshot, imported: the snapshot is an internal snapshot of the
    // new disk again, and the disk as it is now comes first.
    d.ok(&["snapshot", "create", "g", "s1"]);
    assert_eq!(d.sh("g", "echo late > /root/late && sync").0, 0);
    let file = d.dir.join("g.vessel");
    d.ok(&["export", "g", file.to_str().unwrap(), "--snapshots"]);
    d.ok(&["import", file.to_str().unwrap(), "g3", "--start"]);
    wait_console(&d, "g3", "VESSEL-READY", Duration::from_secs(180));
    assert_eq!(d.sh("g3", "cat /root/late").1.trim(), "late");
    d.ok(&["snapshot", "restore", "g3", "s1", "--force"]);
    wait_console(&d, "g3", "VESSEL-READY", Duration::from_secs(180));
    let (code, out) = d.sh("g3", "test ! -e /root/late && md5sum /root/blob");
    assert!(code == 0 && out.contains(&sum), "{out}");
    d.ok(&["delete", "-f", "g3"]);
    // What a daemon killed mid-backup leaves (a raw read of the disk, the backup's own
    // internal snapshot) goes at the next start; a user's snapshot of a like name stays.
    d.ok(&["stop", "-f", "g"]);
    d.ok(&["snapshot", "create", "g", "backup-aaaaaaaaaaaa"]);
    let dir = d.root().join("instances/g");
    let disk = dir.join("root.qcow2");
    let out = std::process::Command::new("qemu-img")
        .args(["snapshot", "-c", "backup-0123456789ab"])
        .arg(&disk)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(dir.join(".backup-0123456789ab.raw"), b"left").unwrap();
    d.kill(libc::SIGKILL);
    d.spawn();
    let out = std::process::Command::new("qemu-img")
        .args(["snapshot", "-U", "-l"])
        .arg(&disk)
        .output()
        .unwrap();
    let tags = String::from_utf8_lossy(&out.stdout);
    assert!(!tags.contains("backup-0123456789ab"), "{tags}");
    assert!(tags.contains("backup-aaaaaaaaaaaa"), "{tags}");
    assert!(!dir.join(".backup-0123456789ab.raw").exists());
    d.ok(&["delete", "-f", "g"]);
}

/// `export` writes one archive; `import` makes the instance from it (here and on another
/// host), and a damaged archive makes nothing and leaves nothing.
#[test]
fn an_exported_archive_is_imported_whole_and_a_damaged_one_makes_nothing() {
    let d = Daemon::start();
    d.busybox();
    d.ok(&["launch", "busybox", "src", "--no-network"]);
    let (code, out) = d.sh(
        "src",
        "head -c 3000000 /dev/urandom > /blob && md5sum /blob",
    );
    assert_eq!(code, 0, "{out}");
    let sum = out.split_whitespace().next().unwrap().to_string();
    let file = d.dir.join("src.vessel");
    d.ok(&["export", "src", file.to_str().unwrap()]);
    assert!(std::fs::metadata(&file).unwrap().len() > 3_000_000);
    assert_eq!(d.info("src")["status"], "running");
    d.ok(&["import", file.to_str().unwrap(), "copy", "--start"]);
    assert!(d.sh("copy", "md5sum /blob").1.contains(&sum));
    // On another host, under its own name.
    let other = Daemon::start();
    other.busybox();
    other.ok(&["import", file.to_str().unwrap(), "--start"]);
    assert!(other.sh("src", "md5sum /blob").1.contains(&sum));
    other.ok(&["delete", "-f", "src"]);
    // With --snapshots its snapshots travel too, and come back as they were (owners moved
    // to the new instance's ids).
    assert_eq!(d.sh("src", "echo before > /note && chown 5:5 /note").0, 0);
    d.ok(&["snapshot", "create", "src", "s1"]);
    assert_eq!(d.sh("src", "echo after > /note").0, 0);
    let with = d.dir.join("with-snapshots.vessel");
    d.ok(&["export", "src", with.to_str().unwrap(), "--snapshots"]);
    other.ok(&["import", with.to_str().unwrap(), "--start"]);
    assert_eq!(other.sh("src", "cat /note").1.trim(), "after");
    let snaps: serde_json::Value =
        serde_json::from_str(&other.ok(&["snapshot", "list", "src", "--format", "json"])).unwrap();
    assert_eq!(snaps[0]["name"], "s1", "{snaps}");
    other.ok(&["snapshot", "restore", "src", "s1", "--force"]);
    let (code, out) = other.sh("src", "cat /note; stat -c %u:%g /note; md5sum /blob");
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("before") && out.contains("5:5") && out.contains(&sum),
        "{out}"
    );
    other.ok(&["delete", "-f", "src"]);
    // Damaged: cut short, or one byte of a chunk changed.
    let data = std::fs::read(&file).unwrap();
    let cut = d.dir.join("cut.vessel");
    std::fs::write(&cut, &data[..data.len() / 2]).unwrap();
    let err = d.fails(&["import", cut.to_str().unwrap(), "bad1"]);
    assert!(
        err.contains("truncated") || err.contains("damaged"),
        "{err}"
    );
    let flipped = d.dir.join("flipped.vessel");
    let mut bad = data.clone();
    let at = data.len() * 3 / 4;
    bad[at] ^= 0x20;
    std::fs::write(&flipped, &bad).unwrap();
    let err = d.fails(&["import", flipped.to_str().unwrap(), "bad2"]);
    assert!(err.contains("damaged"), "{err}");
    for n in ["bad1", "bad2"] {
        assert!(d.fails(&["info", n]).contains("not found"));
    }
    let left: Vec<_> = std::fs::read_dir(d.root().join("archives"))
        .map(|r| r.flatten().collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "scratch left behind: {left:?}");
    for n in ["src", "copy"] {
        d.ok(&["delete", "-f", n]);
    }
}
