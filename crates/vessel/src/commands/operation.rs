//! `operation list|show|wait|cancel`.

use anyhow::Result;
use vessel_api::Operation;

use crate::cli::OperationCommand;
use crate::client::Client;
use crate::encode::encode_segment;
use crate::operation;
use crate::output::{operation_status, print_document, println, yes_no, Block, Format, Table};

/// `operation ...`.
pub fn run(client: &Client, cmd: OperationCommand) -> Result<i32> {
    match cmd {
        OperationCommand::List(args) => {
            let ops: Vec<Operation> = client.get("/1.0/operations")?;
            match args.format {
                Format::Table => operations_table(&ops).print()?,
                format => print_document(format, &ops)?,
            }
        }
        OperationCommand::Show { id, format } => {
            let op: Operation = client.get(&operation_path(&id))?;
            match format {
                Format::Table => operation_block(&op).print()?,
                format => print_document(format, &op)?,
            }
        }
        OperationCommand::Wait { id } => {
            let op: Operation = client.get(&operation_path(&id))?;
            let op = operation::wait(client, op)?;
            println(format!(
                "{}: {}",
                op.description,
                operation_status(op.status)
            ))?;
        }
        OperationCommand::Cancel { id } => {
            let op: Operation = client.call("DELETE", &operation_path(&id))?;
            println(format!(
                "{}: {}",
                op.description,
                operation_status(op.status)
            ))?;
        }
    }
    Ok(0)
}

fn operation_path(id: &str) -> String {
    format!("/1.0/operations/{}", encode_segment(id))
}

fn progress_text(op: &Operation) -> String {
    match (op.progress, op.stage.as_deref()) {
        (Some(p), Some(s)) => format!("{p}% {s}"),
        (Some(p), None) => format!("{p}%"),
        (None, Some(s)) => s.to_string(),
        (None, None) => "-".to_string(),
    }
}

/// The table `operation list` prints.
pub fn operations_table(ops: &[Operation]) -> Table {
    let mut table = Table::new(&[
        "ID",
        "DESCRIPTION",
        "STATUS",
        "PROGRESS",
        "CANCELLABLE",
        "CREATED",
    ]);
    for op in ops {
        table.row(vec![
            op.id.clone(),
            op.description.clone(),
            operation_status(op.status).to_uppercase(),
            progress_text(op),
            yes_no(op.may_cancel).to_uppercase(),
            op.created_at.clone(),
        ]);
    }
    table
}

/// What `operation show` prints for people.
pub fn operation_block(op: &Operation) -> Block {
    let mut b = Block::new();
    b.field("ID", &op.id)
        .field("Description", &op.description)
        .field("Status", operation_status(op.status).to_uppercase())
        .field("Progress", progress_text(op))
        .field("Cancellable", yes_no(op.may_cancel));
    let resources: Vec<(String, String)> = op
        .resources
        .iter()
        .enumerate()
        .map(|(i, r)| (format!("{}", i + 1), r.clone()))
        .collect();
    b.section("Resources", &resources, "none")
        .field("Created", &op.created_at)
        .field("Updated", &op.updated_at);
    if let Some(e) = &op.error {
        b.field("Error message", e);
    }
    b
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::operation_json;

    #[test]
    fn table_and_block() {
        let op: Operation =
            serde_json::from_str(&operation_json("op-1", "running", Some(40), None)).unwrap();
        let t = operations_table(std::slice::from_ref(&op)).render();
        assert!(
            t.contains("| op-1 | Creating instance c1 | RUNNING | 40% unpacking | YES         |"),
            "{t}"
        );
        let b = operation_block(&op).render();
        assert!(
            b.contains("Status: RUNNING\nProgress: 40% unpacking\n"),
            "{b}"
        );
        assert!(b.contains("Resources:\n  1: /1.0/instances/c1\n"), "{b}");
    }
}
