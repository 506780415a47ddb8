//! `plan consolidate`.

use anyhow::Result;
use vessel_api::{ConsolidationPlan, ResourceSizing};

use crate::cli_plan::PlanCommand;
use crate::client::Client;
use crate::output::{print_document, println, Format, Table};

/// `plan ...`.
pub fn run(client: &Client, cmd: PlanCommand) -> Result<i32> {
    match cmd {
        PlanCommand::Consolidate {
            headroom,
            apply,
            format,
        } => consolidate(client, headroom, apply, format),
        PlanCommand::Schema => {
            let text = serde_json::to_string_pretty(&crate::stack::schema())?;
            println(text)?;
            Ok(0)
        }
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

/// The limits `--apply` sets: for each over- or under-provisioned limit, its key and the
/// right size as the key takes it.
pub fn right_sizes(plan: &ConsolidationPlan) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for i in &plan.instances {
        for (r, key) in [(&i.cpu, "limits.cpu"), (&i.memory, "limits.memory")] {
            let Some(r) = r.as_ref().filter(|r| r.limit.is_some()) else {
                continue;
            };
            if r.verdict != "over" && r.verdict != "under" {
                continue;
            }
            let value = if key == "limits.cpu" {
                // Hundredths of a core, never zero.
                format!("{:.2}", (r.recommended * 100.0).ceil().max(1.0) / 100.0)
            } else {
                // Whole MiB, at least 4.
                let mib = (r.recommended / f64::from(1u32 << 20)).ceil().max(4.0);
                format!("{mib:.0}MiB")
            };
            out.push((i.name.clone(), key.to_string(), value));
        }
    }
    out
}

fn consolidate(
    client: &Client,
    headroom: Option<String>,
    apply: bool,
    format: Format,
) -> Result<i32> {
    let query: Vec<(&str, String)> = headroom.into_iter().map(|h| ("headroom", h)).collect();
    let plan: ConsolidationPlan =
        client.get(&crate::encode::with_query("/1.0/plan/consolidate", &query))?;
    if apply {
        let sizes = right_sizes(&plan);
        for (name, key, value) in &sizes {
            let _: serde_json::Value = client.send(
                "PATCH",
                &format!("{}/config", crate::commands::instance_path(name)),
                &vessel_api::InstanceConfigPatch {
                    set: [(key.clone(), value.clone())].into(),
                    unset: Vec::new(),
                },
            )?;
            if format == Format::Table {
                println(format!("{name}: {key}={value}"))?;
            }
        }
        if format == Format::Table {
            println(format!("{} limit(s) set to their right size.", sizes.len()))?;
        } else {
            let doc: Vec<_> = sizes
                .iter()
                .map(|(n, k, v)| serde_json::json!({"instance": n, "key": k, "value": v}))
                .collect();
            print_document(format, &doc)?;
        }
        return Ok(0);
    }
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
