//! Several processes' worth of threads on one mount at once: every thread
//! works on its own names (plus shared reads and copy-ups of shared lower
//! files) and checks its own model of them; the mount must neither fail nor
//! hang, and must end up exactly as the models say.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;

/// A tiny deterministic random number generator (xorshift).
struct Rng(u64);

impl Rng {
    fn next(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

const THREADS: u64 = 4;
const LOWER_FILES: u64 = 40;

fn lower_name(i: u64) -> &'static str {
    Box::leak(format!("shared/f{i:02}").into_boxed_str())
}

/// One worker: random operations on `own/<thread>/...`, appends to the shared
/// lower files it owns (`i % THREADS == thread`), reads of everything.
fn worker(root: &Path, thread: u64, deadline: Instant) -> BTreeMap<String, Vec<u8>> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (thread + 1).wrapping_mul(0x2545_f491_4f6c_dd1d));
    let own = root.join(format!("own{thread}"));
    fs::create_dir(&own).unwrap();
    let mut model: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut step = 0u64;
    while Instant::now() < deadline || step < 200 {
        step += 1;
        let name = format!("n{}", rng.next(12));
        let path = own.join(&name);
        match rng.next(8) {
            0 | 1 => {
                let data = format!("{thread}:{step}").into_bytes();
                fs::write(&path, &data).unwrap();
                model.insert(name, data);
            }
            2 => {
                let target = format!("n{}", rng.next(12));
                let r = fs::rename(&path, own.join(&target));
                match model.remove(&name) {
                    Some(data) => {
                        r.unwrap();
                        model.insert(target, data);
                    }
                    None => assert_eq!(errno_of(&r), libc::ENOENT),
                }
            }
            3 => {
                let r = fs::remove_file(&path);
                assert_eq!(
                    r.is_ok(),
                    model.remove(&name).is_some(),
                    "unlink {name}: {r:?}"
                );
            }
            4 => {
                let mut listed = names(&own);
                listed.sort();
                let expected: Vec<String> = model.keys().cloned().collect();
                assert_eq!(listed, expected);
            }
            5 => {
                let i = rng.next(LOWER_FILES);
                let shared = root.join(lower_name(i));
                if i % THREADS == thread {
                    fs::OpenOptions::new()
                        .append(true)
                        .open(&shared)
                        .unwrap()
                        .write_all(format!("+{thread}").as_bytes())
                        .unwrap();
                } else {
                    let data = fs::read(&shared).unwrap();
                    assert!(
                        data.starts_with(b"lower"),
                        "{:?}",
                        String::from_utf8_lossy(&data)
                    );
                }
            }
            6 => {
                let read = fs::read(&path);
                match model.get(&name) {
                    Some(data) => assert_eq!(&read.unwrap(), data),
                    None => assert_eq!(errno_of(&read), libc::ENOENT),
                }
            }
            _ => {
                let entries = fs::read_dir(root.join("shared")).unwrap().count() as u64;
                assert_eq!(entries, LOWER_FILES);
            }
        }
    }
    model
}

#[test]
fn many_threads_at_once_neither_fail_nor_hang() {
    if !gate("many_threads_at_once_neither_fail_nor_hang") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let mut layer = vec![Item::Dir("shared", 0o755)];
    for i in 0..LOWER_FILES {
        layer.push(Item::File(lower_name(i), b"lower", 0o644));
    }
    let dirs = StackDirs::build(t.path(), &[layer], OVERLAY);
    let m = dirs.merged.clone();
    let guard = FuseGuard::mount(
        dirs.spec(OVERLAY, true),
        &m,
        &fuse_frontend::FuseOptions {
            threads: 4,
            ..fuse_options(true)
        },
    );
    let deadline = Instant::now() + Duration::from_millis(1500);
    let workers: Vec<_> = (0..THREADS)
        .map(|thread| {
            let m = m.clone();
            std::thread::spawn(move || worker(&m, thread, deadline))
        })
        .collect();
    let models: Vec<BTreeMap<String, Vec<u8>>> =
        workers.into_iter().map(|w| w.join().unwrap()).collect();
    for (thread, model) in models.iter().enumerate() {
        let own = m.join(format!("own{thread}"));
        let listed = names(&own);
        assert_eq!(listed, model.keys().cloned().collect::<Vec<_>>());
        for (name, data) in model {
            assert_eq!(&fs::read(own.join(name)).unwrap(), data);
            assert_eq!(
                &fs::read(dirs.upper.join(format!("own{thread}")).join(name)).unwrap(),
                data
            );
        }
    }
    for i in 0..LOWER_FILES {
        let data = fs::read(m.join(lower_name(i))).unwrap();
        let appended = String::from_utf8_lossy(&data[5..]).into_owned();
        let thread = i % THREADS;
        assert!(
            appended.split('+').skip(1).all(|t| t == thread.to_string()),
            "{}: {appended}",
            lower_name(i)
        );
    }
    guard.unmount();
}
