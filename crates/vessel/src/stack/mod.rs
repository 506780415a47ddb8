//! Stacks: infrastructure declared in one YAML (or JSON) document and brought about by
//! `vessel apply`: projects, pools, volumes, networks with their forwards and balancers,
//! images and instances. What a stack makes carries its name in the label `user.stack`, so
//! `--prune` and `destroy` never touch anything else. The plan is a pure function of the
//! document and what is there (`diff`, `infra`); `commands::stack` reads and acts.

mod check;
pub mod diff;
pub mod infra;
pub mod spec;
pub mod step;

use std::path::Path;

use anyhow::{Context, Result};

pub use spec::{Kind, Stack};

/// The label that names the stack an object belongs to.
pub const OWNER_KEY: &str = "user.stack";

/// Parses a stack from `text` (YAML, which JSON is too); `file` names it in errors, which
/// give the line and the field.
pub fn parse(text: &str, file: &str) -> Result<Stack> {
    let stack: Stack = serde_yaml::from_str(text).map_err(|e| {
        let at = e
            .location()
            .map(|l| format!("{file}:{}:{}", l.line(), l.column()))
            .unwrap_or_else(|| file.to_string());
        // The message ends with the location given first already.
        let msg = e.to_string();
        let msg = match msg.rfind(" at line ") {
            Some(i) if e.location().is_some() => msg[..i].to_string(),
            _ => msg,
        };
        anyhow::anyhow!("{at}: {msg}")
    })?;
    check::check(&stack).map_err(|(path, why)| {
        let line = locate(text, &path);
        anyhow::anyhow!("{file}:{line}: {}: {why}", path.join("."))
    })?;
    Ok(stack)
}

/// The line of the field at `path` (`["instances", "web", "limits"]`) in a block-style
/// YAML `text`: each part is looked for below the line of the one before, deeper indented;
/// where a part is not found (flow style, a list), the line of the last found.
pub fn locate(text: &str, path: &[String]) -> usize {
    let lines: Vec<&str> = text.lines().collect();
    let indent = |l: &str| l.len() - l.trim_start().len();
    let (mut at, mut depth): (usize, Option<usize>) = (0, None);
    let mut found = 1;
    for part in path {
        let want = [
            format!("{part}:"),
            format!("\"{part}\":"),
            format!("'{part}':"),
        ];
        let hit = lines.iter().enumerate().skip(at).find(|(i, l)| {
            let t = l.trim_start().trim_start_matches("- ");
            let deeper = depth.is_none_or(|d| indent(l) > d || *i == at);
            deeper && want.iter().any(|w| t.starts_with(w.as_str()))
        });
        match hit {
            Some((i, l)) => {
                found = i + 1;
                at = i + 1;
                depth = Some(indent(l));
            }
            None => break,
        }
    }
    found
}

/// Reads and parses the stack file at `path` (`-` is standard input).
pub fn read(path: &Path) -> Result<Stack> {
    let (text, shown) = if path == Path::new("-") {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)?;
        (s, "<stdin>".to_string())
    } else {
        (
            std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the stack file {}", path.display()))?,
            path.display().to_string(),
        )
    };
    parse(&text, &shown)
}

/// The JSON Schema of a stack document, generated from its types.
pub fn schema() -> serde_json::Value {
    let mut s = serde_json::to_value(schemars::schema_for!(Stack)).expect("a schema is JSON");
    s["$id"] = "https://vessel.dev/schemas/stack.schema.json".into();
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "name: demo\ninstances:\n  web:\n    image: busybox\n    limits:\n      cpu: 0.5\n      memory: 64MiB\n    command: [sh, -c, 'sleep 1000']\n  db:\n    image: busybox\n    type: vm\n";

    #[test]
    fn a_stack_parses_with_its_limits_as_launch_takes_them() {
        let s = parse(GOOD, "s.yaml").unwrap();
        assert_eq!(s.name, "demo");
        let web = &s.instances["web"];
        assert_eq!(web.limit_args(), vec!["cpu=0.5", "memory=64MiB"]);
        assert_eq!(s.instances["db"].kind, Kind::Vm);
        let two = parse(&GOOD.replace("cpu: 0.5", "cpu: 2"), "s.yaml").unwrap();
        assert_eq!(two.instances["web"].limit_args()[0], "cpu=2");
    }

    #[test]
    fn errors_name_the_file_line_and_field() {
        let typo = GOOD.replace("    command:", "    comand:");
        let e = parse(&typo, "s.yaml").unwrap_err().to_string();
        assert!(e.starts_with("s.yaml:8:"), "{e}");
        assert!(e.contains("comand"), "{e}");
        let bad = GOOD.replace("memory: 64MiB", "memory: lots");
        let e = format!("{:#}", parse(&bad, "s.yaml").unwrap_err());
        assert!(e.starts_with("s.yaml:5: instances.web.limits"), "{e}");
        let e = parse(
            "name: demo\ninstances:\n  web: {type: container}\n",
            "s.yaml",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("image"), "{e}");
        let e = parse("name: 9lives\n", "s.yaml").unwrap_err().to_string();
        assert!(e.starts_with("s.yaml:1: name"), "{e}");
    }

    #[test]
    fn the_line_is_found_below_the_section_it_belongs_to() {
        let text = "name: s\nnetworks:\n  web:\n    subnet: 10.0.0.0/24\ninstances:\n  web:\n    image: busybox\n    networks: [nope]\n";
        let p = |parts: &[&str]| parts.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(locate(text, &p(&["instances", "web", "networks"])), 8);
        assert_eq!(locate(text, &p(&["networks", "web"])), 3);
        assert_eq!(locate(text, &p(&["instances", "web", "volumes"])), 6);
    }

    #[test]
    fn the_schema_describes_every_section() {
        let s = schema();
        let props = &s["properties"];
        for k in [
            "name",
            "project",
            "projects",
            "pools",
            "volumes",
            "networks",
            "images",
            "instances",
        ] {
            assert!(props.get(k).is_some(), "{k} missing from {s}");
        }
        assert_eq!(s["additionalProperties"], false);
    }

    /// docs/stack.schema.json is what `vessel plan schema` prints (`VESSEL_BLESS=1` writes it).
    #[test]
    fn the_published_schema_is_the_generated_one() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/stack.schema.json");
        let text = serde_json::to_string_pretty(&schema()).unwrap() + "\n";
        if std::env::var_os("VESSEL_BLESS").is_some() {
            std::fs::write(&path, &text).unwrap();
        }
        let published = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            published == text,
            "{} is not the schema of the stack types: run VESSEL_BLESS=1 cargo test -p vessel",
            path.display()
        );
    }

    /// The stack in `vessel apply --help` parses and checks.
    #[test]
    fn the_help_example_is_a_stack() {
        let text = crate::cli_plan::APPLY_EXAMPLES;
        let body = text.split("\n\nExamples").next().unwrap();
        let yaml: String = body
            .lines()
            .skip(1)
            .map(|l| l.strip_prefix("  ").unwrap_or(l).to_string() + "\n")
            .collect();
        let s = parse(&yaml, "help").unwrap();
        assert_eq!(s.instances["web"].volumes[0].volume, "data");
    }
}
