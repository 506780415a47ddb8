//! A small command line over the backup store, for `bench/backup.sh`:
//!
//! ```text
//! vbackup init STORE [--avg BYTES]             a new store (FastCDC average chunk size)
//! vbackup tree STORE GROUP DIR                 backs DIR up as archive "rootfs"
//! vbackup disk STORE GROUP FILE                backs FILE up as archive "disk"
//! vbackup restore-tree STORE GROUP ID TARGET   restores "rootfs" into new directory TARGET
//! vbackup restore-disk STORE GROUP ID TARGET   restores "disk" into new file TARGET
//! vbackup latest STORE GROUP                   prints the id of the newest backup
//! vbackup usage STORE                          prints the bytes the chunks take
//! ```
//!
//! `tree` and `disk` print one JSON line: the backup's id, its `Stats` and the seconds it
//! took (from the writer's start to its index written and synced).

use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

use vessel_backup::{ChunkSizes, Store, StoreConfig};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    match run(&a) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vbackup: {e}");
            ExitCode::FAILURE
        }
    }
}

type Res = Result<(), Box<dyn std::error::Error>>;

fn run(a: &[&str]) -> Res {
    match a {
        ["init", store] => init(store, None),
        ["init", store, "--avg", avg] => init(store, Some(avg.parse()?)),
        ["tree", store, group, dir] => backup(store, group, "rootfs", dir, true),
        ["disk", store, group, file] => backup(store, group, "disk", file, false),
        ["restore-tree", store, group, id, target] => {
            let s = Store::open(Path::new(store))?;
            let index = s.get(group, id)?;
            Ok(s.restore_tree(&index, "rootfs", Path::new(target), &mut |_| {})?)
        }
        ["restore-disk", store, group, id, target] => {
            let s = Store::open(Path::new(store))?;
            let index = s.get(group, id)?;
            Ok(s.restore_block(&index, "disk", Path::new(target), &mut |_| {})?)
        }
        ["latest", store, group] => {
            let s = Store::open(Path::new(store))?;
            let index = s.latest(group)?.ok_or(format!("no backup of {group}"))?;
            println!("{}", index.id);
            Ok(())
        }
        ["usage", store] => {
            println!("{}", Store::open(Path::new(store))?.usage()?.0);
            Ok(())
        }
        _ => Err(
            "usage: vbackup init STORE [--avg BYTES] | tree STORE GROUP DIR | \
                  disk STORE GROUP FILE | restore-tree STORE GROUP ID TARGET | \
                  restore-disk STORE GROUP ID TARGET | latest STORE GROUP | usage STORE"
                .into(),
        ),
    }
}

fn init(store: &str, avg: Option<u32>) -> Res {
    let mut config = StoreConfig::default();
    if let Some(avg) = avg {
        config.chunk = ChunkSizes::around(avg);
    }
    Store::create(Path::new(store), config)?;
    Ok(())
}

fn backup(store: &str, group: &str, archive: &str, path: &str, tree: bool) -> Res {
    let start = Instant::now();
    let s = Store::open(Path::new(store))?;
    let mut w = s.writer(group)?;
    let path = Path::new(path);
    if tree {
        w.tree(archive, path, &mut |_| {})?;
    } else {
        w.block(archive, path, &mut |_| {})?;
    }
    let (index, stats) = w.finish(Default::default())?;
    let secs = start.elapsed().as_secs_f64();
    let line = serde_json::json!({ "id": index.id, "stats": stats, "secs": secs });
    println!("{line}");
    Ok(())
}
