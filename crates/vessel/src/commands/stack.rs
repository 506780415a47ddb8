//! `plan -f`, `apply -f` and `destroy -f`: a stack's instances brought in line with what it
//! declares (see `crate::stack`).

use std::path::Path;

use anyhow::{Context, Result};
use vessel_api::{Image, Instance, InstanceConfigPatch, InstanceCreate, InstanceType, Operation};

use crate::client::{Client, RequestBody};
use crate::commands::instance_path;
use crate::encode::encode_segment;
use crate::operation;
use crate::output::{print_document, println, Format, Table};
use crate::stack::diff::{self, Action, Current, Desired, Step};
use crate::stack::{self, Kind, Stack, OWNER_KEY};

fn kind_of(t: InstanceType) -> Kind {
    match t {
        InstanceType::Container => Kind::Container,
        InstanceType::Vm => Kind::Vm,
    }
}

/// What the stack declares, its images resolved to fingerprints.
fn desired(client: &Client, stack: &Stack) -> Result<Vec<Desired>> {
    let mut out = Vec::new();
    for (name, spec) in &stack.instances {
        let image: Image = client
            .get(&format!("/1.0/images/{}", encode_segment(&spec.image)))
            .with_context(|| format!("instances.{name}.image: {}", spec.image))?;
        let limit_args = spec.limit_args();
        out.push(Desired {
            name: name.clone(),
            image: image.fingerprint,
            kind: spec.kind,
            limits: crate::limits::parse_limits(&limit_args)?,
            limit_args,
            command: spec.command.clone(),
            environment: spec.environment.clone(),
            networks: spec.networks.clone(),
        });
    }
    Ok(out)
}

fn current(client: &Client) -> Result<Vec<Current>> {
    let list: Vec<Instance> = client.get("/1.0/instances")?;
    Ok(list
        .into_iter()
        .map(|i| Current {
            networks: i.nics.iter().map(|n| n.network.clone()).collect(),
            kind: kind_of(i.instance_type),
            name: i.name,
            image: i.image,
            limits: i.limits,
            command: i.command,
            environment: i.environment,
            config: i.config,
        })
        .collect())
}

fn verb(a: &Action) -> &'static str {
    match a {
        Action::Create => "create",
        Action::Change { .. } => "change in place",
        Action::Replace => "replace",
        Action::Delete => "delete",
    }
}

fn steps_for(
    client: &Client,
    file: &Path,
    prune: bool,
) -> Result<(Stack, Vec<Desired>, Vec<Step>)> {
    let stack = stack::read(file)?;
    let want = desired(client, &stack)?;
    let steps =
        diff::plan(&stack.name, &want, &current(client)?, prune).map_err(anyhow::Error::msg)?;
    Ok((stack, want, steps))
}

fn show(stack: &Stack, steps: &[Step], format: Format) -> Result<()> {
    if format != Format::Table {
        let doc: Vec<_> = steps
            .iter()
            .map(|s| {
                serde_json::json!({"instance": s.name, "action": verb(&s.action), "reason": s.reason})
            })
            .collect();
        return print_document(format, &doc);
    }
    if steps.is_empty() {
        return println(format!("Stack {}: nothing to do.", stack.name));
    }
    let mut t = Table::new(&["INSTANCE", "ACTION", "REASON"]);
    for s in steps {
        t.row(vec![
            s.name.clone(),
            verb(&s.action).into(),
            s.reason.clone(),
        ]);
    }
    t.print()
}

/// `plan -f FILE`: what `apply` would do, touching nothing.
pub fn plan(client: &Client, file: &Path, prune: bool, format: Format) -> Result<i32> {
    let (stack, _, steps) = steps_for(client, file, prune)?;
    show(&stack, &steps, format)?;
    Ok(0)
}

fn create(client: &Client, stack: &Stack, d: &Desired) -> Result<()> {
    let body = InstanceCreate {
        name: d.name.clone(),
        image: d.image.clone(),
        instance_type: match d.kind {
            Kind::Container => InstanceType::Container,
            Kind::Vm => InstanceType::Vm,
        },
        privileged: false,
        idmap_isolated: None,
        limits: d.limits.clone(),
        start: true,
        command: (!d.command.is_empty()).then(|| d.command.clone()),
        environment: d.environment.clone(),
        ssh_keys: Vec::new(),
        storage: None,
        networks: d.networks.clone(),
        no_network: d.networks.is_empty(),
        profiles: Vec::new(),
        config: [(OWNER_KEY.to_string(), stack.name.clone())].into(),
        volumes: Vec::new(),
    };
    let op: Operation = client.send("POST", "/1.0/instances", &body)?;
    operation::wait(client, op)?;
    Ok(())
}

fn delete(client: &Client, name: &str) -> Result<()> {
    let op: Operation = client
        .request(
            "DELETE",
            &format!("{}?force=1", instance_path(name)),
            RequestBody::Empty,
        )?
        .json()?;
    operation::wait(client, op)?;
    Ok(())
}

fn progress(n: u64) -> indicatif::ProgressBar {
    let pb =
        indicatif::ProgressBar::with_draw_target(Some(n), indicatif::ProgressDrawTarget::stderr());
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} {elapsed}")
    {
        pb.set_style(style.progress_chars("=> "));
    }
    pb
}

/// `apply -f FILE`: the steps of `plan`, carried out deletes first, then replacements,
/// changes and creations; a second apply has nothing to do, and an interrupted one is
/// finished by the next.
pub fn apply(client: &Client, file: &Path, prune: bool, format: Format) -> Result<i32> {
    let (stack, want, mut steps) = steps_for(client, file, prune)?;
    show(&stack, &steps, format)?;
    steps.sort_by_key(|s| match s.action {
        Action::Delete => 0,
        Action::Replace => 1,
        Action::Change { .. } => 2,
        Action::Create => 3,
    });
    let pb = progress(steps.len() as u64);
    for s in &steps {
        pb.set_message(format!("{} {}", verb(&s.action), s.name));
        let d = || {
            want.iter()
                .find(|d| d.name == s.name)
                .context("declared instance")
        };
        match &s.action {
            Action::Create => create(client, &stack, d()?)?,
            Action::Replace => {
                delete(client, &s.name)?;
                create(client, &stack, d()?)?;
            }
            Action::Delete => delete(client, &s.name)?,
            Action::Change { set, unset } => {
                let body = InstanceConfigPatch {
                    set: set.clone(),
                    unset: unset.clone(),
                };
                let _: serde_json::Value = client.send(
                    "PATCH",
                    &format!("{}/config", instance_path(&s.name)),
                    &body,
                )?;
            }
        }
        pb.inc(1);
    }
    pb.finish_and_clear();
    if format == Format::Table && !steps.is_empty() {
        println(format!(
            "Stack {}: {} step(s) applied.",
            stack.name,
            steps.len()
        ))?;
    }
    Ok(0)
}

/// `destroy -f FILE`: deletes every instance the stack owns (declared or not).
pub fn destroy(client: &Client, file: &Path) -> Result<i32> {
    let stack = stack::read(file)?;
    let owned: Vec<String> = current(client)?
        .into_iter()
        .filter(|c| c.config.get(OWNER_KEY) == Some(&stack.name))
        .map(|c| c.name)
        .collect();
    let pb = progress(owned.len() as u64);
    for name in &owned {
        pb.set_message(format!("delete {name}"));
        delete(client, name)?;
        pb.inc(1);
    }
    pb.finish_and_clear();
    println(format!(
        "Stack {}: {} instance(s) deleted.",
        stack.name,
        owned.len()
    ))?;
    Ok(0)
}
