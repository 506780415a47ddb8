//! `image build|list|info|delete`.

use anyhow::Result;
use vessel_api::{Image, ImageBuild, ImageSource, Operation};

use super::for_each_name;
use super::list::FINGERPRINT_CHARS;
use crate::cli::{ImageCommand, ImageSourceArg};
use crate::client::Client;
use crate::http::encode_segment;
use crate::operation;
use crate::output::{format_bytes, print_document, println, short, Block, Format, Table};

/// `image ...`.
pub fn run(client: &Client, cmd: ImageCommand) -> Result<i32> {
    match cmd {
        ImageCommand::Build { source, alias } => build(client, source, alias),
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

fn build(client: &Client, source: ImageSourceArg, alias: Option<String>) -> Result<i32> {
    let (source, source_name) = match source {
        ImageSourceArg::Busybox => (ImageSource::Busybox, "busybox"),
    };
    println(format!("Building image from {source_name}"))?;
    let body = ImageBuild {
        source,
        alias: alias.clone(),
    };
    let op: Operation = client.send("POST", "/1.0/images", &body)?;
    let op = operation::wait(client, op)?;
    // The image's fingerprint is in the operation's resources when the daemon put it there;
    // otherwise ask for the image by the alias it was built under.
    let image = match op
        .resources
        .iter()
        .find_map(|r| r.strip_prefix("/1.0/images/"))
    {
        Some(fingerprint) => client.get::<Image>(&image_path(fingerprint)),
        None => client.get::<Image>(&image_path(alias.as_deref().unwrap_or(source_name))),
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
    let images: Vec<Image> = client.get("/1.0/images")?;
    match format {
        Format::Table => images_table(&images).print()?,
        _ => print_document(format, &images)?,
    }
    Ok(0)
}

/// The table `image list` prints.
pub fn images_table(images: &[Image]) -> Table {
    let mut table = Table::new(&["FINGERPRINT", "ALIASES", "SOURCE", "SIZE", "CREATED"]);
    for i in images {
        table.row(vec![
            short(&i.fingerprint, FINGERPRINT_CHARS),
            i.aliases.join(", "),
            i.source.clone(),
            format_bytes(i.size_bytes),
            i.created_at.clone(),
        ]);
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
        .field("Size", format_bytes(i.size_bytes))
        .field(
            "Command",
            if i.command.is_empty() {
                "none".to_string()
            } else {
                i.command.join(" ")
            },
        )
        .field("Stop signal", &i.stop_signal)
        .field("Created", &i.created_at);
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
            size_bytes: 2 << 20,
            command: vec!["/sbin/init".into()],
            stop_signal: "SIGUSR2".into(),
            created_at: "2026-01-01T00:00:00Z".into(),
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
