//! Stacks: infrastructure declared in one YAML (or JSON) document and brought about by
//! `vessel apply`. This is the first part of it: a stack's instances (image, type, limits,
//! command, environment, networks they join). What a stack owns carries its name in the
//! instance key `user.stack`, so `--prune` and `destroy` never touch anything else.

pub mod diff;

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::Deserialize;

/// The instance key that names the stack an instance belongs to.
pub const OWNER_KEY: &str = "user.stack";

/// A stack document.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Stack {
    /// The stack's name: what its objects are tagged with.
    pub name: String,
    /// Instances, by name.
    #[serde(default)]
    pub instances: BTreeMap<String, InstanceSpec>,
}

/// Whether an instance is a container or a VM.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A system container (the default).
    #[default]
    Container,
    /// A virtual machine.
    Vm,
}

/// One declared instance.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct InstanceSpec {
    /// Image alias or fingerprint.
    pub image: String,
    /// `container` (default) or `vm`.
    #[serde(default, rename = "type")]
    pub kind: Kind,
    /// Limits as `vessel launch -l` takes them: `cpu: 0.5`, `memory: 128MiB`.
    #[serde(default)]
    pub limits: BTreeMap<String, serde_yaml::Value>,
    /// The init command instead of the image's.
    #[serde(default)]
    pub command: Vec<String>,
    /// Environment of the init.
    #[serde(default)]
    pub environment: BTreeMap<String, String>,
    /// Networks to give it a NIC on (existing ones), `eth0` first; none: no NIC.
    #[serde(default)]
    pub networks: Vec<String>,
}

impl InstanceSpec {
    /// The limits as `KEY=VALUE` arguments.
    pub fn limit_args(&self) -> Vec<String> {
        self.limits
            .iter()
            .map(|(k, v)| {
                let v = match v {
                    serde_yaml::Value::String(s) => s.clone(),
                    other => serde_yaml::to_string(other)
                        .unwrap_or_default()
                        .trim()
                        .to_string(),
                };
                format!("{k}={v}")
            })
            .collect()
    }
}

/// Parses a stack from `text` (YAML, which JSON is too); `file` names it in errors, which
/// give the line and the field.
pub fn parse(text: &str, file: &str) -> Result<Stack> {
    let stack: Stack = serde_yaml::from_str(text).map_err(|e| {
        let at = e
            .location()
            .map(|l| format!("{file}:{}:{}", l.line(), l.column()))
            .unwrap_or_else(|| file.to_string());
        anyhow::anyhow!("{at}: {e}")
    })?;
    check(&stack, text, file)?;
    Ok(stack)
}

/// The line of `key:` in `text`, for errors about a value that parsed but is not allowed.
fn line_of(text: &str, key: &str) -> Option<usize> {
    let want = format!("{key}:");
    text.lines()
        .position(|l| l.trim_start().starts_with(&want))
        .map(|i| i + 1)
}

fn check(stack: &Stack, text: &str, file: &str) -> Result<()> {
    let name_ok = |n: &str| {
        !n.is_empty()
            && n.len() <= 63
            && n.starts_with(|c: char| c.is_ascii_alphabetic())
            && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    };
    if !name_ok(&stack.name) {
        bail!(
            "{file}:{}: name: {:?} is not a stack name (letters, digits and '-', starting with a letter)",
            line_of(text, "name").unwrap_or(1),
            stack.name
        );
    }
    for (name, spec) in &stack.instances {
        let at = line_of(text, name).unwrap_or(1);
        if !name_ok(name) {
            bail!("{file}:{at}: instances.{name}: not an instance name (letters, digits and '-', starting with a letter)");
        }
        crate::limits::parse_limits(&spec.limit_args())
            .with_context(|| format!("{file}:{at}: instances.{name}.limits"))?;
        if spec.image.trim().is_empty() {
            bail!("{file}:{at}: instances.{name}.image: empty");
        }
    }
    Ok(())
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
    }

    #[test]
    fn errors_name_the_file_line_and_field() {
        let typo = GOOD.replace("    command:", "    comand:");
        let e = parse(&typo, "s.yaml").unwrap_err().to_string();
        assert!(e.starts_with("s.yaml:8:"), "{e}");
        assert!(e.contains("comand"), "{e}");
        let bad = GOOD.replace("memory: 64MiB", "memory: lots");
        let e = format!("{:#}", parse(&bad, "s.yaml").unwrap_err());
        assert!(e.starts_with("s.yaml:3: instances.web.limits"), "{e}");
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
}
