//! `vessel plan ...`: plans from recorded use.

use crate::output::Format;

/// `vessel plan ...`.
#[derive(Debug, clap::Subcommand)]
pub enum PlanCommand {
    /// Right sizes from the recorded use: per instance the p95 of its cpu and memory over the
    /// last hour plus headroom, against its limits; over- and under-provisioned instances
    /// each get a line with the figures. (On one host it right-sizes only.)
    #[command(
        after_help = "Examples:\n  vessel plan consolidate\n  vessel plan consolidate --headroom 30\n  vessel plan consolidate --project acme --format json"
    )]
    Consolidate {
        /// Headroom above the p95, in percent (default 20).
        #[arg(long)]
        headroom: Option<String>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
}
