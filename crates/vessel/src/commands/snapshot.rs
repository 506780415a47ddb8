//! `vessel snapshot ...`.

use anyhow::Result;
use vessel_api::{
    InstanceCopy, InstanceSnapshot, InstanceSnapshotCreate, InstanceSnapshotRestore, Operation,
};

use crate::cli_backup::SnapshotCommand;
use crate::client::Client;
use crate::encode::encode_segment as seg;
use crate::operation;
use crate::output::{print_document, println, Format, Table};

fn path(instance: &str) -> String {
    format!("/1.0/instances/{}/snapshots", seg(instance))
}

/// `snapshot ...`.
pub fn run(client: &Client, cmd: SnapshotCommand) -> Result<i32> {
    match cmd {
        SnapshotCommand::Create {
            instance,
            name,
            stateful,
        } => {
            let op: Operation = client.send(
                "POST",
                &path(&instance),
                &InstanceSnapshotCreate { name, stateful },
            )?;
            let done = operation::wait(client, op)?;
            let what = done
                .description
                .rsplit_once(" as ")
                .map_or(String::new(), |(_, n)| format!(" {n}"));
            println(format!("Snapshot{what} of {instance} taken"))?;
        }
        SnapshotCommand::List { instance, format } => {
            let list: Vec<InstanceSnapshot> = client.get(&path(&instance))?;
            match format {
                Format::Table => {
                    let mut t =
                        Table::new(&["NAME", "TAKEN", "STATEFUL", "KIND", "EXPIRES", "VOLUMES"]);
                    for s in &list {
                        t.row(vec![
                            s.name.clone(),
                            s.created_at.clone(),
                            if s.stateful { "yes" } else { "no" }.into(),
                            s.kind.clone(),
                            s.expires_at.clone().unwrap_or_default(),
                            s.volumes.join(","),
                        ]);
                    }
                    t.print()?;
                }
                f => print_document(f, &list)?,
            }
        }
        SnapshotCommand::Info {
            instance,
            name,
            format,
        } => {
            let s: InstanceSnapshot = client.get(&format!("{}/{}", path(&instance), seg(&name)))?;
            print_document(format, &s)?;
        }
        SnapshotCommand::Restore {
            instance,
            name,
            force,
        } => {
            let op: Operation = client.send(
                "POST",
                &format!("{}/{}/restore", path(&instance), seg(&name)),
                &InstanceSnapshotRestore { force },
            )?;
            operation::wait(client, op)?;
            println(format!("{instance} restored from snapshot {name}"))?;
        }
        SnapshotCommand::Delete { instance, name } => {
            let op: Operation =
                client.call("DELETE", &format!("{}/{}", path(&instance), seg(&name)))?;
            operation::wait(client, op)?;
            println(format!("Snapshot {name} of {instance} deleted"))?;
        }
    }
    Ok(0)
}

/// `copy SOURCE[/SNAPSHOT] NAME`.
pub fn copy(client: &Client, source: &str, name: &str, start: bool) -> Result<i32> {
    let (src, snapshot) = match source.split_once('/') {
        Some((s, snap)) => (s, Some(snap.to_string())),
        None => (source, None),
    };
    let op: Operation = client.send(
        "POST",
        &format!("/1.0/instances/{}/copy", seg(src)),
        &InstanceCopy {
            name: name.to_string(),
            snapshot,
            start,
        },
    )?;
    operation::wait(client, op)?;
    println(format!("Instance {name} made as a copy of {source}"))?;
    Ok(0)
}
