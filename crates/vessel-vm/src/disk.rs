//! Disk images through `qemu-img`: validation and copy-on-write overlays.
//!
//! Every VM disk is a small qcow2 overlay over a shared, read-only image, so ten VMs from one
//! image cost ten overlays. Images are checked with `qemu-img info --output=json
//! --backing-chain` before use: an unreadable, truncated or corrupt image, a format that is
//! not the one claimed, or a missing backing file is refused with `qemu-img`'s own words.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::Deserialize;

use crate::error::{Result, VmError};
use crate::host::QEMU_IMG;
use crate::machine::DiskFormat;

/// What `qemu-img info` says about an image (the top of its backing chain).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageInfo {
    /// Detected format (`qcow2`, `raw`, ...).
    pub format: String,
    /// Size the guest sees, bytes.
    pub virtual_size: u64,
    /// Space used on the host, bytes.
    pub actual_size: Option<u64>,
    /// The backing file, for overlays.
    pub backing_file: Option<String>,
    /// The backing file's format.
    pub backing_format: Option<String>,
    /// Number of images in the chain (1 for an image without backing file).
    pub chain_length: usize,
}

#[derive(Deserialize)]
struct RawInfo {
    format: String,
    #[serde(rename = "virtual-size")]
    virtual_size: u64,
    #[serde(rename = "actual-size", default)]
    actual_size: Option<u64>,
    #[serde(rename = "backing-filename", default)]
    backing_filename: Option<String>,
    #[serde(rename = "backing-filename-format", default)]
    backing_format: Option<String>,
    #[serde(rename = "format-specific", default)]
    format_specific: Option<FormatSpecific>,
}

#[derive(Deserialize)]
struct FormatSpecific {
    #[serde(default)]
    data: serde_json::Value,
}

/// Inspects an image and its whole backing chain. `expect`: the format the caller will give
/// QEMU; a different detected format is an error (a raw file is never read as qcow2 and vice
/// versa).
pub fn image_info(path: &Path, expect: Option<DiskFormat>) -> Result<ImageInfo> {
    crate::host::check_readable("disk image", path)?;
    let qemu_img = QEMU_IMG.find()?;
    let mut cmd = Command::new(&qemu_img);
    cmd.args(["info", "--output=json", "--backing-chain", "-U"]);
    if let Some(f) = expect {
        cmd.args(["-f", f.as_str()]);
    }
    let out = cmd
        .arg(path)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| VmError::Command {
            command: "qemu-img info".into(),
            message: e.to_string(),
        })?;
    let bad = |reason: String| VmError::BadImage {
        path: path.into(),
        reason,
    };
    if !out.status.success() {
        return Err(bad(qemu_img_message(&out.stderr)));
    }
    let chain: Vec<RawInfo> = serde_json::from_slice(&out.stdout)
        .map_err(|e| bad(format!("unreadable qemu-img info output: {e}")))?;
    let Some(top) = chain.first() else {
        return Err(bad("qemu-img info returned no image".into()));
    };
    for (i, img) in chain.iter().enumerate() {
        let corrupt = img
            .format_specific
            .as_ref()
            .and_then(|f| f.data.get("corrupt"))
            .and_then(|v| v.as_bool())
            .unwrap_or(false);
        if corrupt {
            return Err(bad(if i == 0 {
                "the qcow2 image is marked corrupt: repair it with qemu-img check -r all".into()
            } else {
                format!("its backing file (level {i}) is marked corrupt")
            }));
        }
    }
    if let Some(f) = expect {
        if top.format != f.as_str() {
            return Err(bad(format!(
                "it is {} but was given as {}",
                top.format,
                f.as_str()
            )));
        }
    }
    if top.format == "qcow2" {
        // info only reads the header; check walks the metadata, which catches truncation and
        // broken tables of the (small) top image.
        check_qcow2(&qemu_img, path)?;
    }
    Ok(ImageInfo {
        format: top.format.clone(),
        virtual_size: top.virtual_size,
        actual_size: top.actual_size,
        backing_file: top.backing_filename.clone(),
        backing_format: top.backing_format.clone(),
        chain_length: chain.len(),
    })
}

fn check_qcow2(qemu_img: &Path, path: &Path) -> Result<()> {
    let out = Command::new(qemu_img)
        .args(["check", "-U", "-f", "qcow2", "--output=json"])
        .arg(path)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| VmError::Command {
            command: "qemu-img check".into(),
            message: e.to_string(),
        })?;
    // Exit 0: clean; 3: leaked clusters only (harmless). 1/2: cannot check or corrupted.
    match out.status.code() {
        Some(0) | Some(3) => Ok(()),
        _ => {
            let mut reason = qemu_img_message(&out.stderr);
            if reason.is_empty() {
                reason = "qemu-img check found errors in the image".into();
            }
            Err(VmError::BadImage {
                path: path.into(),
                reason,
            })
        }
    }
}

/// Creates a qcow2 overlay at `path` over `backing` (`qemu-img create -f qcow2 -b BACKING -F
/// FMT`), `backing` read as `format` and checked first: never probed, since a raw disk's
/// bytes may look like another format's header naming any file. `path` must not exist; on
/// any failure nothing is left there. The backing path is stored as given (make it absolute).
pub fn create_overlay(backing: &Path, format: DiskFormat, path: &Path) -> Result<ImageInfo> {
    if path.exists() {
        return Err(VmError::BadFile {
            what: "overlay",
            path: path.into(),
            reason: "it exists already: remove it or choose another path".into(),
        });
    }
    // Checked (readable, not corrupt) as the format it is told.
    image_info(backing, Some(format))?;
    let qemu_img = QEMU_IMG.find()?;
    let out = Command::new(&qemu_img)
        .args(["create", "-q", "-f", "qcow2", "-b"])
        .arg(backing)
        .args(["-F", format.as_str()])
        .arg(path)
        .stdin(Stdio::null())
        .output();
    let failed = |message: String| {
        let _ = std::fs::remove_file(path);
        VmError::Command {
            command: "qemu-img create".into(),
            message,
        }
    };
    let out = out.map_err(|e| failed(e.to_string()))?;
    if !out.status.success() {
        return Err(failed(qemu_img_message(&out.stderr)));
    }
    image_info(path, Some(DiskFormat::Qcow2)).inspect_err(|_| {
        let _ = std::fs::remove_file(path);
    })
}

/// A qcow2 image's file and its header: the 72 bytes of version 2, the 104 of version 3.
struct Qcow2 {
    file: std::fs::File,
    header: [u8; 104],
    version: u32,
}

impl Qcow2 {
    /// Opens `path` and reads its header; an image that is no qcow2 is refused.
    fn open(path: &Path) -> Result<Qcow2> {
        use std::os::unix::fs::FileExt;
        let file = std::fs::File::open(path).map_err(VmError::io("open", path))?;
        let mut header = [0u8; 104];
        file.read_exact_at(&mut header[..72], 0)
            .map_err(|e| bad_image(path, format!("no qcow2 header: {e}")))?;
        if &header[..4] != b"QFI\xfb" {
            return Err(bad_image(path, "it is not a qcow2 image".into()));
        }
        let version = be32(&header[4..8]);
        if version >= 3 {
            file.read_exact_at(&mut header[72..], 72)
                .map_err(|e| bad_image(path, format!("a short qcow2 v3 header: {e}")))?;
        }
        Ok(Qcow2 {
            file,
            header,
            version,
        })
    }
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes(b.try_into().unwrap_or_default())
}

fn bad_image(path: &Path, reason: String) -> VmError {
    VmError::BadImage {
        path: path.into(),
        reason,
    }
}

/// Refuses a qcow2 image that names an external data file (its header's incompatible
/// feature bit 2): the file's name is a host path of whoever wrote the image, which any
/// `qemu-img` or QEMU that opens it as the daemon would read and write. For images brought
/// from elsewhere (a backup, an archive), before anything opens them. Reads the header
/// only; an image that is no qcow2 is refused too.
pub fn refuse_external_data(path: &Path) -> Result<()> {
    let q = Qcow2::open(path)?;
    // Version 2 has no feature bits, hence no external data file.
    let incompatible = u64::from_be_bytes(q.header[72..80].try_into().unwrap_or_default());
    if q.version >= 3 && incompatible & (1 << 2) != 0 {
        return Err(bad_image(
            path,
            "it names an external data file (a host path of its maker's choosing); refused".into(),
        ));
    }
    Ok(())
}

/// The backing file an overlay's qcow2 header names (as stored: QEMU resolves a relative name
/// from the overlay's directory), `None` for a qcow2 image without one. Reads the header
/// only (no `qemu-img`): cheap enough for every start.
pub fn backing_file(path: &Path) -> Result<Option<PathBuf>> {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::FileExt;
    let q = Qcow2::open(path)?;
    let offset = u64::from_be_bytes(q.header[8..16].try_into().unwrap_or_default());
    let size = be32(&q.header[16..20]);
    if offset == 0 || size == 0 {
        return Ok(None);
    }
    // QEMU stores at most 1023 bytes of backing file name.
    if size > 1023 {
        return Err(bad_image(
            path,
            format!("a backing file name of {size} bytes"),
        ));
    }
    let mut name = vec![0u8; size as usize];
    q.file
        .read_exact_at(&mut name, offset)
        .map_err(|e| bad_image(path, format!("its backing file name cannot be read: {e}")))?;
    Ok(Some(PathBuf::from(std::ffi::OsStr::from_bytes(&name))))
}

/// The format of its backing file a qcow2 overlay's header records (its backing format
/// extension), `None` when it records none. Reads the header only (no `qemu-img`).
pub fn backing_format(path: &Path) -> Result<Option<DiskFormat>> {
    use std::os::unix::fs::FileExt;
    let q = Qcow2::open(path)?;
    let bad = |reason: String| bad_image(path, reason);
    // Extensions follow the header: 72 bytes in version 2, `header_length` in version 3.
    let mut at = match q.version {
        2 => 72u64,
        _ => u64::from(be32(&q.header[100..104])),
    };
    // Extensions lie within the first cluster; a few dozen at most.
    for _ in 0..64 {
        let mut ext = [0u8; 8];
        q.file
            .read_exact_at(&mut ext, at)
            .map_err(|e| bad(format!("a header extension cannot be read: {e}")))?;
        let (kind, len) = (be32(&ext[..4]), be32(&ext[4..]));
        match kind {
            0 => return Ok(None),
            0xe279_2aca => {
                if len > 16 {
                    return Err(bad(format!("a backing format name of {len} bytes")));
                }
                let mut name = vec![0u8; len as usize];
                q.file
                    .read_exact_at(&mut name, at + 8)
                    .map_err(|e| bad(format!("its backing format cannot be read: {e}")))?;
                return match name.as_slice() {
                    b"raw" => Ok(Some(DiskFormat::Raw)),
                    b"qcow2" => Ok(Some(DiskFormat::Qcow2)),
                    other => Err(bad(format!(
                        "backing format {:?} is not supported: use qcow2 or raw",
                        String::from_utf8_lossy(other)
                    ))),
                };
            }
            _ => at += 8 + u64::from(len).div_ceil(8) * 8,
        }
    }
    Err(bad("more than 64 header extensions".into()))
}

/// Points an overlay at another path of its backing file (`qemu-img rebase -u`: only the
/// header changes, so `backing` must hold the same content, e.g. a hard link of the old
/// backing file), read as `format` and recorded with it (never probed).
pub fn rebase_overlay(path: &Path, backing: &Path, format: DiskFormat) -> Result<()> {
    let base = image_info(backing, Some(format))?;
    let qemu_img = QEMU_IMG.find()?;
    let out = Command::new(&qemu_img)
        .args(["rebase", "-u", "-f", "qcow2", "-b"])
        .arg(backing)
        .args(["-F", &base.format])
        .arg(path)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| VmError::Command {
            command: "qemu-img rebase".into(),
            message: e.to_string(),
        })?;
    if !out.status.success() {
        return Err(VmError::Command {
            command: "qemu-img rebase".into(),
            message: qemu_img_message(&out.stderr),
        });
    }
    Ok(())
}

/// Grows the qcow2 image at `path` to `size` bytes (`qemu-img resize`) when it is smaller;
/// returns whether it grew. Never shrinks.
pub fn grow_image(path: &Path, size: u64) -> Result<bool> {
    if size <= image_info(path, Some(DiskFormat::Qcow2))?.virtual_size {
        return Ok(false);
    }
    let qemu_img = QEMU_IMG.find()?;
    let out = Command::new(&qemu_img)
        .args(["resize", "-f", "qcow2"])
        .arg(path)
        .arg(size.to_string())
        .stdin(Stdio::null())
        .output()
        .map_err(|e| VmError::Command {
            command: "qemu-img resize".into(),
            message: e.to_string(),
        })?;
    if !out.status.success() {
        return Err(VmError::Command {
            command: "qemu-img resize".into(),
            message: qemu_img_message(&out.stderr),
        });
    }
    Ok(true)
}

/// `qemu-img`'s error without its program-name prefix.
fn qemu_img_message(stderr: &[u8]) -> String {
    String::from_utf8_lossy(stderr)
        .lines()
        .map(|l| l.trim_start_matches("qemu-img: ").trim())
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn qemu_img(args: &[&str]) {
        let st = Command::new("qemu-img")
            .args(args)
            .stdout(Stdio::null())
            .status()
            .expect("qemu-img (Debian package qemu-utils)");
        assert!(st.success(), "qemu-img {args:?}");
    }

    #[test]
    fn an_image_with_an_external_data_file_is_refused_by_its_header() {
        let dir = std::env::temp_dir().join(format!("vvm-datafile-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let (plain, with, data, old) = (
            dir.join("plain.qcow2"),
            dir.join("with.qcow2"),
            dir.join("data.raw"),
            dir.join("old.qcow2"),
        );
        qemu_img(&["create", "-f", "qcow2", plain.to_str().unwrap(), "1M"]);
        qemu_img(&[
            "create",
            "-f",
            "qcow2",
            "-o",
            &format!("data_file={}", data.display()),
            with.to_str().unwrap(),
            "1M",
        ]);
        qemu_img(&[
            "create",
            "-f",
            "qcow2",
            "-o",
            "compat=0.10",
            old.to_str().unwrap(),
            "1M",
        ]);
        refuse_external_data(&plain).expect("a plain image");
        refuse_external_data(&old).expect("a version 2 image");
        let err = refuse_external_data(&with).expect_err("an external data file");
        assert!(err.to_string().contains("external data file"), "{err}");
        std::fs::write(&data, b"not qcow2").unwrap();
        assert!(refuse_external_data(&data).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// The backing format an overlay records is read from its header (versions 2 and 3), and
    /// an overlay is made over a disk as the format it is told, whatever its bytes look like.
    #[test]
    fn backing_formats_are_recorded_and_read_not_probed() {
        let dir = std::env::temp_dir().join(format!("vvm-backfmt-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let p = |n: &str| dir.join(n);
        // A raw disk whose bytes are a qcow2 header naming a host file as its backing.
        qemu_img(&["create", "-f", "raw", p("host.raw").to_str().unwrap(), "1M"]);
        qemu_img(&[
            "create",
            "-f",
            "qcow2",
            "-b",
            p("host.raw").to_str().unwrap(),
            "-F",
            "raw",
            p("lure.raw").to_str().unwrap(),
            "1M",
        ]);
        assert_eq!(
            backing_format(&p("lure.raw")).unwrap(),
            Some(DiskFormat::Raw)
        );
        let info = create_overlay(&p("lure.raw"), DiskFormat::Raw, &p("over.qcow2")).unwrap();
        assert_eq!(info.backing_format.as_deref(), Some("raw"));
        assert_eq!(
            info.chain_length, 2,
            "the lure's own backing file was followed"
        );
        assert_eq!(
            backing_format(&p("over.qcow2")).unwrap(),
            Some(DiskFormat::Raw)
        );
        // Version 2 headers, and a qcow2 backing.
        qemu_img(&[
            "create",
            "-f",
            "qcow2",
            p("base.qcow2").to_str().unwrap(),
            "1M",
        ]);
        qemu_img(&[
            "create",
            "-f",
            "qcow2",
            "-o",
            "compat=0.10",
            "-b",
            p("base.qcow2").to_str().unwrap(),
            "-F",
            "qcow2",
            p("old.qcow2").to_str().unwrap(),
        ]);
        assert_eq!(
            backing_format(&p("old.qcow2")).unwrap(),
            Some(DiskFormat::Qcow2)
        );
        rebase_overlay(&p("old.qcow2"), &p("host.raw"), DiskFormat::Raw).unwrap();
        assert_eq!(
            backing_format(&p("old.qcow2")).unwrap(),
            Some(DiskFormat::Raw)
        );
        assert_eq!(backing_format(&p("base.qcow2")).unwrap(), None);
        assert!(backing_format(&p("host.raw")).is_err(), "not qcow2");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
