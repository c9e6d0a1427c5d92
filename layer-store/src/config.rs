//! Image configs (the JSON blob whose digest is the image ID) and deriving new ones.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{json, Map, Value};

use crate::digest::Digest;
use crate::error::{Result, StoreError};
use crate::platform::host_architecture;

/// An image config as OCI and Docker write it. Unknown fields are ignored
/// here; [`ImageConfig::raw`] keeps the exact bytes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ImageConfig {
    /// CPU architecture (`amd64`, `arm64`, ...).
    #[serde(default)]
    pub architecture: String,
    /// Operating system (`linux`).
    #[serde(default)]
    pub os: String,
    /// CPU variant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    /// When the image was created (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    /// Who created it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    /// The runtime defaults for containers of this image.
    #[serde(default, deserialize_with = "null_as_default")]
    pub config: ContainerConfig,
    /// The layer diff IDs.
    #[serde(default)]
    pub rootfs: RootFs,
    /// How the image was built, one entry per step (some without a layer).
    #[serde(default, deserialize_with = "null_as_default")]
    pub history: Vec<HistoryEntry>,
    /// The config blob exactly as stored.
    #[serde(skip)]
    pub raw: Vec<u8>,
}

/// The `config` object of an image config: defaults for containers.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ContainerConfig {
    /// `User`: user (and group) processes run as.
    #[serde(rename = "User", default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// `Env`: `KEY=value` entries.
    #[serde(rename = "Env", default, deserialize_with = "null_as_default")]
    pub env: Vec<String>,
    /// `Entrypoint`.
    #[serde(
        rename = "Entrypoint",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub entrypoint: Option<Vec<String>>,
    /// `Cmd`.
    #[serde(rename = "Cmd", default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    /// `WorkingDir`.
    #[serde(
        rename = "WorkingDir",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub working_dir: Option<String>,
    /// `Labels`.
    #[serde(rename = "Labels", default, deserialize_with = "null_as_default")]
    pub labels: BTreeMap<String, String>,
    /// `ExposedPorts` (keys such as `80/tcp`).
    #[serde(rename = "ExposedPorts", default, deserialize_with = "null_as_default")]
    pub exposed_ports: BTreeMap<String, Value>,
    /// `Volumes` (keys are paths).
    #[serde(rename = "Volumes", default, deserialize_with = "null_as_default")]
    pub volumes: BTreeMap<String, Value>,
    /// `StopSignal`.
    #[serde(
        rename = "StopSignal",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub stop_signal: Option<String>,
}

/// The `rootfs` object: the ordered diff IDs of the image's layers.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RootFs {
    /// Always `layers`.
    #[serde(rename = "type", default)]
    pub kind: String,
    /// Digests of the uncompressed layer tars, bottom-most first.
    #[serde(default, deserialize_with = "null_as_default")]
    pub diff_ids: Vec<Digest>,
}

/// One build step in the config's history.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// When the step ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    /// The command of the step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    /// Who ran it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    /// A free-form comment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// True when the step produced no layer.
    #[serde(default)]
    pub empty_layer: bool,
}

impl ImageConfig {
    /// Parses config bytes; `context` names the blob in errors.
    pub fn parse(raw: &[u8], context: &str) -> Result<ImageConfig> {
        let mut config: ImageConfig =
            serde_json::from_slice(raw).map_err(|source| StoreError::InvalidJson {
                context: context.to_string(),
                source,
            })?;
        config.raw = raw.to_vec();
        Ok(config)
    }

    /// The history entries that produced layers (those not marked `empty_layer`), in order.
    pub fn layer_history(&self) -> impl Iterator<Item = &HistoryEntry> {
        self.history.iter().filter(|entry| !entry.empty_layer)
    }
}

/// Deserialises `null` as the default value (Docker writes `null` for empty lists and maps).
pub(crate) fn null_as_default<'de, D, T>(deserializer: D) -> std::result::Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

/// Changes to the container defaults made by a commit.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigChanges {
    /// Replaces `Entrypoint`.
    pub entrypoint: Option<Vec<String>>,
    /// Replaces `Cmd`.
    pub cmd: Option<Vec<String>>,
    /// `KEY=value` entries; each replaces an entry with the same key or is appended.
    pub env: Vec<String>,
    /// Replaces `WorkingDir`.
    pub working_dir: Option<String>,
    /// Replaces `User`.
    pub user: Option<String>,
    /// Labels to set (added or overwritten).
    pub labels: BTreeMap<String, String>,
    /// A comment for the new history entry.
    pub comment: Option<String>,
}

/// The new config bytes for an image that adds one layer (`diff_id`) on top of
/// the image whose config is `base_raw`: the base config with every field it
/// has kept, the diff ID appended to `rootfs.diff_ids`, a history entry
/// appended, `created` set, and `changes` applied to `config`.
pub(crate) fn derive_child_config(
    base_raw: &[u8],
    diff_id: &Digest,
    created: &str,
    created_by: &str,
    changes: &ConfigChanges,
) -> Result<Vec<u8>> {
    let invalid = |source| StoreError::InvalidJson {
        context: "base image config".to_string(),
        source,
    };
    let mut root: Map<String, Value> = serde_json::from_slice(base_raw).map_err(invalid)?;
    root.insert("created".to_string(), json!(created));

    let rootfs = object_field(&mut root, "rootfs");
    rootfs.entry("type").or_insert_with(|| json!("layers"));
    array_field(rootfs, "diff_ids").push(json!(diff_id.to_string()));

    let mut entry = Map::new();
    entry.insert("created".to_string(), json!(created));
    entry.insert("created_by".to_string(), json!(created_by));
    if let Some(comment) = &changes.comment {
        entry.insert("comment".to_string(), json!(comment));
    }
    array_field(&mut root, "history").push(Value::Object(entry));

    let container = object_field(&mut root, "config");
    if let Some(entrypoint) = &changes.entrypoint {
        container.insert("Entrypoint".to_string(), json!(entrypoint));
    }
    if let Some(cmd) = &changes.cmd {
        container.insert("Cmd".to_string(), json!(cmd));
    }
    if let Some(working_dir) = &changes.working_dir {
        container.insert("WorkingDir".to_string(), json!(working_dir));
    }
    if let Some(user) = &changes.user {
        container.insert("User".to_string(), json!(user));
    }
    if !changes.env.is_empty() {
        let env = array_field(container, "Env");
        for assignment in &changes.env {
            let key = assignment.split('=').next().unwrap_or_default();
            let same_key = |v: &Value| v.as_str().and_then(|s| s.split('=').next()) == Some(key);
            match env.iter_mut().find(|v| same_key(v)) {
                Some(existing) => *existing = json!(assignment),
                None => env.push(json!(assignment)),
            }
        }
    }
    if !changes.labels.is_empty() {
        let labels = object_field(container, "Labels");
        for (key, value) in &changes.labels {
            labels.insert(key.clone(), json!(value));
        }
    }
    serde_json::to_vec(&Value::Object(root)).map_err(invalid)
}

/// The config of an image made of one imported layer tar.
pub(crate) fn single_layer_config(diff_id: &Digest, created: &str, created_by: &str) -> Vec<u8> {
    let config = json!({
        "architecture": host_architecture(),
        "os": "linux",
        "created": created,
        "config": {},
        "rootfs": { "type": "layers", "diff_ids": [diff_id.to_string()] },
        "history": [ { "created": created, "created_by": created_by } ],
    });
    serde_json::to_vec(&config).expect("a JSON value always serialises")
}

/// `map[key]` as an object, replacing a missing, null or non-object value with `{}`.
fn object_field<'a>(map: &'a mut Map<String, Value>, key: &str) -> &'a mut Map<String, Value> {
    let value = map.entry(key).or_insert_with(|| json!({}));
    if !value.is_object() {
        *value = json!({});
    }
    value.as_object_mut().expect("just made an object")
}

/// `map[key]` as an array, replacing a missing, null or non-array value with `[]`.
fn array_field<'a>(map: &'a mut Map<String, Value>, key: &str) -> &'a mut Vec<Value> {
    let value = map.entry(key).or_insert_with(|| json!([]));
    if !value.is_array() {
        *value = json!([]);
    }
    value.as_array_mut().expect("just made an array")
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOCKER_STYLE: &str = r#"{
        "architecture": "amd64", "os": "linux", "created": "2024-01-01T00:00:00Z",
        "config": {"Env": ["PATH=/bin", "A=1"], "Cmd": ["sh"], "Entrypoint": null, "Labels": null,
                   "WorkingDir": "/w", "User": "1000", "ExposedPorts": {"80/tcp": {}}},
        "rootfs": {"type": "layers", "diff_ids": ["sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"]},
        "history": [{"created_by": "ADD x /", "created": "2024-01-01T00:00:00Z"},
                    {"created_by": "ENV A=1", "empty_layer": true}],
        "docker_version": "24.0.0"
    }"#;

    #[test]
    fn parses_docker_configs_with_nulls() {
        let config = ImageConfig::parse(DOCKER_STYLE.as_bytes(), "test").unwrap();
        assert_eq!(config.config.env, ["PATH=/bin", "A=1"]);
        assert_eq!(config.config.cmd.as_deref(), Some(&["sh".to_string()][..]));
        assert_eq!(config.config.entrypoint, None);
        assert!(config.config.labels.is_empty());
        assert_eq!(config.rootfs.diff_ids.len(), 1);
        assert_eq!(config.layer_history().count(), 1);
        assert_eq!(config.raw, DOCKER_STYLE.as_bytes());
        assert!(config.config.exposed_ports.contains_key("80/tcp"));
    }

    #[test]
    fn invalid_configs_are_reported() {
        let err = ImageConfig::parse(b"{\"rootfs\": {\"diff_ids\": [\"md5:00\"]}}", "config x")
            .unwrap_err();
        assert!(err.to_string().contains("config x"), "{err}");
        assert!(ImageConfig::parse(b"[", "c").is_err());
    }

    #[test]
    fn child_config_keeps_base_fields_and_applies_changes() {
        let diff_id = Digest::of_bytes(b"layer");
        let changes = ConfigChanges {
            cmd: Some(vec!["run".to_string()]),
            env: vec!["A=2".to_string(), "B=3".to_string()],
            labels: BTreeMap::from([("k".to_string(), "v".to_string())]),
            comment: Some("why".to_string()),
            ..ConfigChanges::default()
        };
        let raw = derive_child_config(
            DOCKER_STYLE.as_bytes(),
            &diff_id,
            "2025-02-03T04:05:06Z",
            "commit c1",
            &changes,
        )
        .unwrap();
        let child = ImageConfig::parse(&raw, "child").unwrap();
        assert_eq!(child.rootfs.diff_ids.len(), 2);
        assert_eq!(child.rootfs.diff_ids[1], diff_id);
        assert_eq!(child.created.as_deref(), Some("2025-02-03T04:05:06Z"));
        let last = child.history.last().unwrap();
        assert_eq!(last.created_by.as_deref(), Some("commit c1"));
        assert_eq!(last.comment.as_deref(), Some("why"));
        assert_eq!(child.config.env, ["PATH=/bin", "A=2", "B=3"]);
        assert_eq!(child.config.cmd, Some(vec!["run".to_string()]));
        assert_eq!(child.config.working_dir.as_deref(), Some("/w"));
        assert_eq!(child.config.labels.get("k").map(String::as_str), Some("v"));
        let value: Value = serde_json::from_slice(&raw).unwrap();
        assert_eq!(value["docker_version"], "24.0.0");
    }

    #[test]
    fn single_layer_config_is_parseable_and_deterministic() {
        let diff_id = Digest::of_bytes(b"x");
        let raw = single_layer_config(&diff_id, "2024-01-01T00:00:00Z", "lamina import x.tar");
        assert_eq!(
            raw,
            single_layer_config(&diff_id, "2024-01-01T00:00:00Z", "lamina import x.tar")
        );
        let config = ImageConfig::parse(&raw, "generated").unwrap();
        assert_eq!(config.os, "linux");
        assert_eq!(config.architecture, host_architecture());
        assert_eq!(config.rootfs.diff_ids, vec![diff_id]);
        assert_eq!(
            config.history[0].created_by.as_deref(),
            Some("lamina import x.tar")
        );
    }
}
