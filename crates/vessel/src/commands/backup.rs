//! `vessel backup ...`.

use anyhow::{bail, Context, Result};
use vessel_api::{
    Backup, BackupCreate, BackupGc, BackupGcReport, BackupPrune, BackupPruned, BackupRestore,
    BackupVerify, Operation,
};

use crate::cli_backup::BackupCommand;
use crate::client::Client;
use crate::encode::encode_segment as seg;
use crate::operation;
use crate::output::{print_document, println, Format, Table};

/// `INSTANCE/ID`.
fn split(backup: &str) -> Result<(&str, &str)> {
    backup
        .split_once('/')
        .filter(|(i, id)| !i.is_empty() && !id.is_empty())
        .with_context(|| {
            format!("{backup:?} is not INSTANCE/ID (see `vessel backup list` for the ids)")
        })
}

/// `path` with the query `pairs` whose value is given.
fn query(path: &str, pairs: &[(&str, Option<&str>)]) -> String {
    let q: Vec<String> = pairs
        .iter()
        .filter_map(|(k, v)| v.map(|v| format!("{k}={}", seg(v))))
        .collect();
    if q.is_empty() {
        path.to_string()
    } else {
        format!("{path}?{}", q.join("&"))
    }
}

/// The backup `INSTANCE/ID`, or `INSTANCE`'s newest sound one.
fn resolve(client: &Client, backup: &str, store: &Option<String>) -> Result<(String, String)> {
    if backup.contains('/') {
        let (i, id) = split(backup)?;
        return Ok((i.to_string(), id.to_string()));
    }
    let list: Vec<Backup> = client.get(&query(
        "/1.0/backups",
        &[("instance", Some(backup)), ("store", store.as_deref())],
    ))?;
    let Some(b) = list.iter().rev().find(|b| b.damaged.is_none()) else {
        bail!("{backup} has no sound backup; see `vessel backup list {backup}`");
    };
    Ok((backup.to_string(), b.id.clone()))
}

/// `backup restore BACKUP [NAME] --target REMOTE`: the backup fetched from `client` as one
/// archive (into a temporary file) and imported by `target`.
pub fn restore_to(
    client: &Client,
    target: &Client,
    backup: &str,
    name: Option<&str>,
    start: bool,
    store: &Option<String>,
) -> Result<i32> {
    let (instance, id) = resolve(client, backup, store)?;
    let file =
        std::env::temp_dir().join(format!("vessel-restore-{}-{}.tar", std::process::id(), id));
    struct Gone<'a>(&'a std::path::Path);
    impl Drop for Gone<'_> {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(self.0);
        }
    }
    let _gone = Gone(&file);
    super::snapshot::download(
        client,
        &with_store(
            format!("/1.0/backups/{}/{}/export", seg(&instance), seg(&id)),
            store,
        ),
        &file,
    )?;
    super::snapshot::import(target, &file, Some(name.unwrap_or(&instance)), start)?;
    Ok(0)
}

fn with_store(path: String, store: &Option<String>) -> String {
    query(&path, &[("store", store.as_deref())])
}

fn size(n: u64) -> String {
    vessel_api::size::format_size(n)
}

fn table(list: &[Backup]) -> Result<()> {
    let mut t = Table::new(&["INSTANCE", "ID", "TAKEN", "SIZE", "TYPE", "STATE"]);
    for b in list {
        t.row(vec![
            b.instance.clone(),
            b.id.clone(),
            b.created_at.clone(),
            size(b.size),
            b.labels.get("type").cloned().unwrap_or_default(),
            match &b.damaged {
                Some(why) => format!("DAMAGED: {}", why.lines().next().unwrap_or_default()),
                None => "ok".into(),
            },
        ]);
    }
    t.print()
}

/// `backup ...`.
pub fn run(client: &Client, cmd: BackupCommand) -> Result<i32> {
    match cmd {
        BackupCommand::Create {
            instance,
            store,
            format,
        } => {
            let op: Operation = client.send(
                "POST",
                &format!("/1.0/instances/{}/backups", seg(&instance)),
                &BackupCreate {
                    store: store.clone(),
                },
            )?;
            let done = operation::wait(client, op)?;
            let path = done
                .resources
                .iter()
                .find(|r| r.starts_with("/1.0/backups/"))
                .cloned()
                .context("the operation names no backup")?;
            let b: Backup = client.get(&with_store(path, &store))?;
            match format {
                None | Some(Format::Table) => println(format!(
                    "Backup {}/{} taken: {}",
                    b.instance,
                    b.id,
                    size(b.size)
                ))?,
                Some(f) => print_document(f, &b)?,
            }
        }
        BackupCommand::List {
            instance,
            store,
            format,
        } => {
            let path = query(
                "/1.0/backups",
                &[
                    ("instance", instance.as_deref()),
                    ("store", store.as_deref()),
                ],
            );
            let list: Vec<Backup> = client.get(&path)?;
            match format {
                Format::Table => table(&list)?,
                f => print_document(f, &list)?,
            }
        }
        BackupCommand::Info {
            backup,
            store,
            format,
        } => {
            let (i, id) = split(&backup)?;
            let b: Backup = client.get(&with_store(
                format!("/1.0/backups/{}/{}", seg(i), seg(id)),
                &store,
            ))?;
            print_document(format, &b)?;
        }
        BackupCommand::Restore {
            backup,
            name,
            start,
            store,
            // A restore on another remote is `restore_to`'s (commands::run picks it).
            target: _,
        } => {
            let (instance, id) = resolve(client, &backup, &store)?;
            let req = BackupRestore {
                name: name.clone(),
                start,
                store,
            };
            let op: Operation = client.send(
                "POST",
                &format!("/1.0/backups/{}/{}/restore", seg(&instance), seg(&id)),
                &req,
            )?;
            operation::wait(client, op)?;
            println(format!(
                "Instance {} restored from {instance}/{id}",
                name.as_deref().unwrap_or(&instance)
            ))?;
        }
        BackupCommand::Delete { backup, store } => {
            let (i, id) = split(&backup)?;
            let _: Backup = client.call(
                "DELETE",
                &with_store(format!("/1.0/backups/{}/{}", seg(i), seg(id)), &store),
            )?;
            println(format!("Backup {i}/{id} deleted"))?;
        }
        BackupCommand::Verify { what, store } => {
            let (instance, id) = match what.as_deref().map(|w| w.split_once('/')) {
                None => (None, None),
                Some(None) => (what.clone(), None),
                Some(Some((i, id))) => (Some(i.to_string()), Some(id.to_string())),
            };
            let op: Operation = client.send(
                "POST",
                "/1.0/backups/verify",
                &BackupVerify {
                    instance: instance.clone(),
                    id,
                    store: store.clone(),
                },
            )?;
            let r = operation::wait(client, op);
            let path = query(
                "/1.0/backups",
                &[
                    ("instance", instance.as_deref()),
                    ("store", store.as_deref()),
                ],
            );
            let list: Vec<Backup> = client.get(&path)?;
            table(&list)?;
            for b in list.iter().filter(|b| b.damaged.is_some()) {
                println(format!(
                    "{}/{}: {}",
                    b.instance,
                    b.id,
                    b.damaged.as_deref().unwrap_or_default()
                ))?;
            }
            r?;
        }
        BackupCommand::Prune {
            instance,
            keep_last,
            keep_daily,
            store,
        } => {
            let r: BackupPruned = client.send(
                "POST",
                "/1.0/backups/prune",
                &BackupPrune {
                    instance: instance.clone(),
                    keep_last,
                    keep_daily,
                    store,
                },
            )?;
            println(format!(
                "{instance}: {} deleted, {} kept{}",
                r.removed.len(),
                r.kept.len(),
                if r.removed.is_empty() {
                    String::new()
                } else {
                    format!(
                        " (deleted: {}; run `vessel backup gc` to free their space)",
                        r.removed.join(" ")
                    )
                }
            ))?;
        }
        BackupCommand::Gc { store, format } => {
            let r: BackupGcReport = client.send("POST", "/1.0/backups/gc", &BackupGc { store })?;
            match format {
                Format::Table => println(format!(
                    "{} chunks freed ({}); {} kept ({}), {} of them recent",
                    r.removed_chunks,
                    size(r.removed_bytes),
                    r.kept_chunks,
                    size(r.kept_bytes),
                    r.recent_chunks
                ))?,
                f => print_document(f, &r)?,
            }
        }
    }
    Ok(0)
}
