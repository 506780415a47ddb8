//! `image build|list|info|delete`.

use std::fs::File;
use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};
use vessel_api::{
    Image, ImageAlias, ImageBuild, ImagePull, ImageSource, InstancePublish, Operation, VmLayout,
};

use super::for_each_name;
use super::list::FINGERPRINT_CHARS;
use crate::cli::{AliasCommand, ImageCommand, ImageSourceArg, VmLayoutArg};
use crate::client::{Client, RequestBody};
use crate::encode::{encode_segment, with_query};
use crate::operation;
use crate::output::{format_bytes, print_document, println, short, Block, Format, Table};

/// `image ...`.
pub fn run(client: &Client, cmd: ImageCommand) -> Result<i32> {
    match cmd {
        ImageCommand::Build {
            source,
            alias,
            release,
            layout,
        } => build(client, source, alias, release, layout),
        ImageCommand::Pull {
            reference,
            alias,
            insecure,
        } => {
            println(format!("Pulling {reference}"))?;
            let body = ImagePull {
                reference,
                alias,
                insecure,
            };
            let op: Operation = client.send("POST", "/1.0/images/pull", &body)?;
            report_image(client, operation::wait(client, op)?)
        }
        ImageCommand::Import { file, alias, vm } => import(client, &file, alias, vm),
        ImageCommand::Export { image, file } => export(client, &image, &file),
        ImageCommand::Alias(AliasCommand::Add { image, alias }) => {
            let img: Image = client.send(
                "POST",
                &format!("{}/aliases", image_path(&image)),
                &ImageAlias { alias },
            )?;
            println(format!(
                "{} is now known as {}",
                short(&img.fingerprint, FINGERPRINT_CHARS),
                img.aliases.join(", ")
            ))?;
            Ok(0)
        }
        ImageCommand::Alias(AliasCommand::Delete { alias }) => {
            let _: Image = client.call(
                "DELETE",
                &format!("/1.0/images/aliases/{}", encode_segment(&alias)),
            )?;
            Ok(0)
        }
        ImageCommand::List(args) => list(client, args.format),
        ImageCommand::Info { image, format } => info(client, &image, format),
        ImageCommand::Delete { images } => for_each_name(&images, |image| {
            let _: Image = client.call("DELETE", &image_path(image))?;
            Ok(())
        }),
    }
}

fn image_path(image: &str) -> String {
    format!("/1.0/images/{}", encode_segment(image))
}

fn build(
    client: &Client,
    source: ImageSourceArg,
    alias: Option<String>,
    release: Option<String>,
    layout: Option<VmLayoutArg>,
) -> Result<i32> {
    let (source, source_name) = match source {
        ImageSourceArg::Busybox => (ImageSource::Busybox, "busybox"),
        ImageSourceArg::Debian => (ImageSource::Debian, "debian"),
        ImageSourceArg::Vm => (ImageSource::Vm, "vm"),
    };
    println(format!("Building image from {source_name}"))?;
    let body = ImageBuild {
        source,
        alias: alias.clone(),
        release,
        vm_layout: layout.map(|l| match l {
            VmLayoutArg::Initramfs => VmLayout::Initramfs,
            VmLayoutArg::Disk => VmLayout::Disk,
        }),
    };
    let op: Operation = client.send("POST", "/1.0/images", &body)?;
    report_image(client, operation::wait(client, op)?)
}

/// `publish NAME --alias ALIAS`.
pub fn publish(client: &Client, name: &str, alias: String) -> Result<i32> {
    println(format!("Publishing {name} as {alias}"))?;
    let op: Operation = client.send(
        "POST",
        &format!("/1.0/instances/{}/publish", encode_segment(name)),
        &InstancePublish { alias },
    )?;
    report_image(client, operation::wait(client, op)?)
}

fn import(client: &Client, file: &Path, alias: Option<String>, vm: bool) -> Result<i32> {
    let mut f = File::open(file).with_context(|| format!("cannot open {}", file.display()))?;
    let len = f
        .metadata()
        .with_context(|| format!("cannot read {}", file.display()))?
        .len();
    println(format!("Importing {}", file.display()))?;
    let mut query = Vec::new();
    if let Some(a) = alias {
        query.push(("alias", a));
    }
    if vm {
        query.push(("vm", "1".to_string()));
    }
    let target = with_query("/1.0/images/import", &query);
    let op: Operation = client
        .request("POST", &target, RequestBody::Stream(&mut f, len))?
        .json()?;
    report_image(client, operation::wait(client, op)?)
}

fn export(client: &Client, image: &str, file: &Path) -> Result<i32> {
    let mut resp = client.request(
        "GET",
        &format!("{}/export", image_path(image)),
        RequestBody::Empty,
    )?;
    let mut out =
        File::create(file).with_context(|| format!("cannot create {}", file.display()))?;
    let copied = std::io::copy(&mut resp.body, &mut out).and_then(|n| out.flush().map(|_| n));
    match copied {
        Ok(n) => {
            println(format!("Wrote {} ({n} bytes)", file.display()))?;
            Ok(0)
        }
        Err(e) => {
            // A partial archive looks like a whole one later: remove it.
            let _ = std::fs::remove_file(file);
            Err(e).with_context(|| format!("cannot write {}", file.display()))
        }
    }
}

/// Prints the image an operation made, found through the operation's resources.
fn report_image(client: &Client, op: Operation) -> Result<i32> {
    // The daemon lists the image it made among the operation's resources.
    let image = match op
        .resources
        .iter()
        .find_map(|r| r.strip_prefix("/1.0/images/"))
    {
        Some(fingerprint) => client.get::<Image>(&image_path(fingerprint)),
        None => return Ok(0),
    };
    match image {
        Ok(img) => println(format!(
            "Image ready: {} (fingerprint {})",
            img.aliases.join(", "),
            short(&img.fingerprint, FINGERPRINT_CHARS)
        ))?,
        Err(_) => println("Image ready")?,
    }
    Ok(0)
}

fn list(client: &Client, format: Format) -> Result<i32> {
    // In a cluster: every member's images, and where each is.
    let images: Vec<Image> = client.get("/1.0/images?members=all")?;
    match format {
        Format::Table => images_table(&images).print()?,
        _ => print_document(format, &images)?,
    }
    Ok(0)
}

/// The table `image list` prints.
pub fn images_table(images: &[Image]) -> Table {
    // In a cluster the list names every member's images, and where each is.
    let cluster = images.iter().any(|i| !i.locations.is_empty());
    let mut heads = vec!["FINGERPRINT", "ALIASES", "SOURCE", "SIZE", "CREATED"];
    if cluster {
        heads.push("LOCATION");
    }
    let mut table = Table::new(&heads);
    for i in images {
        let mut row = vec![
            short(&i.fingerprint, FINGERPRINT_CHARS),
            i.aliases.join(", "),
            i.source.clone(),
            format_bytes(i.size_bytes),
            i.created_at.clone(),
        ];
        if cluster {
            row.push(i.locations.join(", "));
        }
        table.row(row);
    }
    table
}

fn info(client: &Client, image: &str, format: Format) -> Result<i32> {
    let img: Image = client.get(&image_path(image))?;
    match format {
        Format::Table => image_block(&img).print()?,
        _ => print_document(format, &img)?,
    }
    Ok(0)
}

/// What `image info` prints for people.
pub fn image_block(i: &Image) -> Block {
    let mut b = Block::new();
    b.field("Fingerprint", &i.fingerprint)
        .field(
            "Aliases",
            if i.aliases.is_empty() {
                "none".to_string()
            } else {
                i.aliases.join(", ")
            },
        )
        .field("Source", &i.source)
        .field(
            "Kind",
            match i.kind {
                vessel_api::ImageKind::Container => "container",
                vessel_api::ImageKind::Vm => "vm",
            },
        )
        .field("Size", format_bytes(i.size_bytes))
        .field(
            "Command",
            if i.command.is_empty() {
                "none".to_string()
            } else {
                i.command.join(" ")
            },
        )
        .field("Stop signal", &i.stop_signal);
    if !i.layers.is_empty() {
        b.field("Layers", i.layers.len().to_string());
    }
    if !i.environment.is_empty() {
        b.field("Environment", i.environment.join(" "));
    }
    if let Some(w) = &i.working_dir {
        b.field("Working directory", w);
    }
    if let Some(u) = &i.user {
        b.field("User", u);
    }
    if !i.exposed_ports.is_empty() {
        b.field("Exposed ports", i.exposed_ports.join(", "));
    }
    b.field("Created", &i.created_at);
    b
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{json_response, FakeServer};

    fn sample() -> Image {
        Image {
            fingerprint: "a".repeat(64),
            aliases: vec!["busybox".into(), "tiny".into()],
            source: "busybox".into(),
            kind: vessel_api::ImageKind::Container,
            size_bytes: 2 << 20,
            layers: vec!["b".repeat(64)],
            command: vec!["/sbin/init".into()],
            environment: vec![],
            working_dir: None,
            user: None,
            exposed_ports: vec!["80/tcp".into()],
            stop_signal: "SIGUSR2".into(),
            created_at: "2026-01-01T00:00:00Z".into(),
            locations: Vec::new(),
        }
    }

    #[test]
    fn table_and_block() {
        let t = images_table(&[sample()]).render();
        assert!(
            t.contains("| aaaaaaaaaaaa | busybox, tiny | busybox | 2MiB | 2026-01-01T00:00:00Z |"),
            "{t}"
        );
        let b = image_block(&sample()).render();
        assert!(b.contains("Aliases: busybox, tiny\n"));
        assert!(b.contains("Stop signal: SIGUSR2\n"));
        assert!(
            b.contains("Layers: 1\n") && b.contains("Exposed ports: 80/tcp\n"),
            "{b}"
        );
    }

    #[test]
    fn build_posts_and_waits() {
        let op = |status: &str| {
            serde_json::json!({
                "id": "b1", "description": "Building image busybox", "status": status,
                "resources": ["/1.0/images/abc123"], "may_cancel": false,
                "created_at": "t", "updated_at": "t"
            })
            .to_string()
        };
        let server = FakeServer::start(vec![
            json_response(202, &op("running")),
            json_response(200, &op("success")),
            json_response(200, &serde_json::to_string(&sample()).unwrap()),
        ]);
        let code = build(
            &Client::new(server.path()),
            ImageSourceArg::Busybox,
            Some("tiny".into()),
            None,
            None,
        )
        .unwrap();
        assert_eq!(code, 0);
        let reqs = server.finish();
        assert_eq!(
            (reqs[0].method.as_str(), reqs[0].target.as_str()),
            ("POST", "/1.0/images")
        );
        let body: ImageBuild = serde_json::from_slice(&reqs[0].body).unwrap();
        assert_eq!(body.alias.as_deref(), Some("tiny"));
        assert_eq!(reqs[1].target, "/1.0/operations/b1/wait?timeout=1");
        assert_eq!(reqs[2].target, "/1.0/images/abc123");
    }
}
