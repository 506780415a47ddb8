//! `vessel plan consolidate` on one host: each instance's right size from its recorded use
//! (`vessel_placement::right_size`: p95 plus headroom, against its limits). A cluster's plan
//! (members to empty, migrations) comes with the cluster.

use vessel_api::{ConsolidationPlan, HistoryPoint, InstanceSizing, ResourceSizing};
use vessel_placement::{cpu_cores, right_size, Resource, Sizing, Verdict};

use super::MetricsService;

/// One instance as the planner reads it: the name shown, the limits, the recorded points.
pub struct Recorded {
    pub name: String,
    pub cpu_limit: Option<f64>,
    pub memory_limit: Option<u64>,
    pub points: Vec<HistoryPoint>,
}

fn view(s: Sizing) -> ResourceSizing {
    ResourceSizing {
        samples: s.samples as u64,
        p95: s.p95,
        recommended: s.recommended,
        limit: s.limit,
        verdict: match s.verdict {
            Verdict::Over => "over",
            Verdict::Under => "under",
            Verdict::Fits => "fits",
            Verdict::NoLimit => "nolimit",
        }
        .into(),
        explanation: s.explanation,
    }
}

/// The right sizes of `instances` with `headroom` (0.2 is 20 %); pure.
pub fn right_sizes(instances: Vec<Recorded>, headroom: f64) -> Vec<InstanceSizing> {
    instances
        .into_iter()
        .map(|r| {
            let mut notes = Vec::new();
            let cpu_samples = cpu_cores(
                &r.points
                    .iter()
                    .map(|p| (p.time, p.cpu_seconds))
                    .collect::<Vec<_>>(),
            );
            let memory_samples: Vec<f64> = r.points.iter().map(|p| p.memory_bytes as f64).collect();
            let mut size = |resource, samples: &[f64], limit: Option<f64>| match right_size(
                &r.name, resource, samples, limit, headroom,
            ) {
                Ok(s) => Some(view(s)),
                Err(e) => {
                    notes.push(e.to_string());
                    None
                }
            };
            let cpu = size(Resource::Cpu, &cpu_samples, r.cpu_limit);
            let memory = size(
                Resource::Memory,
                &memory_samples,
                r.memory_limit.map(|m| m as f64),
            );
            InstanceSizing {
                name: r.name,
                cpu,
                memory,
                notes,
            }
        })
        .collect()
}

impl MetricsService {
    /// The plan for `instances` (already the caller's, with names as the caller sees them).
    pub fn consolidation(
        &self,
        instances: Vec<(String, String, Option<f64>, Option<u64>)>,
        headroom: f64,
    ) -> ConsolidationPlan {
        let recorded = instances
            .into_iter()
            .map(|(qualified, shown, cpu_limit, memory_limit)| Recorded {
                points: self.history(&qualified).points,
                name: shown,
                cpu_limit,
                memory_limit,
            })
            .collect();
        ConsolidationPlan {
            headroom,
            interval_seconds: self.inner.interval.as_secs(),
            instances: right_sizes(recorded, headroom),
            scope: "one host: right sizes only (a cluster's plan also empties members)".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn points(cores: f64, memory: u64, n: i64) -> Vec<HistoryPoint> {
        (0..n)
            .map(|i| HistoryPoint {
                time: i * 10,
                cpu_seconds: cores * (i * 10) as f64,
                memory_bytes: memory,
                ..Default::default()
            })
            .collect()
    }

    #[test]
    fn busy_and_idle_instances_get_their_sizes_and_reasons() {
        let out = right_sizes(
            vec![
                Recorded {
                    name: "busy".into(),
                    cpu_limit: Some(0.5),
                    memory_limit: None,
                    points: points(0.5, 64 << 20, 30),
                },
                Recorded {
                    name: "idle".into(),
                    cpu_limit: Some(4.0),
                    memory_limit: Some(1 << 30),
                    points: points(0.01, 20 << 20, 30),
                },
                Recorded {
                    name: "new".into(),
                    cpu_limit: None,
                    memory_limit: None,
                    points: points(0.0, 1 << 20, 1),
                },
            ],
            0.2,
        );
        let busy = out[0].cpu.as_ref().unwrap();
        assert_eq!((busy.verdict.as_str(), busy.recommended), ("under", 0.6));
        assert!(busy.explanation.contains("busy"), "{}", busy.explanation);
        assert_eq!(out[0].memory.as_ref().unwrap().verdict, "nolimit");
        assert_eq!(out[1].cpu.as_ref().unwrap().verdict, "over");
        assert_eq!(out[1].memory.as_ref().unwrap().verdict, "over");
        assert_eq!(
            out[1].memory.as_ref().unwrap().recommended,
            (24 << 20) as f64
        );
        // One point makes no rate: cpu has no size, and the note says why.
        assert!(out[2].cpu.is_none());
        assert!(
            out[2].notes[0].contains("no cpu samples"),
            "{:?}",
            out[2].notes
        );
    }
}
