//! Builds bootable VM images through `vessel-vmimage`: Debian's cloud kernel (downloaded once
//! into `<root>/images/kernels`, never installed on the host) with a busybox initramfs, or an
//! ext4 root disk made from a busybox tree.

use vessel_api::{Image, VmLayout};
use vessel_vmimage::{DiskFormat, KernelSource, VmImageKind, VmImageSpec};

use super::{validate_alias, ImageService};
use crate::error::{chain, Error, Result};
use crate::operations::OpHandle;

/// Size of the root disk of a `disk` image.
const DISK_SIZE: u64 = 128 << 20;

impl ImageService {
    /// Builds a VM image as part of an operation.
    pub(super) async fn build_vm(
        &self,
        layout: VmLayout,
        alias: Option<String>,
        op: &OpHandle,
    ) -> Result<Image> {
        let (name, default_alias) = match layout {
            VmLayout::Initramfs => ("initramfs", "vm/busybox"),
            VmLayout::Disk => ("disk", "vm/busybox-disk"),
        };
        let alias = alias.unwrap_or_else(|| default_alias.into());
        validate_alias(&alias)?;
        let staging = self.staging()?;
        let result = async {
            op.progress(Some(10), "fetching the kernel and building the image");
            let cache = self.image_root().join("kernels");
            let out = staging.join("image");
            let tree = staging.join("rootfs");
            let agent = self.agent.clone();
            let (o, t) = (out.clone(), tree.clone());
            let built = tokio::task::spawn_blocking(move || {
                let kind = match layout {
                    VmLayout::Initramfs => VmImageKind::Initramfs,
                    VmLayout::Disk => {
                        vessel_vmimage::busybox_rootfs(&t, std::path::Path::new("/bin/busybox"))?;
                        VmImageKind::Disk {
                            rootfs_dir: t,
                            size: DISK_SIZE,
                            format: DiskFormat::Qcow2,
                        }
                    }
                };
                let mut spec =
                    VmImageSpec::new(KernelSource::DebianCloud { cache_dir: cache }, kind);
                spec.agent = agent;
                vessel_vmimage::build_vm_image(&spec, &o)
            })
            .await
            .map_err(|e| Error::internal(format!("VM image task: {e}")))?
            .map_err(|e| Error::invalid(format!("building the VM image: {}", chain(&e))))?;
            op.set_may_cancel(false);
            op.progress(Some(90), "storing");
            let fp = built.fingerprint.trim_start_matches("sha256:").to_string();
            let size = built.manifest.files.values().map(|f| f.size).sum();
            let dest = self.image_dir(&fp);
            if !dest.join(vessel_vmimage::MANIFEST_FILE).is_file() {
                let _ = std::fs::remove_dir_all(&dest);
                std::fs::rename(&out, &dest)
                    .map_err(|e| Error::internal(format!("storing the VM image: {e}")))?;
            }
            self.register_vm(
                fp,
                &alias,
                format!("vm/{name} (kernel {})", built.manifest.kernel_version),
                size,
                op,
            )
        }
        .await;
        let _ = std::fs::remove_dir_all(&staging);
        result
    }
}
