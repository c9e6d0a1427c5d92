//! The conformance oracle: applies layers with OCI layer semantics and yields
//! the [`Tree`] a correct importer must produce.
//!
//! Rules (OCI image-spec, "Applying Changesets"):
//! - Whiteouts (`.wh.<name>`) and opaque markers (`.wh..wh..opq`) act on the
//!   lower layers only: a layer first removes what its markers name from the
//!   state before it, then applies its other entries in order. Content of the
//!   same layer is never hidden by its own markers, whatever the entry order.
//!   Markers never appear in the result and never create directories.
//! - Any entry replaces what is at its path; a non-directory replacing a
//!   directory removes the directory's subtree; a directory over a directory
//!   keeps the content and takes the new metadata (xattrs are merged).
//! - A hard link joins the inode of its target (this layer or a lower one):
//!   same content and metadata; replacing one member later detaches only it.
//! - Parent directories that an entry implies but no entry lists are created
//!   0755 root:root (their mtime is the extractor's choice: compare with
//!   [`CompareOptions::ignoring_dir_mtimes`](crate::CompareOptions::ignoring_dir_mtimes)).

use std::collections::BTreeMap;
use std::io;

use crate::digest::sha256_hex_of_reader;
use crate::layer::{Entry, EntryKind, LayerBuilder, DEFAULT_MTIME, OPAQUE_MARKER, WHITEOUT_PREFIX};
use crate::tree::{assign_link_groups, Node, NodeKind, Tree};

/// The tree that extracting `layers` in order (lowest first) must give.
///
/// # Panics
/// If a layer holds a raw entry or a path with a `..` component, if a hard link
/// names a missing path or a directory, or if a host file cannot be read: the
/// expected result is undefined for such input.
pub fn expected_tree_of_layers(layers: &[&LayerBuilder]) -> Tree {
    let mut state = State::default();
    for (i, layer) in layers.iter().enumerate() {
        state
            .apply_layer(layer)
            .unwrap_or_else(|e| panic!("computing the expected tree of layer {i}: {e}"));
    }
    state.into_tree()
}

#[derive(Debug, Clone)]
struct Inode {
    kind: NodeKind,
    mode: u32,
    uid: u64,
    gid: u64,
    size: u64,
    mtime: i64,
    xattrs: BTreeMap<String, Vec<u8>>,
}

#[derive(Debug, Default)]
struct State {
    /// `/path` → index into `inodes`.
    names: BTreeMap<String, usize>,
    inodes: Vec<Inode>,
}

fn key(rel: &str) -> String {
    assert!(
        !rel.split('/').any(|c| c == ".."),
        "the expected tree is undefined for the escaping path {rel:?}"
    );
    format!("/{rel}")
}

fn parent_and_name(key: &str) -> (&str, &str) {
    let (parent, name) = key.rsplit_once('/').expect("keys start with /");
    (parent, name)
}

impl State {
    fn apply_layer(&mut self, layer: &LayerBuilder) -> io::Result<()> {
        for entry in &layer.entries {
            assert!(
                entry.raw_name.is_none(),
                "the expected tree is undefined for layers with raw entries ({:?})",
                entry.path
            );
        }
        // Phase 1: markers act on the lower layers.
        for entry in &layer.entries {
            let k = key(&entry.path);
            let (parent, name) = parent_and_name(&k);
            if name == OPAQUE_MARKER {
                self.remove_below(parent);
            } else if let Some(target) = name.strip_prefix(WHITEOUT_PREFIX) {
                if !target.starts_with(WHITEOUT_PREFIX) {
                    self.remove_subtree(&format!("{parent}/{target}"));
                }
            }
        }
        // Phase 2: everything else, in order.
        for entry in &layer.entries {
            let k = key(&entry.path);
            let (parent, name) = parent_and_name(&k);
            if name.starts_with(WHITEOUT_PREFIX) {
                continue;
            }
            self.ensure_dirs(parent);
            self.apply_entry(&k, entry)?;
        }
        Ok(())
    }

    fn is_dir(&self, k: &str) -> bool {
        self.names
            .get(k)
            .is_some_and(|&i| self.inodes[i].kind == NodeKind::Dir)
    }

    /// Removes everything strictly below `dir` (`""` = the root).
    fn remove_below(&mut self, dir: &str) {
        let prefix = format!("{dir}/");
        let doomed: Vec<String> = self
            .names
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .map(|(k, _)| k.clone())
            .collect();
        for k in doomed {
            self.names.remove(&k);
        }
    }

    fn remove_subtree(&mut self, k: &str) {
        if self.names.remove(k).is_some() {
            self.remove_below(k);
        }
    }

    fn new_inode(&mut self, inode: Inode) -> usize {
        self.inodes.push(inode);
        self.inodes.len() - 1
    }

    /// Makes `dir` and its ancestors directories (creating implied ones).
    fn ensure_dirs(&mut self, dir: &str) {
        if dir.is_empty() {
            return;
        }
        let (parent, _) = parent_and_name(dir);
        self.ensure_dirs(parent);
        if !self.is_dir(dir) {
            self.remove_subtree(dir);
            let id = self.new_inode(Inode {
                kind: NodeKind::Dir,
                mode: 0o755,
                uid: 0,
                gid: 0,
                size: 0,
                mtime: DEFAULT_MTIME as i64,
                xattrs: BTreeMap::new(),
            });
            self.names.insert(dir.to_string(), id);
        }
    }

    fn apply_entry(&mut self, k: &str, entry: &Entry) -> io::Result<()> {
        let xattrs: BTreeMap<String, Vec<u8>> = entry.xattrs.iter().cloned().collect();
        let mut inode = Inode {
            kind: NodeKind::Dir,
            mode: entry.mode & 0o7777,
            uid: entry.uid,
            gid: entry.gid,
            size: 0,
            mtime: entry.mtime as i64,
            xattrs,
        };
        match &entry.kind {
            EntryKind::Dir => {
                if let Some(&id) = self.names.get(k).filter(|_| self.is_dir(k)) {
                    let existing = &mut self.inodes[id];
                    let mut merged = std::mem::take(&mut existing.xattrs);
                    merged.extend(inode.xattrs);
                    inode.xattrs = merged;
                    *existing = inode;
                    return Ok(());
                }
            }
            EntryKind::Hardlink(target) => {
                let tk = key(target);
                let id = *self
                    .names
                    .get(&tk)
                    .unwrap_or_else(|| panic!("hard link {k} -> {tk}: the target does not exist"));
                assert!(
                    self.inodes[id].kind != NodeKind::Dir,
                    "hard link {k} -> {tk}: the target is a directory"
                );
                if tk != k {
                    self.remove_subtree(k);
                    self.names.insert(k.to_string(), id);
                }
                return Ok(());
            }
            EntryKind::File(content) => {
                let (reader, _) = content.open()?;
                let (sha256, size) = sha256_hex_of_reader(reader)?;
                inode.kind = NodeKind::File { sha256 };
                inode.size = size;
            }
            EntryKind::Sparse(sparse) => {
                let (sha256, size) = sha256_hex_of_reader(sparse.reader(0, sparse.size))?;
                inode.kind = NodeKind::File { sha256 };
                inode.size = size;
            }
            EntryKind::Symlink(target) => {
                inode.kind = NodeKind::Symlink {
                    target: target.clone(),
                };
                inode.mode = 0o777;
                inode.size = target.len() as u64;
            }
            EntryKind::Fifo => inode.kind = NodeKind::Fifo,
            EntryKind::CharDevice { major, minor } => {
                inode.kind = NodeKind::CharDevice {
                    major: *major,
                    minor: *minor,
                }
            }
            EntryKind::BlockDevice { major, minor } => {
                inode.kind = NodeKind::BlockDevice {
                    major: *major,
                    minor: *minor,
                }
            }
        }
        self.remove_subtree(k);
        let id = self.new_inode(inode);
        self.names.insert(k.to_string(), id);
        Ok(())
    }

    fn into_tree(self) -> Tree {
        let mut tree = Tree::default();
        let mut members = Vec::new();
        for (path, &id) in &self.names {
            let ino = &self.inodes[id];
            tree.nodes.insert(
                path.clone(),
                Node {
                    kind: ino.kind.clone(),
                    mode: ino.mode,
                    uid: ino.uid,
                    gid: ino.gid,
                    size: ino.size,
                    mtime: ino.mtime,
                    xattrs: ino.xattrs.clone(),
                    link_group: None,
                },
            );
            if ino.kind != NodeKind::Dir {
                members.push((path.clone(), id));
            }
        }
        assign_link_groups(&mut tree, members);
        tree
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sha256_hex;

    fn sha(b: &[u8]) -> NodeKind {
        NodeKind::File {
            sha256: sha256_hex(b),
        }
    }

    #[test]
    fn whiteouts_act_on_lower_layers_only() {
        let lower = LayerBuilder::new()
            .file("a/x", "1", 0o644)
            .file("a/y", "1", 0o644)
            .file("b", "1", 0o644);
        // The recreated "b" comes before its whiteout: it must survive.
        let upper = LayerBuilder::new()
            .file("b", "2", 0o600)
            .whiteout("b")
            .whiteout("a/x");
        let t = expected_tree_of_layers(&[&lower, &upper]);
        assert!(!t.contains("/a/x"));
        assert!(t.contains("/a/y"));
        assert_eq!(t.get("/b").unwrap().kind, sha(b"2"));
        assert_eq!(t.get("/b").unwrap().mode, 0o600);
        assert!(t.nodes.keys().all(|k| !k.contains(".wh.")));
    }

    #[test]
    fn opaque_hides_lower_content_but_not_same_layer_content() {
        let lower = LayerBuilder::new()
            .dir("d", 0o755)
            .file("d/old", "o", 0o644)
            .dir("d/sub", 0o755)
            .file("d/sub/deep", "o", 0o644);
        let upper = LayerBuilder::new()
            .dir("d", 0o700)
            .file("d/new", "n", 0o644)
            .opaque("d");
        let t = expected_tree_of_layers(&[&lower, &upper]);
        assert_eq!(t.children("/d"), ["/d/new"]);
        assert_eq!(t.get("/d").unwrap().mode, 0o700);
    }

    #[test]
    fn non_dir_replaces_a_dir_subtree_and_dir_over_dir_merges() {
        let lower = LayerBuilder::new()
            .dir("x", 0o755)
            .file("x/in", "", 0o644)
            .dir("keep", 0o755)
            .xattr("user.a", "1")
            .file("keep/in", "", 0o644);
        let upper = LayerBuilder::new()
            .symlink("x", "elsewhere")
            .dir("keep", 0o711)
            .owner(5, 6)
            .xattr("user.b", "2");
        let t = expected_tree_of_layers(&[&lower, &upper]);
        assert!(!t.contains("/x/in"));
        assert_eq!(
            t.get("/x").unwrap().kind,
            NodeKind::Symlink {
                target: "elsewhere".into()
            }
        );
        let keep = t.get("/keep").unwrap();
        assert_eq!((keep.mode, keep.uid, keep.gid), (0o711, 5, 6));
        assert_eq!(keep.xattrs.len(), 2);
        assert!(t.contains("/keep/in"));
    }

    #[test]
    fn implied_parents_are_root_owned_0755() {
        let t = expected_tree_of_layers(&[&LayerBuilder::new().file("p/q/r", "", 0o600)]);
        assert_eq!(t.len(), 3);
        let p = t.get("/p/q").unwrap();
        assert_eq!((p.kind.clone(), p.mode, p.uid), (NodeKind::Dir, 0o755, 0));
    }

    #[test]
    fn hard_links_share_metadata_and_detach_on_replace() {
        let lower = LayerBuilder::new()
            .file("a", "data", 0o4750)
            .owner(7, 8)
            .hardlink("dir/b", "a")
            .hardlink("c", "dir/b");
        let t = expected_tree_of_layers(&[&lower]);
        assert_eq!(t.link_group_of("/c"), ["/a", "/c", "/dir/b"]);
        let b = t.get("/dir/b").unwrap();
        assert_eq!((b.mode, b.uid, b.size), (0o4750, 7, 4));
        let upper = LayerBuilder::new().file("a", "new", 0o644);
        let t = expected_tree_of_layers(&[&lower, &upper]);
        assert_eq!(t.get("/a").unwrap().link_group, None);
        assert_eq!(t.link_group_of("/c"), ["/c", "/dir/b"]);
        assert_eq!(t.get("/c").unwrap().kind, sha(b"data"));
    }

    #[test]
    #[should_panic(expected = "does not exist")]
    fn hard_link_to_nothing_is_rejected() {
        expected_tree_of_layers(&[&LayerBuilder::new().hardlink("a", "missing")]);
    }

    #[test]
    #[should_panic(expected = "raw entries")]
    fn raw_entries_have_no_expected_tree() {
        expected_tree_of_layers(&[&LayerBuilder::new().raw_file(b"../x", "", 0o644)]);
    }

    #[test]
    fn root_whiteout_and_opaque_root_work() {
        let lower = LayerBuilder::new()
            .file("a", "", 0o644)
            .file("b", "", 0o644);
        let upper = LayerBuilder::new().opaque("/").file("c", "", 0o644);
        let t = expected_tree_of_layers(&[&lower, &upper]);
        assert_eq!(t.children("/"), ["/c"]);
        let t = expected_tree_of_layers(&[&lower, &LayerBuilder::new().whiteout("a")]);
        assert_eq!(t.children("/"), ["/b"]);
    }
}
