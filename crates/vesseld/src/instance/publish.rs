//! `publish`: turns a stopped instance into a new image, its writable layer becoming a new
//! layer on top of its image's layers.

use sha2::{Digest, Sha256};
use vessel_api::{Image, InstancePublish, InstanceStatus, Operation};

use super::driver::IDMAP_SIZE;
use super::InstanceService;
use crate::error::{Error, Result};
use crate::image::{short, tree, validate_alias};

/// Fingerprint of an image made of layers: over its layers and run configuration, so the same
/// layers with another command are another image.
pub fn stacked_fingerprint(image: &Image) -> String {
    let canonical = serde_json::json!({
        "layers": image.layers,
        "command": image.command,
        "environment": image.environment,
        "working_dir": image.working_dir,
        "user": image.user,
        "exposed_ports": image.exposed_ports,
        "stop_signal": image.stop_signal,
    });
    hex::encode(Sha256::digest(canonical.to_string().as_bytes()))
}

impl InstanceService {
    /// Starts the operation that publishes a stopped instance as a new image of the project
    /// `images` works in.
    pub fn publish(
        &self,
        name: &str,
        req: InstancePublish,
        images: crate::image::ImageService,
    ) -> Result<Operation> {
        validate_alias(&req.alias)?;
        let inst = self.get_stored(name)?;
        if inst.instance_type == vessel_api::InstanceType::Vm {
            return Err(Error::invalid(format!(
                "{name} is a VM; publishing works for containers (export the VM's image instead)"
            )));
        }
        if inst.status != InstanceStatus::Stopped {
            return Err(Error::conflict(format!(
                "instance {name} is {}; stop it first (a running instance's files change under us)",
                inst.status.as_str()
            )));
        }
        let base = self.images.by_fingerprint(&inst.image)?;
        if base.layers.is_empty() {
            return Err(Error::conflict(format!(
                "image {} was stored before images had layers; rebuild it to publish from it",
                short(&base.fingerprint)
            )));
        }
        let alias = req.alias;
        Ok(self.spawn_locked(
            format!("Publishing instance {name} as {alias}"),
            name,
            move |svc, inst, op| async move {
                if inst.status != InstanceStatus::Stopped {
                    return Err(Error::conflict(format!(
                        "instance {} started meanwhile; stop it first",
                        inst.name
                    )));
                }
                op.progress(Some(10), "copying the instance's changes");
                let shift = svc.driver.shift(&inst).unwrap_or(0);
                let staging = svc.images.staging()?;
                let layer = staging.join("layer");
                let (s, i, l) = (svc.clone(), inst.clone(), layer.clone());
                let copied = tokio::task::spawn_blocking(move || -> Result<(String, u64)> {
                    // Its root disk, if it has one, is mounted while the layer is read.
                    let (upper, _disk) = s.open_writable(&i)?;
                    let copy = || -> std::io::Result<(String, u64)> {
                        // Owners go back from host ids to the container's own; ids outside the
                        // container's range (none should be) become nobody.
                        let map = |id| {
                            Ok(if (shift..shift + IDMAP_SIZE).contains(&id) {
                                id - shift
                            } else if shift == 0 {
                                id
                            } else {
                                65_534
                            })
                        };
                        let keep = vessel_image::SpaceLimits::default();
                        tree::copy_mapped(&upper, &l, &map, &keep)?;
                        tree::fingerprint(&l)
                    };
                    copy().map_err(|e| {
                        let m = format!("copying {}: {e}", upper.display());
                        if e.kind() == std::io::ErrorKind::StorageFull {
                            Error::invalid(m)
                        } else {
                            Error::internal(m)
                        }
                    })
                })
                .await
                .map_err(|e| Error::internal(format!("publish task: {e}")));
                let result = async {
                    let (layer_id, size) = copied??;
                    op.progress(Some(80), "storing the new layer");
                    svc.images.place_layer(&layer, &layer_id)?;
                    let mut image = Image {
                        fingerprint: String::new(),
                        aliases: vec![alias.clone()],
                        source: format!("publish {}", inst.name),
                        kind: base.kind,
                        size_bytes: base.size_bytes + size,
                        layers: base.layers.iter().cloned().chain([layer_id]).collect(),
                        command: inst.command.clone(),
                        environment: base.environment.clone(),
                        working_dir: base.working_dir.clone(),
                        user: base.user.clone(),
                        exposed_ports: base.exposed_ports.clone(),
                        stop_signal: base.stop_signal.clone(),
                        created_at: crate::clock::now(),
                        locations: Vec::new(),
                    };
                    image.fingerprint = stacked_fingerprint(&image);
                    let image = images.register(image, &alias)?;
                    op.add_resource(images.path(Some(&image.fingerprint)));
                    Ok(())
                }
                .await;
                let _ = std::fs::remove_dir_all(&staging);
                result
            },
        ))
    }
}
