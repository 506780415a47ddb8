//! The parts of the OCI image specification this crate reads and writes: descriptors,
//! manifests, indexes and the image configuration (docker's JSON is the same shape).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::blobs::Digest;
use crate::config::ImageConfig;

/// Annotation naming an image in an OCI layout (a tag or a full reference).
pub const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";
/// Annotation containerd and docker put on an OCI layout's index entries (a full reference).
pub const ANNOTATION_CONTAINERD_NAME: &str = "io.containerd.image.name";

/// A reference to a blob: media type, digest, size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// Media type of the referenced content.
    pub media_type: String,
    /// Digest of the content.
    pub digest: Digest,
    /// Size of the content in bytes.
    pub size: u64,
    /// Annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Platform, in an index.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
}

/// Platform of a manifest in an index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Platform {
    /// CPU architecture (`amd64`).
    pub architecture: String,
    /// Operating system (`linux`).
    pub os: String,
    /// CPU variant (`v8`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

/// An image manifest (OCI or docker schema 2).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    /// Always 2.
    pub schema_version: u32,
    /// Media type, when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// The image configuration.
    pub config: Descriptor,
    /// Layers, bottom first.
    pub layers: Vec<Descriptor>,
    /// Annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// An image index (OCI) or manifest list (docker), and `index.json` of a layout.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Index {
    /// Always 2.
    pub schema_version: u32,
    /// Media type, when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// Manifests (or nested indexes).
    pub manifests: Vec<Descriptor>,
    /// Annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// The image configuration JSON, as far as this crate reads it.
#[derive(Debug, Clone, Deserialize)]
pub struct ConfigFile {
    /// CPU architecture.
    #[serde(default)]
    pub architecture: String,
    /// Operating system.
    #[serde(default)]
    pub os: String,
    /// Run-time defaults.
    #[serde(default)]
    pub config: Option<RunConfig>,
    /// Uncompressed layer digests.
    pub rootfs: RootFs,
}

/// `rootfs` of an image configuration.
#[derive(Debug, Clone, Deserialize)]
pub struct RootFs {
    /// Digests of the uncompressed layer tars, bottom first.
    #[serde(default)]
    pub diff_ids: Vec<Digest>,
}

/// The `config` block of an image configuration (docker's capitalised keys).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RunConfig {
    /// Entrypoint.
    #[serde(default)]
    pub entrypoint: Option<Vec<String>>,
    /// Command.
    #[serde(default)]
    pub cmd: Option<Vec<String>>,
    /// Environment.
    #[serde(default)]
    pub env: Option<Vec<String>>,
    /// Working directory.
    #[serde(default)]
    pub working_dir: Option<String>,
    /// User.
    #[serde(default)]
    pub user: Option<String>,
    /// Exposed ports (keys matter).
    #[serde(default)]
    pub exposed_ports: Option<BTreeMap<String, serde_json::Value>>,
    /// Stop signal.
    #[serde(default)]
    pub stop_signal: Option<String>,
    /// Labels.
    #[serde(default)]
    pub labels: Option<BTreeMap<String, String>>,
}

impl From<RunConfig> for ImageConfig {
    fn from(c: RunConfig) -> Self {
        let nonempty = |s: Option<String>| s.filter(|s| !s.is_empty());
        Self {
            entrypoint: c.entrypoint.unwrap_or_default(),
            cmd: c.cmd.unwrap_or_default(),
            env: c.env.unwrap_or_default(),
            working_dir: nonempty(c.working_dir),
            user: nonempty(c.user),
            exposed_ports: c.exposed_ports.unwrap_or_default().into_keys().collect(),
            stop_signal: nonempty(c.stop_signal),
            labels: c.labels.unwrap_or_default(),
        }
    }
}

/// Writes `cfg` into the `config` block of a raw image configuration, keeping keys this crate
/// does not model.
pub fn set_run_config(raw: &mut serde_json::Value, cfg: &ImageConfig) {
    use serde_json::{json, Map, Value};
    if !raw.is_object() {
        *raw = Value::Object(Map::new());
    }
    let block = raw
        .as_object_mut()
        .map(|o| o.entry("config").or_insert_with(|| json!({})));
    let Some(block) = block else { return };
    if !block.is_object() {
        *block = json!({});
    }
    let Some(o) = block.as_object_mut() else {
        return;
    };
    let mut set = |k: &str, v: Option<Value>| match v {
        Some(v) => {
            o.insert(k.to_string(), v);
        }
        None => {
            o.remove(k);
        }
    };
    let list = |v: &Vec<String>| (!v.is_empty()).then(|| json!(v));
    set("Entrypoint", list(&cfg.entrypoint));
    set("Cmd", list(&cfg.cmd));
    set("Env", list(&cfg.env));
    set("WorkingDir", cfg.working_dir.as_ref().map(|s| json!(s)));
    set("User", cfg.user.as_ref().map(|s| json!(s)));
    let ports: Map<String, Value> = cfg
        .exposed_ports
        .iter()
        .map(|p| (p.clone(), json!({})))
        .collect();
    set(
        "ExposedPorts",
        (!ports.is_empty()).then_some(Value::Object(ports)),
    );
    set("StopSignal", cfg.stop_signal.as_ref().map(|s| json!(s)));
    set(
        "Labels",
        (!cfg.labels.is_empty()).then(|| json!(cfg.labels)),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_config_block_parses_and_round_trips() {
        let raw = r#"{"architecture":"amd64","os":"linux","config":{"Entrypoint":["/init"],
            "Cmd":null,"Env":["A=1"],"WorkingDir":"/srv","User":"1000:1000",
            "ExposedPorts":{"80/tcp":{}},"StopSignal":"SIGTERM","Labels":{"k":"v"},"Tty":true},
            "rootfs":{"type":"layers","diff_ids":[]}}"#;
        let f: ConfigFile = serde_json::from_str(raw).unwrap();
        let cfg = ImageConfig::from(f.config.unwrap());
        assert_eq!(cfg.entrypoint, vec!["/init"]);
        assert!(cfg.cmd.is_empty());
        assert_eq!(cfg.exposed_ports, vec!["80/tcp"]);
        assert_eq!(cfg.user.as_deref(), Some("1000:1000"));
        let mut v: serde_json::Value = serde_json::from_str(raw).unwrap();
        let mut changed = cfg.clone();
        changed.cmd = vec!["sh".into()];
        set_run_config(&mut v, &changed);
        assert_eq!(v["config"]["Tty"], true);
        let back: ConfigFile = serde_json::from_value(v).unwrap();
        assert_eq!(ImageConfig::from(back.config.unwrap()), changed);
    }
}
