//! `monitor`: the daemon's event stream, line by line.

use std::io::{BufRead, BufReader};

use anyhow::{bail, Context, Result};
use vessel_api::{Event, EventKind};

use crate::cli::MonitorFormat;
use crate::client::{Client, RequestBody};
use crate::output::{operation_status, println};

/// `monitor`.
pub fn run(client: &Client, format: MonitorFormat) -> Result<i32> {
    let resp = client.request("GET", "/1.0/events", RequestBody::Empty)?;
    let mut lines = BufReader::new(resp.body);
    let mut line = String::new();
    loop {
        line.clear();
        let n = lines
            .read_line(&mut line)
            .context("the event stream from the daemon broke")?;
        if n == 0 {
            bail!("the daemon closed the event stream");
        }
        let text = line.trim();
        if text.is_empty() {
            continue;
        }
        let shown = match format {
            // The API's own objects, byte for byte, fields this client does not know included.
            MonitorFormat::Json => text.to_string(),
            MonitorFormat::Pretty => match serde_json::from_str::<Event>(text) {
                Ok(event) => pretty(&event),
                // A newer daemon's event is still worth seeing.
                Err(_) => format!("unrecognised event: {text}"),
            },
        };
        println(shown)?;
    }
}

/// One event as a line for people.
pub fn pretty(e: &Event) -> String {
    match e.kind {
        EventKind::Lifecycle => format!(
            "{} lifecycle {} {}",
            e.timestamp,
            e.action.as_deref().unwrap_or("-"),
            e.source.as_deref().unwrap_or("")
        )
        .trim_end()
        .to_string(),
        EventKind::Operation => match &e.operation {
            Some(op) => {
                let status = operation_status(op.status);
                let mut line = format!(
                    "{} operation {} {} \"{}\"",
                    e.timestamp, op.id, status, op.description
                );
                if let Some(p) = op.progress {
                    line.push_str(&format!(" {p}%"));
                }
                if let Some(s) = &op.stage {
                    line.push_str(&format!(" ({s})"));
                }
                if let Some(err) = &op.error {
                    line.push_str(&format!(": {err}"));
                }
                line
            }
            None => format!("{} operation", e.timestamp),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pretty_lines() {
        let e: Event = serde_json::from_str(
            r#"{"kind":"lifecycle","timestamp":"T","action":"instance-started","source":"/1.0/instances/c1"}"#,
        )
        .unwrap();
        assert_eq!(pretty(&e), "T lifecycle instance-started /1.0/instances/c1");
        let e: Event = serde_json::from_value(serde_json::json!({
            "kind": "operation", "timestamp": "T",
            "operation": serde_json::from_str::<serde_json::Value>(
                &crate::testutil::operation_json("op-1", "running", Some(5), None)).unwrap()
        }))
        .unwrap();
        assert_eq!(
            pretty(&e),
            "T operation op-1 running \"Creating instance c1\" 5% (unpacking)"
        );
    }
}
