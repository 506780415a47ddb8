//! `vessel plan ...` (from recorded use, or of a stack), `apply` and `destroy`.

use std::path::PathBuf;

use crate::output::Format;

/// `vessel plan`: a stack's plan (`-f`), or a plan from recorded use (`consolidate`).
#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct PlanArgs {
    /// What `vessel apply -f FILE` would do (create, change in place, replace, delete, with
    /// the reason), touching nothing.
    #[arg(short = 'f', long = "file", value_name = "STACK.yaml")]
    pub file: Option<PathBuf>,
    /// Also show what the stack owns and no longer declares (deleted by `apply --prune`).
    #[arg(long)]
    pub prune: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    #[command(subcommand)]
    pub command: Option<PlanCommand>,
}

/// `vessel apply` and `vessel destroy`.
#[derive(Debug, clap::Args)]
pub struct ApplyArgs {
    /// The stack file (YAML or JSON; `-` reads standard input).
    #[arg(short = 'f', long = "file", value_name = "STACK.yaml")]
    pub file: PathBuf,
    /// Delete what the stack owns (labelled user.stack=NAME) and no longer declares.
    #[arg(long)]
    pub prune: bool,
    /// Output format of the plan shown first.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

/// Examples of stacks.
pub const APPLY_EXAMPLES: &str = "A stack (YAML; the schema: vessel plan schema):\n  name: shop\n  networks:\n    lan: {subnet: 10.50.0.0/24}\n  pools:\n    local: {driver: dir}\n  volumes:\n    data: {pool: local}\n  instances:\n    web:\n      image: busybox\n      limits: {cpu: 0.5, memory: 128MiB}\n      command: [httpd, -f, -p, '80']\n      networks: [lan]\n      volumes: [{volume: data, path: /srv}]\n\nExamples:\n  vessel plan -f shop.yaml          # what would change, and why\n  vessel apply -f shop.yaml         # make it so (again: nothing to do)\n  vessel apply -f shop.yaml --prune # also delete what the stack dropped\n  vessel destroy -f shop.yaml       # delete everything the stack owns\n  vessel plan schema > stack.schema.json   # for editors and CI checks\n\nMore in docs/apply.md: projects, pools, forwards, balancers, images, snapshots.";

/// `vessel plan ...`.
#[derive(Debug, clap::Subcommand)]
pub enum PlanCommand {
    /// Right sizes from the recorded use: per instance the p95 of its cpu and memory over the
    /// last hour plus headroom, against its limits; over- and under-provisioned instances
    /// each get a line with the figures. (On one host it right-sizes only.)
    #[command(
        after_help = "Examples:\n  vessel plan consolidate\n  vessel plan consolidate --headroom 30\n  vessel plan consolidate --apply      # set the right sizes\n  vessel plan consolidate --project acme --format json"
    )]
    Consolidate {
        /// Headroom above the p95, in percent (default 20).
        #[arg(long)]
        headroom: Option<String>,
        /// Carry the plan out: each over- or under-provisioned limit set to its right size,
        /// in place (`limits.cpu`, `limits.memory`). Without a cluster this is all there is
        /// to do; an instance without a limit keeps none.
        #[arg(long)]
        apply: bool,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// The JSON Schema of stack files (`vessel apply -f`), for editors and checks in CI; the
    /// same as docs/stack.schema.json.
    Schema,
}
