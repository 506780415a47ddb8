//! `auth ...`, `audit`, `config ...` and `project ...`.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use vessel_api::{
    AuditEntry, CertificateTrust, Identity, Project, ProjectCreate, ProjectUpdate, TokenCreate,
    TokenCreated,
};

use crate::cli_auth::{AuthCommand, ProjectCommand, TokenCommand, TrustCommand};
use crate::client::Client;
use crate::output::{print_document, println, Block, Format, Table};

/// `auth ...`.
pub fn run(client: &Client, cmd: AuthCommand) -> Result<i32> {
    match cmd {
        AuthCommand::Token(TokenCommand::Create {
            name,
            role,
            project,
            expires,
            format,
        }) => {
            let req = TokenCreate {
                name,
                project: Some(project),
                role,
                expires,
            };
            let made: TokenCreated = client.send("POST", "/1.0/auth/tokens", &req)?;
            match format {
                Format::Table => {
                    println(format!(
                        "Token of {} (role {}, project {}{}):",
                        made.identity.name,
                        made.identity.role,
                        made.identity.project,
                        made.identity
                            .expires_at
                            .as_deref()
                            .map(|e| format!(", expires {e}"))
                            .unwrap_or_default()
                    ))?;
                    println(&made.token)?;
                    eprintln!(
                        "It is shown this once; the daemon keeps only its hash. On a client: \
                         vessel remote add NAME https://HOST:PORT --token TOKEN"
                    );
                }
                format => print_document(format, &made)?,
            }
        }
        AuthCommand::Trust(TrustCommand::Add {
            certificate,
            name,
            role,
            project,
            expires,
        }) => {
            let pem = std::fs::read_to_string(&certificate)
                .with_context(|| format!("cannot read {}", certificate.display()))?;
            let name = match name {
                Some(n) => n,
                None => certificate
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .context("name the identity with --name")?,
            };
            let req = CertificateTrust {
                name,
                certificate: pem,
                project: Some(project),
                role,
                expires,
            };
            let id: Identity = client.send("POST", "/1.0/auth/certificates", &req)?;
            println(format!(
                "Trusted {} (role {}, project {}), fingerprint {}",
                id.name,
                id.role,
                id.project,
                id.fingerprint.as_deref().unwrap_or("?")
            ))?;
        }
        AuthCommand::List { format } => {
            let ids: Vec<Identity> = client.get("/1.0/auth/identities")?;
            match format {
                Format::Table => identities_table(&ids).print()?,
                format => print_document(format, &ids)?,
            }
        }
        AuthCommand::Revoke { name } => {
            let path = format!(
                "/1.0/auth/identities/{}",
                crate::encode::encode_segment(&name)
            );
            let id: Identity = client.call("DELETE", &path)?;
            println(format!("Revoked {}", id.name))?;
        }
        AuthCommand::Whoami { format } => {
            let id: Identity = client.get("/1.0/auth/self")?;
            match format {
                Format::Table => {
                    let mut b = Block::new();
                    b.field("Name", &id.name)
                        .field("Kind", format!("{:?}", id.kind).to_lowercase())
                        .field("Project", &id.project)
                        .field("Role", id.role);
                    if let Some(e) = &id.expires_at {
                        b.field("Expires", e);
                    }
                    b.print()?;
                }
                format => print_document(format, &id)?,
            }
        }
    }
    Ok(0)
}

fn identities_table(ids: &[Identity]) -> Table {
    let mut t = Table::new(&["NAME", "KIND", "PROJECT", "ROLE", "EXPIRES", "FINGERPRINT"]);
    for i in ids {
        t.row(vec![
            i.name.clone(),
            format!("{:?}", i.kind).to_uppercase(),
            i.project.clone(),
            i.role.to_string(),
            i.expires_at.clone().unwrap_or_else(|| "-".into()),
            i.fingerprint
                .as_deref()
                .map(|f| crate::output::short(f, 16))
                .unwrap_or_else(|| "-".into()),
        ]);
    }
    t
}

/// `audit`.
pub fn audit(
    client: &Client,
    project: Option<String>,
    since: Option<String>,
    limit: Option<u32>,
    format: Format,
) -> Result<i32> {
    let mut query = Vec::new();
    if let Some(p) = project {
        query.push(("project", p));
    }
    if let Some(s) = since {
        query.push(("since", s));
    }
    if let Some(l) = limit {
        query.push(("limit", l.to_string()));
    }
    let entries: Vec<AuditEntry> = client.get(&crate::encode::with_query("/1.0/audit", &query))?;
    match format {
        Format::Table => {
            let mut t = Table::new(&["TIME", "IDENTITY", "PROJECT", "ACTION", "TARGET", "STATUS"]);
            for e in &entries {
                t.row(vec![
                    e.time.clone(),
                    e.identity.clone(),
                    e.project.clone(),
                    e.action.clone(),
                    e.target.clone(),
                    e.status.to_string(),
                ]);
            }
            t.print()?;
        }
        format => print_document(format, &entries)?,
    }
    Ok(0)
}

fn pairs(items: &[String]) -> Result<BTreeMap<String, String>> {
    items
        .iter()
        .map(|p| match p.split_once('=') {
            Some((k, v)) => Ok((k.to_string(), v.to_string())),
            None => anyhow::bail!("{p:?} is not KEY=VALUE (e.g. limits.instances=5)"),
        })
        .collect()
}

fn project_path(name: &str) -> String {
    format!("/1.0/projects/{}", crate::encode::encode_segment(name))
}

/// `project ...`.
pub fn project(client: &Client, cmd: ProjectCommand) -> Result<i32> {
    match cmd {
        ProjectCommand::Create {
            name,
            config,
            description,
        } => {
            let req = ProjectCreate {
                name,
                description,
                config: pairs(&config)?,
            };
            let p: Project = client.send("POST", "/1.0/projects", &req)?;
            println(format!("Project {} created", p.name))?;
        }
        ProjectCommand::List { format } => {
            let list: Vec<Project> = client.get("/1.0/projects?recursion=1")?;
            match format {
                Format::Table => {
                    let mut t = Table::new(&["NAME", "INSTANCES", "LIMITS", "DESCRIPTION"]);
                    for p in &list {
                        let limits: Vec<String> =
                            p.config.iter().map(|(k, v)| format!("{k}={v}")).collect();
                        t.row(vec![
                            p.name.clone(),
                            p.usage
                                .as_ref()
                                .map(|u| u.instances.to_string())
                                .unwrap_or_default(),
                            if limits.is_empty() {
                                "-".into()
                            } else {
                                limits.join(" ")
                            },
                            p.description.clone(),
                        ]);
                    }
                    t.print()?;
                }
                format => print_document(format, &list)?,
            }
        }
        ProjectCommand::Info { name, format } => {
            let name = name
                .or_else(|| client.project().map(str::to_string))
                .unwrap_or_else(|| vessel_api::DEFAULT_PROJECT.to_string());
            let p: Project = client.get(&project_path(&name))?;
            match format {
                Format::Table => project_block(&p).print()?,
                format => print_document(format, &p)?,
            }
        }
        ProjectCommand::Set { name, pairs: items } => {
            let req = ProjectUpdate {
                description: None,
                config: pairs(&items)?,
            };
            let _: Project = client.send("PATCH", &project_path(&name), &req)?;
        }
        ProjectCommand::Unset { name, key } => {
            let req = ProjectUpdate {
                description: None,
                config: BTreeMap::from([(key, String::new())]),
            };
            let _: Project = client.send("PATCH", &project_path(&name), &req)?;
        }
        ProjectCommand::Delete { name } => {
            let p: Project = client.call("DELETE", &project_path(&name))?;
            println(format!("Project {} deleted", p.name))?;
        }
        ProjectCommand::Switch { .. } => unreachable!("handled by project_switch"),
    }
    Ok(0)
}

/// What `project info` shows: each limit beside its use.
fn project_block(p: &Project) -> Block {
    let mut b = Block::new();
    b.field("Name", &p.name);
    if !p.description.is_empty() {
        b.field("Description", &p.description);
    }
    let u = p.usage.clone().unwrap_or_default();
    let limit = |k: &str| p.config.get(k).cloned().unwrap_or_else(|| "-".into());
    let rows = [
        ("limits.instances", u.instances.to_string()),
        ("limits.containers", u.containers.to_string()),
        ("limits.virtual-machines", u.virtual_machines.to_string()),
        ("limits.cpu", format!("{}", u.cpu)),
        ("limits.memory", crate::output::format_bytes(u.memory)),
        ("limits.processes", u.processes.to_string()),
        ("limits.disk", crate::output::format_bytes(u.disk)),
        ("limits.networks", u.networks.to_string()),
    ];
    let items: Vec<(String, String)> = rows
        .iter()
        .map(|(k, used)| (k.to_string(), format!("{used} used of {}", limit(k))))
        .collect();
    b.section("Limits", &items, "-");
    b
}

/// `project switch NAME`: checked against the daemon, then kept for this remote.
pub fn project_switch(
    client: &Client,
    remote: &str,
    name: &str,
    config_path: &std::path::Path,
) -> Result<i32> {
    let _: Project = client.get(&project_path(name))?;
    let mut config = crate::remote::Config::load(config_path)?;
    if name == vessel_api::DEFAULT_PROJECT {
        config.projects.remove(remote);
    } else {
        config.projects.insert(remote.to_string(), name.to_string());
    }
    config.save(config_path)?;
    println(format!("Commands on {remote} are now about project {name}"))?;
    Ok(0)
}
