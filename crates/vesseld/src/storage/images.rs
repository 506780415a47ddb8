//! Disk images written into block volumes: imports, and the root volumes of VMs created
//! from their image's disk.

use std::path::Path;

use vessel_api::{VolumeAttachment, VolumeContent, VolumeCreate};

use super::driver::{self, BlockAccess};
use super::record::VolumeRecord;
use super::StorageService;
use crate::error::{chain, Error, Result};
use crate::operations::OpHandle;

impl StorageService {
    /// Writes a disk image (raw or qcow2) into a block volume with `qemu-img convert`
    /// (blocking; inside an operation). The image is resized to the volume's size first.
    pub fn volume_import(&self, pool: &str, name: &str, image: &Path, op: &OpHandle) -> Result<()> {
        let v = self.volume_record(pool, name)?;
        if v.content != VolumeContent::Block {
            return Err(Error::invalid(format!(
                "volume {name:?} is a filesystem volume; images go into block volumes"
            )));
        }
        if !v.attached_to.is_empty() || !self.running_users(&v)?.is_empty() {
            return Err(Error::conflict(format!(
                "volume {name:?} is attached; detach it before importing into it"
            )));
        }
        // The format is read from the header, never probed by qemu-img (which takes a raw
        // upload that looks like a VMDK descriptor for one, and follows it to host files);
        // a qcow2 naming an external data file (any host path) is refused before it opens.
        let format = if is_qcow2(image)? { "qcow2" } else { "raw" };
        if format == "qcow2" {
            vessel_vm::refuse_external_data(image)
                .map_err(|e| Error::invalid(format!("the upload: {}", chain(&e))))?;
        }
        let info = driver::run(
            "qemu-img",
            &[
                "info",
                "--output=json",
                "-f",
                format,
                driver::path_str(image)?,
            ],
        )?;
        let format = check_image(&info, &v)?;
        op.progress(Some(5), "writing the image");
        self.write_image(&v, image, &format, op)?;
        self.inner.events.lifecycle(
            "storage-volume-imported",
            &format!("/1.0/storage/pools/{pool}/volumes/{name}"),
        );
        Ok(())
    }

    /// Converts `image` into the volume: straight into the file, or through a private NBD
    /// socket for volumes inside the daemon.
    fn write_image(
        &self,
        v: &VolumeRecord,
        image: &Path,
        format: &str,
        op: &OpHandle,
    ) -> Result<()> {
        let d = self.driver(&v.pool)?;
        let src = driver::path_str(image)?.to_string();
        match d.block(&v.name)? {
            BlockAccess::File(path) => convert(&src, format, &[driver::path_str(&path)?], op),
            // The image exists (made at its size): written in place through librbd.
            BlockAccess::Rbd(image) => convert(&src, format, &["-n", &image.qemu_uri()], op),
            BlockAccess::Device(dev) => {
                let sock = self
                    .inner
                    .run
                    .join(format!("import-{}-{}.sock", v.pool, v.name));
                let _ = std::fs::remove_file(&sock);
                let server =
                    vessel_nbd::NbdServer::new([vessel_nbd::NbdExport::new(v.name.clone(), dev)])
                        .map_err(|e| Error::internal(format!("NBD server: {}", chain(&e))))?;
                std::fs::create_dir_all(&self.inner.run)
                    .map_err(|e| Error::internal(format!("creating run dir: {e}")))?;
                let handle = server
                    .serve_unix(&sock)
                    .map_err(|e| Error::internal(format!("NBD socket: {}", chain(&e))))?;
                let uri = format!("nbd+unix:///{}?socket={}", v.name, sock.display());
                let r = convert(&src, format, &["--target-is-zero", "-n", &uri], op);
                handle.shutdown();
                r
            }
        }
    }

    /// Checks that a VM can get a root volume in `pool`.
    pub fn root_check(&self, pool: &str, instance: &str) -> Result<()> {
        let rec = self.pool_record(pool)?;
        self.driver(pool)?;
        let name = super::root_volume(instance);
        crate::name::validate_qualified("volume", &name)?;
        if self.volume_record(&rec.name, &name).is_ok() {
            return Err(Error::conflict(format!(
                "pool {pool:?} already has a volume {name:?}"
            )));
        }
        Ok(())
    }

    /// Creates a VM's root volume in `pool` from the image's disk or the VM's disk (blocking;
    /// inside the creating operation) and attaches it. `(image_disk, format)`: the disk and
    /// its format as recorded (`raw` or `qcow2`), never probed; a qcow2 naming an external
    /// data file is refused.
    pub fn create_root_volume(
        &self,
        pool: &str,
        instance: &str,
        (image_disk, format): (&Path, &str),
        op: &OpHandle,
    ) -> Result<()> {
        if format == "qcow2" {
            vessel_vm::refuse_external_data(image_disk)
                .map_err(|e| Error::invalid(format!("the disk: {}", chain(&e))))?;
        }
        let info = driver::run(
            "qemu-img",
            &[
                "info",
                "--output=json",
                "-f",
                format,
                driver::path_str(image_disk)?,
            ],
        )?;
        let info: serde_json::Value = serde_json::from_str(&info)
            .map_err(|e| Error::internal(format!("qemu-img info: {e}")))?;
        let size = info["virtual-size"].as_u64().unwrap_or(0);
        let name = super::root_volume(instance);
        let v = {
            let _g = self.busy();
            self.root_check(pool, instance)?;
            self.volume_create_locked(
                pool,
                VolumeCreate {
                    name: name.clone(),
                    content: VolumeContent::Block,
                    size: Some(size.max(1 << 20)),
                    source: None,
                    config: Default::default(),
                },
                Some(instance.to_string()),
            )?;
            self.volume_record(pool, &name)?
        };
        op.progress(Some(20), "writing the root disk into the pool");
        let written = self.write_image(&v, image_disk, format, op);
        let attached = written.and_then(|_| {
            let _g = self.busy();
            let mut v = self.volume_record(pool, &name)?;
            v.attached_to.push(VolumeAttachment {
                instance: instance.into(),
                path: String::new(),
            });
            self.put_volume(&v)
        });
        if let Err(e) = attached {
            let _ = self.volume_delete(pool, &name);
            return Err(e);
        }
        Ok(())
    }
}

/// Whether the file at `path` starts with qcow2's magic.
fn is_qcow2(path: &Path) -> Result<bool> {
    use std::io::Read;
    let mut magic = [0u8; 4];
    let mut f = std::fs::File::open(path)
        .map_err(|e| Error::internal(format!("{}: {e}", path.display())))?;
    Ok(f.read_exact(&mut magic).is_ok() && &magic == b"QFI\xfb")
}

/// `qemu-img convert` with progress reported to the operation.
fn convert(src: &str, format: &str, target: &[&str], op: &OpHandle) -> Result<()> {
    use std::io::Read;
    let mut args = vec!["convert", "-p", "-f", format, "-O", "raw", src];
    args.extend_from_slice(target);
    let mut child = std::process::Command::new("qemu-img")
        .args(&args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| Error::internal(format!("cannot run qemu-img: {e}; install qemu-utils")))?;
    let mut stdout = child.stdout.take();
    let mut buf = [0u8; 256];
    let mut text = String::new();
    while let Some(out) = stdout.as_mut() {
        match out.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                text.push_str(&String::from_utf8_lossy(&buf[..n]));
                // Lines look like "    (42.17/100%)\r".
                if let Some(p) = text.rsplit('(').next().and_then(|t| t.split('/').next()) {
                    if let Ok(p) = p.trim().parse::<f64>() {
                        op.progress(Some(5 + (p * 0.9) as u8), "writing the image");
                    }
                }
                if text.len() > 4096 {
                    text.drain(..2048);
                }
            }
        }
    }
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    let status = child
        .wait()
        .map_err(|e| Error::internal(format!("qemu-img: {e}")))?;
    if !status.success() {
        return Err(Error::internal(format!(
            "qemu-img convert failed: {}",
            err.trim()
        )));
    }
    Ok(())
}

/// The format of the disk image `qemu-img info --output=json` described as `info`, checked
/// for import into block volume `v`: raw or qcow2, without a backing file, no larger than
/// the volume.
pub(super) fn check_image(info: &str, v: &VolumeRecord) -> Result<String> {
    let name = &v.name;
    let info: serde_json::Value =
        serde_json::from_str(info).map_err(|e| Error::invalid(format!("qemu-img info: {e}")))?;
    let format = info["format"].as_str().unwrap_or("raw").to_string();
    if !matches!(format.as_str(), "raw" | "qcow2") {
        return Err(Error::invalid(format!(
            "the upload is a {format} image; give a raw or qcow2 disk image"
        )));
    }
    if info.get("backing-filename").is_some() {
        return Err(Error::invalid(
            "the image has a backing file; flatten it first (qemu-img convert)",
        ));
    }
    let virtual_size = info["virtual-size"].as_u64().unwrap_or(0);
    if virtual_size > v.size {
        return Err(Error::invalid(format!(
            "the image is {virtual_size} bytes but volume {name:?} is {} bytes; resize the \
             volume first",
            v.size
        )));
    }
    Ok(format)
}

#[cfg(test)]
mod tests {
    use super::super::record::fixture::volume;
    use super::*;

    #[test]
    fn images_are_raw_or_qcow2_flat_and_fit_the_volume() {
        let v = volume("p", "disk", VolumeContent::Block, &[]);
        let info = |format: &str, size: u64, backing: bool| {
            let mut j = serde_json::json!({ "format": format, "virtual-size": size });
            if backing {
                j["backing-filename"] = "base.qcow2".into();
            }
            j.to_string()
        };
        assert_eq!(
            check_image(&info("qcow2", 1 << 20, false), &v).unwrap(),
            "qcow2"
        );
        assert_eq!(check_image(&info("raw", 4096, false), &v).unwrap(), "raw");
        for (text, want) in [
            (info("vmdk", 4096, false), "a vmdk image"),
            (info("qcow2", 4096, true), "backing file"),
            (info("raw", (1 << 20) + 1, false), "resize the volume first"),
            ("not json".to_string(), "qemu-img info"),
        ] {
            let e = check_image(&text, &v).unwrap_err();
            assert!(e.message.contains(want), "{want:?} not in {e}");
        }
    }
}
