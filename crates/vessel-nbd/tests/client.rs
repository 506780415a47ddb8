//! The crate's own client against our server and against qemu-nbd: the handshake, reads and
//! writes in batches (replies matched by cookie), flush, refusals (unknown export, read-only,
//! past the end), and a server that goes away (the connection fails, and stays failed).

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{random_bytes, Fixture, TempDir, DISK_SIZE};
use vessel_nbd::{ClientOp, NbdClient};

const T: Duration = Duration::from_secs(10);

#[test]
fn reads_writes_and_flushes_against_our_server() {
    let f = Fixture::new("client");
    let c = NbdClient::connect_unix(&f.socket(), "disk", T).expect("connect");
    assert_eq!(c.size(), DISK_SIZE);
    assert!(!c.read_only());
    let data = random_bytes(3 << 20, 7);
    c.write_at(4096, &data).expect("write");
    // Several requests in flight at once, answered in any order, matched by cookie.
    let (mut a, mut b) = (vec![0u8; 1 << 20], vec![0u8; 2 << 20]);
    let r = c.batch(&mut [
        ClientOp::Read(4096, &mut a),
        ClientOp::Write(6 << 20, &data[..65536]),
        ClientOp::Read(4096 + (1 << 20), &mut b),
        ClientOp::Flush,
    ]);
    assert!(r.iter().all(|r| r.is_ok()), "{r:?}");
    assert_eq!(a, data[..1 << 20]);
    assert_eq!(b, data[1 << 20..3 << 20]);
    // What it wrote is in the file behind the export.
    let file = std::fs::read(f.dir.join("disk.img")).expect("file");
    assert_eq!(&file[4096..4096 + data.len()], &data[..]);
    assert_eq!(&file[6 << 20..(6 << 20) + 65536], &data[..65536]);

    // Past the end: refused before it is sent; the connection stays usable.
    let mut buf = vec![0u8; 8192];
    let e = c
        .read_at(DISK_SIZE - 4096, &mut buf)
        .expect_err("past the end");
    assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput);
    c.read_at(0, &mut buf).expect("read after a refusal");

    let e = NbdClient::connect_unix(&f.socket(), "nope", T).expect_err("unknown export");
    assert_eq!(e.kind(), std::io::ErrorKind::NotFound, "{e}");
    let ro = NbdClient::connect_unix(&f.socket(), "ro", T).expect("ro");
    assert!(ro.read_only());
    let e = ro.write_at(0, &[1u8; 512]).expect_err("read-only");
    assert_eq!(e.kind(), std::io::ErrorKind::PermissionDenied);
    let mut first = [0u8; 512];
    ro.read_at(0, &mut first).expect("ro read");
    assert!(first.iter().all(|b| *b == 0x5a));
}

#[test]
fn a_server_that_goes_away_fails_the_connection_for_good() {
    let f = Fixture::new("client-gone");
    let c = NbdClient::connect_unix(&f.socket(), "disk", T).expect("connect");
    c.write_at(0, &[9u8; 4096]).expect("write");
    let Fixture { unix, server, dir } = f;
    unix.shutdown();
    drop(server);
    let t = Instant::now();
    let e = c.write_at(0, &[1u8; 4096]).expect_err("server gone");
    assert!(t.elapsed() < T, "took {:?}", t.elapsed());
    assert!(c.is_broken(), "{e}");
    let e = c.read_at(0, &mut [0u8; 4096]).expect_err("still gone");
    assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe);
    drop(dir);
}

/// qemu-nbd on a socket in `dir` serving `image` as `disk`, killed on drop.
struct QemuNbd(std::process::Child);

impl Drop for QemuNbd {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn speaks_to_qemu_nbd() {
    let dir = TempDir::new("client-qemu");
    let image = dir.join("q.img");
    std::fs::File::create(&image)
        .and_then(|f| f.set_len(4 << 20))
        .expect("image");
    let sock = dir.join("q.sock");
    let child = Command::new("qemu-nbd")
        .args([
            "--format=raw",
            "--persistent",
            "--export-name=disk",
            "--socket",
        ])
        .arg(&sock)
        .arg(&image)
        .stdout(Stdio::null())
        .spawn()
        .expect("qemu-nbd (Debian package qemu-utils) must be installed");
    let _q = QemuNbd(child);
    let until = Instant::now() + Duration::from_secs(10);
    let c = loop {
        match NbdClient::connect_unix(&sock, "disk", T) {
            Ok(c) => break c,
            Err(e) if Instant::now() < until => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => panic!("qemu-nbd did not answer: {e}"),
        }
    };
    assert_eq!(c.size(), 4 << 20);
    let data = random_bytes(1 << 20, 3);
    c.write_at(65536, &data).expect("write");
    c.flush().expect("flush");
    let mut back = vec![0u8; 1 << 20];
    c.read_at(65536, &mut back).expect("read");
    assert_eq!(back, data);
    drop(c);
    let file = std::fs::read(&image).expect("image");
    assert_eq!(&file[65536..65536 + data.len()], &data[..]);
}
