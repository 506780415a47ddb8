//! Exports: volumes served over NBD or NFS, recorded, and served again at start.

use std::sync::Arc;

use vessel_api::{ExportCreate, ExportUpdate, StorageExport, VolumeContent};

use super::driver::BlockAccess;
use super::record::{ExportRecord, VolumeRecord};
use super::{servers, StorageService};
use crate::error::{chain, Error, Result};

impl StorageService {
    /// Every export with its state.
    pub fn exports_list(&self) -> Result<Vec<StorageExport>> {
        Ok(self
            .inner
            .exports
            .list()?
            .into_iter()
            .map(|r| self.export_view(r))
            .collect())
    }

    pub(super) fn export_view(&self, r: ExportRecord) -> StorageExport {
        let mut e = r.export;
        e.clients = r.client_certs.len();
        match self.inner.servers.error(&e.name) {
            None => e.status = "serving".into(),
            Some(err) => {
                e.status = "failed".into();
                e.error = Some(err);
            }
        }
        e
    }

    /// Serves an export; why it cannot (its pool unavailable too) is what `export list`
    /// shows for it.
    pub(super) fn serve_export(&self, rec: &ExportRecord) -> Result<()> {
        let r = self.try_serve(rec);
        if let Err(err) = &r {
            self.inner
                .servers
                .set_error(&rec.export.name, err.message.clone());
        }
        r
    }

    fn try_serve(&self, rec: &ExportRecord) -> Result<()> {
        let e = &rec.export;
        let d = self.driver(&e.pool)?;
        match e.protocol {
            vessel_api::ExportProtocol::Nbd => {
                let dev: Arc<dyn vessel_nbd::BlockDevice> = match d.block(&e.volume)? {
                    BlockAccess::Device(dev) => dev,
                    BlockAccess::Rbd(_) => {
                        return Err(Error::invalid(format!(
                            "volume {:?} is an RBD image in Ceph, which serves it itself (any \
                             librbd client, rbd-nbd); Vessel's NBD exports serve dir, btrfs \
                             and raid volumes",
                            e.volume
                        )))
                    }
                    BlockAccess::File(path) => Arc::new(
                        vessel_nbd::FileDevice::open(&path, e.read_only).map_err(|err| {
                            Error::internal(format!("opening {}: {}", path.display(), chain(&err)))
                        })?,
                    ),
                };
                let networks = client_nets(&e.allow)?;
                self.inner
                    .servers
                    .add_nbd(e, dev, &rec.client_certs, networks, |addr| {
                        self.nbd_ca()?.server_config(addr)
                    })
            }
            vessel_api::ExportProtocol::Nfs => {
                let root = d.fs_path(&e.volume)?;
                let generation = rec
                    .generation
                    .unwrap_or_else(|| servers::export_generation(e));
                let clients = client_nets(&e.allow)?;
                self.inner
                    .servers
                    .add_nfs_generation(e, root, generation, clients)
            }
        }
    }

    /// Exports a volume.
    pub fn export_create(&self, req: ExportCreate) -> Result<StorageExport> {
        let _g = self.busy();
        crate::name::validate_qualified("export", &req.name)?;
        if self.inner.exports.contains(&req.name)? {
            return Err(Error::conflict(format!(
                "export {:?} already exists",
                req.name
            )));
        }
        let v = self.volume_record(&req.pool, &req.volume)?;
        check_export(&req, &v)?;
        let listen = servers::normalize_listen(req.protocol, req.listen.as_deref())?;
        let tls = export_tls(&req, &listen)?;
        let allow = allowed_networks(&listen, &req.allow)?;
        // A listener serves the exports of one project: NBD and NFS clients are not told
        // apart, so sharing one would show each project the other's.
        let project = crate::project::split(&req.name).0;
        let shared = self.inner.exports.list()?.into_iter().any(|r| {
            servers::listens_overlap(&r.export.listen, &listen)
                && crate::project::split(&r.export.name).0 != project
        });
        if shared {
            return Err(Error::conflict(format!(
                "listen address {listen} is in use; choose another --listen"
            )));
        }
        let e = StorageExport {
            name: req.name.clone(),
            pool: req.pool.clone(),
            volume: req.volume.clone(),
            protocol: req.protocol,
            uri: servers::uri(req.protocol, &listen, &req.name, tls),
            listen,
            read_only: req.read_only,
            status: "serving".into(),
            error: None,
            tls,
            clients: 0,
            allow,
        };
        let rec = ExportRecord {
            export: e.clone(),
            generation: Some(rand_u32()),
            client_certs: Vec::new(),
        };
        self.serve_export(&rec)?;
        if let Err(err) = self.inner.exports.insert(&e.name, &rec) {
            self.inner.servers.remove(&e);
            return Err(err.into());
        }
        self.inner.events.lifecycle(
            "storage-export-created",
            &format!("/1.0/storage/exports/{}", e.name),
        );
        Ok(e)
    }

    /// Changes which client networks may use export `name`: applied to the running server
    /// (an NFS client left out loses access at its next request, an NBD client's connection
    /// is closed), then recorded; an export not served is recorded and served again.
    pub fn export_update(&self, name: &str, req: ExportUpdate) -> Result<StorageExport> {
        let _g = self.busy();
        let mut rec = self.inner.exports.get(name)?.ok_or_else(|| {
            Error::not_found(format!(
                "export {name:?} not found; see `vessel storage export list`"
            ))
        })?;
        match (req.allow.is_empty(), req.allow_all) {
            (true, false) => {
                return Err(Error::invalid(format!(
                    "no client networks given: to admit every client that reaches export \
                     {name:?}, say so (allow_all; vessel storage export set {name} --allow-all)"
                )))
            }
            (false, true) => {
                return Err(Error::invalid(
                    "give client networks (allow) or every client (allow_all), not both",
                ))
            }
            _ => {}
        }
        let before = rec.export.allow.clone();
        rec.export.allow = allowed_networks(&rec.export.listen, &req.allow)?;
        if self.inner.servers.error(name).is_some() {
            // Not served (its pool unavailable, say): recorded, and tried again with it.
            self.inner.exports.put(name, &rec)?;
            let _ = self.serve_export(&rec);
        } else {
            // Applied first, so that what is recorded is never looser than what is served
            // for long, and put back if it cannot be recorded.
            let nets = client_nets(&rec.export.allow)?;
            self.inner.servers.set_networks(&rec.export, nets)?;
            if let Err(err) = self.inner.exports.put(name, &rec) {
                let old = client_nets(&before)?;
                if let Err(e) = self.inner.servers.set_networks(&rec.export, old) {
                    tracing::error!(export = %name, error = %e, "the export's networks could not be put back");
                }
                return Err(err.into());
            }
        }
        self.inner.events.lifecycle(
            "storage-export-updated",
            &format!("/1.0/storage/exports/{name}"),
        );
        Ok(self.export_view(rec))
    }

    /// Stops serving an export.
    pub fn export_delete(&self, name: &str) -> Result<StorageExport> {
        let _g = self.busy();
        let e = self
            .inner
            .exports
            .get(name)?
            .map(|r| r.export)
            .ok_or_else(|| {
                Error::not_found(format!(
                    "export {name:?} not found; see `vessel storage export list`"
                ))
            })?;
        // The record first: if it cannot go, the export is served on as listed (the other
        // way round, a failure left a record that says "serving" for an export not served).
        self.inner.exports.delete(name)?;
        self.inner.servers.remove(&e);
        self.inner.events.lifecycle(
            "storage-export-deleted",
            &format!("/1.0/storage/exports/{name}"),
        );
        Ok(e)
    }
}

/// Checks that volume `v` can be exported as `req` asks: NBD serves block volumes, NFS
/// filesystem volumes, and a block volume a VM writes is exported read-only.
pub(super) fn check_export(req: &ExportCreate, v: &VolumeRecord) -> Result<()> {
    if v.container_root {
        // Its files carry the container's host ids, and a written image would be a file
        // system the kernel mounts unchecked.
        return Err(Error::invalid(format!(
            "volume {:?} is the root disk of container {:?}; export a volume of its own \
             instead (vessel storage volume create, then attach it to the container)",
            req.volume,
            v.root_of.as_deref().unwrap_or("?")
        )));
    }
    match (req.protocol, v.content) {
        (vessel_api::ExportProtocol::Nbd, VolumeContent::Filesystem) => {
            return Err(Error::invalid(
                "NBD exports block volumes; export a filesystem volume over NFS",
            ))
        }
        (vessel_api::ExportProtocol::Nfs, VolumeContent::Block) => {
            return Err(Error::invalid(
                "NFS exports filesystem volumes; export a block volume over NBD",
            ))
        }
        _ => {}
    }
    if v.content == VolumeContent::Block && !req.read_only && !v.attached_to.is_empty() {
        return Err(Error::conflict(format!(
            "block volume {:?} is attached to {:?}; export it read-only or detach it",
            req.volume, v.attached_to[0].instance
        )));
    }
    Ok(())
}

/// Whether an export is served with TLS: NBD over TCP is unless asked not to; a unix
/// socket (its file mode decides who connects) and NFS are not.
fn export_tls(req: &ExportCreate, listen: &str) -> Result<bool> {
    let tcp = !listen.starts_with('/');
    match (req.protocol, req.tls) {
        (vessel_api::ExportProtocol::Nbd, None) => Ok(tcp),
        (vessel_api::ExportProtocol::Nbd, Some(true)) if !tcp => Err(Error::invalid(
            "TLS is for NBD over TCP; a unix socket admits whom its file mode lets in (leave \
             out --tls, or listen on HOST:PORT)",
        )),
        (vessel_api::ExportProtocol::Nbd, Some(tls)) => Ok(tls),
        (vessel_api::ExportProtocol::Nfs, Some(true)) => Err(Error::invalid(
            "NFS exports are served without TLS; use NBD for a block volume over TLS",
        )),
        (vessel_api::ExportProtocol::Nfs, _) => Ok(false),
    }
}

/// The most client networks one export names.
const MAX_ALLOW: usize = 64;

/// The client networks an export listening on `listen` admits, as given (addresses or
/// ADDRESS/PREFIX), checked and written the one way (`10.1.2.3/8` is `10.0.0.0/8`).
fn allowed_networks(listen: &str, allow: &[String]) -> Result<Vec<String>> {
    if allow.is_empty() {
        return Ok(Vec::new());
    }
    if listen.starts_with('/') {
        return Err(Error::invalid(
            "--allow is for exports on TCP: a unix socket admits whom its file mode lets in",
        ));
    }
    if allow.len() > MAX_ALLOW {
        return Err(Error::invalid(format!(
            "an export admits at most {MAX_ALLOW} client networks; give wider ones (e.g. \
             10.0.0.0/16)"
        )));
    }
    let mut out: Vec<String> = Vec::new();
    for a in allow {
        let net = vessel_nfs::parse_client_net(a)
            .map_err(Error::invalid)?
            .to_string();
        if !out.contains(&net) {
            out.push(net);
        }
    }
    Ok(out)
}

/// The networks of an export's record, for its server.
fn client_nets(allow: &[String]) -> Result<Vec<ipnet::IpNet>> {
    allow
        .iter()
        .map(|a| {
            vessel_nfs::parse_client_net(a)
                .map_err(|e| Error::internal(format!("the export's record: {e}")))
        })
        .collect()
}

/// A random 32-bit number (a new export's NFS handle generation).
fn rand_u32() -> u32 {
    let b = uuid::Uuid::new_v4().into_bytes();
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

#[cfg(test)]
mod tests {
    use vessel_api::ExportProtocol;

    use super::super::record::fixture::volume;
    use super::*;

    fn req(protocol: ExportProtocol, read_only: bool) -> ExportCreate {
        ExportCreate {
            name: "e".into(),
            pool: "p".into(),
            volume: "v".into(),
            protocol,
            listen: None,
            read_only,
            tls: None,
            allow: Vec::new(),
        }
    }

    #[test]
    fn client_networks_are_for_tcp_checked_and_written_one_way() {
        let given = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            allowed_networks(
                "127.0.0.1:2049",
                &given(&["10.1.2.3/8", "192.0.2.7", "10.0.0.0/8", "fd00::1/64"])
            )
            .unwrap(),
            given(&["10.0.0.0/8", "192.0.2.7/32", "fd00::/64"])
        );
        assert!(allowed_networks("/run/x.sock", &[]).unwrap().is_empty());
        let e = allowed_networks("/run/x.sock", &given(&["10.0.0.0/8"])).unwrap_err();
        assert!(e.message.contains("its file mode"), "{e}");
        let e = allowed_networks("[::]:10809", &given(&["10.0.0.0/33"])).unwrap_err();
        assert!(e.message.contains("not a client network"), "{e}");
        let many: Vec<String> = (0..65).map(|i| format!("10.0.{i}.0/24")).collect();
        let e = allowed_networks("0.0.0.0:2049", &many).unwrap_err();
        assert!(e.message.contains("at most 64"), "{e}");
        assert_eq!(
            client_nets(&given(&["10.0.0.0/8"])).unwrap(),
            vec![vessel_nfs::parse_client_net("10.0.0.0/8").unwrap()]
        );
    }

    #[test]
    fn nbd_serves_disks_nfs_directories_and_a_vm_disk_read_only() {
        let fs = volume("p", "v", VolumeContent::Filesystem, &[("c1", "/data")]);
        let disk = volume("p", "v", VolumeContent::Block, &[]);
        let used = volume("p", "v", VolumeContent::Block, &[("v1", "")]);
        check_export(&req(ExportProtocol::Nfs, false), &fs).unwrap();
        check_export(&req(ExportProtocol::Nbd, false), &disk).unwrap();
        check_export(&req(ExportProtocol::Nbd, true), &used).unwrap();
        for (r, v, want) in [
            (
                req(ExportProtocol::Nbd, false),
                &fs,
                "NBD exports block volumes",
            ),
            (
                req(ExportProtocol::Nfs, false),
                &disk,
                "NFS exports filesystem volumes",
            ),
            (
                req(ExportProtocol::Nbd, false),
                &used,
                "export it read-only",
            ),
        ] {
            let e = check_export(&r, v).unwrap_err();
            assert!(e.message.contains(want), "{want:?} not in {e}");
        }
    }
}
