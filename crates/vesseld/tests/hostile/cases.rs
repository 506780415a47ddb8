//! Every hostile kind of the corpus, with its expected outcome: what the unpacker already
//! refused, and what this issue found.

use std::path::Path;

use crate::corpus::{
    gzip, gzip_members, header, pad, pax_records, sha, xattr_names, Case, Entry, Expect, Image,
    Layer, Tar, TAR_GZ,
};

fn refused(both: &[&str]) -> Expect {
    Expect::Refused {
        import: both.iter().map(|s| s.to_string()).collect(),
        pull: both.iter().map(|s| s.to_string()).collect(),
    }
}

fn one(layer: Layer) -> Image {
    Image::of(vec![layer])
}

/// Every hostile kind. `canary` is a directory outside the daemon that entries aim at.
pub fn cases(canary: &Path) -> Vec<Case> {
    let c = canary.display().to_string();
    let climb = "../".repeat(16);
    let up_canary = format!("{climb}{}/x", c.trim_start_matches('/'));
    let up_etc = format!("{climb}etc/vessel-hostile");
    let q = |s: &str| format!("{s:?}");
    vec![
        // --- what the unpacker already refused ---
        Case {
            name: "dotdot-to-canary",
            image: one(Layer::plain(
                Tar::new()
                    .add(Entry::file("ok", b"1"))
                    .add(Entry::file(&up_canary, b"evil"))
                    .finish(),
            )),
            docker: false,
            expect: refused(&[&q(&up_canary), "climbs out of the layer root"]),
        },
        Case {
            name: "dotdot-to-etc",
            image: one(Layer::gz(
                &Tar::new().add(Entry::file(&up_etc, b"evil")).finish(),
            )),
            docker: true,
            expect: refused(&[&q(&up_etc), "climbs out of the layer root"]),
        },
        Case {
            name: "nested-dotdot",
            image: one(Layer::plain(
                Tar::new().add(Entry::file("a/../../x", b"evil")).finish(),
            )),
            docker: false,
            expect: refused(&[&q("a/../../x"), "climbs out"]),
        },
        Case {
            name: "symlink-to-canary-then-write",
            image: one(Layer::gz(
                &Tar::new()
                    .add(Entry::symlink("a", &c))
                    .add(Entry::file("a/x", b"evil"))
                    .finish(),
            )),
            docker: false,
            expect: refused(&[&q("a/x"), "written through a symlink"]),
        },
        Case {
            name: "symlink-chain-climbing",
            image: one(Layer::plain(
                Tar::new()
                    .add(Entry::symlink("c", &climb))
                    .add(Entry::symlink("b", "c"))
                    .add(Entry::symlink("a", "b"))
                    .add(Entry::file("a/etc/vessel-hostile", b"evil"))
                    .finish(),
            )),
            docker: false,
            expect: refused(&[&q("a/etc/vessel-hostile"), "written through a symlink"]),
        },
        Case {
            name: "whiteout-through-symlink",
            image: one(Layer::plain(
                Tar::new()
                    .add(Entry::symlink("a", &c))
                    .add(Entry::file("a/.wh.x", b""))
                    .finish(),
            )),
            docker: false,
            expect: refused(&[&q("a/.wh.x"), "written through a symlink"]),
        },
        Case {
            name: "hardlink-to-host-file",
            image: one(Layer::plain(
                Tar::new()
                    .add(Entry::hardlink("pw", "/etc/passwd"))
                    .finish(),
            )),
            docker: false,
            expect: refused(&[&q("pw"), "not an earlier file of this layer"]),
        },
        Case {
            name: "hardlink-climbing-out",
            image: one(Layer::plain(
                Tar::new().add(Entry::hardlink("o", &up_canary)).finish(),
            )),
            docker: false,
            expect: refused(&[&q("o"), "points outside the layer root"]),
        },
        Case {
            name: "nul-in-pax-path",
            image: one(Layer::plain(
                Tar::new()
                    .add(Entry::file("x", b"evil").pax("path", b"ok\0../../etc/x"))
                    .finish(),
            )),
            docker: false,
            expect: refused(&["NUL byte"]),
        },
        Case {
            name: "ten-terabyte-header",
            image: one(Layer::plain(
                Tar::new()
                    .add(Entry {
                        size: Some(10 << 40),
                        ..Entry::file("big", b"")
                    })
                    .0,
            )),
            docker: false,
            expect: refused(&[&q("big"), "claims 10995116277760 bytes"]),
        },
        Case {
            name: "truncated-layer",
            image: one(Layer::plain({
                let t = Tar::new()
                    .add(Entry::file("a", &[7u8; 3000]))
                    .add(Entry::file("b", b"tail"))
                    .finish();
                t[..2000].to_vec()
            })),
            docker: false,
            expect: refused(&["\"a\"", "truncated"]),
        },
        Case {
            name: "corrupt-gzip",
            image: one({
                let t = Tar::new().add(Entry::file("a", &[7u8; 3000])).finish();
                let mut l = Layer::gz(&t);
                let n = l.blob.len();
                l.blob[n - 6] ^= 0xff; // the CRC
                l
            }),
            docker: false,
            expect: Expect::Refused {
                import: vec!["decompress".into()],
                pull: vec!["not a readable tar stream|compression is corrupt".into()],
            },
        },
        Case {
            name: "sparse-entry",
            image: one(Layer::plain(
                Tar::new()
                    .add(Entry {
                        kind: b'S',
                        ..Entry::file("holes", b"")
                    })
                    .finish(),
            )),
            docker: false,
            expect: refused(&[&q("holes"), "tar type 'S'"]),
        },
        Case {
            name: "root-entry-not-a-directory",
            image: one(Layer::plain(
                Tar::new().add(Entry::file("./", b"")).finish(),
            )),
            docker: false,
            expect: refused(&["the layer root can only be a directory"]),
        },
        Case {
            name: "owner-beyond-32-bits",
            image: one(Layer::plain(
                Tar::new()
                    .add(Entry {
                        uid: 1 << 40,
                        ..Entry::file("own", b"1")
                    })
                    .finish(),
            )),
            docker: false,
            expect: refused(&[&q("own"), "does not fit in 32 bits"]),
        },
        Case {
            name: "empty-whiteout",
            image: one(Layer::plain(
                Tar::new().add(Entry::file("d/.wh.", b"")).finish(),
            )),
            docker: false,
            expect: refused(&[&q("d/.wh."), "names no file"]),
        },
        Case {
            name: "device-nodes-skipped",
            image: one(Layer::plain(
                Tar::new()
                    .add(Entry {
                        kind: b'4',
                        mode: 0o666,
                        major: 8,
                        minor: 0,
                        ..Entry::file("dev/sda", b"")
                    })
                    .add(Entry {
                        kind: b'3',
                        mode: 0o666,
                        major: 1,
                        minor: 1,
                        ..Entry::file("dev/mem", b"")
                    })
                    .add(Entry::file("kept", b"1"))
                    .finish(),
            )),
            docker: false,
            expect: Expect::Accepted(|layer| {
                assert!(layer.join("kept").is_file());
                assert!(
                    std::fs::symlink_metadata(layer.join("dev/sda")).is_err(),
                    "a block device was stored"
                );
                assert!(
                    std::fs::symlink_metadata(layer.join("dev/mem")).is_err(),
                    "/dev/mem was stored"
                );
            }),
        },
        Case {
            name: "dangerous-xattrs-skipped",
            image: one(Layer::plain(
                Tar::new()
                    .add(
                        Entry::dir("d/", 0o755)
                            .pax("SCHILY.xattr.trusted.overlay.opaque", b"y")
                            .pax("SCHILY.xattr.trusted.overlay.redirect", b"/etc"),
                    )
                    .add(
                        Entry::file("d/f", b"1")
                            .pax(
                                "SCHILY.xattr.security.selinux",
                                b"system_u:object_r:shadow_t:s0",
                            )
                            .pax("SCHILY.xattr.user.fine", b"ok"),
                    )
                    .finish(),
            )),
            docker: false,
            expect: Expect::Accepted(|layer| {
                let d = xattr_names(&layer.join("d"));
                assert!(
                    !d.iter().any(|n| n.starts_with("trusted.overlay")),
                    "overlay xattrs stored: {d:?}"
                );
                let f = xattr_names(&layer.join("d/f"));
                assert!(
                    !f.iter().any(|n| n == "security.selinux"),
                    "selinux label stored: {f:?}"
                );
                assert!(
                    f.iter().any(|n| n == "user.fine"),
                    "user xattr dropped: {f:?}"
                );
            }),
        },
        // --- what this issue found ---
        Case {
            name: "layer-root-mode-and-owner",
            image: one(Layer::plain(
                Tar::new()
                    .add(Entry {
                        uid: 1000,
                        gid: 1000,
                        ..Entry::dir("./", 0o777)
                    })
                    .add(Entry::file("./f", b"1"))
                    .finish(),
            )),
            docker: false,
            expect: Expect::Accepted(|layer| {
                use std::os::unix::fs::MetadataExt;
                let md = std::fs::metadata(layer).expect("layer dir");
                assert_eq!(
                    md.mode() & 0o7777,
                    0o755,
                    "the archive's mode reached the store"
                );
                assert_eq!(
                    (md.uid(), md.gid()),
                    (0, 0),
                    "the archive's owner reached the store"
                );
            }),
        },
        Case {
            name: "pax-headers-before-one-entry",
            image: one({
                // 2,000 PAX headers of about 1 MB each before one entry, as gzip members.
                let rec = pax_records(&[(b"comment".to_vec(), vec![b'a'; 1_000_000])]);
                let mut member = header(
                    b"././@PaxHeader",
                    b'x',
                    0o644,
                    0,
                    0,
                    rec.len() as u64,
                    b"",
                    (0, 0),
                )
                .to_vec();
                member.extend_from_slice(&rec);
                pad(&mut member);
                let tail = Tar::new().add(Entry::file("after", b"1")).finish();
                Layer {
                    blob: gzip_members(&member, 2000, &tail),
                    media: TAR_GZ,
                    diff_id: sha(b"not computed: refused before"),
                }
            }),
            docker: false,
            expect: Expect::Refused {
                // The import computes the diff_id first (bounded by the ratio); the pull
                // meets the tar parser's cap per entry first.
                import: vec!["decompression bomb".into()],
                pull: vec!["extension records".into(), "for one entry".into()],
            },
        },
        Case {
            name: "gzip-bomb",
            image: one({
                // 1 GiB of zeros in about 1 MB: members of 1 MiB of zeros.
                let mut first = header(b"zeros", b'0', 0o644, 0, 0, 1 << 30, b"", (0, 0)).to_vec();
                first.extend(vec![0u8; (1 << 20) - 512]);
                let zeros = vec![0u8; 1 << 20];
                let mut blob = gzip(&first);
                blob.extend(gzip_members(&zeros, 1022, &[0u8; 512 + 1024]));
                Layer {
                    blob,
                    media: TAR_GZ,
                    diff_id: sha(b"not computed: refused before"),
                }
            }),
            docker: false,
            expect: Expect::Refused {
                import: vec!["decompression bomb".into()],
                pull: vec!["\"zeros\"".into(), "decompression bomb".into()],
            },
        },
        Case {
            name: "name-over-255-bytes",
            image: one(Layer::plain(
                Tar::new().add(Entry::file(&"n".repeat(300), b"1")).finish(),
            )),
            docker: false,
            expect: refused(&["path component of 300 bytes"]),
        },
        Case {
            name: "path-over-4095-bytes",
            image: one(Layer::plain(
                Tar::new()
                    .add(Entry::file(&"d/".repeat(2100), b"1"))
                    .finish(),
            )),
            docker: false,
            expect: refused(&[
                "path of 4200 bytes",
                "no process in the container could open it",
            ]),
        },
        Case {
            name: "windows-arm64-docker-archive",
            image: Image {
                os: "windows",
                arch: "arm64",
                ..one(Layer::plain(
                    Tar::new().add(Entry::file("f", b"1")).finish(),
                ))
            },
            docker: true,
            expect: refused(&["linux/amd64", "windows/arm64"]),
        },
        Case {
            name: "twenty-thousand-layers",
            image: Image {
                repeat: 20_000,
                ..one(Layer::plain(
                    Tar::new().add(Entry::file("f", b"1")).finish(),
                ))
            },
            docker: true,
            expect: refused(&["20000 layers", "can stack"]),
        },
    ]
}
