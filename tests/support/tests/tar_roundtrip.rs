//! The `tar` crate reads back every entry kind that `LayerBuilder` writes.

use std::collections::BTreeMap;
use std::io::Read;

use tar::{Archive, EntryType};
use test_support::{
    compress, fixtures, generated_content, Compression, LayerBuilder, LongNameFormat,
};

/// What the reader saw for one entry.
#[derive(Debug, Clone, PartialEq)]
struct Seen {
    kind: EntryType,
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: u64,
    link: Option<String>,
    data: Vec<u8>,
    dev: Option<(u32, u32)>,
    xattrs: BTreeMap<String, Vec<u8>>,
}

fn read_all(tar: &[u8]) -> Vec<(String, Seen)> {
    let mut archive = Archive::new(tar);
    let mut out = Vec::new();
    for entry in archive.entries().unwrap() {
        let mut e = entry.unwrap();
        let path = String::from_utf8(e.path_bytes().into_owned()).unwrap();
        let link = e
            .link_name_bytes()
            .map(|l| String::from_utf8(l.into_owned()).unwrap());
        let mut xattrs = BTreeMap::new();
        if let Some(exts) = e.pax_extensions().unwrap() {
            for ext in exts {
                let ext = ext.unwrap();
                if let Some(name) = ext.key().unwrap().strip_prefix("SCHILY.xattr.") {
                    xattrs.insert(name.to_string(), ext.value_bytes().to_vec());
                }
            }
        }
        let h = e.header().clone();
        let dev = match h.entry_type() {
            EntryType::Char | EntryType::Block => Some((
                h.device_major().unwrap().unwrap(),
                h.device_minor().unwrap().unwrap(),
            )),
            _ => None,
        };
        let mut data = Vec::new();
        e.read_to_end(&mut data).unwrap();
        out.push((
            path,
            Seen {
                kind: h.entry_type(),
                mode: h.mode().unwrap(),
                uid: h.uid().unwrap(),
                gid: h.gid().unwrap(),
                mtime: h.mtime().unwrap(),
                link,
                data,
                dev,
                xattrs,
            },
        ));
    }
    out
}

fn find<'a>(seen: &'a [(String, Seen)], path: &str) -> &'a Seen {
    &seen
        .iter()
        .find(|(p, _)| p == path)
        .unwrap_or_else(|| {
            panic!(
                "{path} not in archive: {:?}",
                seen.iter().map(|(p, _)| p).collect::<Vec<_>>()
            )
        })
        .1
}

fn sparse_content(size: usize, segments: &[(usize, &[u8])]) -> Vec<u8> {
    let mut v = vec![0u8; size];
    for (off, d) in segments {
        v[*off..off + d.len()].copy_from_slice(d);
    }
    v
}

#[test]
fn every_entry_kind_reads_back() {
    let long_name = format!("dir/{}", "x".repeat(150));
    let long_target = format!("../{}", "y".repeat(120));
    let deep: String = (0..40).map(|i| format!("l{i}/")).collect::<String>() + "f";
    let layer = LayerBuilder::new()
        .dir("dir", 0o755)
        .file("dir/file", "content", 0o644)
        .owner(1000, 2000)
        .mtime(1_234_567_890)
        .file("dir/empty", "", 0o600)
        .file("dir/suid", "s", 0o4755)
        .file("dir/sgid", "s", 0o2711)
        .dir("sticky", 0o1777)
        .symlink("dir/abs", "/etc/passwd")
        .symlink("dir/rel", "../dir/file")
        .hardlink("dir/hard", "dir/file")
        .fifo("dir/fifo", 0o640)
        .char_device("dir/chr", 1, 3)
        .block_device("dir/blk", 259, 70000)
        .file("dir/attrs", "x", 0o644)
        .xattr("user.one", "1")
        .xattr("security.capability", fixtures::capability_xattr(1 << 10))
        .whiteout("dir/gone")
        .opaque("dir")
        .file(&long_name, "long", 0o644)
        .symlink("dir/longlink", &long_target)
        .file("données/日本語.txt", "unicode", 0o644)
        .file(&deep, "deep", 0o644)
        .file("dir/big-uid", "", 0o644)
        .owner(3_000_000, 3_000_000);
    let tar = layer.to_tar();
    assert_eq!(tar.len() % 512, 0);
    assert_eq!(&tar[tar.len() - 1024..], &[0u8; 1024][..]);
    let seen = read_all(&tar);
    let paths: Vec<&str> = seen.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(
        paths.len(),
        layer.len(),
        "entries in order, one each: {paths:?}"
    );
    assert_eq!(paths[0], "dir/");
    assert_eq!(paths[1], "dir/file");

    let f = find(&seen, "dir/file");
    assert_eq!(f.kind, EntryType::Regular);
    assert_eq!(
        (f.uid, f.gid, f.mtime, f.mode),
        (1000, 2000, 1_234_567_890, 0o644)
    );
    assert_eq!(f.data, b"content");
    assert_eq!(find(&seen, "dir/").kind, EntryType::Directory);
    assert_eq!(find(&seen, "dir/").mtime, test_support::DEFAULT_MTIME);
    assert_eq!(find(&seen, "dir/empty").data, b"");
    assert_eq!(find(&seen, "dir/suid").mode, 0o4755);
    assert_eq!(find(&seen, "dir/sgid").mode, 0o2711);
    assert_eq!(find(&seen, "sticky/").mode, 0o1777);
    let abs = find(&seen, "dir/abs");
    assert_eq!(
        (abs.kind, abs.link.as_deref()),
        (EntryType::Symlink, Some("/etc/passwd"))
    );
    assert_eq!(find(&seen, "dir/rel").link.as_deref(), Some("../dir/file"));
    let hard = find(&seen, "dir/hard");
    assert_eq!(
        (hard.kind, hard.link.as_deref()),
        (EntryType::Link, Some("dir/file"))
    );
    assert_eq!(find(&seen, "dir/fifo").kind, EntryType::Fifo);
    assert_eq!(find(&seen, "dir/fifo").mode, 0o640);
    assert_eq!(find(&seen, "dir/chr").dev, Some((1, 3)));
    assert_eq!(find(&seen, "dir/chr").kind, EntryType::Char);
    assert_eq!(find(&seen, "dir/blk").dev, Some((259, 70000)));
    assert_eq!(find(&seen, "dir/blk").kind, EntryType::Block);
    let attrs = find(&seen, "dir/attrs");
    assert_eq!(attrs.xattrs.get("user.one").unwrap(), b"1");
    assert_eq!(
        attrs.xattrs.get("security.capability").unwrap(),
        &fixtures::capability_xattr(1 << 10)
    );
    assert_eq!(find(&seen, "dir/.wh.gone").data, b"");
    assert_eq!(find(&seen, "dir/.wh..wh..opq").kind, EntryType::Regular);
    assert_eq!(find(&seen, &long_name).data, b"long");
    assert_eq!(
        find(&seen, "dir/longlink").link.as_deref(),
        Some(long_target.as_str())
    );
    assert_eq!(find(&seen, "données/日本語.txt").data, b"unicode");
    assert_eq!(find(&seen, &deep).data, b"deep");
    assert_eq!(find(&seen, "dir/big-uid").uid, 3_000_000);
}

#[test]
fn long_names_read_back_in_both_encodings() {
    let name = format!("a/{}/{}", "b".repeat(90), "c".repeat(120));
    let target = format!("/{}", "t".repeat(200));
    for format in [LongNameFormat::Gnu, LongNameFormat::Pax] {
        let layer = LayerBuilder::new()
            .long_names(format)
            .file(&name, "data", 0o644)
            .symlink(&format!("{name}-link"), &target)
            .hardlink(&format!("{name}-hard"), &name)
            .dir(&"d".repeat(101), 0o755);
        let tar = layer.to_tar();
        // The encodings differ on disk...
        let has_gnu_longlink = tar.windows(13).any(|w| w == b"././@LongLink");
        assert_eq!(
            has_gnu_longlink,
            format == LongNameFormat::Gnu,
            "{format:?}"
        );
        // ...and read back the same.
        let seen = read_all(&tar);
        assert_eq!(find(&seen, &name).data, b"data", "{format:?}");
        assert_eq!(
            find(&seen, &format!("{name}-link")).link.as_deref(),
            Some(target.as_str())
        );
        assert_eq!(
            find(&seen, &format!("{name}-hard")).link.as_deref(),
            Some(name.as_str())
        );
        assert_eq!(
            find(&seen, &format!("{}/", "d".repeat(101))).kind,
            EntryType::Directory
        );
    }
}

#[test]
fn sparse_files_are_real_gnu_sparse_entries() {
    let head = vec![7u8; 1000];
    type Segments<'a> = Vec<(usize, &'a [u8])>;
    let cases: Vec<(usize, Segments)> = vec![
        // Data at start, in the middle (unaligned), hole at the end.
        (
            1 << 20,
            vec![
                (0, &head[..]),
                (300_001, b"middle"),
                (700_000, &head[..100]),
            ],
        ),
        // More than 4 regions: extension headers; data at the very end.
        (
            200_000,
            (0..9)
                .map(|k| (k * 20_000 + 5, &head[..10 + k]))
                .chain([(199_990, &b"end of file"[..10])])
                .collect(),
        ),
        // Only holes.
        (4096, vec![]),
        // More than 4 + 21 regions: a chain of extension headers.
        (1 << 20, (0..30).map(|k| (k * 30_000, &head[..1])).collect()),
    ];
    for (size, segments) in cases {
        let segs: Vec<(u64, &[u8])> = segments.iter().map(|(o, d)| (*o as u64, *d)).collect();
        let layer = LayerBuilder::new()
            .sparse_file("s.img", size as u64, &segs)
            .mode(0o600);
        let tar = layer.to_tar();
        assert!(
            tar.len() < size.max(16 << 10),
            "holes are not stored ({} bytes)",
            tar.len()
        );
        let mut archive = Archive::new(&tar[..]);
        let mut entries = archive.entries().unwrap();
        let mut e = entries.next().unwrap().unwrap();
        assert_eq!(e.header().entry_type(), EntryType::GNUSparse);
        assert_eq!(e.header().mode().unwrap(), 0o600);
        assert_eq!(e.size(), size as u64);
        let mut data = Vec::new();
        e.read_to_end(&mut data).unwrap();
        assert_eq!(
            data,
            sparse_content(size, &segments),
            "segments {segments:?}"
        );
        drop(e);
        assert!(entries.next().is_none());
    }
}

#[test]
fn generated_and_compressed_layers_read_back() {
    let layer = LayerBuilder::new().generated_file("big", 3 << 20, 42, 0o644);
    let mut expected = Vec::new();
    generated_content(3 << 20, 42)
        .read_to_end(&mut expected)
        .unwrap();
    for c in [Compression::None, Compression::Gzip, Compression::Zstd] {
        let blob = layer.to_blob(c);
        assert_eq!(blob, compress(&layer.to_tar(), c));
        let tar = match c {
            Compression::None => blob,
            Compression::Gzip => {
                let mut v = Vec::new();
                flate2::read::GzDecoder::new(&blob[..])
                    .read_to_end(&mut v)
                    .unwrap();
                v
            }
            Compression::Zstd => zstd::decode_all(&blob[..]).unwrap(),
        };
        let seen = read_all(&tar);
        assert_eq!(find(&seen, "big").data, expected, "{c:?}");
    }
}

#[test]
fn output_is_deterministic_and_raw_names_are_verbatim() {
    let build = || {
        LayerBuilder::new()
            .file("a", "1", 0o644)
            .raw_file(b"../escape", "x", 0o644)
            .raw_file(b"/abs/path", "y", 0o644)
            .to_tar()
    };
    assert_eq!(build(), build());
    let tar = build();
    // Read the raw header names (the tar crate refuses nothing when listing).
    let names: Vec<Vec<u8>> = read_all(&tar)
        .into_iter()
        .map(|(p, _)| p.into_bytes())
        .collect();
    assert_eq!(
        names,
        [b"a".to_vec(), b"../escape".to_vec(), b"/abs/path".to_vec()]
    );
}

#[test]
fn rich_image_layers_all_parse() {
    let image = fixtures::rich_image();
    for (i, layer) in image.layers().iter().enumerate() {
        let seen = read_all(&layer.to_tar());
        assert_eq!(seen.len(), layer.len(), "layer {i}");
    }
}
