//! Vessel's placement engine: pure decisions about where instances run.
//!
//! - [`place`] and [`Placer`]: the member a new instance goes to, by the cluster's
//!   [`Policy`] (`spread` or `binpack`), its anti-affinity group and its project's
//!   [`Budget`], or an error that says why none will take it ([`PlaceError`], [`NoFit`]).
//! - [`right_size`]: an instance's size from its recorded use (p95 plus headroom) against
//!   its limit.
//!
//! No I/O: the daemon reads members, requests and history, asks, and applies the answer.

#![deny(missing_docs)]

mod model;
mod placement;
mod placer;
mod rightsize;
pub mod sim;
mod units;

pub use model::{Budget, Budgets, Demand, Member, Policy, Request, UnknownPolicy};
pub use placement::{place, Excluded, Exclusion, NoFit, PlaceError, ReasonCounts};
pub use placer::Placer;
pub use rightsize::{cpu_cores, percentile, right_size, Resource, Sizing, SizingError, Verdict};
