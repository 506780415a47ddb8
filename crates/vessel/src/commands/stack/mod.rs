//! `plan -f`, `apply -f` and `destroy -f`: a stack brought in line with what it declares
//! (see `crate::stack`).
//!
//! An apply shows the plan, then works in four phases, reading what is there again before
//! each, so that an interrupted apply is finished by the next: (1) deletions (what
//! `--prune` drops, and the first half of every replacement), last-made first; (2)
//! projects, pools, networks, images and volumes; (3) instances, several made at once;
//! (4) forwards and balancers.

mod exec;
mod read;

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

use anyhow::{Context, Result};

use crate::client::Client;
use crate::output::{print_document, println, Format, Table};
use crate::stack::diff::{self, Remade};
use crate::stack::infra::{self, World};
use crate::stack::step::{Action, Object, Step};
use crate::stack::{self, Stack};
use exec::Clients;

/// Instances made at once.
const PARALLEL_CREATES: usize = 4;

fn clients(client: &Client, stack: &Stack) -> Clients {
    Clients {
        global: client.clone(),
        client: match &stack.project {
            Some(p) => client.clone().in_project(Some(p.clone())),
            None => client.clone(),
        },
    }
}

/// The whole plan: what is there, and the steps.
fn full_plan(c: &Clients, stack: &Stack, prune: bool) -> Result<(World, Vec<Step>)> {
    let w = read::world(&c.global, &c.client, stack, prune)?;
    let mut steps = infra::before_instances(stack, &w, prune).map_err(anyhow::Error::msg)?;
    let remade = Remade {
        networks: replaced(&steps, Object::Network),
        images: replaced(&steps, Object::Image),
    };
    let (want, aliases) = read::desired(stack, &w.images)?;
    let current = if read::project_missing(stack, &w) {
        Vec::new()
    } else {
        read::current(&c.client)?
    };
    let inst = diff::plan(&stack.name, &want, &current, &remade, &aliases, prune)
        .map_err(anyhow::Error::msg)?;
    let mut anew: BTreeSet<String> = BTreeSet::new();
    for s in steps.iter().chain(inst.iter()) {
        if matches!(s.action, Action::Create | Action::Replace)
            && matches!(s.object, Object::Network | Object::Instance)
        {
            anew.insert(format!("{} {}", s.object.name(), s.name));
        }
    }
    steps.extend(inst);
    steps.extend(infra::after_instances(stack, &w.networks, &anew, prune));
    Ok((w, steps))
}

fn replaced(steps: &[Step], object: Object) -> BTreeSet<String> {
    steps
        .iter()
        .filter(|s| s.object == object && s.action == Action::Replace)
        .map(|s| s.name.clone())
        .collect()
}

fn show(stack: &Stack, steps: &[Step], format: Format) -> Result<()> {
    if format != Format::Table {
        let doc: Vec<_> = steps
            .iter()
            .map(|s| {
                serde_json::json!({
                    "kind": s.object.name(),
                    "name": s.name,
                    "action": s.action.verb(),
                    "reason": s.reason,
                })
            })
            .collect();
        return print_document(format, &doc);
    }
    if steps.is_empty() {
        return println(format!("Stack {}: nothing to do.", stack.name));
    }
    let mut t = Table::new(&["KIND", "NAME", "ACTION", "REASON"]);
    for s in steps {
        t.row(vec![
            s.object.name().into(),
            s.name.clone(),
            s.action.verb().into(),
            s.reason.clone(),
        ]);
    }
    t.print()
}

/// `plan -f FILE`: what `apply` would do, touching nothing.
pub fn plan(client: &Client, file: &Path, prune: bool, format: Format) -> Result<i32> {
    let stack = stack::read(file)?;
    let (_, steps) = full_plan(&clients(client, &stack), &stack, prune)?;
    show(&stack, &steps, format)?;
    Ok(0)
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

fn what(s: &Step) -> String {
    format!("{} {} {}", s.action.verb(), s.object.name(), s.name)
}

/// Runs `f` for each step, naming the step in its error, and counts it done.
fn each(
    pb: &indicatif::ProgressBar,
    steps: &[Step],
    f: impl Fn(&Step) -> Result<()>,
) -> Result<()> {
    for s in steps {
        pb.set_message(what(s));
        f(s).with_context(|| what(s))?;
        pb.inc(1);
    }
    Ok(())
}

/// Makes `todo` instances, several at once; the first failure stops taking new ones.
fn create_instances(
    c: &Clients,
    stack: &Stack,
    todo: &[&diff::Desired],
    pb: &indicatif::ProgressBar,
) -> Result<()> {
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let first_error: Mutex<Option<anyhow::Error>> = Mutex::new(None);
    std::thread::scope(|scope| {
        for _ in 0..PARALLEL_CREATES.min(todo.len()) {
            scope.spawn(|| {
                while !failed.load(Ordering::SeqCst) {
                    let Some(d) = todo.get(next.fetch_add(1, Ordering::SeqCst)) else {
                        break;
                    };
                    pb.set_message(format!("create instance {}", d.name));
                    match exec::create_instance(&c.client, stack, d) {
                        Ok(()) => pb.inc(1),
                        Err(e) => {
                            failed.store(true, Ordering::SeqCst);
                            let mut slot = first_error.lock().unwrap_or_else(|p| p.into_inner());
                            slot.get_or_insert(e.context(format!("create instance {}", d.name)));
                        }
                    }
                }
            });
        }
    });
    match first_error.into_inner().unwrap_or_else(|p| p.into_inner()) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Carries out the steps that bring `stack` about; returns how many were carried out.
fn converge(c: &Clients, stack: &Stack, steps: Vec<Step>, prune: bool) -> Result<usize> {
    let pb = progress(steps.len() as u64);
    let done = |pb: &indicatif::ProgressBar, more: usize| {
        let at_least = pb.position() + more as u64;
        if pb.length().unwrap_or(0) < at_least {
            pb.set_length(at_least);
        }
    };
    // 1. Deletions, last-made first; a replacement's first half.
    let mut gone: Vec<Step> = steps
        .iter()
        .filter(|s| {
            s.action == Action::Delete || (s.action == Action::Replace && s.object != Object::Image)
        })
        .cloned()
        .collect();
    gone.sort_by_key(|s| std::cmp::Reverse(s.object));
    for s in &gone {
        pb.set_message(format!("delete {} {}", s.object.name(), s.name));
        exec::delete(c, s).with_context(|| what(s))?;
        if s.action == Action::Delete {
            pb.inc(1);
        }
    }
    // 2. What instances need.
    let w = read::world(&c.global, &c.client, stack, false)?;
    let mut before = infra::before_instances(stack, &w, false).map_err(anyhow::Error::msg)?;
    before.sort_by_key(|s| s.object);
    done(&pb, before.len());
    each(&pb, &before, |s| exec::make(c, stack, s))?;
    // 3. Instances.
    let w = if before.is_empty() {
        w
    } else {
        read::world(&c.global, &c.client, stack, false)?
    };
    if read::project_missing(stack, &w) {
        // Only a destroy gets here: its project went with everything in it.
        let n = pb.position() as usize;
        pb.finish_and_clear();
        return Ok(n);
    }
    let (want, aliases) = read::desired(stack, &w.images)?;
    let current = read::current(&c.client)?;
    let inst = diff::plan(
        &stack.name,
        &want,
        &current,
        &Remade::default(),
        &aliases,
        false,
    )
    .map_err(anyhow::Error::msg)?;
    done(&pb, inst.len());
    let (creates, others): (Vec<Step>, Vec<Step>) =
        inst.into_iter().partition(|s| s.action == Action::Create);
    each(&pb, &others, |s| {
        if s.action == Action::Replace {
            exec::delete_instance(&c.client, &s.name)?;
            let d = want
                .iter()
                .find(|d| d.name == s.name)
                .context("declared instance")?;
            exec::create_instance(&c.client, stack, d)
        } else {
            exec::make(c, stack, s)
        }
    })?;
    let todo: Vec<&diff::Desired> = creates
        .iter()
        .filter_map(|s| want.iter().find(|d| d.name == s.name))
        .collect();
    create_instances(c, stack, &todo, &pb)?;
    // 4. Forwards and balancers, on the networks as they now are.
    let nets: Vec<vessel_api::Network> = if stack.networks.is_empty() {
        Vec::new()
    } else {
        c.client.get("/1.0/networks")?
    };
    let nets: Vec<infra::Network> = nets.into_iter().map(read::network).collect();
    let after = infra::after_instances(stack, &nets, &BTreeSet::new(), prune);
    done(&pb, after.len());
    each(&pb, &after, |s| {
        if s.action == Action::Replace {
            exec::delete(c, s)?;
        }
        exec::make(c, stack, s)
    })?;
    let n = pb.position() as usize;
    pb.finish_and_clear();
    Ok(n)
}

/// `apply -f FILE`: the steps of `plan`, carried out; a second apply has nothing to do,
/// and an interrupted one is finished by the next.
pub fn apply(client: &Client, file: &Path, prune: bool, format: Format) -> Result<i32> {
    let stack = stack::read(file)?;
    let c = clients(client, &stack);
    let (_, steps) = full_plan(&c, &stack, prune)?;
    show(&stack, &steps, format)?;
    if steps.is_empty() {
        return Ok(0);
    }
    let n = converge(&c, &stack, steps, prune)?;
    if format == Format::Table {
        println(format!("Stack {}: {n} step(s) applied.", stack.name))?;
    }
    Ok(0)
}

/// `destroy -f FILE`: deletes everything the stack owns (declared or not), last-made first.
pub fn destroy(client: &Client, file: &Path) -> Result<i32> {
    let declared = stack::read(file)?;
    let empty = Stack {
        name: declared.name.clone(),
        project: declared.project.clone(),
        ..Stack::default()
    };
    let c = clients(client, &empty);
    let (_, steps) = full_plan(&c, &empty, true)?;
    let n = steps.len();
    if n > 0 {
        converge(&c, &empty, steps, true)?;
    }
    println(format!("Stack {}: {n} object(s) deleted.", declared.name))?;
    Ok(0)
}
