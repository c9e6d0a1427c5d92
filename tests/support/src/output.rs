//! Where image writers put their files: a directory or a tar stream.

use std::collections::HashSet;
use std::fs;
use std::io::{self, Write};
use std::path::PathBuf;

use tar::EntryType;

use crate::digest::HashingWriter;
use crate::layer::DEFAULT_MTIME;
use crate::tar_out::{self, HeaderSpec, LongNameFormat};

/// A callback that writes a file's content.
pub(crate) type WriteFn<'a> = dyn FnMut(&mut dyn Write) -> io::Result<()> + 'a;

/// A destination for the files of an image archive or layout. Writing a path a
/// second time is a no-op (blobs shared between images are stored once).
pub(crate) trait Output {
    /// Creates a directory (tar outputs record a directory entry).
    fn dir(&mut self, path: &str) -> io::Result<()>;

    /// Writes a file of exactly `size` bytes produced by `write`.
    fn file(&mut self, path: &str, size: u64, write: &mut WriteFn<'_>) -> io::Result<()>;

    /// Writes a file from memory.
    fn bytes(&mut self, path: &str, data: &[u8]) -> io::Result<()> {
        self.file(path, data.len() as u64, &mut |w| w.write_all(data))
    }
}

fn size_mismatch(path: &str, size: u64, written: u64) -> io::Error {
    io::Error::other(format!(
        "{path}: announced {size} bytes but wrote {written}"
    ))
}

/// Writes files below a directory on disk.
pub(crate) struct DirOutput {
    root: PathBuf,
    written: HashSet<String>,
}

impl DirOutput {
    pub(crate) fn new(root: PathBuf) -> io::Result<Self> {
        fs::create_dir_all(&root)?;
        Ok(DirOutput {
            root,
            written: HashSet::new(),
        })
    }
}

impl Output for DirOutput {
    fn dir(&mut self, path: &str) -> io::Result<()> {
        fs::create_dir_all(self.root.join(path))
    }

    fn file(&mut self, path: &str, size: u64, write: &mut WriteFn<'_>) -> io::Result<()> {
        if !self.written.insert(path.to_string()) {
            return Ok(());
        }
        let full = self.root.join(path);
        if let Some(parent) = full.parent() {
            fs::create_dir_all(parent)?;
        }
        let mut w = HashingWriter::new(io::BufWriter::new(fs::File::create(&full)?));
        write(&mut w)?;
        w.flush()?;
        if w.written() != size {
            return Err(size_mismatch(path, size, w.written()));
        }
        Ok(())
    }
}

/// Streams files into a tar archive.
pub(crate) struct TarOutput<W: Write> {
    w: W,
    written: HashSet<String>,
}

impl<W: Write> TarOutput<W> {
    pub(crate) fn new(w: W) -> Self {
        TarOutput {
            w,
            written: HashSet::new(),
        }
    }

    /// Writes the end-of-archive blocks and returns the writer.
    pub(crate) fn finish(mut self) -> io::Result<W> {
        tar_out::finish(&mut self.w)?;
        self.w.flush()?;
        Ok(self.w)
    }

    fn header(
        &mut self,
        name: &[u8],
        entry_type: EntryType,
        mode: u32,
        size: u64,
    ) -> io::Result<()> {
        let mut header = tar_out::gnu_header(entry_type, mode, size);
        header.set_mtime(DEFAULT_MTIME);
        tar_out::write_header(
            &mut self.w,
            HeaderSpec {
                name,
                link: None,
                header,
                pax: Vec::new(),
                long_names: LongNameFormat::Gnu,
            },
        )
    }
}

impl<W: Write> Output for TarOutput<W> {
    fn dir(&mut self, path: &str) -> io::Result<()> {
        let name = format!("{}/", path.trim_end_matches('/'));
        if !self.written.insert(name.clone()) {
            return Ok(());
        }
        self.header(name.as_bytes(), EntryType::Directory, 0o755, 0)
    }

    fn file(&mut self, path: &str, size: u64, write: &mut WriteFn<'_>) -> io::Result<()> {
        if !self.written.insert(path.to_string()) {
            return Ok(());
        }
        self.header(path.as_bytes(), EntryType::Regular, 0o644, size)?;
        let mut w = HashingWriter::new(&mut self.w);
        write(&mut w)?;
        let written = w.written();
        if written != size {
            return Err(size_mismatch(path, size, written));
        }
        tar_out::pad(&mut self.w, size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn tar_output_streams_files_and_dedupes() {
        let mut out = TarOutput::new(Vec::new());
        out.dir("blobs").unwrap();
        out.bytes("blobs/a", b"hello").unwrap();
        out.bytes("blobs/a", b"ignored").unwrap();
        let tar = out.finish().unwrap();
        let mut ar = tar::Archive::new(&tar[..]);
        let mut seen = Vec::new();
        for e in ar.entries().unwrap() {
            let mut e = e.unwrap();
            let mut data = String::new();
            e.read_to_string(&mut data).unwrap();
            seen.push((e.path().unwrap().display().to_string(), data));
        }
        assert_eq!(
            seen,
            [
                ("blobs/".to_string(), String::new()),
                ("blobs/a".to_string(), "hello".to_string())
            ]
        );
    }

    #[test]
    fn a_wrong_announced_size_is_an_error() {
        let tmp = tempfile::tempdir().unwrap();
        let mut out = DirOutput::new(tmp.path().to_path_buf()).unwrap();
        let err = out
            .file("x", 3, &mut |w| w.write_all(b"toolong"))
            .unwrap_err();
        assert!(err.to_string().contains("announced 3"), "{err}");
        let mut out = TarOutput::new(Vec::new());
        assert!(out.file("x", 3, &mut |w| w.write_all(b"ab")).is_err());
    }
}
