//! `storage pool|volume|export ...`.

use std::fs::File;

use anyhow::{anyhow, Context, Result};
use vessel_api::{
    ExportCreate, ExportCredentials, ExportProtocol, ExportUpdate, Operation, PoolCreate,
    PoolDriver, PoolRepair, PoolStatus, SnapshotCreate, StorageExport, StoragePool, StorageVolume,
    VolumeAttach, VolumeContent, VolumeCreate, VolumeRestore, VolumeUpdate,
};

use crate::cli_storage::{
    ContentArg, DriverArg, ExportCommand, PoolCommand, ProtocolArg, RepairAction, StorageCommand,
    VolumeCommand,
};
use crate::client::{Client, RequestBody};
use crate::encode::encode_segment;
use crate::limits::parse_size;
use crate::operation;
use crate::output::{format_bytes, print_document, println, Block, Format, Table};

/// `storage ...`.
pub fn run(client: &Client, cmd: StorageCommand) -> Result<i32> {
    match cmd {
        StorageCommand::Pool(c) => pool(client, c),
        StorageCommand::Volume(c) => volume(client, c),
        StorageCommand::Export(c) => export(client, c),
    }
}

fn size(s: &str) -> Result<u64> {
    parse_size(s).map_err(|e| anyhow!("size {s:?}: {e}"))
}

/// The API path of the pool `name`.
pub(crate) fn pool_path(name: &str) -> String {
    format!("/1.0/storage/pools/{}", encode_segment(name))
}

/// The API path of the volume `name` of `pool`.
pub(crate) fn volume_path(pool: &str, name: &str) -> String {
    format!("{}/volumes/{}", pool_path(pool), encode_segment(name))
}

fn pool(client: &Client, cmd: PoolCommand) -> Result<i32> {
    match cmd {
        PoolCommand::Create {
            name,
            driver,
            sources,
            size: sz,
            members,
            level,
            chunk_size,
            replica,
            adopt,
            description,
            config,
        } => {
            // A ceph pool's source is a RADOS pool's name, not a path.
            let ceph = matches!(driver, DriverArg::Ceph);
            let sources = sources
                .iter()
                .map(|p| {
                    if ceph {
                        return Ok(p.display().to_string());
                    }
                    std::path::absolute(p)
                        .map(|p| p.display().to_string())
                        .with_context(|| format!("resolving {}", p.display()))
                })
                .collect::<Result<Vec<_>>>()?;
            let body = PoolCreate {
                name: name.clone(),
                driver: match driver {
                    DriverArg::Dir => PoolDriver::Dir,
                    DriverArg::Btrfs => PoolDriver::Btrfs,
                    DriverArg::Raid => PoolDriver::Raid,
                    DriverArg::Ceph => PoolDriver::Ceph,
                },
                sources,
                size: sz.as_deref().map(size).transpose()?,
                members,
                level,
                chunk_size: chunk_size.as_deref().map(size).transpose()?,
                replica,
                adopt,
                description,
                config: super::config::key_values(&config)?,
            };
            println(format!("Creating storage pool {name}"))?;
            let op: Operation = client.send("POST", "/1.0/storage/pools", &body)?;
            operation::wait(client, op)?;
            let p: StoragePool = client.get(&pool_path(&name))?;
            println(format!(
                "Pool {name} ready: {} {}",
                p.driver.as_str(),
                format_bytes(p.size_bytes)
            ))?;
            Ok(0)
        }
        PoolCommand::List { format, .. } => {
            let pools: Vec<StoragePool> = client.get("/1.0/storage/pools")?;
            match format {
                Format::Table => {
                    let mut t = Table::new(&["NAME", "DRIVER", "LEVEL", "STATUS", "SIZE", "USED"]);
                    for p in &pools {
                        t.row(vec![
                            p.name.clone(),
                            p.driver.as_str().into(),
                            p.level.clone().unwrap_or_default(),
                            p.status.clone(),
                            format_bytes(p.size_bytes),
                            format_bytes(p.used_bytes),
                        ]);
                    }
                    t.print()?;
                }
                _ => print_document(format, &pools)?,
            }
            Ok(0)
        }
        PoolCommand::Info { name, format } => {
            let p: StoragePool = client.get(&pool_path(&name))?;
            match format {
                Format::Table => {
                    let mut b = Block::new();
                    b.field("Name", &p.name)
                        .field("Driver", p.driver.as_str())
                        .field("Level", p.level.as_deref().unwrap_or("-"))
                        .field("Status", &p.status)
                        .field("Size", format_bytes(p.size_bytes))
                        .field("Used", format_bytes(p.used_bytes))
                        .field("Sources", p.sources.join(", "))
                        .field("Created", &p.created_at);
                    if let Some(e) = &p.error {
                        b.field("Error", e);
                    }
                    b.print()?;
                }
                _ => print_document(format, &p)?,
            }
            Ok(0)
        }
        PoolCommand::Status { name, format } => {
            let s: PoolStatus = client.get(&format!("{}/status", pool_path(&name)))?;
            match format {
                Format::Table => {
                    let mut b = Block::new();
                    b.field("Pool", &s.name)
                        .field("Driver", s.driver.as_str())
                        .field("Status", &s.status);
                    if let Some(p) = s.rebuild_percent {
                        b.field("Rebuild", format!("{p}%"));
                    }
                    match &s.last_scrub {
                        Some(r) => b.field(
                            "Last scrub",
                            format!(
                                "{}: {} stripes, {} mismatched, {} repaired{}",
                                r.finished_at,
                                r.rows_checked,
                                r.mismatches,
                                r.repaired,
                                if r.bad_members.is_empty() {
                                    String::new()
                                } else {
                                    format!("; lying members {:?}", r.bad_members)
                                }
                            ),
                        ),
                        None => b.field("Last scrub", "none since the daemon started"),
                    };
                    b.print()?;
                    let mut t = Table::new(&["MEMBER", "PATH", "STATE", "CHECKSUM ERRORS"]);
                    for m in &s.members {
                        t.row(vec![
                            m.index.to_string(),
                            m.path.clone(),
                            m.state.clone(),
                            m.checksum_errors.to_string(),
                        ]);
                    }
                    if !s.members.is_empty() {
                        println("")?;
                        t.print()?;
                    }
                }
                _ => print_document(format, &s)?,
            }
            Ok(0)
        }
        PoolCommand::Repair {
            name,
            action,
            member,
            path,
            replica,
            rate,
            force,
        } => {
            let rate = rate.as_deref().map(size).transpose()?;
            let path = path
                .map(|p| std::path::absolute(&p).map(|p| p.display().to_string()))
                .transpose()?;
            let action = match action {
                RepairAction::Fail => "fail",
                RepairAction::Replace => "replace",
                RepairAction::Scrub => "scrub",
            };
            let op: Operation = client.send(
                "POST",
                &format!("{}/repair", pool_path(&name)),
                &PoolRepair {
                    action: action.into(),
                    member,
                    path,
                    replica,
                    rate,
                    force,
                },
            )?;
            operation::wait(client, op)?;
            let s: PoolStatus = client.get(&format!("{}/status", pool_path(&name)))?;
            match action {
                "scrub" => {
                    if let Some(r) = &s.last_scrub {
                        println(format!(
                            "Scrubbed {} stripes: {} mismatched, {} repaired",
                            r.rows_checked, r.mismatches, r.repaired
                        ))?;
                    }
                }
                "fail" => println(format!(
                    "Member {} of pool {name} is out; the pool is {}. Put a new one in with \
                     `vessel storage pool repair {name} replace --member {} --path PATH`.",
                    member.unwrap_or_default(),
                    s.status,
                    member.unwrap_or_default()
                ))?,
                _ => println(format!(
                    "Member {} of pool {name} rebuilt; the pool is {}.",
                    member.unwrap_or_default(),
                    s.status
                ))?,
            }
            let states: Vec<String> = s
                .members
                .iter()
                .map(|m| format!("{}:{}", m.index, m.state))
                .collect();
            if !states.is_empty() {
                println(format!("Members: {}", states.join(" ")))?;
            }
            Ok(0)
        }
        PoolCommand::Delete { name } => {
            let _: StoragePool = client.call("DELETE", &pool_path(&name))?;
            Ok(0)
        }
    }
}

fn volumes_table(vols: &[StorageVolume]) -> Table {
    let mut t = Table::new(&["NAME", "TYPE", "SIZE", "USED", "SNAPSHOTS", "USED BY"]);
    for v in vols {
        t.row(vec![
            v.name.clone(),
            match v.content {
                VolumeContent::Filesystem => "filesystem",
                VolumeContent::Block => "block",
            }
            .into(),
            if v.size_bytes == 0 {
                "-".into()
            } else {
                format_bytes(v.size_bytes)
            },
            format_bytes(v.used_bytes),
            v.snapshots.join(", "),
            v.attached_to
                .iter()
                .map(|a| {
                    if a.path.is_empty() {
                        a.instance.clone()
                    } else {
                        format!("{}:{}", a.instance, a.path)
                    }
                })
                .collect::<Vec<_>>()
                .join(", "),
        ]);
    }
    t
}

fn volume(client: &Client, cmd: VolumeCommand) -> Result<i32> {
    match cmd {
        VolumeCommand::Create {
            pool,
            name,
            content,
            size: sz,
            source,
            config,
        } => {
            let body = VolumeCreate {
                name: name.clone(),
                content: match content {
                    ContentArg::Filesystem => VolumeContent::Filesystem,
                    ContentArg::Block => VolumeContent::Block,
                },
                size: sz.as_deref().map(size).transpose()?,
                source,
                config: super::config::key_values(&config)?,
            };
            let op: Operation =
                client.send("POST", &format!("{}/volumes", pool_path(&pool)), &body)?;
            operation::wait(client, op)?;
            Ok(0)
        }
        VolumeCommand::List { pool, format } => {
            let vols: Vec<StorageVolume> = client.get(&format!("{}/volumes", pool_path(&pool)))?;
            match format {
                Format::Table => volumes_table(&vols).print()?,
                _ => print_document(format, &vols)?,
            }
            Ok(0)
        }
        VolumeCommand::Info { pool, name, format } => {
            let v: StorageVolume = client.get(&volume_path(&pool, &name))?;
            match format {
                Format::Table => volumes_table(std::slice::from_ref(&v)).print()?,
                _ => print_document(format, &v)?,
            }
            Ok(0)
        }
        VolumeCommand::Resize {
            pool,
            name,
            size: sz,
        } => {
            let _: StorageVolume = client.send(
                "PATCH",
                &volume_path(&pool, &name),
                &VolumeUpdate { size: size(&sz)? },
            )?;
            Ok(0)
        }
        VolumeCommand::Delete { pool, name } => {
            let _: StorageVolume = client.call("DELETE", &volume_path(&pool, &name))?;
            Ok(0)
        }
        VolumeCommand::Snapshot {
            pool,
            name,
            snapshot,
        } => {
            let _: StorageVolume = client.send(
                "POST",
                &format!("{}/snapshots", volume_path(&pool, &name)),
                &SnapshotCreate { name: snapshot },
            )?;
            Ok(0)
        }
        VolumeCommand::DeleteSnapshot {
            pool,
            name,
            snapshot,
        } => {
            let _: StorageVolume = client.call(
                "DELETE",
                &format!(
                    "{}/snapshots/{}",
                    volume_path(&pool, &name),
                    encode_segment(&snapshot)
                ),
            )?;
            Ok(0)
        }
        VolumeCommand::Restore {
            pool,
            name,
            snapshot,
        } => {
            let _: StorageVolume = client.send(
                "POST",
                &format!("{}/restore", volume_path(&pool, &name)),
                &VolumeRestore { snapshot },
            )?;
            Ok(0)
        }
        VolumeCommand::Attach {
            pool,
            name,
            instance,
            path,
        } => {
            let _: StorageVolume = client.send(
                "POST",
                &format!("{}/attach", volume_path(&pool, &name)),
                &VolumeAttach {
                    instance,
                    path: path.unwrap_or_default(),
                },
            )?;
            Ok(0)
        }
        VolumeCommand::Detach {
            pool,
            name,
            instance,
        } => {
            let _: StorageVolume = client.send(
                "POST",
                &format!("{}/detach", volume_path(&pool, &name)),
                &VolumeAttach {
                    instance,
                    path: String::new(),
                },
            )?;
            Ok(0)
        }
        VolumeCommand::Import { pool, name, file } => {
            let mut f =
                File::open(&file).with_context(|| format!("cannot open {}", file.display()))?;
            let len = f
                .metadata()
                .with_context(|| format!("cannot read {}", file.display()))?
                .len();
            println(format!("Importing {} into {pool}/{name}", file.display()))?;
            let op: Operation = client
                .request(
                    "POST",
                    &format!("{}/import", volume_path(&pool, &name)),
                    RequestBody::Stream(&mut f, len),
                )?
                .json()?;
            operation::wait(client, op)?;
            Ok(0)
        }
    }
}

fn export(client: &Client, cmd: ExportCommand) -> Result<i32> {
    match cmd {
        ExportCommand::Create {
            name,
            pool,
            volume,
            protocol,
            listen,
            read_only,
            no_tls,
            allow,
        } => {
            let e: StorageExport = client.send(
                "POST",
                "/1.0/storage/exports",
                &ExportCreate {
                    name,
                    pool,
                    volume,
                    protocol: match protocol {
                        ProtocolArg::Nbd => ExportProtocol::Nbd,
                        ProtocolArg::Nfs => ExportProtocol::Nfs,
                    },
                    listen,
                    read_only,
                    tls: no_tls.then_some(false),
                    allow,
                },
            )?;
            println(format!("Serving {}", e.uri))?;
            if !e.allow.is_empty() {
                println(format!("to clients in {}", e.allow.join(", ")))?;
            }
            if e.tls {
                println(format!(
                    "Clients need credentials: vessel storage export credentials {} --out DIR",
                    e.name
                ))?;
            }
            Ok(0)
        }
        ExportCommand::Credentials { name, out, revoke } => {
            let path = format!("/1.0/storage/exports/{}/credentials", encode_segment(&name));
            if revoke {
                let e: StorageExport = client.call("DELETE", &path)?;
                println(format!("Revoked every credential of {}", e.name))?;
                return Ok(0);
            }
            let dir = out.ok_or_else(|| anyhow!("give --out DIR"))?;
            let files = ["ca-cert.pem", "client-cert.pem", "client-key.pem"];
            if let Some(f) = files.iter().find(|f| dir.join(f).exists()) {
                return Err(anyhow!(
                    "{} holds credentials already ({f}); give another --out, or remove them",
                    dir.display()
                ));
            }
            // The directory first: a credential is issued only once there is a place for it.
            let made = !dir.is_dir();
            make_private_dir(&dir)?;
            let c: ExportCredentials = match client.call("POST", &path) {
                Ok(c) => c,
                Err(e) => {
                    if made {
                        let _ = std::fs::remove_dir(&dir);
                    }
                    return Err(e);
                }
            };
            write_credentials(&dir, &c).with_context(|| {
                format!(
                    "the credential {} was issued but could not be saved; it is valid until \
                     `vessel storage export credentials {name} --revoke`",
                    c.fingerprint
                )
            })?;
            let shown = dir.display();
            println(format!(
                "Wrote the credentials of a new client of {} to {shown} (fingerprint {})",
                c.export, c.fingerprint
            ))?;
            println(format!("  nbdinfo '{}?tls-certificates={shown}'", c.uri))?;
            // QEMU names the export as the server serves it (a project's export under its
            // qualified name: the URI's path).
            if let Some((host, port, export)) = c
                .uri
                .strip_prefix("nbds://")
                .and_then(|r| r.split_once('/'))
                .and_then(|(addr, export)| {
                    let (host, port) = addr.rsplit_once(':')?;
                    Some((host, port, export))
                })
            {
                let host = host.trim_start_matches('[').trim_end_matches(']');
                println(format!(
                    "  qemu-img info --object tls-creds-x509,id=tls0,dir={shown},endpoint=client \\\n      --image-opts driver=nbd,server.type=inet,server.host={host},server.port={port},export={export},tls-creds=tls0"
                ))?;
            }
            Ok(0)
        }
        ExportCommand::Set {
            name,
            allow,
            allow_all,
        } => {
            let e: StorageExport = client.send(
                "PATCH",
                &format!("/1.0/storage/exports/{}", encode_segment(&name)),
                &ExportUpdate {
                    allow: if allow_all { Vec::new() } else { allow },
                    allow_all,
                },
            )?;
            println(format!(
                "{} admits {}",
                e.name,
                match e.allow.is_empty() {
                    true => "every client".to_string(),
                    false => format!("clients in {}", e.allow.join(", ")),
                }
            ))?;
            Ok(0)
        }
        ExportCommand::List { format, .. } => {
            let exports: Vec<StorageExport> = client.get("/1.0/storage/exports")?;
            match format {
                Format::Table => {
                    let mut t = Table::new(&[
                        "NAME", "VOLUME", "PROTOCOL", "URI", "TLS", "ALLOW", "STATUS",
                    ]);
                    for e in &exports {
                        t.row(vec![
                            e.name.clone(),
                            format!("{}/{}", e.pool, e.volume),
                            match e.protocol {
                                ExportProtocol::Nbd => "nbd",
                                ExportProtocol::Nfs => "nfs",
                            }
                            .into(),
                            e.uri.clone(),
                            match (e.tls, e.clients) {
                                (false, _) => "no".into(),
                                (true, 1) => "1 client".into(),
                                (true, n) => format!("{n} clients"),
                            },
                            match (e.listen.starts_with('/'), e.allow.is_empty()) {
                                (true, _) => "-".into(),
                                (false, true) => "any".into(),
                                (false, false) => e.allow.join(","),
                            },
                            match &e.error {
                                Some(err) => format!("{}: {err}", e.status),
                                None => e.status.clone(),
                            },
                        ]);
                    }
                    t.print()?;
                }
                _ => print_document(format, &exports)?,
            }
            Ok(0)
        }
        ExportCommand::Delete { name } => {
            let _: StorageExport = client.call(
                "DELETE",
                &format!("/1.0/storage/exports/{}", encode_segment(&name)),
            )?;
            Ok(0)
        }
    }
}

/// Makes `dir` (private to the caller) if it is missing.
fn make_private_dir(dir: &std::path::Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if !dir.is_dir() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("creating {}", dir.display()))?;
    }
    Ok(())
}

/// Writes credentials as libnbd and QEMU read them: `DIR/ca-cert.pem`, `client-cert.pem`,
/// `client-key.pem`, the key private to the caller.
fn write_credentials(dir: &std::path::Path, c: &ExportCredentials) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    for (name, text, mode) in [
        ("client-key.pem", &c.client_key, 0o600),
        ("client-cert.pem", &c.client_cert, 0o644),
        ("ca-cert.pem", &c.ca_cert, 0o644),
    ] {
        let path = dir.join(name);
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&path)
            .and_then(|mut f| f.write_all(text.as_bytes()))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
