//! Keeping a store sound: `verify` re-reads every chunk of every backup and marks the
//! damaged ones, `prune` drops backups a retention policy no longer keeps, `gc` frees the
//! chunks no backup names any more (safely while backups are being taken; see `chunk`).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::chunk::Digest;
use crate::error::{BackupError, Result};
use crate::index::ArchiveKind;
use crate::store::{day_of, now, Store};

/// What `verify` found about one backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verified {
    pub group: String,
    pub id: String,
    /// Empty when it is sound.
    pub problems: Vec<String>,
}

/// What `gc` did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GcReport {
    /// Chunks some backup names.
    pub used_chunks: u64,
    /// Chunks removed and the bytes they took.
    pub removed_chunks: u64,
    pub removed_bytes: u64,
    /// Chunks no backup names yet kept: newer than the oldest backup being taken.
    pub recent_chunks: u64,
    /// Chunks kept and the bytes they take.
    pub kept_chunks: u64,
    pub kept_bytes: u64,
}

/// Which backups a retention policy keeps: the `keep_last` newest, and the newest of each of
/// the `keep_daily` newest days (UTC) that have one. `backups` are (id, time).
pub fn prune_plan(
    backups: &[(String, i64)],
    keep_last: usize,
    keep_daily: usize,
) -> BTreeSet<String> {
    let mut newest_first: Vec<&(String, i64)> = backups.iter().collect();
    newest_first.sort_by(|a, b| (b.1, &b.0).cmp(&(a.1, &a.0)));
    let mut keep: BTreeSet<String> = newest_first
        .iter()
        .take(keep_last)
        .map(|b| b.0.clone())
        .collect();
    let mut days = BTreeSet::new();
    for b in &newest_first {
        if days.len() >= keep_daily {
            break;
        }
        if days.insert(day_of(b.1)) {
            keep.insert(b.0.clone());
        }
    }
    keep
}

impl Store {
    /// Re-reads and re-hashes every chunk of the backups of `group` (or all), checks every
    /// tree's metadata against its chunks, and marks each backup damaged or sound.
    pub fn verify(
        &self,
        group: Option<&str>,
        id: Option<&str>,
        progress: &mut dyn FnMut(u64),
    ) -> Result<Vec<Verified>> {
        let mut good: HashSet<Digest> = HashSet::new();
        let mut bad: HashMap<Digest, String> = HashMap::new();
        let mut out = Vec::new();
        let mut done = 0u64;
        for l in self.list(group)? {
            if id.is_some_and(|i| i != l.id) {
                continue;
            }
            let mut problems = Vec::new();
            match &l.index {
                Err(why) => problems.push(why.clone()),
                Ok(index) => {
                    for a in &index.archives {
                        for c in a.chunks.iter().chain(a.meta.iter()) {
                            if good.contains(&c.0) {
                                continue;
                            }
                            if let Some(why) = bad.get(&c.0) {
                                problems.push(format!("archive {}: {why}", a.name));
                                continue;
                            }
                            match self.chunks.read(&c.0) {
                                Ok(data) if data.len() as u64 == c.1 => {
                                    done += c.1;
                                    progress(done);
                                    good.insert(c.0);
                                }
                                Ok(data) => {
                                    let why = format!(
                                        "chunk {} holds {} bytes, the index says {}",
                                        c.0,
                                        data.len(),
                                        c.1
                                    );
                                    problems.push(format!("archive {}: {why}", a.name));
                                    bad.insert(c.0, why);
                                }
                                Err(e) => {
                                    let why = e.to_string();
                                    problems.push(format!("archive {}: {why}", a.name));
                                    bad.insert(c.0, why);
                                }
                            }
                        }
                        if a.kind == ArchiveKind::Tree && problems.is_empty() {
                            if let Err(e) = self
                                .tree_meta(a)
                                .and_then(|m| crate::tree::check(&m, &a.chunks))
                            {
                                problems.push(format!("archive {}: {e}", a.name));
                            }
                        }
                    }
                }
            }
            let mark = self.backup_dir(&l.group, &l.id).join("damaged");
            if problems.is_empty() {
                let _ = std::fs::remove_file(&mark);
            } else if !l.unfinished {
                // (One without an index when listed is not marked: its writer may have
                // finished it since, whole.)
                crate::store::write_whole(&mark, problems.join("\n").as_bytes())?;
            }
            out.push(Verified {
                group: l.group,
                id: l.id,
                problems,
            });
        }
        Ok(out)
    }

    /// Deletes the backups of `group` that [`prune_plan`] does not keep (never one a backup
    /// being taken builds on); returns the ids deleted. The policy counts sound backups
    /// only: one marked damaged neither takes the place of a sound one (the last sound ones
    /// would go) nor is deleted here.
    pub fn prune(&self, group: &str, keep_last: usize, keep_daily: usize) -> Result<Vec<String>> {
        if keep_last == 0 && keep_daily == 0 {
            return Err(BackupError::Invalid(
                "a policy that keeps nothing: give --keep-last or --keep-daily".into(),
            ));
        }
        let listed: Vec<(String, i64)> = self
            .list(Some(group))?
            .into_iter()
            .filter(|l| l.damaged.is_none())
            .filter_map(|l| l.index.ok().map(|i| (l.id, i.time)))
            .collect();
        let keep = prune_plan(&listed, keep_last, keep_daily);
        let mut gone = Vec::new();
        for (id, _) in listed.iter().filter(|(id, _)| !keep.contains(id)) {
            match self.delete(group, id) {
                Ok(()) => gone.push(id.clone()),
                Err(BackupError::Busy(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(gone)
    }

    /// Frees chunks no backup names: those named by any index are kept, and so is every
    /// chunk touched since the oldest backup being taken started (its own, not yet named).
    pub fn gc(&self) -> Result<GcReport> {
        let mut report = GcReport::default();
        let (used, cutoff) = {
            let _l = self.lock()?;
            // Chunk times are the store's file system's (on NFS, its server's clock), which
            // may lag this host's: the cutoff is the earlier of both clocks (a writer's start
            // likewise, as it wrote it and as its record's time says).
            let start = now().min(self.fs_now()?);
            let writers = self.live_writers()?;
            let oldest = writers.iter().map(|w| w.start).min().unwrap_or(start);
            // Two seconds' slack for file systems with coarse times.
            let cutoff = oldest.min(start) - 2;
            let mut used: HashSet<Digest> = HashSet::new();
            for l in self.list(None)? {
                match l.index {
                    Ok(i) => used.extend(i.chunks().map(|c| c.0)),
                    // An index that does not check out is still read for what it names:
                    // its chunks may make it repairable.
                    Err(_) => {
                        let p = self.backup_dir(&l.group, &l.id).join("index");
                        if let Ok(raw) = std::fs::read_to_string(&p) {
                            let body = raw.rsplit_once("\nsha256:").map_or(&raw[..], |b| b.0);
                            if let Ok(i) = serde_json::from_str::<crate::index::Index>(body) {
                                used.extend(i.chunks().map(|c| c.0));
                            }
                        }
                    }
                }
            }
            (used, cutoff)
        };
        report.used_chunks = used.len() as u64;
        let mut candidates = Vec::new();
        self.chunks.walk(|d, path, mtime| {
            let size = std::fs::symlink_metadata(path).map_or(0, |m| m.len());
            match d {
                Some(d) if used.contains(&d) => {
                    report.kept_chunks += 1;
                    report.kept_bytes += size;
                }
                _ if mtime >= cutoff => {
                    report.recent_chunks += 1;
                    report.kept_chunks += 1;
                    report.kept_bytes += size;
                }
                _ => candidates.push((path.to_path_buf(), size)),
            }
            Ok(())
        })?;
        // Removed under the lock writers hold while they rely on a chunk, each looked at a
        // last time: one touched since is kept.
        let lock = self.chunks.lock()?;
        for batch in candidates.chunks(512) {
            let _held = self.chunks.hold(&lock, true)?;
            for (path, size) in batch {
                use std::os::unix::fs::MetadataExt;
                let Ok(m) = std::fs::symlink_metadata(path) else {
                    continue;
                };
                if m.mtime() >= cutoff {
                    report.kept_chunks += 1;
                    report.kept_bytes += size;
                    continue;
                }
                if std::fs::remove_file(path).is_ok() {
                    report.removed_chunks += 1;
                    report.removed_bytes += size;
                }
            }
        }
        Ok(report)
    }

    /// Bytes the chunks of the store take, and how many there are.
    pub fn usage(&self) -> Result<(u64, u64)> {
        let (mut bytes, mut n) = (0, 0);
        self.chunks.walk(|_, path, _| {
            bytes += std::fs::symlink_metadata(path).map_or(0, |m| m.len());
            n += 1;
            Ok(())
        })?;
        Ok((bytes, n))
    }
}

/// Backups by group, newest last: a summary for listing.
pub fn by_group(listed: &[crate::store::Listed]) -> BTreeMap<&str, Vec<&crate::store::Listed>> {
    let mut m: BTreeMap<&str, Vec<&crate::store::Listed>> = BTreeMap::new();
    for l in listed {
        m.entry(&l.group).or_default().push(l);
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prune_keeps_the_last_and_one_a_day() {
        let day = 86_400;
        let b = |id: &str, t: i64| (id.to_string(), t);
        let list = [
            b("a", 10),
            b("b", 20),
            b("c", day + 5),
            b("d", day + 50),
            b("e", 2 * day + 1),
            b("f", 2 * day + 2),
        ];
        let k = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
        assert_eq!(prune_plan(&list, 2, 0), k(&["e", "f"]));
        assert_eq!(prune_plan(&list, 0, 2), k(&["d", "f"]));
        assert_eq!(prune_plan(&list, 1, 3), k(&["b", "d", "f"]));
        assert_eq!(prune_plan(&list, 10, 10).len(), 6);
        assert!(prune_plan(&[], 3, 3).is_empty());
    }
}
