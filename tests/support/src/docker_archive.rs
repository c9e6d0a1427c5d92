//! Docker archives (`docker save` output) in the legacy and the blobs form.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, BufWriter, Write};
use std::path::Path;

use serde::Serialize;
use serde_json::json;

use crate::digest::sha256_digest;
use crate::image::{
    put_layer_blob, Corruption, ImageBuilder, ANNOTATION_REF_NAME, CREATED, MEDIA_TYPE_INDEX,
    MEDIA_TYPE_MANIFEST,
};
use crate::output::{Output, TarOutput};

/// The layout of a docker archive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DockerArchiveForm {
    /// Docker before v25: `<layer id>/layer.tar` (uncompressed) with `json` and
    /// `VERSION`, `<image id hex>.json`, `manifest.json`, `repositories`.
    Legacy,
    /// Docker v25+: `blobs/sha256/<hex>` for config, layers (the compressed blob
    /// as is) and the OCI manifest, `manifest.json` pointing into `blobs/`,
    /// `index.json`, `oci-layout`, `repositories`.
    Blobs,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct ManifestItem {
    config: String,
    repo_tags: Vec<String>,
    layers: Vec<String>,
}

/// Splits `repo:tag` (the tag is after the last `:` that follows the last `/`).
fn split_tag(repo_tag: &str) -> (&str, &str) {
    let slash = repo_tag.rfind('/').map_or(0, |i| i + 1);
    match repo_tag[slash..].rfind(':') {
        Some(i) => (&repo_tag[..slash + i], &repo_tag[slash + i + 1..]),
        None => (repo_tag, "latest"),
    }
}

fn hex_of(digest: &str) -> &str {
    digest.strip_prefix("sha256:").unwrap_or(digest)
}

impl ImageBuilder {
    /// Writes a docker archive file (as `docker save` does) tagged `repo_tags`
    /// (`"name:tag"`; may be empty).
    pub fn write_docker_archive(
        &self,
        path: impl AsRef<Path>,
        repo_tags: &[&str],
        form: DockerArchiveForm,
    ) -> io::Result<()> {
        let file = BufWriter::new(fs::File::create(path)?);
        self.write_docker_archive_to(file, repo_tags, form)?.flush()
    }

    /// Streams a docker archive into `w` and returns it.
    pub fn write_docker_archive_to<W: Write>(
        &self,
        w: W,
        repo_tags: &[&str],
        form: DockerArchiveForm,
    ) -> io::Result<W> {
        let mut out = TarOutput::new(w);
        match form {
            DockerArchiveForm::Legacy => self.write_legacy(&mut out, repo_tags)?,
            DockerArchiveForm::Blobs => self.write_blobs_form(&mut out, repo_tags)?,
        }
        out.finish()
    }

    fn manifest_json_bytes(&self, item: ManifestItem) -> Vec<u8> {
        let bytes = serde_json::to_vec(&[item]).expect("serialising plain data cannot fail");
        if self.has(&Corruption::InvalidManifestJson) {
            bytes[..bytes.len() / 2].to_vec()
        } else {
            bytes
        }
    }

    fn repositories(repo_tags: &[&str], top: &str) -> Vec<u8> {
        let mut repos: BTreeMap<&str, BTreeMap<&str, &str>> = BTreeMap::new();
        for rt in repo_tags {
            let (repo, tag) = split_tag(rt);
            repos.entry(repo).or_default().insert(tag, top);
        }
        serde_json::to_vec(&repos).expect("serialising plain data cannot fail")
    }

    fn write_legacy(&self, out: &mut dyn Output, repo_tags: &[&str]) -> io::Result<()> {
        for c in &self.corruptions {
            if let Corruption::UnknownLayerMediaType(_) = c {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "legacy docker archives have no media types to corrupt",
                ));
            }
        }
        let chain_ids = self.chain_ids();
        let ids: Vec<&str> = chain_ids.iter().map(|c| hex_of(c)).collect();
        let mut layer_paths = Vec::new();
        for (i, id) in ids.iter().enumerate() {
            out.dir(id)?;
            out.bytes(&format!("{id}/VERSION"), b"1.0")?;
            let mut v1 = json!({
                "id": id,
                "created": CREATED,
                "os": "linux",
                "container_config": { "Cmd": [format!("layer {i}")] },
            });
            if i > 0 {
                v1["parent"] = json!(ids[i - 1]);
            }
            out.bytes(&format!("{id}/json"), &serde_json::to_vec(&v1)?)?;
            let path = format!("{id}/layer.tar");
            put_layer_blob(out, self, i, true, &path)?;
            layer_paths.push(self.layer_reference(i, path));
        }
        let config = self.written_config();
        let config_path = format!("{}.json", hex_of(&sha256_digest(&config)));
        if !self.has(&Corruption::MissingConfigBlob) {
            out.bytes(&config_path, &config)?;
        }
        let manifest = self.manifest_json_bytes(ManifestItem {
            config: config_path,
            repo_tags: repo_tags.iter().map(|s| s.to_string()).collect(),
            layers: layer_paths,
        });
        out.bytes("manifest.json", &manifest)?;
        if !repo_tags.is_empty() {
            let top = ids.last().copied().unwrap_or_default();
            out.bytes("repositories", &Self::repositories(repo_tags, top))?;
        }
        Ok(())
    }

    fn write_blobs_form(&self, out: &mut dyn Output, repo_tags: &[&str]) -> io::Result<()> {
        out.dir("blobs")?;
        out.dir("blobs/sha256")?;
        let mut layer_paths = Vec::new();
        for (i, info) in self.try_layer_info()?.iter().enumerate() {
            let path = format!("blobs/sha256/{}", hex_of(&info.digest));
            put_layer_blob(out, self, i, false, &path)?;
            layer_paths.push(self.layer_reference(i, path));
        }
        let config = self.written_config();
        let config_path = format!("blobs/sha256/{}", hex_of(&sha256_digest(&config)));
        if !self.has(&Corruption::MissingConfigBlob) {
            out.bytes(&config_path, &config)?;
        }
        let manifest = self.written_oci_manifest();
        let manifest_digest = sha256_digest(&manifest);
        out.bytes(
            &format!("blobs/sha256/{}", hex_of(&manifest_digest)),
            &manifest,
        )?;

        let entries: Vec<serde_json::Value> = if repo_tags.is_empty() {
            vec![json!({
                "mediaType": MEDIA_TYPE_MANIFEST,
                "digest": manifest_digest,
                "size": manifest.len(),
            })]
        } else {
            repo_tags
                .iter()
                .map(|rt| {
                    json!({
                        "mediaType": MEDIA_TYPE_MANIFEST,
                        "digest": manifest_digest,
                        "size": manifest.len(),
                        "annotations": {
                            "io.containerd.image.name": rt,
                            ANNOTATION_REF_NAME: split_tag(rt).1,
                        },
                    })
                })
                .collect()
        };
        let index = json!({
            "schemaVersion": 2,
            "mediaType": MEDIA_TYPE_INDEX,
            "manifests": entries,
        });
        out.bytes("index.json", &serde_json::to_vec(&index)?)?;
        let docker_manifest = self.manifest_json_bytes(ManifestItem {
            config: config_path,
            repo_tags: repo_tags.iter().map(|s| s.to_string()).collect(),
            layers: layer_paths,
        });
        out.bytes("manifest.json", &docker_manifest)?;
        out.bytes("oci-layout", crate::oci_layout::OCI_LAYOUT_FILE)?;
        if !repo_tags.is_empty() {
            out.bytes(
                "repositories",
                &Self::repositories(repo_tags, hex_of(&self.image_id())),
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_tag_handles_registries_with_ports() {
        assert_eq!(split_tag("busybox:1.36"), ("busybox", "1.36"));
        assert_eq!(
            split_tag("localhost:5000/app"),
            ("localhost:5000/app", "latest")
        );
        assert_eq!(
            split_tag("localhost:5000/app:v1"),
            ("localhost:5000/app", "v1")
        );
    }
}
