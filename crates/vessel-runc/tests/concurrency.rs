//! Many containers set up at once while every core is busy: the setup messages of the
//! intermediate process and of the init must reach the runtime in order whatever the
//! scheduling (a create used to fail now and then with "init reported ready before its pid"
//! under load).

mod common;

use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Bundle, RUNC};

/// Containers created and started at the same time, in each round.
const CONTAINERS: usize = 64;
/// Rounds: the race this guards against showed up about once in 300 creates under this load.
const ROUNDS: usize = 8;
/// Spinning threads per core.
const SPINNERS_PER_CORE: usize = 8;

/// Spinning threads on every core, stopped when dropped (also when the test fails).
struct CpuLoad {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl CpuLoad {
    fn start() -> CpuLoad {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..cores * SPINNERS_PER_CORE)
            .map(|_| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let mut x = 1u64;
                    while !stop.load(Ordering::Relaxed) {
                        x = std::hint::black_box(
                            x.wrapping_mul(6364136223846793005).wrapping_add(1),
                        );
                    }
                })
            })
            .collect();
        CpuLoad { stop, threads }
    }
}

impl Drop for CpuLoad {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn text(o: &Output) -> String {
    format!(
        "{:?}: {}{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Creates and starts container `id`; the error says which step failed and why.
fn create_and_start(mut create: Command, root: PathBuf, id: String) -> Result<(), String> {
    let created = create.output().map_err(|e| e.to_string())?;
    if !created.status.success() {
        return Err(format!("create {id}: {}", text(&created)));
    }
    let started = Command::new(RUNC)
        .arg("--root")
        .arg(&root)
        .args(["start", &id])
        .output()
        .map_err(|e| e.to_string())?;
    if !started.status.success() {
        return Err(format!("start {id}: {}", text(&started)));
    }
    Ok(())
}

#[test]
fn many_concurrent_creates_and_starts_under_cpu_pressure() {
    let b = Bundle::new("many", &[], |cfg| {
        cfg["process"]["args"] = serde_json::json!(["sh", "-c", "echo started"]);
    });
    let mut failures = Vec::new();
    for round in 0..ROUNDS {
        let ids: Vec<String> = (0..CONTAINERS).map(|i| format!("r{round}-{i}")).collect();
        let load = CpuLoad::start();
        let workers: Vec<_> = ids
            .iter()
            .map(|id| {
                let (create, root, id) = (b.create_command(id), b.root.clone(), id.clone());
                std::thread::spawn(move || create_and_start(create, root, id))
            })
            .collect();
        let results: Vec<_> = workers.into_iter().map(|w| w.join().unwrap()).collect();
        drop(load);
        for (r, id) in results.into_iter().zip(&ids) {
            match r {
                Err(e) => failures.push(format!("{e} (log: {})", b.output(id))),
                Ok(()) => {
                    let deadline = Instant::now() + Duration::from_secs(30);
                    while !b.output(id).contains("started") {
                        assert!(
                            Instant::now() < deadline,
                            "{id} never ran: {}",
                            b.output(id)
                        );
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    b.ok(&["delete", id]);
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} failed:\n{}",
        failures.len(),
        CONTAINERS * ROUNDS,
        failures.join("\n")
    );
}
