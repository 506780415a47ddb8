//! The resolver a container gets, as Docker and Incus give one: a `resolv.conf` the daemon
//! writes at each start (the DNS server at the gateway of the instance's first routed NIC,
//! `search <network's domain>`) and bind-mounts on `/etc/resolv.conf` with the volumes.
//!
//! It is left out, and the container keeps the file it has, when there is no network to ask
//! or the file is there on purpose: a volume mounted on `/etc` or `/etc/resolv.conf`, or a
//! regular file with a `nameserver` line, in the instance's own writable layer (put there
//! with `vessel file push`) or in its image, that is not the host's own `/etc/resolv.conf`.
//! That last rule tells an image's deliberate resolver from the copy `debootstrap` (and any
//! builder copying the build host's file) leaves in the images it makes, which names a
//! resolver the container may not reach. Empty files (OCI images built by Docker carry one),
//! comment-only files and symbolic links (to systemd-resolved's stub, say) get the daemon's.

use std::io::Read;
use std::net::Ipv4Addr;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use vessel_api::Instance;

use super::InstanceService;
use crate::error::{Error, Result};
use crate::storage::VolumeMount;

/// Largest resolv.conf read (from an image or the host).
const MAX_READ: u64 = 64 << 10;

/// What `/etc/resolv.conf` is in the instance's stack of layers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum LayerFile {
    /// No layer has it (or the topmost that mentions it deleted it).
    Missing,
    /// A regular file, with its text.
    Regular(String),
    /// A symbolic link, a directory or anything else.
    Other,
}

impl InstanceService {
    /// The bind mount of the daemon's resolv.conf for container `inst` (written now into its
    /// directory), or `None` when it keeps its own. `lowers` are its image's layers, top
    /// first; `volumes` its volume mounts.
    pub(super) async fn resolv_mount(
        &self,
        inst: &Instance,
        lowers: &[PathBuf],
        volumes: &[VolumeMount],
    ) -> Result<Option<VolumeMount>> {
        let (nets, name) = (self.networks.clone(), inst.name.clone());
        let dir = self.driver.dir(&inst.name);
        let owner = self.driver.shift(inst).unwrap_or(0);
        let mut layers = vec![dir.join("upper")];
        layers.extend(lowers.iter().cloned());
        let covered = volumes.iter().any(|v| {
            matches!(
                v.destination.trim_end_matches('/'),
                "/etc" | "/etc/resolv.conf"
            )
        });
        tokio::task::spawn_blocking(move || {
            let dns = nets.instance_dns(&name)?;
            let Some((server, domain)) = dns else {
                return Ok(None);
            };
            let in_layers = layer_file(&layers, "etc/resolv.conf");
            let host = read_bounded(Path::new("/etc/resolv.conf"));
            if covered || keeps_own(&in_layers, host.as_deref()) {
                tracing::info!(instance = %name, "keeping the instance's own resolv.conf");
                return Ok(None);
            }
            let path = dir.join("resolv.conf");
            write_owned(&path, &render(server, &domain), owner)?;
            Ok(Some(VolumeMount {
                source: path,
                destination: "/etc/resolv.conf".into(),
                // Stored with the instance's own host ids: its idmapped bind maps them to
                // themselves, so the container's root owns it.
                id_base: owner,
            }))
        })
        .await
        .map_err(|e| Error::internal(format!("resolver task: {e}")))?
    }
}

/// The daemon's resolv.conf for a network whose gateway is `server` and domain `domain`.
pub(super) fn render(server: Ipv4Addr, domain: &str) -> String {
    format!(
        "# Written by Vessel at each start: the DNS server of this instance's network (its\n\
         # gateway) and its domain. To keep your own, put it into the instance (vessel file\n\
         # push) or mount a volume on /etc/resolv.conf, and restart the instance.\n\
         nameserver {server}\nsearch {domain}\n"
    )
}

/// Whether the instance keeps the resolv.conf its layers give it: a regular file with a
/// `nameserver` line that is not the host's own (`host`).
pub(super) fn keeps_own(file: &LayerFile, host: Option<&str>) -> bool {
    let LayerFile::Regular(text) = file else {
        return false;
    };
    let names_a_server = text
        .lines()
        .any(|l| l.split_whitespace().next() == Some("nameserver"));
    let is_host_copy = host.is_some_and(|h| h.trim() == text.trim());
    names_a_server && !is_host_copy
}

/// `rel` as the stacked `layers` (top first) show it, each read inside its own tree: from
/// the topmost layer that has it; an overlay whiteout there hides the lower ones.
pub(super) fn layer_file(layers: &[PathBuf], rel: &str) -> LayerFile {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    for layer in layers {
        let Ok(root) = std::fs::File::open(layer).map(OwnedFd::from) else {
            continue;
        };
        let fd = match super::files::open_in_root(
            &root,
            Path::new(rel),
            libc::O_PATH | libc::O_NOFOLLOW,
            0,
        ) {
            Ok(fd) => fd,
            Err(_) => continue,
        };
        let Ok(md) = std::fs::File::from(fd).metadata() else {
            return LayerFile::Other;
        };
        if md.file_type().is_char_device() && md.rdev() == 0 {
            return LayerFile::Missing;
        }
        if !md.is_file() {
            return LayerFile::Other;
        }
        return match super::users::read_db_file(&root, rel) {
            Ok(Some(text)) if text.len() as u64 <= MAX_READ => LayerFile::Regular(text),
            _ => LayerFile::Other,
        };
    }
    LayerFile::Missing
}

/// A host file's text, at most [`MAX_READ`] bytes; `None` if it cannot be read.
fn read_bounded(path: &Path) -> Option<String> {
    let mut text = String::new();
    std::fs::File::open(path)
        .ok()?
        .take(MAX_READ)
        .read_to_string(&mut text)
        .ok()?;
    Some(text)
}

/// Writes `text` to `path` (replaced whole), owned by `owner` (the container's root).
fn write_owned(path: &Path, text: &str, owner: u32) -> Result<()> {
    let io =
        |e: std::io::Error| Error::internal(format!("writing the instance's resolv.conf: {e}"));
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).map_err(io)?;
    std::os::unix::fs::chown(&tmp, Some(owner), Some(owner)).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_names_the_gateway_and_the_domain() {
        let text = render("10.42.0.1".parse().unwrap(), "default.vessel");
        assert!(text.contains("\nnameserver 10.42.0.1\nsearch default.vessel\n"));
        assert!(text
            .lines()
            .all(|l| l.starts_with('#') || l.starts_with("nameserver") || l.starts_with("search")));
    }

    #[test]
    fn only_a_deliberate_resolver_is_kept() {
        let own = LayerFile::Regular("nameserver 192.0.2.53\nsearch example.test\n".into());
        let host = "# host\nnameserver 127.0.0.53\n";
        assert!(keeps_own(&own, Some(host)));
        assert!(keeps_own(&own, None));
        // The host's own file, as debootstrap copies it.
        assert!(!keeps_own(
            &LayerFile::Regular(format!("{host}\n")),
            Some(host)
        ));
        // Empty (OCI images), comments only, missing, a link.
        assert!(!keeps_own(&LayerFile::Regular(String::new()), Some(host)));
        assert!(!keeps_own(
            &LayerFile::Regular("# nameserver 1.1.1.1\n".into()),
            Some(host)
        ));
        assert!(!keeps_own(&LayerFile::Missing, Some(host)));
        assert!(!keeps_own(&LayerFile::Other, Some(host)));
    }

    #[test]
    fn layers_are_read_top_first_with_whiteouts() {
        let base = std::env::temp_dir().join(format!("vessel-resolv-{}", std::process::id()));
        let (top, mid, low) = (base.join("top"), base.join("mid"), base.join("low"));
        for d in [&top, &mid, &low] {
            std::fs::create_dir_all(d.join("etc")).unwrap();
        }
        std::fs::write(low.join("etc/resolv.conf"), "nameserver 192.0.2.1\n").unwrap();
        let layers = vec![top.clone(), mid.clone(), low.clone()];
        assert_eq!(
            layer_file(&layers, "etc/resolv.conf"),
            LayerFile::Regular("nameserver 192.0.2.1\n".into())
        );
        std::os::unix::fs::symlink("../run/stub.conf", mid.join("etc/resolv.conf")).unwrap();
        assert_eq!(layer_file(&layers, "etc/resolv.conf"), LayerFile::Other);
        // A whiteout (char device 0:0) needs root to make; the tests run as root.
        let wh = top.join("etc/resolv.conf");
        let c = std::ffi::CString::new(wh.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: mknod reads a valid NUL-terminated path and plain integers.
        if unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR | 0o600, 0) } == 0 {
            assert_eq!(layer_file(&layers, "etc/resolv.conf"), LayerFile::Missing);
        }
        assert_eq!(layer_file(&layers, "etc/none"), LayerFile::Missing);
        std::fs::remove_dir_all(&base).unwrap();
    }
}
