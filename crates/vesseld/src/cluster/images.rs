//! Images between members: whether one has an image, which has it by a name, sending one
//! to a member that lacks it.

use axum::http::StatusCode;

use super::forward::Target;
use super::instances::get_request;
use super::ClusterService;
use crate::error::{Error, Result};

impl ClusterService {
    /// Whether `to` holds the image `fingerprint` for `project`.
    pub async fn has_image(&self, to: &Target, project: &str, fingerprint: &str) -> Result<bool> {
        let q = vessel_api::PROJECT_QUERY;
        let req = get_request(&format!("/1.0/images/{fingerprint}?{q}={project}"))?;
        let (resp, _) = self.forward(to, req).await?;
        match resp.status() {
            StatusCode::OK => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            other => Err(Error::internal(format!(
                "member {} answered {other} about image {fingerprint}",
                to.name
            ))),
        }
    }

    /// The fingerprint of the image an online other member has as `key` (an alias or a
    /// fingerprint) in `project`'s images; `None` when none has it (or outside a cluster).
    pub async fn find_image(&self, project: &str, key: &str) -> Result<Option<String>> {
        // Asked only by a whole fingerprint or an alias (a prefix is this member's to
        // resolve), in words that go into a path as they are.
        let hex = key.chars().all(|c| c.is_ascii_hexdigit());
        let plain = key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !plain || key.is_empty() || key.len() > 128 || (hex && key.len() >= 12 && key.len() < 64)
        {
            return Ok(None);
        }
        let q = vessel_api::PROJECT_QUERY;
        for peer in self.peers().await? {
            let path = format!("/1.0/images/{key}?{q}={project}");
            match self.get_json::<vessel_api::Image>(&peer, &path).await {
                Ok(image) => return Ok(Some(image.fingerprint)),
                Err(e) => {
                    tracing::debug!(member = %peer.name, image = key, error = %e, "image not there")
                }
            }
        }
        Ok(None)
    }

    /// The images of `project` on each other online member (asked at once, as a member: each
    /// answers its own), by member; nothing outside a cluster. A member that does not answer
    /// in time is left out.
    pub async fn images_elsewhere(&self, project: &str) -> Vec<(String, Vec<vessel_api::Image>)> {
        let peers = match self.peers().await {
            Ok(peers) => peers,
            Err(e) => {
                tracing::debug!(error = %e, "the images of this member only");
                return Vec::new();
            }
        };
        let q = vessel_api::PROJECT_QUERY;
        let path = format!("/1.0/images?{q}={project}");
        let answers = self.ask_each::<Vec<vessel_api::Image>>(&peers, &path).await;
        let mut out = Vec::new();
        for (t, answer) in peers.iter().zip(answers) {
            match answer {
                Ok(images) => out.push((t.name.clone(), images)),
                Err(e) => {
                    tracing::debug!(member = %t.name, error = %e, "images of a member left out")
                }
            }
        }
        out
    }

    /// Imports the image archive `file` (of `image export`) on `to`, into `project`'s
    /// images under the same `fingerprint`; answers once it is there.
    pub async fn import_image_on(
        &self,
        to: &Target,
        project: &str,
        fingerprint: &str,
        file: std::fs::File,
    ) -> Result<()> {
        let q = vessel_api::PROJECT_QUERY;
        let uri = format!("/1.0/images/import?{q}={project}&fingerprint={fingerprint}");
        self.post_file(to, project, &uri, file, "the image").await
    }

    /// Sends the image `fingerprint` of `images` (the images of `images_project`) to `to`,
    /// which lacks it.
    pub async fn send_image(
        &self,
        images: &crate::image::ImageService,
        images_project: &str,
        fingerprint: &str,
        to: &Target,
    ) -> Result<()> {
        let staging = images.staging()?;
        let exported = images.export(fingerprint, &staging).await;
        let file = exported.and_then(|archive| {
            std::fs::File::open(&archive).map_err(|e| Error::internal(format!("{e}")))
        });
        // The open file stays readable after its directory is gone.
        let _ = std::fs::remove_dir_all(&staging);
        self.import_image_on(to, images_project, fingerprint, file?)
            .await
    }
}

/// The images of this member (`me`, `local`) and of the others (`elsewhere`, by member) as
/// one list: an image held by several members once, with every member holding it and the
/// aliases any of them gives it; this member's first, in their order, then the others' as
/// they come. Pure.
pub fn merge_images(
    me: &str,
    local: Vec<vessel_api::Image>,
    elsewhere: Vec<(String, Vec<vessel_api::Image>)>,
) -> Vec<vessel_api::Image> {
    let mut out: Vec<vessel_api::Image> = local
        .into_iter()
        .map(|mut i| {
            i.locations = vec![me.to_string()];
            i
        })
        .collect();
    for (member, images) in elsewhere {
        for image in images {
            match out.iter_mut().find(|i| i.fingerprint == image.fingerprint) {
                Some(i) => {
                    if !i.locations.contains(&member) {
                        i.locations.push(member.clone());
                    }
                    for a in image.aliases {
                        if !i.aliases.contains(&a) {
                            i.aliases.push(a);
                        }
                    }
                }
                None => out.push(vessel_api::Image {
                    locations: vec![member.clone()],
                    ..image
                }),
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(fp: &str, aliases: &[&str]) -> vessel_api::Image {
        vessel_api::Image {
            fingerprint: fp.into(),
            aliases: aliases.iter().map(|a| a.to_string()).collect(),
            source: "busybox".into(),
            kind: Default::default(),
            size_bytes: 1,
            layers: Vec::new(),
            command: Vec::new(),
            environment: Vec::new(),
            working_dir: None,
            user: None,
            exposed_ports: Vec::new(),
            stop_signal: "SIGTERM".into(),
            created_at: String::new(),
            locations: Vec::new(),
        }
    }

    #[test]
    fn an_image_on_several_members_is_listed_once_with_each() {
        let merged = merge_images(
            "m0",
            vec![image("aa", &["busybox"]), image("bb", &[])],
            vec![
                (
                    "m1".into(),
                    vec![image("aa", &["bb-1"]), image("cc", &["web"])],
                ),
                (
                    "m2".into(),
                    vec![image("aa", &["busybox"]), image("cc", &[])],
                ),
            ],
        );
        let seen: Vec<(&str, Vec<&str>, Vec<&str>)> = merged
            .iter()
            .map(|i| {
                (
                    i.fingerprint.as_str(),
                    i.aliases.iter().map(String::as_str).collect(),
                    i.locations.iter().map(String::as_str).collect(),
                )
            })
            .collect();
        assert_eq!(
            seen,
            vec![
                ("aa", vec!["busybox", "bb-1"], vec!["m0", "m1", "m2"]),
                ("bb", vec![], vec!["m0"]),
                ("cc", vec!["web"], vec!["m1", "m2"]),
            ]
        );
        // Outside a cluster nothing is asked: the caller keeps its own list.
        assert!(merge_images("m0", Vec::new(), Vec::new()).is_empty());
    }
}
