//! The real libnfs-utils clients (`nfs-ls`, `nfs-cp`, `nfs-cat`) against `vessel-nfs` on
//! loopback, with the ports named in the URL (no portmapper).

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};

use common::*;

/// A tree with files, a subdirectory and symlinks pointing out of the export.
fn populate(dir: &TempDir) {
    std::fs::create_dir_all(dir.join("docs/deep")).expect("mkdir");
    std::fs::write(dir.join("hello.txt"), b"hello over nfs\n").expect("write");
    std::fs::write(dir.join("docs/deep/note.txt"), b"deep\n").expect("write");
    std::os::unix::fs::symlink("/etc", dir.join("etc-link")).expect("symlink");
    std::os::unix::fs::symlink("/etc/passwd", dir.join("passwd-link")).expect("symlink");
    std::os::unix::fs::symlink("../../../../../../etc", dir.join("docs/up-link")).expect("symlink");
}

#[test]
fn nfs_ls_lists_the_export_and_recurses() {
    let dir = TempDir::new("ls");
    populate(&dir);
    let srv = Server::start(
        None,
        &[
            "--export",
            &format!("/vol1={}", path_str(&dir.0)),
            "--listen",
            "127.0.0.1:0",
            "--squash",
            "none",
        ],
    );
    let top = run_ok("nfs-ls", &[&srv.url("/vol1")]);
    let names = listed_names(&top);
    for n in ["hello.txt", "docs", "etc-link", "passwd-link"] {
        assert!(names.iter().any(|x| x == n), "{n} missing from:\n{top}");
    }
    assert!(
        top.lines()
            .any(|l| l.starts_with('d') && l.ends_with(" docs")),
        "{top}"
    );
    assert!(
        top.lines()
            .any(|l| l.starts_with('l') && l.ends_with(" etc-link")),
        "{top}"
    );
    let all = run_ok("nfs-ls", &["-R", &srv.url("/vol1")]);
    let names = listed_names(&all);
    for n in ["docs/deep", "docs/deep/note.txt", "docs/up-link"] {
        assert!(
            names.iter().any(|x| x == n),
            "{n} missing from recursive listing:\n{all}"
        );
    }
    // Sizes are the real ones.
    assert!(
        all.lines()
            .any(|l| l.ends_with(" hello.txt") && l.contains(" 15 ")),
        "{all}"
    );
    // A subdirectory of an export can be mounted too.
    let sub = run_ok("nfs-ls", &[&srv.url("/vol1/docs/deep")]);
    assert_eq!(listed_names(&sub), vec!["note.txt".to_string()], "{sub}");
}

#[test]
fn nfs_cp_copies_in_and_out_byte_identical_and_nfs_cat_reads() {
    let dir = TempDir::new("cp");
    let local = TempDir::new("cp-local");
    populate(&dir);
    let srv = Server::start(
        None,
        &[
            "--export",
            &format!("/vol1={}", path_str(&dir.0)),
            "--listen",
            "127.0.0.1:0",
            "--squash",
            "none",
        ],
    );
    let data = random_bytes(6 * 1024 * 1024 + 12345, 0x5eed);
    let src = local.join("src.bin");
    std::fs::write(&src, &data).expect("write source");
    run_ok("nfs-cp", &[path_str(&src), &srv.url("/vol1/docs/copy.bin")]);
    let on_server = std::fs::read(dir.join("docs/copy.bin")).expect("file created on the server");
    assert!(on_server == data, "file written through NFS differs");
    let back = local.join("back.bin");
    run_ok(
        "nfs-cp",
        &[&srv.url("/vol1/docs/copy.bin"), path_str(&back)],
    );
    assert!(
        std::fs::read(&back).expect("copied back") == data,
        "file read through NFS differs"
    );
    // The new file shows up in listings, with its size and the caller's ownership (root).
    let all = run_ok("nfs-ls", &["-R", &srv.url("/vol1")]);
    assert!(
        all.lines()
            .any(|l| l.ends_with(" docs/copy.bin") && l.contains(&format!(" {} ", data.len()))),
        "{all}"
    );
    assert_eq!(
        std::fs::metadata(dir.join("docs/copy.bin"))
            .expect("meta")
            .uid(),
        0
    );
    assert_eq!(
        run_ok("nfs-cat", &[&srv.url("/vol1/hello.txt")]),
        "hello over nfs\n"
    );
    assert_eq!(
        run_ok("nfs-cat", &[&srv.url("/vol1/docs/deep/note.txt")]),
        "deep\n"
    );
    // Copying onto an existing name is refused (nfs-cp creates exclusively).
    let err = run_fail("nfs-cp", &[path_str(&src), &srv.url("/vol1/hello.txt")]);
    assert!(err.contains("NFS3ERR_EXIST"), "{err}");
    assert_eq!(
        std::fs::read(dir.join("hello.txt")).expect("read"),
        b"hello over nfs\n"
    );
}

#[test]
fn symlinks_out_of_the_export_cannot_be_used_to_read_outside() {
    let dir = TempDir::new("escape");
    populate(&dir);
    let srv = Server::start(
        None,
        &[
            "--export",
            &format!("/vol1={}", path_str(&dir.0)),
            "--listen",
            "127.0.0.1:0",
            "--squash",
            "none",
        ],
    );
    let passwd = std::fs::read_to_string("/etc/passwd").expect("host passwd");
    for path in [
        "/vol1/etc-link/passwd",
        "/vol1/passwd-link",
        "/vol1/docs/up-link/passwd",
        "/vol1/../../../../etc/passwd",
        "/vol1/docs/../../../etc/passwd",
    ] {
        let out = run("nfs-cat", &[&srv.url(path)]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(!out.status.success(), "nfs-cat {path} succeeded: {stdout}");
        assert!(!stdout.contains("root:"), "{path} leaked host data");
        assert!(passwd.contains("root:"), "sanity: host passwd");
    }
    // Mounting through a symlink is refused by the server itself.
    let err = run_fail("nfs-ls", &[&srv.url("/vol1/etc-link")]);
    assert!(err.contains("MNT3ERR_NOTDIR"), "{err}");
    let err = run_fail("nfs-ls", &[&srv.url("/vol1/docs/up-link")]);
    assert!(err.contains("MNT3ERR_NOTDIR"), "{err}");
}

#[test]
fn read_only_export_refuses_writes() {
    let dir = TempDir::new("ro");
    let local = TempDir::new("ro-local");
    populate(&dir);
    let srv = Server::start(
        None,
        &[
            "--export",
            &format!("/rw={}", path_str(&dir.0)),
            "--export",
            &format!("/ro={}", path_str(&dir.0)),
            "--read-only",
            "/ro",
            "--listen",
            "127.0.0.1:0",
            "--squash",
            "none",
        ],
    );
    let src = local.join("f");
    std::fs::write(&src, b"data").expect("write");
    let err = run_fail("nfs-cp", &[path_str(&src), &srv.url("/ro/new.txt")]);
    assert!(err.contains("NFS3ERR_ROFS"), "{err}");
    assert!(
        !dir.join("new.txt").exists(),
        "read-only export created a file"
    );
    // Reading still works, and the same tree is writable through the other export.
    assert_eq!(
        run_ok("nfs-cat", &[&srv.url("/ro/hello.txt")]),
        "hello over nfs\n"
    );
    run_ok("nfs-cp", &[path_str(&src), &srv.url("/rw/new.txt")]);
    assert_eq!(std::fs::read(dir.join("new.txt")).expect("read"), b"data");
}

#[test]
fn missing_export_is_refused_with_a_clear_error() {
    let dir = TempDir::new("missing");
    let srv = Server::start(
        None,
        &[
            "--export",
            &format!("/vol1={}", path_str(&dir.0)),
            "--listen",
            "127.0.0.1:0",
        ],
    );
    let err = run_fail("nfs-ls", &[&srv.url("/nope")]);
    assert!(err.contains("MNT3ERR_NOENT"), "{err}");
    let err = run_fail("nfs-cat", &[&srv.url("/vol1/absent.txt")]);
    assert!(
        err.contains("NFS3ERR_NOENT") || err.contains("No such file"),
        "{err}"
    );
}

#[test]
fn an_export_for_other_client_networks_is_refused() {
    let dir = TempDir::new("clients");
    populate(&dir);
    let srv = Server::start(
        None,
        &[
            "--export",
            &format!("/theirs={}", path_str(&dir.0)),
            "--export",
            &format!("/ours={}", path_str(&dir.0)),
            "--clients",
            "/theirs=192.0.2.0/24",
            "--clients",
            "/theirs=2001:db8::/32",
            "--clients",
            "/ours=10.0.0.0/8,127.0.0.1",
            "--listen",
            "127.0.0.1:0",
        ],
    );
    // As for an export that does not exist: its name is not theirs to learn.
    let err = run_fail("nfs-ls", &[&srv.url("/theirs")]);
    assert!(err.contains("MNT3ERR_NOENT"), "{err}");
    let err = run_fail("nfs-cat", &[&srv.url("/theirs/hello.txt")]);
    assert!(err.contains("MNT3ERR_NOENT"), "{err}");
    assert_eq!(
        run_ok("nfs-cat", &[&srv.url("/ours/hello.txt")]),
        "hello over nfs\n"
    );
    // Bad networks, and networks for an export that is not there, are refused up front.
    let bin = env!("CARGO_BIN_EXE_vessel-nfs");
    for (clients, says) in [
        ("/ours=10.0.0.0/33", "not a client network"),
        ("/ours", "is not NAME=NET"),
        ("/other=10.0.0.0/8", "names no --export"),
    ] {
        let out = std::process::Command::new(bin)
            .args(["--export", &format!("/ours={}", path_str(&dir.0))])
            .args(["--clients", clients, "--listen", "127.0.0.1:0"])
            .output()
            .expect("run vessel-nfs");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains(says),
            "{clients}: {err}"
        );
    }
}

#[test]
fn credentials_are_squashed_and_permissions_enforced() {
    let dir = TempDir::new("creds");
    let local = TempDir::new("creds-local");
    std::fs::create_dir(dir.join("open")).expect("mkdir");
    std::fs::set_permissions(dir.join("open"), std::fs::Permissions::from_mode(0o777))
        .expect("chmod");
    std::fs::create_dir(dir.join("closed")).expect("mkdir");
    std::fs::set_permissions(dir.join("closed"), std::fs::Permissions::from_mode(0o755))
        .expect("chmod");
    std::fs::write(dir.join("secret"), b"s").expect("write");
    std::fs::set_permissions(dir.join("secret"), std::fs::Permissions::from_mode(0o600))
        .expect("chmod");
    // Default: root is squashed to 65534.
    let srv = Server::start(
        None,
        &[
            "--export",
            &format!("/v={}", path_str(&dir.0)),
            "--listen",
            "127.0.0.1:0",
        ],
    );
    let src = local.join("f");
    std::fs::write(&src, b"x").expect("write");
    run_ok("nfs-cp", &[path_str(&src), &srv.url("/v/open/by-root")]);
    let meta = std::fs::metadata(dir.join("open/by-root")).expect("created");
    assert_eq!((meta.uid(), meta.gid()), (65534, 65534));
    // A squashed root cannot write where only the real root may, nor read 0600 files.
    let err = run_fail("nfs-cp", &[path_str(&src), &srv.url("/v/closed/by-root")]);
    assert!(err.contains("NFS3ERR_ACCES"), "{err}");
    run_fail("nfs-cat", &[&srv.url("/v/secret")]);
    // Another uid, as claimed by AUTH_UNIX, owns what it creates.
    run_ok(
        "nfs-cp",
        &[
            path_str(&src),
            &srv.url_with("/v/open/by-1000", "uid=1000&gid=1000"),
        ],
    );
    let meta = std::fs::metadata(dir.join("open/by-1000")).expect("created");
    assert_eq!((meta.uid(), meta.gid()), (1000, 1000));
    drop(srv);
    // --squash all maps everyone to the anonymous identity given.
    let srv = Server::start(
        None,
        &[
            "--export",
            &format!("/v={}", path_str(&dir.0)),
            "--listen",
            "127.0.0.1:0",
            "--squash",
            "all",
            "--anon",
            "4242:4343",
        ],
    );
    run_ok(
        "nfs-cp",
        &[
            path_str(&src),
            &srv.url_with("/v/open/by-anon", "uid=1000&gid=1000"),
        ],
    );
    let meta = std::fs::metadata(dir.join("open/by-anon")).expect("created");
    assert_eq!((meta.uid(), meta.gid()), (4242, 4343));
}
