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
