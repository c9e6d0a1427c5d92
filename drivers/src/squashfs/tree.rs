//! The in-memory tree of one layer, built from its tar with the semantics the
//! safe applier (`crate::apply`, overlay mode) gives a layer directory.
//!
//! Entries are taken in tar order; a later entry replaces an earlier one at the
//! same path (a directory over a directory only updates its metadata); hard
//! links point to earlier entries; `.wh.NAME` becomes a whiteout node (char
//! 0/0 in the image) unless NAME was created by this very tar, `.wh..wh..opq`
//! flags its directory opaque, other `.wh..wh.*` names are AUFS housekeeping
//! and skipped. Parent directories are resolved inside the layer root like
//! `openat2(RESOLVE_IN_ROOT)` does (symlinks of the layer followed, `..` stopping
//! at the root) and created when missing. Only metadata is kept: regular files
//! are stored by the writer as they stream past and are referred to by a slot.

use std::collections::{BTreeMap, HashSet, VecDeque};

use crate::layer::{OCI_OPAQUE, OCI_WHITEOUT_PREFIX};

/// Index of a node in the tree's arena.
pub(crate) type NodeId = usize;

/// The root directory's node.
pub(crate) const ROOT: NodeId = 0;

/// Most symlinks followed while resolving one path (as the kernel's `MAXSYMLINKS`).
const MAX_SYMLINKS: usize = 40;

/// Ownership, permissions, time and xattrs of a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Attrs {
    /// Permission bits (`0o7777`).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Modification time in whole seconds (what squashfs stores).
    pub mtime: u32,
    /// Extended attributes, names unique.
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Attrs {
    /// The attributes of directories the tar implies without listing them.
    pub fn implied_dir(mtime: u32) -> Attrs {
        Attrs {
            mode: 0o755,
            uid: 0,
            gid: 0,
            mtime,
            xattrs: Vec::new(),
        }
    }
}

/// What a node is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum NodeKind {
    /// A directory with its children by name (byte order, as squashfs stores them).
    Dir {
        /// The children.
        children: BTreeMap<Vec<u8>, NodeId>,
        /// Hides the lower layers' content of this directory.
        opaque: bool,
    },
    /// A regular file whose data the writer stored in `slot`.
    File {
        /// The writer's handle of the file's data and block list.
        slot: usize,
    },
    /// A symbolic link and its target.
    Symlink(Vec<u8>),
    /// A device node.
    Device {
        /// Block (else character) device.
        block: bool,
        /// Major number.
        major: u32,
        /// Minor number.
        minor: u32,
    },
    /// A named pipe.
    Fifo,
    /// An overlay whiteout (a 0/0 character device in the image).
    Whiteout,
}

/// One node of the tree.
#[derive(Debug, Clone)]
pub(crate) struct Node {
    /// What it is.
    pub kind: NodeKind,
    /// Its metadata.
    pub attrs: Attrs,
    /// Directory entries naming it (its hard-link count; 0 once removed).
    pub links: u32,
}

/// A tar entry, reduced to what the tree needs.
#[derive(Debug, Clone)]
pub(crate) struct Spec {
    /// Clean path components (empty for the root).
    pub components: Vec<Vec<u8>>,
    /// The path as the tar spells it, for messages.
    pub display: String,
    /// What the entry is.
    pub kind: SpecKind,
    /// Its metadata.
    pub attrs: Attrs,
}

/// The kind of a [`Spec`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SpecKind {
    /// A regular file (its content is streamed by the caller).
    Regular,
    /// A directory.
    Directory,
    /// A symlink to the target.
    Symlink(Vec<u8>),
    /// A hard link to an earlier entry (clean components).
    Hardlink(Vec<Vec<u8>>),
    /// A device node.
    Device {
        /// Block (else character) device.
        block: bool,
        /// Major number.
        major: u32,
        /// Minor number.
        minor: u32,
    },
    /// A named pipe.
    Fifo,
}

/// A tar the tree cannot take (the applier would refuse it too).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub(crate) struct TreeError(pub String);

fn bad(msg: impl Into<String>) -> TreeError {
    TreeError(msg.into())
}

fn shown(components: &[Vec<u8>]) -> String {
    let joined: Vec<String> = components
        .iter()
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect();
    joined.join("/")
}

/// What applying an entry did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Applied {
    /// The entry is in the tree.
    Stored,
    /// The entry was skipped (a 0/0 character device, AUFS housekeeping, a self link).
    Skipped,
}

/// The tree of one layer.
#[derive(Debug, Clone)]
pub(crate) struct LayerTree {
    nodes: Vec<Node>,
    /// Time given to directories and whiteouts the tar does not describe.
    implied_mtime: u32,
    /// Paths (as the tar spells them) of the entries this tar created: a
    /// whiteout never removes those, it only hides lower layers.
    created: HashSet<Vec<Vec<u8>>>,
    /// Ancestors of those paths.
    created_ancestors: HashSet<Vec<Vec<u8>>>,
}

/// A component still to resolve, and whether it comes from a symlink's target.
struct Pending {
    name: Vec<u8>,
    from_symlink: bool,
}

impl LayerTree {
    /// A tree holding only its root directory (0755, root-owned, `implied_mtime`).
    pub fn new(implied_mtime: u32) -> LayerTree {
        LayerTree {
            nodes: vec![Node {
                kind: NodeKind::Dir {
                    children: BTreeMap::new(),
                    opaque: false,
                },
                attrs: Attrs::implied_dir(implied_mtime),
                links: 1,
            }],
            implied_mtime,
            created: HashSet::new(),
            created_ancestors: HashSet::new(),
        }
    }

    /// The node `id`.
    pub fn node(&self, id: NodeId) -> &Node {
        &self.nodes[id]
    }

    /// Number of nodes ever created (live or not).
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// The child `name` of directory `dir`.
    pub fn child(&self, dir: NodeId, name: &[u8]) -> Option<NodeId> {
        match &self.nodes[dir].kind {
            NodeKind::Dir { children, .. } => children.get(name).copied(),
            _ => None,
        }
    }

    /// Applies one tar entry. For a regular file `content` is called once the
    /// file's place is known and returns the writer's slot of its data.
    pub fn apply<E: From<TreeError>>(
        &mut self,
        spec: Spec,
        content: impl FnOnce() -> Result<usize, E>,
    ) -> Result<Applied, E> {
        let Some((name, parent)) = spec.components.split_last() else {
            return Ok(self.apply_root(&spec)?);
        };
        if name.starts_with(OCI_WHITEOUT_PREFIX.as_bytes()) {
            return Ok(self.apply_whiteout(parent, name, &spec)?);
        }
        check_name(name, &spec.display)?;
        let dir = *self
            .ensure_dir(parent)?
            .last()
            .expect("a chain holds the root");
        let existing = self.child(dir, name);
        let new_kind = match &spec.kind {
            SpecKind::Directory => match existing {
                Some(old) if matches!(self.nodes[old].kind, NodeKind::Dir { .. }) => {
                    // The tar describes the directory completely, except whether it is opaque.
                    self.nodes[old].attrs = spec.attrs.clone();
                    None
                }
                _ => {
                    // A whiteout there hid a lower directory: the new one keeps hiding it.
                    let replaces_whiteout =
                        existing.is_some_and(|e| self.nodes[e].kind == NodeKind::Whiteout);
                    Some(NodeKind::Dir {
                        children: BTreeMap::new(),
                        opaque: replaces_whiteout,
                    })
                }
            },
            SpecKind::Regular => Some(NodeKind::File { slot: content()? }),
            SpecKind::Symlink(target) => Some(NodeKind::Symlink(target.clone())),
            SpecKind::Device {
                block: false,
                major: 0,
                minor: 0,
            } => {
                // In overlay form a 0/0 character device *is* a whiteout: a layer must
                // not hide lower content except through OCI whiteouts.
                tracing::warn!(path = %spec.display, "not storing a 0/0 character device from the layer: it would act as an overlay whiteout");
                return Ok(Applied::Skipped);
            }
            SpecKind::Device {
                block,
                major,
                minor,
            } => Some(NodeKind::Device {
                block: *block,
                major: *major,
                minor: *minor,
            }),
            SpecKind::Fifo => Some(NodeKind::Fifo),
            SpecKind::Hardlink(target) => {
                if *target == spec.components {
                    return Ok(Applied::Skipped);
                }
                let node = self.link_target(target, &spec.display)?;
                if existing != Some(node) {
                    if let Some(old) = existing {
                        self.unlink(dir, name, old);
                    }
                    self.insert(dir, name, node);
                }
                None
            }
        };
        if let Some(kind) = new_kind {
            self.replace(dir, name, kind, spec.attrs.clone());
        }
        self.mark_created(&spec.components);
        Ok(Applied::Stored)
    }

    fn apply_root(&mut self, spec: &Spec) -> Result<Applied, TreeError> {
        if spec.kind != SpecKind::Directory {
            return Err(bad(format!(
                "entry {:?} would replace the layer root with a non-directory",
                spec.display
            )));
        }
        self.nodes[ROOT].attrs = spec.attrs.clone();
        Ok(Applied::Stored)
    }

    fn apply_whiteout(
        &mut self,
        parent: &[Vec<u8>],
        name: &[u8],
        spec: &Spec,
    ) -> Result<Applied, TreeError> {
        if name == OCI_OPAQUE.as_bytes() {
            let chain = self.ensure_dir(parent)?;
            let dir = *chain.last().expect("a chain holds the root");
            if let NodeKind::Dir { opaque, .. } = &mut self.nodes[dir].kind {
                *opaque = true;
            }
            return Ok(Applied::Stored);
        }
        if name.starts_with(b".wh..wh.") {
            tracing::debug!(path = %spec.display, "skipping AUFS housekeeping entry");
            return Ok(Applied::Skipped);
        }
        let target = &name[OCI_WHITEOUT_PREFIX.len()..];
        if target.is_empty() || target == b"." || target == b".." {
            return Err(bad(format!("invalid whiteout entry {}", spec.display)));
        }
        check_name(target, &spec.display)?;
        let chain = self.ensure_dir(parent)?;
        let dir = *chain.last().expect("a chain holds the root");
        let mut target_path = parent.to_vec();
        target_path.push(target.to_vec());
        if self.child(dir, target).is_some() && self.touches_created(&target_path) {
            // The entry comes from this very layer: a whiteout hides lower layers only.
            return Ok(Applied::Stored);
        }
        let attrs = Attrs {
            mode: 0,
            uid: 0,
            gid: 0,
            mtime: self.implied_mtime,
            xattrs: Vec::new(),
        };
        self.replace(dir, target, NodeKind::Whiteout, attrs);
        Ok(Applied::Stored)
    }

    /// The node a hard link entry points at: resolved inside the root, its final
    /// component not followed; it must exist and not be a directory.
    fn link_target(&mut self, target: &[Vec<u8>], display: &str) -> Result<NodeId, TreeError> {
        let missing = || {
            bad(format!(
                "hard link {display} points at {}, which is not in the layer",
                shown(target)
            ))
        };
        let Some((tname, tparent)) = target.split_last() else {
            return Err(bad(format!("hard link {display} points at the layer root")));
        };
        let chain = self.resolve(tparent, false).map_err(|_| missing())?;
        let dir = *chain
            .ok_or_else(missing)?
            .last()
            .expect("chain has the root");
        let node = self.child(dir, tname).ok_or_else(missing)?;
        if matches!(self.nodes[node].kind, NodeKind::Dir { .. }) {
            return Err(bad(format!(
                "hard link {display} points at directory {}",
                shown(target)
            )));
        }
        Ok(node)
    }

    /// Opens directory `components`, creating missing directories; returns the
    /// chain of directories from the root to it.
    fn ensure_dir(&mut self, components: &[Vec<u8>]) -> Result<Vec<NodeId>, TreeError> {
        Ok(self
            .resolve(components, true)?
            .expect("resolving with creation always finds the directory"))
    }

    /// Resolves directory `components` inside the root, following the layer's
    /// symlinks (absolute ones from the root, `..` stopping at the root).
    /// Missing plain components are created when `create` is set; a symlink
    /// leading to a missing directory is an error then. `Ok(None)` when the
    /// directory does not exist and `create` is not set.
    fn resolve(
        &mut self,
        components: &[Vec<u8>],
        create: bool,
    ) -> Result<Option<Vec<NodeId>>, TreeError> {
        let mut chain = vec![ROOT];
        let mut pending: VecDeque<Pending> = components
            .iter()
            .map(|c| Pending {
                name: c.clone(),
                from_symlink: false,
            })
            .collect();
        let mut followed = 0;
        let mut walked: Vec<Vec<u8>> = Vec::new();
        while let Some(Pending { name, from_symlink }) = pending.pop_front() {
            match name.as_slice() {
                b"" | b"." => continue,
                b".." => {
                    if chain.len() > 1 {
                        chain.pop();
                    }
                    walked.pop();
                    continue;
                }
                _ => {}
            }
            walked.push(name.clone());
            let dir = *chain.last().expect("chain has the root");
            match self.child(dir, &name) {
                None if !create => return Ok(None),
                None if from_symlink => {
                    return Err(bad(format!(
                        "cannot create directory {}: it is a symlink to a directory missing from the layer",
                        shown(components)
                    )))
                }
                None => {
                    check_name(&name, &shown(components))?;
                    let attrs = Attrs::implied_dir(self.implied_mtime);
                    let id = self.replace(
                        dir,
                        &name,
                        NodeKind::Dir {
                            children: BTreeMap::new(),
                            opaque: false,
                        },
                        attrs,
                    );
                    chain.push(id);
                }
                Some(id) => match &self.nodes[id].kind {
                    NodeKind::Dir { .. } => chain.push(id),
                    NodeKind::Symlink(target) => {
                        followed += 1;
                        if followed > MAX_SYMLINKS {
                            return Err(bad(format!(
                                "cannot open directory {} inside the layer: too many levels of symbolic links",
                                shown(components)
                            )));
                        }
                        walked.pop();
                        if target.starts_with(b"/") {
                            chain.truncate(1);
                            walked.clear();
                        }
                        for part in target.split(|b| *b == b'/').rev() {
                            pending.push_front(Pending {
                                name: part.to_vec(),
                                from_symlink: true,
                            });
                        }
                    }
                    _ if !create => return Ok(None),
                    _ => {
                        return Err(bad(format!(
                            "cannot open directory {} inside the layer: {} is not a directory",
                            shown(components),
                            shown(&walked)
                        )))
                    }
                },
            }
        }
        Ok(Some(chain))
    }

    /// Puts a new node at `name` in `dir`, removing what was there.
    fn replace(&mut self, dir: NodeId, name: &[u8], kind: NodeKind, attrs: Attrs) -> NodeId {
        if let Some(old) = self.child(dir, name) {
            self.unlink(dir, name, old);
        }
        let id = self.nodes.len();
        self.nodes.push(Node {
            kind,
            attrs,
            links: 0,
        });
        self.insert(dir, name, id);
        id
    }

    /// Records that the tar created `path` (lexically, as the applier does).
    fn mark_created(&mut self, path: &[Vec<u8>]) {
        for depth in (0..path.len()).rev() {
            if !self.created_ancestors.insert(path[..depth].to_vec()) {
                break;
            }
        }
        self.created.insert(path.to_vec());
    }

    /// Whether the tar created `path` or something below it.
    fn touches_created(&self, path: &[Vec<u8>]) -> bool {
        self.created.contains(path) || self.created_ancestors.contains(path)
    }

    fn insert(&mut self, dir: NodeId, name: &[u8], node: NodeId) {
        if let NodeKind::Dir { children, .. } = &mut self.nodes[dir].kind {
            children.insert(name.to_vec(), node);
        }
        self.nodes[node].links += 1;
    }

    /// Removes the entry `name` (naming `node`) from `dir`; a directory losing
    /// its only name takes its whole subtree with it.
    fn unlink(&mut self, dir: NodeId, name: &[u8], node: NodeId) {
        if let NodeKind::Dir { children, .. } = &mut self.nodes[dir].kind {
            children.remove(name);
        }
        let mut doomed = vec![node];
        while let Some(n) = doomed.pop() {
            let node = &mut self.nodes[n];
            node.links = node.links.saturating_sub(1);
            if node.links == 0 {
                if let NodeKind::Dir { children, .. } = &mut node.kind {
                    doomed.extend(std::mem::take(children).into_values());
                }
            }
        }
    }
}

/// Refuses names squashfs (and Linux) cannot hold.
fn check_name(name: &[u8], display: &str) -> Result<(), TreeError> {
    if name.len() > 255 {
        return Err(bad(format!("{display}: a name is longer than 255 bytes")));
    }
    if name.contains(&0) {
        return Err(bad(format!("{display}: a name contains a NUL byte")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs(mode: u32) -> Attrs {
        Attrs {
            mode,
            uid: 0,
            gid: 0,
            mtime: 7,
            xattrs: Vec::new(),
        }
    }

    fn spec(path: &str, kind: SpecKind) -> Spec {
        Spec {
            components: crate::fsutil::clean_components(path.as_bytes())
                .into_iter()
                .map(|c| c.into_encoded_bytes())
                .collect(),
            display: path.to_string(),
            kind,
            attrs: attrs(0o644),
        }
    }

    fn lookup(tree: &LayerTree, path: &str) -> Option<NodeId> {
        let mut node = ROOT;
        for part in path.split('/').filter(|p| !p.is_empty()) {
            node = tree.child(node, part.as_bytes())?;
        }
        Some(node)
    }

    fn file(tree: &mut LayerTree, path: &str, slot: usize) {
        tree.apply(spec(path, SpecKind::Regular), || Ok::<_, TreeError>(slot))
            .unwrap();
    }

    /// Applies a non-file entry (no content callback).
    fn put(tree: &mut LayerTree, s: Spec) -> Result<Applied, TreeError> {
        tree.apply(s, || -> Result<usize, TreeError> {
            unreachable!("not a file")
        })
    }

    #[test]
    fn later_entries_replace_earlier_ones() {
        let mut t = LayerTree::new(1);
        file(&mut t, "a/f", 1);
        put(&mut t, spec("a/f", SpecKind::Directory)).unwrap();
        file(&mut t, "a/f/g", 2);
        file(&mut t, "a/f", 3);
        let f = lookup(&t, "a/f").unwrap();
        assert_eq!(t.node(f).kind, NodeKind::File { slot: 3 });
        assert!(lookup(&t, "a/f/g").is_none());
    }

    #[test]
    fn whiteouts_hide_lower_layers_only() {
        let mut t = LayerTree::new(1);
        file(&mut t, "d/kept", 1);
        put(&mut t, spec("d/.wh.kept", SpecKind::Regular)).unwrap();
        put(&mut t, spec("d/.wh.gone", SpecKind::Regular)).unwrap();
        put(&mut t, spec("e/.wh..wh..opq", SpecKind::Regular)).unwrap();
        put(&mut t, spec(".wh..wh.plnk", SpecKind::Regular)).unwrap();
        assert!(matches!(
            t.node(lookup(&t, "d/kept").unwrap()).kind,
            NodeKind::File { .. }
        ));
        assert_eq!(
            t.node(lookup(&t, "d/gone").unwrap()).kind,
            NodeKind::Whiteout
        );
        assert!(matches!(
            t.node(lookup(&t, "e").unwrap()).kind,
            NodeKind::Dir { opaque: true, .. }
        ));
        assert!(lookup(&t, ".wh..wh.plnk").is_none() && lookup(&t, "plnk").is_none());
        // A directory created over a whiteout keeps hiding the lower directory.
        put(&mut t, spec("d/gone", SpecKind::Directory)).unwrap();
        assert!(matches!(
            t.node(lookup(&t, "d/gone").unwrap()).kind,
            NodeKind::Dir { opaque: true, .. }
        ));
        // A whiteout of an implied directory replaces it.
        put(&mut t, spec("x/.wh.y", SpecKind::Regular)).unwrap();
        put(&mut t, spec(".wh.x", SpecKind::Regular)).unwrap();
        assert_eq!(t.node(lookup(&t, "x").unwrap()).kind, NodeKind::Whiteout);
    }

    #[test]
    fn hard_links_share_a_node_and_survive_replacement() {
        let mut t = LayerTree::new(1);
        file(&mut t, "a", 1);
        put(&mut t, spec("b", SpecKind::Hardlink(vec![b"a".to_vec()]))).unwrap();
        let a = lookup(&t, "a").unwrap();
        assert_eq!(lookup(&t, "b"), Some(a));
        assert_eq!(t.node(a).links, 2);
        file(&mut t, "a", 2);
        assert_eq!(t.node(a).links, 1);
        assert_eq!(lookup(&t, "b"), Some(a));
        let err = put(
            &mut t,
            spec("c", SpecKind::Hardlink(vec![b"missing".to_vec()])),
        )
        .unwrap_err();
        assert!(err.0.contains("not in the layer"), "{err}");
    }

    #[test]
    fn parents_resolve_through_the_layers_symlinks_inside_the_root() {
        let mut t = LayerTree::new(1);
        put(&mut t, spec("usr/lib", SpecKind::Directory)).unwrap();
        put(
            &mut t,
            spec("lib", SpecKind::Symlink(b"/usr/../../usr/lib".to_vec())),
        )
        .unwrap();
        file(&mut t, "lib/x", 1);
        assert!(lookup(&t, "usr/lib/x").is_some());
        put(
            &mut t,
            spec("dangling", SpecKind::Symlink(b"nowhere".to_vec())),
        )
        .unwrap();
        let err = put(&mut t, spec("dangling/x", SpecKind::Regular)).unwrap_err();
        assert!(err.0.contains("missing from the layer"), "{err}");
        put(&mut t, spec("loop", SpecKind::Symlink(b"loop".to_vec()))).unwrap();
        assert!(put(&mut t, spec("loop/x", SpecKind::Regular)).is_err());
    }

    #[test]
    fn removed_directories_release_their_subtree() {
        let mut t = LayerTree::new(1);
        file(&mut t, "d/a", 1);
        put(
            &mut t,
            spec("b", SpecKind::Hardlink(vec![b"d".to_vec(), b"a".to_vec()])),
        )
        .unwrap();
        let a = lookup(&t, "d/a").unwrap();
        file(&mut t, "d", 2);
        assert_eq!(t.node(a).links, 1, "the other name keeps the file alive");
        assert_eq!(lookup(&t, "b"), Some(a));
    }

    #[test]
    fn zero_zero_character_devices_are_dropped() {
        let mut t = LayerTree::new(1);
        let zero = SpecKind::Device {
            block: false,
            major: 0,
            minor: 0,
        };
        let r = put(&mut t, spec("dev/wh", zero)).unwrap();
        assert_eq!(r, Applied::Skipped);
        assert!(lookup(&t, "dev/wh").is_none());
    }
}
