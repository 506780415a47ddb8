//! Vessel's placement engine: pure decisions about where instances run.
//!
//! - [`place`] and [`Placer`]: the member a new instance goes to, by the cluster's
//!   [`Policy`] (`spread` or `binpack`), its anti-affinity group and its project's
//!   [`Budget`], or an error that says why none will take it ([`PlaceError`], [`NoFit`]).
//! - [`right_size`]: an instance's size from its recorded use (p95 plus headroom) against
//!   its limit.
//! - [`consolidate`]: the fewest members that hold a cluster's work with headroom, and the
//!   ordered live migrations that get there; [`first_fit_decreasing`] is its baseline.
//!
//! No I/O: the daemon reads members, requests and history, asks, and applies the answer.
//! See `docs/placement.md`.

#![deny(missing_docs)]

mod consolidate;
mod model;
mod placement;
mod placer;
mod rightsize;
pub mod sim;
mod units;

pub use consolidate::{consolidate, first_fit_decreasing, Move, Plan, PlanError};
pub use model::{Budget, Budgets, Demand, Member, Policy, Request, UnknownPolicy};
pub use placement::{place, why_chosen, Excluded, Exclusion, NoFit, PlaceError, ReasonCounts};
pub use placer::Placer;
pub use rightsize::{cpu_cores, percentile, right_size, Resource, Sizing, SizingError, Verdict};
