//! The inode table: every object of the merged view the kernel has heard of.
//!
//! A node is one inode of the merged view. Directories have exactly one name
//! (their parent and name); other nodes have one name per hard link. A
//! non-directory is keyed by its identity in the layer that holds it (layer
//! index and that layer's inode number), so hard links — in a lower layer or
//! in the upper — are one node with one inode number. Inode numbers are never
//! reused during the life of a mount.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::io;
use std::path::PathBuf;

use drivers::layer::{Entry, FileKind};

use crate::sys::errno;

/// The inode number of the root directory.
pub(crate) const ROOT: u64 = 1;

/// One inode of the merged view.
#[derive(Debug)]
pub(crate) struct Node {
    /// What the node is (never changes).
    pub kind: FileKind,
    /// Names of the node: (parent inode, name). Empty for the root and for
    /// deleted nodes still referenced by the kernel or an open file.
    pub names: Vec<(u64, OsString)>,
    /// Known children of a directory, by name.
    pub children: HashMap<OsString, u64>,
    /// For a directory, every layer merging into it, top first; for anything
    /// else the one layer holding it.
    pub layers: Vec<usize>,
    /// The entry of the topmost layer when the node was resolved (authoritative
    /// for read-only layers; the upper is always read afresh).
    pub entry: Entry,
    /// Identities under which the node is registered (layer, inode in that layer).
    pub identities: Vec<(usize, u64)>,
    /// How many lookups the kernel holds.
    pub lookups: u64,
    /// How many open file handles refer to the node.
    pub opens: u64,
}

/// All nodes of a mount.
#[derive(Debug)]
pub(crate) struct Table {
    nodes: HashMap<u64, Node>,
    by_identity: HashMap<(usize, u64), u64>,
    next: u64,
}

impl Table {
    /// A table holding the root directory.
    pub fn new(root_layers: Vec<usize>, root_entry: Entry) -> Table {
        let mut nodes = HashMap::new();
        nodes.insert(
            ROOT,
            Node {
                kind: FileKind::Directory,
                names: Vec::new(),
                children: HashMap::new(),
                layers: root_layers,
                entry: root_entry,
                identities: Vec::new(),
                lookups: 1,
                opens: 0,
            },
        );
        Table {
            nodes,
            by_identity: HashMap::new(),
            next: ROOT + 1,
        }
    }

    /// The node `ino`, `ENOENT` when there is none.
    pub fn get(&self, ino: u64) -> io::Result<&Node> {
        self.nodes.get(&ino).ok_or_else(|| errno(libc::ENOENT))
    }

    /// The node `ino` for changes, `ENOENT` when there is none.
    pub fn get_mut(&mut self, ino: u64) -> io::Result<&mut Node> {
        self.nodes.get_mut(&ino).ok_or_else(|| errno(libc::ENOENT))
    }

    /// The merged path of `ino` (`""` for the root); `ENOENT` for a deleted node.
    pub fn path(&self, ino: u64) -> io::Result<PathBuf> {
        let mut parts: Vec<&OsStr> = Vec::new();
        let mut cur = ino;
        while cur != ROOT {
            let node = self.get(cur)?;
            let (parent, name) = node.names.first().ok_or_else(|| errno(libc::ENOENT))?;
            parts.push(name);
            cur = *parent;
            if parts.len() > 4096 {
                return Err(errno(libc::ELOOP));
            }
        }
        Ok(parts.iter().rev().collect())
    }

    /// The merged path of `name` inside directory `parent`.
    pub fn child_path(&self, parent: u64, name: &OsStr) -> io::Result<PathBuf> {
        Ok(self.path(parent)?.join(name))
    }

    /// The child `name` of `parent` if it is known.
    pub fn child(&self, parent: u64, name: &OsStr) -> Option<u64> {
        self.nodes
            .get(&parent)
            .and_then(|p| p.children.get(name).copied())
    }

    /// The node registered under identity (`layer`, `layer_ino`).
    pub fn by_identity(&self, layer: usize, layer_ino: u64) -> Option<u64> {
        self.by_identity.get(&(layer, layer_ino)).copied()
    }

    /// Registers `ino` under identity (`layer`, `layer_ino`).
    pub fn add_identity(&mut self, ino: u64, layer: usize, layer_ino: u64) {
        self.by_identity.insert((layer, layer_ino), ino);
        if let Some(node) = self.nodes.get_mut(&ino) {
            if !node.identities.contains(&(layer, layer_ino)) {
                node.identities.push((layer, layer_ino));
            }
        }
    }

    /// Creates a node and returns its inode number.
    pub fn insert(&mut self, kind: FileKind, layers: Vec<usize>, entry: Entry) -> u64 {
        let ino = self.next;
        self.next += 1;
        self.nodes.insert(
            ino,
            Node {
                kind,
                names: Vec::new(),
                children: HashMap::new(),
                layers,
                entry,
                identities: Vec::new(),
                lookups: 0,
                opens: 0,
            },
        );
        ino
    }

    /// Gives `ino` the name `name` inside `parent`.
    pub fn link(&mut self, ino: u64, parent: u64, name: &OsStr) -> io::Result<()> {
        self.get_mut(parent)?
            .children
            .insert(name.to_os_string(), ino);
        let node = self.get_mut(ino)?;
        if !node.names.iter().any(|(p, n)| *p == parent && n == name) {
            node.names.push((parent, name.to_os_string()));
        }
        Ok(())
    }

    /// Takes the name `name` inside `parent` away from whichever node has it.
    /// A node left without names forgets its upper identity (the upper may
    /// reuse the inode number for a new file).
    pub fn unlink(&mut self, parent: u64, name: &OsStr, upper: Option<usize>) {
        let Some(ino) = self
            .nodes
            .get_mut(&parent)
            .and_then(|p| p.children.remove(name))
        else {
            return;
        };
        let Some(node) = self.nodes.get_mut(&ino) else {
            return;
        };
        node.names.retain(|(p, n)| !(*p == parent && n == name));
        if node.names.is_empty() {
            let gone: Vec<(usize, u64)> = node
                .identities
                .iter()
                .copied()
                .filter(|(layer, _)| Some(*layer) == upper)
                .collect();
            node.identities.retain(|id| !gone.contains(id));
            for id in gone {
                if self.by_identity.get(&id) == Some(&ino) {
                    self.by_identity.remove(&id);
                }
            }
            self.drop_if_unused(ino);
        }
    }

    /// Moves the name (`parent`, `name`) of its node to (`new_parent`, `new_name`).
    pub fn rename(
        &mut self,
        parent: u64,
        name: &OsStr,
        new_parent: u64,
        new_name: &OsStr,
    ) -> io::Result<()> {
        let ino = self
            .nodes
            .get_mut(&parent)
            .and_then(|p| p.children.remove(name))
            .ok_or_else(|| errno(libc::ENOENT))?;
        let node = self.get_mut(ino)?;
        node.names.retain(|(p, n)| !(*p == parent && n == name));
        self.link(ino, new_parent, new_name)
    }

    /// Swaps the nodes named (`a_parent`, `a_name`) and (`b_parent`, `b_name`).
    pub fn exchange(
        &mut self,
        a_parent: u64,
        a_name: &OsStr,
        b_parent: u64,
        b_name: &OsStr,
    ) -> io::Result<()> {
        let a = self
            .child(a_parent, a_name)
            .ok_or_else(|| errno(libc::ENOENT))?;
        let b = self
            .child(b_parent, b_name)
            .ok_or_else(|| errno(libc::ENOENT))?;
        for (ino, parent, name) in [(a, a_parent, a_name), (b, b_parent, b_name)] {
            self.get_mut(ino)?
                .names
                .retain(|(p, n)| !(*p == parent && n == name));
        }
        self.link(a, b_parent, b_name)?;
        self.link(b, a_parent, a_name)
    }

    /// Every known node below directory `ino` (not `ino` itself).
    pub fn descendants(&self, ino: u64) -> Vec<u64> {
        let mut out = Vec::new();
        let mut stack = vec![ino];
        while let Some(dir) = stack.pop() {
            if let Some(node) = self.nodes.get(&dir) {
                for &child in node.children.values() {
                    out.push(child);
                    if self
                        .nodes
                        .get(&child)
                        .is_some_and(|c| c.kind == FileKind::Directory)
                    {
                        stack.push(child);
                    }
                }
            }
        }
        out
    }

    /// Counts `n` more kernel lookups of `ino`.
    pub fn add_lookups(&mut self, ino: u64, n: u64) {
        if let Some(node) = self.nodes.get_mut(&ino) {
            node.lookups += n;
        }
    }

    /// The kernel forgets `n` lookups of `ino`.
    pub fn forget(&mut self, ino: u64, n: u64) {
        if let Some(node) = self.nodes.get_mut(&ino) {
            node.lookups = node.lookups.saturating_sub(n);
        }
        self.drop_if_unused(ino);
    }

    /// Removes a deleted node nobody refers to any more. Nodes with names stay,
    /// so that an object keeps its inode number for the life of the mount.
    pub fn drop_if_unused(&mut self, ino: u64) {
        let unused = self
            .nodes
            .get(&ino)
            .is_some_and(|n| ino != ROOT && n.names.is_empty() && n.lookups == 0 && n.opens == 0);
        if unused {
            if let Some(node) = self.nodes.remove(&ino) {
                for id in node.identities {
                    if self.by_identity.get(&id) == Some(&ino) {
                        self.by_identity.remove(&id);
                    }
                }
                for child in node.children.into_values() {
                    if let Some(c) = self.nodes.get_mut(&child) {
                        c.names.retain(|(p, _)| *p != ino);
                    }
                    self.drop_if_unused(child);
                }
            }
        }
    }
}
