//! Credentials of TLS exports' clients: issued one client at a time (a certificate of the
//! daemon's NBD authority, known to the export by its fingerprint), revoked all at once.

use std::sync::Arc;

use vessel_api::{ExportCredentials, StorageExport};

use super::nbd_tls::NbdCa;
use super::record::ExportRecord;
use super::StorageService;
use crate::error::{Error, Result};

/// The most client credentials one export keeps (each is a fingerprint in its record).
const MAX_CLIENTS: usize = 64;

impl StorageService {
    /// The daemon's NBD authority (`<root>/storage/nbd-tls`), made on first use.
    pub(super) fn nbd_ca(&self) -> Result<Arc<NbdCa>> {
        self.inner.servers.ca(&self.inner.root.join("nbd-tls"))
    }

    /// The record of TLS export `name`.
    fn tls_export(&self, name: &str) -> Result<ExportRecord> {
        let rec = self.inner.exports.get(name)?.ok_or_else(|| {
            Error::not_found(format!(
                "export {name:?} not found; see `vessel storage export list`"
            ))
        })?;
        if !rec.export.tls {
            return Err(Error::invalid(format!(
                "export {name:?} is served without TLS: its clients need no credentials (to \
                 require them, delete it and create it again without --no-tls, on TCP)"
            )));
        }
        Ok(rec)
    }

    /// Issues credentials for one more client of TLS export `name` (up to
    /// [`MAX_CLIENTS`]).
    pub fn export_credentials_create(&self, name: &str) -> Result<ExportCredentials> {
        let _g = self.busy();
        let mut rec = self.tls_export(name)?;
        if rec.client_certs.len() >= MAX_CLIENTS {
            return Err(Error::conflict(format!(
                "export {name:?} has credentials for {MAX_CLIENTS} clients, the most it keeps; \
                 revoke them (vessel storage export credentials {name} --revoke) and issue \
                 new ones to the clients that need them"
            )));
        }
        let ca = self.nbd_ca()?;
        let client = ca.issue_client(name)?;
        rec.client_certs.push(client.fingerprint.clone());
        // Recorded before it is handed out: a credential the export does not know of is
        // never shown.
        self.inner.exports.put(name, &rec)?;
        self.inner.servers.set_clients(name, &rec.client_certs);
        self.inner.events.lifecycle(
            "storage-export-credentials-issued",
            &format!("/1.0/storage/exports/{name}"),
        );
        Ok(ExportCredentials {
            export: rec.export.name.clone(),
            uri: rec.export.uri.clone(),
            ca_cert: ca.cert_pem().to_string(),
            client_cert: client.cert_pem,
            client_key: client.key_pem,
            fingerprint: client.fingerprint,
        })
    }

    /// Revokes every client credential of TLS export `name`: new connections need new
    /// credentials, and the open sessions of its clients are closed.
    pub fn export_credentials_revoke(&self, name: &str) -> Result<StorageExport> {
        let _g = self.busy();
        let mut rec = self.tls_export(name)?;
        rec.client_certs.clear();
        self.inner.exports.put(name, &rec)?;
        self.inner.servers.set_clients(name, &rec.client_certs);
        self.inner.events.lifecycle(
            "storage-export-credentials-revoked",
            &format!("/1.0/storage/exports/{name}"),
        );
        Ok(self.export_view(rec))
    }
}
