//! `GET /1.0/metrics` and the instances' history. A scrape reads every instance, project and
//! pool once per [`CACHE_FOR`] whatever number of callers asks (scraping 1,000 instances
//! every second costs one reading a few seconds), and renders per caller only what its
//! projects hold. A sampler reads the same every [`SAMPLE_EVERY`] into a bounded history.

pub mod collect;
pub mod history;
pub mod host;
pub mod plan;
pub mod render;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use vessel_api::{HistoryPoint, InstanceHistory};

use crate::error::{Error, Result};
use collect::{Snapshot, Sources};
use render::{Requests, Seen};

/// How long one reading serves scrapes.
pub const CACHE_FOR: Duration = Duration::from_secs(3);

/// How often the history is sampled (`VESSEL_HISTORY_SECONDS` changes it, for tests).
pub const SAMPLE_EVERY: Duration = Duration::from_secs(10);

/// Samples between two writes of the history file.
const SAVE_EVERY: u32 = 6;

/// The metrics and history service; cheap to clone.
#[derive(Clone)]
pub struct MetricsService {
    inner: Arc<Inner>,
}

struct Inner {
    sources: Sources,
    requests: Requests,
    /// The last reading; the async lock makes concurrent scrapes wait for one reading.
    snapshot: tokio::sync::Mutex<Option<(Instant, Arc<Snapshot>)>>,
    /// Rendered text per view of the last reading.
    rendered: Mutex<HashMap<Seen, (Instant, Arc<String>)>>,
    history: history::History,
    /// Where the history is kept across restarts.
    history_file: Option<std::path::PathBuf>,
    /// Seconds between samples.
    interval: Duration,
}

fn request_histogram() -> Histogram {
    // 0.5 ms to ~16 s.
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

impl MetricsService {
    /// A service reading `sources`, keeping its history in `history_file` (read now).
    pub fn new(sources: Sources, history_file: Option<std::path::PathBuf>) -> Self {
        let interval = std::env::var("VESSEL_HISTORY_SECONDS")
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
            .filter(|s| *s > 0)
            .map_or(SAMPLE_EVERY, Duration::from_secs);
        let history = history_file
            .as_deref()
            .map(history::History::load)
            .unwrap_or_default();
        Self {
            inner: Arc::new(Inner {
                sources,
                requests: Requests::new_with_constructor(request_histogram),
                snapshot: tokio::sync::Mutex::new(None),
                rendered: Mutex::new(HashMap::new()),
                history,
                history_file,
                interval,
            }),
        }
    }

    /// Writes the history to its file (at a clean stop; the sampler does every minute).
    pub fn save_history(&self) {
        if let Some(path) = &self.inner.history_file {
            if let Err(e) = self.inner.history.save(path) {
                tracing::warn!(path = %path.display(), error = %e, "saving the history");
            }
        }
    }

    /// Records how long the daemon took to answer a request to `endpoint` with `status`.
    pub fn observe_request(&self, endpoint: &'static str, status: u16, took: Duration) {
        let class = match status {
            100..=199 => "1xx",
            200..=299 => "2xx",
            300..=399 => "3xx",
            400..=499 => "4xx",
            _ => "5xx",
        };
        self.inner
            .requests
            .get_or_create(&vec![
                ("endpoint", endpoint.to_string()),
                ("code", class.into()),
            ])
            .observe(took.as_secs_f64());
    }

    /// A reading no older than `max_age`.
    async fn snapshot(&self, max_age: Duration) -> Result<Arc<Snapshot>> {
        let mut held = self.inner.snapshot.lock().await;
        if let Some((at, snap)) = held.as_ref() {
            if at.elapsed() < max_age {
                return Ok(snap.clone());
            }
        }
        let sources = self.inner.sources.clone();
        let snap = Arc::new(
            tokio::task::spawn_blocking(move || sources.collect())
                .await
                .map_err(|e| Error::internal(format!("metrics task: {e}")))??,
        );
        *held = Some((Instant::now(), snap.clone()));
        Ok(snap)
    }

    /// The Prometheus text `seen` may read.
    pub async fn text(&self, seen: Seen) -> Result<Arc<String>> {
        let snap = self.snapshot(CACHE_FOR).await?;
        {
            let cache = self
                .inner
                .rendered
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if let Some((at, text)) = cache.get(&seen) {
                if at.elapsed() < CACHE_FOR {
                    return Ok(text.clone());
                }
            }
        }
        let requests = (seen == Seen::All).then_some(&self.inner.requests);
        let text = Arc::new(render::render(&snap, &seen, requests));
        let mut cache = self
            .inner
            .rendered
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        cache.retain(|_, (at, _)| at.elapsed() < CACHE_FOR);
        cache.insert(seen, (Instant::now(), text.clone()));
        Ok(text)
    }

    /// The history of one instance (qualified name).
    pub fn history(&self, name: &str) -> InstanceHistory {
        InstanceHistory {
            interval_seconds: self.inner.interval.as_secs(),
            points: self.inner.history.of(name),
        }
    }

    /// Samples every instance into the history, forever.
    pub async fn sample_history(&self) {
        let mut tick = tokio::time::interval(self.inner.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut samples = 0u32;
        loop {
            tick.tick().await;
            samples += 1;
            if samples.is_multiple_of(SAVE_EVERY) {
                let me = self.clone();
                let _ = tokio::task::spawn_blocking(move || me.save_history()).await;
            }
            // A reading of half an interval ago (a scrape's) serves the sample too.
            match self.snapshot(self.inner.interval / 2).await {
                Ok(snap) => {
                    let now = time::OffsetDateTime::now_utc().unix_timestamp();
                    let host = host::sample(now);
                    let host = std::iter::once((host::HOST_KEY.to_string(), host));
                    self.inner
                        .history
                        .record(host.chain(snap.instances.iter().map(|i| {
                            (
                                i.qualified.clone(),
                                HistoryPoint {
                                    time: now,
                                    cpu_seconds: i.cpu_ns as f64 / 1e9,
                                    memory_bytes: i.memory,
                                    disk_bytes: i.disk_read.saturating_add(i.disk_written),
                                    network_bytes: i
                                        .nics
                                        .iter()
                                        .map(|n| n.rx_bytes.saturating_add(n.tx_bytes))
                                        .sum(),
                                },
                            )
                        })));
                }
                Err(e) => tracing::warn!(error = %e.message, "sampling the instances' history"),
            }
        }
    }
}
