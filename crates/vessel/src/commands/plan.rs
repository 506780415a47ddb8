//! `plan consolidate`.

use anyhow::Result;
use vessel_api::{ConsolidationPlan, ResourceSizing};

use crate::cli_plan::PlanCommand;
use crate::client::Client;
use crate::output::{print_document, println, Format, Table};

/// `plan ...`.
pub fn run(client: &Client, cmd: PlanCommand) -> Result<i32> {
    match cmd {
        PlanCommand::Consolidate { headroom, format } => consolidate(client, headroom, format),
    }
}

fn shown(r: &Option<ResourceSizing>, memory: bool) -> [String; 4] {
    let Some(r) = r else {
        return ["-".into(), "-".into(), "-".into(), "-".into()];
    };
    let f = |x: f64| {
        if memory {
            crate::output::format_bytes(x as u64)
        } else {
            format!("{x:.2}")
        }
    };
    [
        f(r.p95),
        f(r.recommended),
        r.limit.map(f).unwrap_or_else(|| "none".into()),
        r.verdict.clone(),
    ]
}

fn consolidate(client: &Client, headroom: Option<String>, format: Format) -> Result<i32> {
    let query: Vec<(&str, String)> = headroom.into_iter().map(|h| ("headroom", h)).collect();
    let plan: ConsolidationPlan =
        client.get(&crate::encode::with_query("/1.0/plan/consolidate", &query))?;
    if format != Format::Table {
        print_document(format, &plan)?;
        return Ok(0);
    }
    let mut t = Table::new(&[
        "NAME",
        "CPU P95",
        "CPU SIZE",
        "CPU LIMIT",
        "CPU",
        "MEM P95",
        "MEM SIZE",
        "MEM LIMIT",
        "MEM",
    ]);
    for i in &plan.instances {
        let mut row = vec![i.name.clone()];
        row.extend(shown(&i.cpu, false));
        row.extend(shown(&i.memory, true));
        t.row(row);
    }
    t.print()?;
    println(format!(
        "\nSizes are the p95 of the samples (every {} s, the last hour) plus {:.0} % headroom; {}.",
        plan.interval_seconds,
        plan.headroom * 100.0,
        plan.scope
    ))?;
    for i in &plan.instances {
        for r in [&i.cpu, &i.memory].into_iter().flatten() {
            if r.verdict == "over" || r.verdict == "under" {
                println(format!("  {}", r.explanation))?;
            }
        }
        for n in &i.notes {
            println(format!("  {n}"))?;
        }
    }
    Ok(0)
}
