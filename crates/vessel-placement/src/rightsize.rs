//! Right sizes from recorded use: an instance's 95th percentile of cpu or memory, the size
//! that holds it with headroom, and whether its limit is too large, too small or right.
//!
//! The percentile is the nearest rank: the samples sorted, the value at rank
//! `ceil(0.95 × n)` (1-based), so it is always one of the samples and exact for any `n`.
//! The recommendation is `p95 × (1 + headroom)` rounded up to a step a limit is written in:
//! 0.01 core, 1 MiB. An instance is over-provisioned when its limit is more than twice the
//! recommendation, under-provisioned when its p95 reaches 90 % of its limit.

use serde::{Deserialize, Serialize};

use crate::units;

/// A limit above this many times the recommendation is over-provisioned.
const OVER_FACTOR: f64 = 2.0;
/// A p95 at or above this share of the limit is under-provisioned.
const UNDER_SHARE: f64 = 0.9;
const MIB: f64 = (1u64 << 20) as f64;

/// What the samples measure, for the rounding and the units in messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Resource {
    /// Cores in use (a rate: cpu seconds per second).
    Cpu,
    /// Bytes of memory in use.
    Memory,
}

impl Resource {
    fn name(self) -> &'static str {
        match self {
            Resource::Cpu => "cpu",
            Resource::Memory => "memory",
        }
    }

    fn show(self, x: f64) -> String {
        match self {
            Resource::Cpu => units::cores(x),
            Resource::Memory => units::bytes_f(x),
        }
    }

    /// `x` rounded up to the step limits are written in (0.01 core, 1 MiB), at least one step.
    fn round_up(self, x: f64) -> f64 {
        let step = match self {
            Resource::Cpu => 0.01,
            Resource::Memory => MIB,
        };
        // The slack keeps 0.5 × 1.2 at 0.6 rather than 0.61 after the division's rounding.
        ((x / step - 1e-9).ceil().max(1.0)) * step
    }
}

/// How a limit compares with the recommendation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// The limit is more than twice the recommendation.
    Over,
    /// The p95 reaches 90 % of the limit.
    Under,
    /// The limit is neither.
    Fits,
    /// There is no limit to compare with.
    NoLimit,
}

/// The right size of one resource of one instance, and the line that explains it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sizing {
    /// How many samples it rests on.
    pub samples: usize,
    /// The 95th percentile of the samples (nearest rank).
    pub p95: f64,
    /// `p95 × (1 + headroom)`, rounded up to 0.01 core or 1 MiB.
    pub recommended: f64,
    /// The limit it was compared with.
    pub limit: Option<f64>,
    /// How the limit compares.
    pub verdict: Verdict,
    /// One line with the figures, for a person to check.
    pub explanation: String,
}

/// Samples or settings a size cannot be computed from.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SizingError {
    /// Nothing was recorded.
    #[error("{instance}: no {resource} samples recorded yet; size it after it has run a while")]
    NoSamples {
        /// The instance.
        instance: String,
        /// "cpu" or "memory".
        resource: &'static str,
    },
    /// Some samples are not numbers of at least zero.
    #[error("{instance}: {bad} of {total} {resource} samples are not numbers of at least 0")]
    BadSamples {
        /// The instance.
        instance: String,
        /// "cpu" or "memory".
        resource: &'static str,
        /// How many are bad.
        bad: usize,
        /// How many there are.
        total: usize,
    },
    /// The headroom is not a fraction of at least zero.
    #[error("headroom {0} is not a fraction of at least 0 (0.2 is 20 %)")]
    Headroom(f64),
    /// The limit is not a positive number.
    #[error("{instance}: {resource} limit {limit} is not a positive number")]
    Limit {
        /// The instance.
        instance: String,
        /// "cpu" or "memory".
        resource: &'static str,
        /// The limit given.
        limit: f64,
    },
}

/// The `p`-th percentile (0 < p ≤ 100) of `samples` by nearest rank, or `None` when there
/// are none. Samples that are not numbers sort last.
pub fn percentile(samples: &[f64], p: f64) -> Option<f64> {
    if samples.is_empty() {
        return None;
    }
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len()) - 1).copied()
}

/// The right size for one resource of `instance` from its `samples` (cores or bytes),
/// compared with its `limit`, with `headroom` (0.2 for 20 %) above the p95.
pub fn right_size(
    instance: &str,
    resource: Resource,
    samples: &[f64],
    limit: Option<f64>,
    headroom: f64,
) -> Result<Sizing, SizingError> {
    let what = resource.name();
    if !headroom.is_finite() || headroom < 0.0 {
        return Err(SizingError::Headroom(headroom));
    }
    if let Some(l) = limit.filter(|l| !(l.is_finite() && *l > 0.0)) {
        return Err(SizingError::Limit {
            instance: instance.to_string(),
            resource: what,
            limit: l,
        });
    }
    let bad = samples
        .iter()
        .filter(|s| !(s.is_finite() && **s >= 0.0))
        .count();
    if bad > 0 {
        return Err(SizingError::BadSamples {
            instance: instance.to_string(),
            resource: what,
            bad,
            total: samples.len(),
        });
    }
    let p95 = percentile(samples, 95.0).ok_or_else(|| SizingError::NoSamples {
        instance: instance.to_string(),
        resource: what,
    })?;
    let recommended = resource.round_up(p95 * (1.0 + headroom));
    let verdict = match limit {
        None => Verdict::NoLimit,
        Some(l) if p95 >= UNDER_SHARE * l => Verdict::Under,
        Some(l) if l > OVER_FACTOR * recommended => Verdict::Over,
        Some(_) => Verdict::Fits,
    };
    let show = |x| resource.show(x);
    let seen = format!(
        "p95 {} over {}",
        show(p95),
        units::count(samples.len(), "sample")
    );
    let sized = format!(
        "{} with {} headroom",
        show(recommended),
        units::percent(headroom)
    );
    let explanation = match (limit, verdict) {
        (Some(l), Verdict::Over) => format!(
            "{instance}: {what} limit {}, {seen}; {sized}: over-provisioned, {} idle",
            show(l),
            show(l - recommended)
        ),
        (Some(l), Verdict::Under) => {
            let advice = if recommended > l {
                format!("raise the limit to {}", show(recommended))
            } else {
                "it runs within 10 % of its limit".to_string()
            };
            format!(
                "{instance}: {what} limit {}, {seen} ({} of the limit); {sized}: \
                 under-provisioned, {advice}",
                show(l),
                units::percent(p95 / l)
            )
        }
        (Some(l), _) => format!(
            "{instance}: {what} limit {}, {seen}; {sized}: fits ({} of the limit in use at p95)",
            show(l),
            units::percent(p95 / l)
        ),
        (None, _) => format!(
            "{instance}: no {what} limit, {seen}; {sized}: a limit of {} would hold it",
            show(recommended)
        ),
    };
    Ok(Sizing {
        samples: samples.len(),
        p95,
        recommended,
        limit,
        verdict,
        explanation,
    })
}

/// Cores in use between consecutive samples of cumulative cpu time: `(time in seconds,
/// cpu seconds)` oldest first, as the daemon's history keeps them. Intervals where time does
/// not advance or the counter went back (the instance restarted) are left out.
pub fn cpu_cores(points: &[(i64, f64)]) -> Vec<f64> {
    points
        .windows(2)
        .filter_map(|w| {
            let (t0, c0) = w[0];
            let (t1, c1) = w[1];
            let dt = t1.checked_sub(t0)? as f64;
            let dc = c1 - c0;
            (dt > 0.0 && dc >= 0.0 && dc.is_finite()).then_some(dc / dt)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn the_nearest_rank_is_one_of_the_samples() {
        assert_eq!(
            percentile(&[15.0, 20.0, 35.0, 40.0, 50.0], 30.0),
            Some(20.0)
        );
        assert_eq!(
            percentile(&[15.0, 20.0, 35.0, 40.0, 50.0], 95.0),
            Some(50.0)
        );
        assert_eq!(percentile(&[3.0, 1.0, 2.0], 50.0), Some(2.0));
        assert_eq!(percentile(&[7.0], 95.0), Some(7.0));
        assert_eq!(percentile(&[], 95.0), None);
        // 1..=100: the 95th of 100 is 95.
        let hundred: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&hundred, 95.0), Some(95.0));
    }

    #[test]
    fn a_constant_load_is_its_own_p95() {
        let samples = vec![0.5; 360];
        let s = right_size("web", Resource::Cpu, &samples, Some(1.0), 0.2).expect("size");
        assert_eq!(s.p95, 0.5);
        assert_eq!(s.recommended, 0.6);
        assert_eq!(s.verdict, Verdict::Fits);
        assert_eq!(
            s.explanation,
            "web: cpu limit 1 core, p95 0.5 cores over 360 samples; 0.6 cores with 20 % \
             headroom: fits (50 % of the limit in use at p95)"
        );
    }

    #[test]
    fn spikes_count_only_past_five_percent_of_the_samples() {
        // 18 spikes in 360 samples are 5 %: rank 342 still falls on the quiet level.
        let mut samples = vec![0.31; 342];
        samples.extend([2.0; 18]);
        let s = right_size("web", Resource::Cpu, &samples, Some(4.0), 0.2).expect("size");
        assert_eq!(s.p95, 0.31);
        assert_eq!(s.recommended, 0.38);
        assert_eq!(s.verdict, Verdict::Over);
        assert_eq!(
            s.explanation,
            "web: cpu limit 4 cores, p95 0.31 cores over 360 samples; 0.38 cores with 20 % \
             headroom: over-provisioned, 3.62 cores idle"
        );
        // One more spike and the spikes are the p95.
        samples[0] = 2.0;
        let s = right_size("web", Resource::Cpu, &samples, Some(4.0), 0.2).expect("size");
        assert_eq!(s.p95, 2.0);
        assert_eq!(s.recommended, 2.4);
        assert_eq!(s.verdict, Verdict::Fits);
    }

    #[test]
    fn memory_near_its_limit_is_under_provisioned() {
        let samples: Vec<f64> = (0..360).map(|i| ((480 + i % 20) * MIB) as f64).collect();
        let s = right_size(
            "db",
            Resource::Memory,
            &samples,
            Some((512 * MIB) as f64),
            0.2,
        )
        .expect("size");
        assert_eq!(s.p95, (498 * MIB) as f64);
        assert_eq!(s.recommended, (598 * MIB) as f64);
        assert_eq!(s.verdict, Verdict::Under);
        assert_eq!(
            s.explanation,
            "db: memory limit 512 MiB, p95 498 MiB over 360 samples (97 % of the limit); \
             598 MiB with 20 % headroom: under-provisioned, raise the limit to 598 MiB"
        );
        let s = right_size(
            "db",
            Resource::Memory,
            &samples,
            Some((512 * MIB) as f64),
            0.0,
        )
        .expect("size");
        assert_eq!(s.verdict, Verdict::Under);
        assert!(
            s.explanation.ends_with("it runs within 10 % of its limit"),
            "{}",
            s.explanation
        );
    }

    #[test]
    fn without_a_limit_the_size_is_a_suggestion() {
        let s = right_size(
            "job",
            Resource::Memory,
            &[(3 * MIB) as f64 / 2.0],
            None,
            0.2,
        )
        .expect("size");
        assert_eq!(s.verdict, Verdict::NoLimit);
        assert_eq!(s.recommended, (2 * MIB) as f64);
        assert_eq!(
            s.explanation,
            "job: no memory limit, p95 1.5 MiB over 1 sample; 2 MiB with 20 % headroom: a \
             limit of 2 MiB would hold it"
        );
        // An idle instance still gets the smallest step.
        let idle = right_size("idle", Resource::Cpu, &[0.0; 10], None, 0.2).expect("size");
        assert_eq!(idle.recommended, 0.01);
    }

    #[test]
    fn unusable_samples_and_settings_are_refused() {
        let err = |r: Result<Sizing, SizingError>| r.expect_err("refused").to_string();
        assert_eq!(
            err(right_size("web", Resource::Cpu, &[], Some(1.0), 0.2)),
            "web: no cpu samples recorded yet; size it after it has run a while"
        );
        assert_eq!(
            err(right_size(
                "web",
                Resource::Cpu,
                &[1.0, f64::NAN, -1.0],
                None,
                0.2
            )),
            "web: 2 of 3 cpu samples are not numbers of at least 0"
        );
        assert_eq!(
            err(right_size("web", Resource::Cpu, &[1.0], None, -0.1)),
            "headroom -0.1 is not a fraction of at least 0 (0.2 is 20 %)"
        );
        assert_eq!(
            err(right_size("web", Resource::Memory, &[1.0], Some(0.0), 0.2)),
            "web: memory limit 0 is not a positive number"
        );
    }

    #[test]
    fn cores_come_from_the_rate_of_cumulative_cpu_time() {
        let points = [
            (0, 0.0),
            (10, 5.0),
            (20, 15.0),
            (20, 16.0),
            (30, 2.0),
            (40, 4.0),
        ];
        assert_eq!(cpu_cores(&points), [0.5, 1.0, 0.2]);
        assert!(cpu_cores(&[(0, 1.0)]).is_empty());
    }
}
