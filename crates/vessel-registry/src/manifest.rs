//! Manifests, indexes and image configs as the registry sends them (OCI and Docker v2).

use std::collections::BTreeMap;

use serde::Deserialize;
use vessel_image::{Digest, ImageConfig};

/// OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Docker image manifest, schema 2.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker manifest list.
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// OCI image config.
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// Docker image config.
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";

/// The `Accept` header of manifest requests: every kind Vessel can pull.
pub(crate) const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
    application/vnd.docker.distribution.manifest.list.v2+json, \
    application/vnd.oci.image.manifest.v1+json, \
    application/vnd.docker.distribution.manifest.v2+json";

/// The platform Vessel runs images for.
pub(crate) const WANTED_OS: &str = "linux";
/// The architecture Vessel runs images for.
pub(crate) const WANTED_ARCH: &str = "amd64";

/// A pointer to content: media type, digest and size.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Descriptor {
    #[serde(default)]
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default)]
    pub platform: Option<Platform>,
}

/// Platform of an index entry.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Platform {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub variant: Option<String>,
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// Either kind of top-level document.
#[derive(Debug)]
pub(crate) enum Document {
    /// An image manifest.
    Manifest(ImageManifest),
    /// An index (manifest list) of per-platform manifests.
    Index(Vec<Descriptor>),
}

/// An image manifest: one config and its layers, bottom first.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct ImageManifest {
    pub config: Descriptor,
    #[serde(default)]
    pub layers: Vec<Descriptor>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Probe {
    #[serde(default)]
    schema_version: Option<i64>,
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    manifests: Option<serde_json::Value>,
    #[serde(default)]
    config: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct RawIndex {
    manifests: Vec<Descriptor>,
}

/// Parses a manifest or index. `content_type` is the answer's `Content-Type`; the document's
/// own `mediaType` wins when present. `Err` is a reason for the user.
pub(crate) fn parse_document(bytes: &[u8], content_type: &str) -> Result<Document, DocError> {
    let probe: Probe =
        serde_json::from_slice(bytes).map_err(|e| DocError::Malformed(e.to_string()))?;
    let header = content_type.split(';').next().unwrap_or("").trim();
    let media = probe
        .media_type
        .as_deref()
        .filter(|m| !m.is_empty())
        .unwrap_or(header);
    if probe.schema_version == Some(1)
        || media.starts_with("application/vnd.docker.distribution.manifest.v1")
    {
        return Err(DocError::Unsupported(
            "it is a Docker schema 1 manifest, which is deprecated; push the image again with a current tool".into(),
        ));
    }
    let is_index = match media {
        OCI_INDEX | DOCKER_LIST => true,
        OCI_MANIFEST | DOCKER_MANIFEST => false,
        // Generic or missing types: go by the document's shape.
        _ if probe.manifests.is_some() => true,
        _ if probe.config.is_some() => false,
        other => {
            return Err(DocError::Unsupported(format!(
                "media type {other:?} is neither an image manifest nor an index"
            )))
        }
    };
    if is_index {
        let idx: RawIndex =
            serde_json::from_slice(bytes).map_err(|e| DocError::Malformed(e.to_string()))?;
        Ok(Document::Index(idx.manifests))
    } else {
        let m: ImageManifest =
            serde_json::from_slice(bytes).map_err(|e| DocError::Malformed(e.to_string()))?;
        if !matches!(
            m.config.media_type.as_str(),
            OCI_CONFIG | DOCKER_CONFIG | ""
        ) {
            return Err(DocError::Unsupported(format!(
                "its config is {:?}, not a container image config (is it an artifact?)",
                m.config.media_type
            )));
        }
        Ok(Document::Manifest(m))
    }
}

/// Why a document was refused.
#[derive(Debug)]
pub(crate) enum DocError {
    Malformed(String),
    Unsupported(String),
}

/// Picks the linux/amd64 manifest of an index (preferring no variant or `v1`); `Err` lists
/// the platforms there are.
pub(crate) fn select_platform(entries: &[Descriptor]) -> Result<&Descriptor, String> {
    let matching = |d: &&Descriptor| {
        d.platform
            .as_ref()
            .is_some_and(|p| p.os == WANTED_OS && p.architecture == WANTED_ARCH)
            && matches!(d.media_type.as_str(), OCI_MANIFEST | DOCKER_MANIFEST | "")
    };
    let plain = |d: &&Descriptor| {
        d.platform
            .as_ref()
            .is_some_and(|p| matches!(p.variant.as_deref(), None | Some("") | Some("v1")))
    };
    entries
        .iter()
        .filter(matching)
        .find(plain)
        .or_else(|| entries.iter().find(matching))
        .ok_or_else(|| {
            let mut seen: Vec<String> = entries
                .iter()
                .map(|d| {
                    d.platform
                        .as_ref()
                        .map_or("unknown".into(), |p| p.to_string())
                })
                .collect();
            seen.dedup();
            if seen.is_empty() {
                "none (the index is empty)".into()
            } else {
                seen.join(", ")
            }
        })
}

/// The parts of an image config a pull reads.
#[derive(Debug, Deserialize)]
pub(crate) struct RawConfig {
    #[serde(default)]
    pub architecture: Option<String>,
    #[serde(default)]
    pub os: Option<String>,
    #[serde(default)]
    pub config: Option<RunConfig>,
    #[serde(default)]
    pub rootfs: Option<RootFs>,
}

/// The layer diff ids.
#[derive(Debug, Deserialize)]
pub(crate) struct RootFs {
    #[serde(default)]
    pub diff_ids: Vec<Digest>,
}

/// The `config` block (Docker's capitalised names; `null` is allowed everywhere).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct RunConfig {
    #[serde(default)]
    entrypoint: Option<Vec<String>>,
    #[serde(default)]
    cmd: Option<Vec<String>>,
    #[serde(default)]
    env: Option<Vec<String>>,
    #[serde(default)]
    working_dir: Option<String>,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    exposed_ports: Option<BTreeMap<String, serde_json::Value>>,
    #[serde(default)]
    stop_signal: Option<String>,
    #[serde(default)]
    labels: Option<BTreeMap<String, String>>,
}

impl RunConfig {
    /// Into Vessel's image config.
    pub fn into_image_config(self) -> ImageConfig {
        let nonempty = |s: Option<String>| s.filter(|s| !s.is_empty());
        ImageConfig {
            entrypoint: self.entrypoint.unwrap_or_default(),
            cmd: self.cmd.unwrap_or_default(),
            env: self.env.unwrap_or_default(),
            working_dir: nonempty(self.working_dir),
            user: nonempty(self.user),
            exposed_ports: self
                .exposed_ports
                .unwrap_or_default()
                .into_keys()
                .map(|p| {
                    if p.contains('/') {
                        p
                    } else {
                        format!("{p}/tcp")
                    }
                })
                .collect(),
            stop_signal: nonempty(self.stop_signal),
            labels: self.labels.unwrap_or_default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(n: u8) -> String {
        format!("sha256:{}", format!("{n:02x}").repeat(32))
    }

    #[test]
    fn documents_are_told_apart() {
        let m = format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"{OCI_CONFIG}","digest":"{}","size":3}},"layers":[{{"mediaType":"x","digest":"{}","size":5}}]}}"#,
            d(1),
            d(2)
        );
        match parse_document(m.as_bytes(), "application/json").unwrap() {
            Document::Manifest(m) => assert_eq!(m.layers[0].size, 5),
            other => panic!("{other:?}"),
        }
        let i = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[{{"mediaType":"{OCI_MANIFEST}","digest":"{}","size":3,"platform":{{"os":"linux","architecture":"arm64","variant":"v8"}}}}]}}"#,
            d(3)
        );
        let Document::Index(entries) = parse_document(i.as_bytes(), "").unwrap() else {
            panic!("index expected")
        };
        assert_eq!(select_platform(&entries).unwrap_err(), "linux/arm64/v8");
        assert!(matches!(
            parse_document(br#"{"schemaVersion":1,"fsLayers":[]}"#, ""),
            Err(DocError::Unsupported(_))
        ));
        assert!(matches!(
            parse_document(b"{", ""),
            Err(DocError::Malformed(_))
        ));
        let artifact = m.replace(OCI_CONFIG, "application/vnd.cncf.helm.config.v1+json");
        assert!(matches!(
            parse_document(artifact.as_bytes(), OCI_MANIFEST),
            Err(DocError::Unsupported(_))
        ));
    }

    #[test]
    fn amd64_without_variant_is_preferred() {
        let e = |n, arch: &str, variant: Option<&str>| Descriptor {
            media_type: OCI_MANIFEST.into(),
            digest: Digest::parse(&d(n)).unwrap(),
            size: 1,
            platform: Some(Platform {
                architecture: arch.into(),
                os: "linux".into(),
                variant: variant.map(Into::into),
            }),
        };
        let entries = [
            e(1, "arm64", None),
            e(2, "amd64", Some("v3")),
            e(3, "amd64", None),
        ];
        assert_eq!(select_platform(&entries).unwrap().digest.as_str(), d(3));
        assert_eq!(
            select_platform(&entries[..2]).unwrap().digest.as_str(),
            d(2)
        );
    }

    #[test]
    fn docker_config_block_maps() {
        let c: RawConfig = serde_json::from_str(
            r#"{"architecture":"amd64","os":"linux","config":{"Entrypoint":null,"Cmd":["sh"],
            "Env":["PATH=/bin"],"WorkingDir":"","User":"1000:1000","ExposedPorts":{"80/tcp":{},"53/udp":{}},
            "StopSignal":"SIGQUIT","Labels":{"a":"b"}},"rootfs":{"type":"layers","diff_ids":[]}}"#,
        )
        .unwrap();
        let ic = c.config.unwrap().into_image_config();
        assert_eq!(ic.cmd, ["sh"]);
        assert!(ic.entrypoint.is_empty());
        assert_eq!(ic.working_dir, None);
        assert_eq!(ic.user.as_deref(), Some("1000:1000"));
        assert_eq!(ic.exposed_ports, ["53/udp", "80/tcp"]);
        assert_eq!(ic.stop_signal.as_deref(), Some("SIGQUIT"));
        assert_eq!(ic.labels["a"], "b");
    }
}
