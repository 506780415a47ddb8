//! `vessel snapshot ...`.

use anyhow::Result;
use vessel_api::{
    InstanceCopy, InstanceMove, InstanceRename, InstanceSnapshot, InstanceSnapshotCreate,
    InstanceSnapshotRestore, Operation,
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

/// `rename NAME NEW-NAME`.
pub fn rename(client: &Client, name: &str, new_name: &str) -> Result<i32> {
    let op: Operation = client.send(
        "POST",
        &format!("/1.0/instances/{}/rename", seg(name)),
        &InstanceRename {
            name: new_name.to_string(),
        },
    )?;
    operation::wait(client, op)?;
    println(format!("Instance {name} renamed to {new_name}"))?;
    Ok(0)
}

/// `move NAME --pool POOL`.
pub fn move_to_pool(client: &Client, name: &str, pool: &str) -> Result<i32> {
    let op: Operation = client.send(
        "POST",
        &format!("/1.0/instances/{}/move", seg(name)),
        &InstanceMove {
            pool: pool.to_string(),
        },
    )?;
    operation::wait(client, op)?;
    println(format!("Instance {name} moved to pool {pool}"))?;
    Ok(0)
}

/// `move NAME --target MEMBER`.
pub fn migrate(client: &Client, name: &str, target: &str, live: Option<bool>) -> Result<i32> {
    let op: Operation = client.send(
        "POST",
        &format!("/1.0/instances/{}/migrate", seg(name)),
        &vessel_api::InstanceMigrate {
            target: target.to_string(),
            live,
        },
    )?;
    let done = operation::wait(client, op)?;
    // A live move's last stage says what it took.
    match done.stage.as_deref().filter(|s| s.starts_with("live")) {
        Some(took) => println(format!("Instance {name} moved to member {target}: {took}"))?,
        None => println(format!("Instance {name} moved to member {target}"))?,
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

/// A progress bar of `len` bytes on standard error (hidden when it is not a terminal).
fn bar(len: u64, what: &str) -> indicatif::ProgressBar {
    let pb = indicatif::ProgressBar::with_draw_target(
        Some(len),
        indicatif::ProgressDrawTarget::stderr(),
    );
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
    ) {
        pb.set_style(style.progress_chars("=> "));
    }
    pb.set_message(what.to_string());
    pb
}

/// `export NAME FILE`.
pub fn export(client: &Client, name: &str, file: &std::path::Path, snapshots: bool) -> Result<i32> {
    eprintln!("Backing up {name} for the archive...");
    let q = if snapshots { "?snapshots=1" } else { "" };
    let n = download(
        client,
        &format!("/1.0/instances/{}/export{q}", seg(name)),
        file,
    )?;
    println(format!("Wrote {} ({n} bytes)", file.display()))?;
    Ok(0)
}

/// GETs an archive at `path` into new file `file` with a progress bar; a partial file is
/// removed. Returns its bytes.
pub fn download(client: &Client, path: &str, file: &std::path::Path) -> Result<u64> {
    use anyhow::Context;
    use std::io::Write;
    let resp = client.request("GET", path, crate::client::RequestBody::Empty)?;
    let len = resp
        .head
        .header("content-length")
        .and_then(|l| l.parse().ok())
        .unwrap_or(0);
    let pb = bar(len, "receiving");
    // Into FILE.part, renamed over FILE once whole: a failed export leaves an earlier
    // archive of that name as it was (a device or pipe named is written directly).
    let direct = std::fs::metadata(file).is_ok_and(|m| !m.is_file());
    let part = if direct {
        file.to_path_buf()
    } else {
        let mut p = file.as_os_str().to_os_string();
        p.push(".part");
        std::path::PathBuf::from(p)
    };
    let mut out = std::fs::File::create(&part)
        .with_context(|| format!("cannot create {}", part.display()))?;
    let mut body = pb.wrap_read(resp.body);
    let copied = std::io::copy(&mut body, &mut out).and_then(|n| out.flush().map(|_| n));
    pb.finish_and_clear();
    match copied {
        Ok(n) if len == 0 || n == len => {
            if !direct {
                out.sync_all()
                    .and_then(|()| std::fs::rename(&part, file))
                    .with_context(|| format!("cannot write {}", file.display()))?;
            }
            Ok(n)
        }
        r => {
            // A partial archive would look whole later: remove it.
            if !direct {
                let _ = std::fs::remove_file(&part);
            }
            match r {
                Ok(n) => anyhow::bail!("the archive ended after {n} of {len} bytes"),
                Err(e) => Err(e).with_context(|| format!("cannot write {}", file.display())),
            }
        }
    }
}

/// `import FILE [NAME]`.
pub fn import(
    client: &Client,
    file: &std::path::Path,
    name: Option<&str>,
    start: bool,
) -> Result<i32> {
    use anyhow::Context;
    let f = std::fs::File::open(file).with_context(|| format!("cannot open {}", file.display()))?;
    let len = f
        .metadata()
        .with_context(|| format!("cannot read {}", file.display()))?
        .len();
    let mut q = Vec::new();
    if let Some(n) = name {
        q.push(format!("name={}", seg(n)));
    }
    if start {
        q.push("start=1".to_string());
    }
    let target = if q.is_empty() {
        "/1.0/archives".to_string()
    } else {
        format!("/1.0/archives?{}", q.join("&"))
    };
    let pb = bar(len, "sending");
    let mut reader = pb.wrap_read(f);
    let op: Operation = client
        .request(
            "POST",
            &target,
            crate::client::RequestBody::Stream(&mut reader, len),
        )?
        .json()?;
    pb.finish_and_clear();
    operation::wait(client, op)?;
    println(format!("Instance made from {}", file.display()))?;
    Ok(0)
}
