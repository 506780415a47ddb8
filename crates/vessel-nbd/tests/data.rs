//! Data through the server with real clients: nbdcopy, qemu-img, qemu-io, nbdinfo --map.

mod common;

use common::*;

#[test]
fn nbdcopy_and_qemu_img_round_trip_random_data() {
    let fx = Fixture::new("copy");
    let data = random_bytes(DISK_SIZE as usize, 0x5eed);
    let src = fx.dir.join("src.bin");
    std::fs::write(&src, &data).expect("write source");
    run_ok("nbdcopy", &[path_str(&src), &fx.uri("disk")]);
    let back = fx.dir.join("back.bin");
    run_ok("nbdcopy", &[&fx.uri("disk"), path_str(&back)]);
    assert!(
        std::fs::read(&back).expect("read back") == data,
        "nbdcopy read back other bytes"
    );
    // The backing file holds exactly what was written.
    assert!(std::fs::read(fx.dir.join("disk.img")).expect("image") == data);
    let converted = fx.dir.join("converted.raw");
    run_ok(
        "qemu-img",
        &[
            "convert",
            "-f",
            "raw",
            "-O",
            "raw",
            &fx.uri("disk"),
            path_str(&converted),
        ],
    );
    assert!(
        std::fs::read(&converted).expect("converted") == data,
        "qemu-img convert differs"
    );
    let ro = fx.dir.join("ro.raw");
    run_ok(
        "qemu-img",
        &[
            "convert",
            "-f",
            "raw",
            "-O",
            "raw",
            &fx.uri("ro"),
            path_str(&ro),
        ],
    );
    assert!(std::fs::read(&ro).expect("ro copy") == vec![0x5a; RO_SIZE as usize]);
}

/// Run `qemu-io` with one `-c` per command and require every command to succeed.
fn qemu_io(uri: &str, commands: &[&str]) -> String {
    let mut args = vec!["-f", "raw"];
    for c in commands {
        args.extend(["-c", c]);
    }
    args.push(uri);
    let out = run_ok("qemu-io", &args);
    assert!(
        !out.contains("failed") && !out.contains("error"),
        "qemu-io reported: {out}"
    );
    out
}

/// `nbdinfo --map` as (offset, length, description) rows.
fn map(uri: &str) -> Vec<(u64, u64, String)> {
    let out = run_ok("nbdinfo", &["--map", uri]);
    out.lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let off = f.next()?.parse().ok()?;
            let len = f.next()?.parse().ok()?;
            let _state = f.next()?;
            Some((off, len, f.collect::<Vec<_>>().join(" ")))
        })
        .collect()
}

#[test]
fn qemu_io_commands_and_map_shows_holes_after_trim_and_zeroes() {
    let fx = Fixture::new("qemu-io");
    let uri = fx.uri("disk");
    // A fresh sparse export is one hole.
    assert_eq!(map(&uri), vec![(0, DISK_SIZE, "hole,zero".to_string())]);
    qemu_io(
        &uri,
        &[
            "write -P 0xab 0 64k",
            "read -P 0xab 0 64k",
            "write -P 0xcd 1M 1M",
            "write -P 0xef -f 4M 64k",
            "flush",
        ],
    );
    let rows = map(&uri);
    assert!(
        rows.contains(&(0, 64 << 10, "data".to_string())),
        "{rows:?}"
    );
    assert!(
        rows.contains(&(1 << 20, 1 << 20, "data".to_string())),
        "{rows:?}"
    );
    // Discard and zero with unmap punch holes; the data reads back as zeroes.
    qemu_io(
        &uri,
        &[
            "discard 0 64k",
            "write -z -u 1M 1M",
            "read -P 0 1M 1M",
            "read -P 0xef 4M 64k",
            "flush",
        ],
    );
    let rows = map(&uri);
    assert!(
        rows.contains(&(0, 4 << 20, "hole,zero".to_string())),
        "{rows:?}"
    );
    assert!(
        rows.contains(&(4 << 20, 64 << 10, "data".to_string())),
        "{rows:?}"
    );
    // Zeroing without unmap keeps the range allocated and reads as zeroes.
    qemu_io(&uri, &["write -z 4M 64k", "read -P 0 4M 64k"]);
    let image = std::fs::read(fx.dir.join("disk.img")).expect("image");
    assert!(
        image.iter().all(|&b| b == 0),
        "image still holds data after zeroing"
    );
}

#[test]
fn read_only_export_refuses_writes() {
    let fx = Fixture::new("ro");
    let out = run(
        "qemu-io",
        &["-f", "raw", "-c", "write -P 1 0 4k", &fx.uri("ro")],
    );
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !out.status.success() || text.contains("failed") || text.contains("read-only"),
        "qemu-io wrote to a read-only export: {text}"
    );
    let out = run("nbdcopy", &[&fx.uri("disk"), &fx.uri("ro")]);
    assert!(!out.status.success(), "nbdcopy wrote to a read-only export");
    let image = std::fs::read(fx.dir.join("ro.img")).expect("ro image");
    assert!(image.iter().all(|&b| b == 0x5a), "read-only image changed");
}

#[test]
fn two_clients_at_once_see_each_others_flushed_writes() {
    let fx = Fixture::new("two");
    let a = random_bytes(DISK_SIZE as usize, 1);
    let small = random_bytes(64 << 10, 3);
    let (fa, fs) = (fx.dir.join("a.bin"), fx.dir.join("s.bin"));
    std::fs::write(&fa, &a).expect("a");
    std::fs::write(&fs, &small).expect("small");
    let (uri_a, uri_s) = (fx.uri("disk"), fx.uri("small"));
    // Two client processes at once, one of them with several connections (multi-conn).
    std::thread::scope(|s| {
        let ta = s.spawn(|| run_ok("nbdcopy", &["--connections=4", path_str(&fa), &uri_a]));
        let tb = s.spawn(|| run_ok("nbdcopy", &[path_str(&fs), &uri_s]));
        ta.join().expect("client a");
        tb.join().expect("client b");
    });
    let (ba, bs) = (fx.dir.join("a.back"), fx.dir.join("s.back"));
    run_ok("nbdcopy", &[&uri_a, path_str(&ba)]);
    run_ok("nbdcopy", &[&uri_s, path_str(&bs)]);
    assert!(
        std::fs::read(&ba).expect("a back") == a,
        "multi-connection copy differs"
    );
    assert!(
        std::fs::read(&bs).expect("small back") == small,
        "second client's copy differs"
    );
    // Two handles open at once: what one writes and flushes, the other reads.
    let script = format!(
        "h2 = nbd.NBD()\n\
         h2.connect_uri({uri_a:?})\n\
         assert h.can_multi_conn() and h2.can_multi_conn()\n\
         h.pwrite(b'\\x11' * 65536, 0, nbd.CMD_FLAG_FUA)\n\
         h.flush()\n\
         assert h2.pread(65536, 0) == b'\\x11' * 65536\n\
         h2.pwrite(b'\\x22' * 4096, 8192)\n\
         h2.flush()\n\
         assert h.pread(4096, 8192) == b'\\x22' * 4096\n\
         h2.shutdown()\n\
         print('ok')\n"
    );
    let out = run_ok("nbdsh", &["-u", &uri_a, "-c", &script]);
    assert_eq!(out.trim(), "ok");
}

#[test]
fn fio_nbd_engine_random_writes_verify() {
    let fx = Fixture::new("fio");
    let uri = format!("--uri={}", fx.uri("disk"));
    let out = run_ok(
        "fio",
        &[
            "--name=verify",
            "--ioengine=nbd",
            &uri,
            "--rw=randwrite",
            "--bs=4k",
            "--size=4M",
            "--iodepth=16",
            "--numjobs=1",
            "--verify=crc32c",
            "--do_verify=1",
            "--verify_fatal=1",
            // No verify-state file in the working directory (the crate's, in the tree).
            "--verify_state_save=0",
            "--output-format=terse",
        ],
    );
    assert!(!out.contains("verify: bad"), "fio verify failed: {out}");
}
