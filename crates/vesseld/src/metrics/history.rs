//! A bounded history of each instance's cpu time, memory, disk and network use: what the
//! dashboard's graphs and the consolidation planner read. One point per sample per instance,
//! the oldest dropped past [`POINTS`]; an instance that is gone loses its history at the next
//! sample. Kept across restarts in one file, written whole (a temporary file renamed over it)
//! every minute and when the daemon stops.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;

use vessel_api::HistoryPoint;

/// Points kept per instance: an hour at one sample every [`super::SAMPLE_EVERY`].
pub const POINTS: usize = 360;

/// The largest history file read at start.
const MAX_FILE: u64 = 512 << 20;

/// Every instance's recent points, by qualified name.
#[derive(Default)]
pub struct History {
    rings: Mutex<BTreeMap<String, VecDeque<HistoryPoint>>>,
}

impl History {
    /// Adds one sample of every instance in `samples` (qualified name, point); instances not
    /// in it lose their history.
    pub fn record(&self, samples: impl IntoIterator<Item = (String, HistoryPoint)>) {
        let mut rings = self.rings.lock().unwrap_or_else(|p| p.into_inner());
        let mut seen = std::collections::BTreeSet::new();
        for (name, point) in samples {
            let ring = rings.entry(name.clone()).or_default();
            // A sample at the same second as the last (two scrapes at once) replaces it.
            if ring.back().is_some_and(|last| last.time >= point.time) {
                ring.pop_back();
            }
            if ring.len() == POINTS {
                ring.pop_front();
            }
            ring.push_back(point);
            seen.insert(name);
        }
        rings.retain(|name, _| seen.contains(name));
    }

    /// The points of one instance, oldest first.
    pub fn of(&self, name: &str) -> Vec<HistoryPoint> {
        let rings = self.rings.lock().unwrap_or_else(|p| p.into_inner());
        rings
            .get(name)
            .map(|r| r.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// The history a previous run saved at `path`; empty when there is none or it does not
    /// parse (a history is a help, not a record: it is never a reason not to start).
    pub fn load(path: &std::path::Path) -> Self {
        // A history of 1,000 instances is tens of MiB; a file far beyond that is not ours.
        let too_big = std::fs::metadata(path).is_ok_and(|m| m.len() > MAX_FILE);
        if too_big {
            tracing::warn!(path = %path.display(), "history file too large: not read");
        }
        let rings = (!too_big)
            .then(|| std::fs::read(path).ok())
            .flatten()
            .and_then(|b| {
                serde_json::from_slice::<BTreeMap<String, VecDeque<HistoryPoint>>>(&b)
                    .map_err(
                        |e| tracing::warn!(path = %path.display(), error = %e, "history not read"),
                    )
                    .ok()
            })
            .unwrap_or_default()
            .into_iter()
            .map(|(k, mut v)| {
                while v.len() > POINTS {
                    v.pop_front();
                }
                (k, v)
            })
            .collect();
        Self {
            rings: Mutex::new(rings),
        }
    }

    /// Writes the history to `path`: root's alone (0600, it names every project's
    /// instances), through a temporary file of this writer's own renamed over it. The rings
    /// are copied under the lock and written outside it.
    pub fn save(&self, path: &std::path::Path) -> std::io::Result<()> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let copy = self.rings.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let bytes = serde_json::to_vec(&copy)?;
        let n = WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp = path.with_extension(format!("tmp.{n}"));
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    }

    /// Points held in all, for the bound's test.
    #[cfg(test)]
    fn len(&self) -> usize {
        let rings = self.rings.lock().unwrap_or_else(|p| p.into_inner());
        rings.values().map(VecDeque::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(time: i64, cpu: f64) -> HistoryPoint {
        HistoryPoint {
            time,
            cpu_seconds: cpu,
            memory_bytes: 1024,
            ..Default::default()
        }
    }

    #[test]
    fn saved_and_loaded_across_a_restart() {
        let dir = std::env::temp_dir().join(format!("vessel-history-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("history.json");
        let h = History::default();
        h.record([("a".to_string(), p(1, 1.0)), ("b".into(), p(1, 2.0))]);
        h.record([("a".to_string(), p(2, 1.5)), ("b".into(), p(2, 2.5))]);
        h.save(&path).unwrap();
        let back = History::load(&path);
        assert_eq!(back.of("a"), vec![p(1, 1.0), p(2, 1.5)]);
        assert_eq!(back.len(), 4);
        std::fs::write(&path, b"not json").unwrap();
        assert_eq!(
            History::load(&path).len(),
            0,
            "a damaged file is an empty history"
        );
        assert_eq!(History::load(&dir.join("none")).len(), 0);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn bounded_and_forgets_deleted_instances() {
        let h = History::default();
        for t in 0..(POINTS as i64 + 50) {
            h.record([("a".to_string(), p(t, t as f64)), ("b".into(), p(t, 0.0))]);
        }
        let a = h.of("a");
        assert_eq!(a.len(), POINTS);
        assert_eq!(a.first().unwrap().time, 50, "the oldest points are dropped");
        assert_eq!(a.last().unwrap().time, POINTS as i64 + 49);
        assert_eq!(h.len(), 2 * POINTS);
        h.record([("a".to_string(), p(10_000, 1.0))]);
        assert!(h.of("b").is_empty(), "a deleted instance's history goes");
        assert_eq!(h.len(), POINTS);
    }

    #[test]
    fn a_second_sample_in_the_same_second_replaces_the_first() {
        let h = History::default();
        h.record([("a".to_string(), p(5, 1.0))]);
        h.record([("a".to_string(), p(5, 2.0))]);
        assert_eq!(h.of("a"), vec![p(5, 2.0)]);
    }
}
