//! Where the store lives by default.

use std::ffi::OsString;
use std::path::PathBuf;

/// The environment variable that overrides the store root.
pub const ROOT_ENV: &str = "LAMINA_ROOT";
/// The store root used when running as root.
pub const SYSTEM_ROOT: &str = "/var/lib/lamina";

/// The default store root: `$LAMINA_ROOT` if set, else `/var/lib/lamina` when
/// running as root (euid 0), else `$XDG_DATA_HOME/lamina`, falling back to
/// `$HOME/.local/share/lamina` (and to `./.lamina` if `HOME` is unset too).
pub fn default_root() -> PathBuf {
    root_from(
        |key| std::env::var_os(key),
        nix::unistd::geteuid().is_root(),
    )
}

/// The rule behind [`default_root`], given an environment lookup and whether the caller is root.
pub fn root_from(env: impl Fn(&str) -> Option<OsString>, is_root: bool) -> PathBuf {
    let set = |key: &str| env(key).filter(|value| !value.is_empty());
    if let Some(root) = set(ROOT_ENV) {
        return PathBuf::from(root);
    }
    if is_root {
        return PathBuf::from(SYSTEM_ROOT);
    }
    if let Some(data_home) = set("XDG_DATA_HOME") {
        return PathBuf::from(data_home).join("lamina");
    }
    match set("HOME") {
        Some(home) => PathBuf::from(home).join(".local/share/lamina"),
        None => PathBuf::from(".lamina"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<OsString> + 'a {
        move |key| {
            pairs
                .iter()
                .find(|(k, _)| *k == key)
                .map(|(_, v)| OsString::from(v))
        }
    }

    #[test]
    fn lamina_root_wins_over_everything() {
        let vars = [
            ("LAMINA_ROOT", "/srv/l"),
            ("XDG_DATA_HOME", "/x"),
            ("HOME", "/h"),
        ];
        assert_eq!(root_from(env(&vars), true), PathBuf::from("/srv/l"));
        assert_eq!(root_from(env(&vars), false), PathBuf::from("/srv/l"));
    }

    #[test]
    fn root_user_gets_the_system_root() {
        assert_eq!(
            root_from(env(&[("HOME", "/root")]), true),
            PathBuf::from(SYSTEM_ROOT)
        );
    }

    #[test]
    fn other_users_get_xdg_data_home_then_home() {
        let vars = [("XDG_DATA_HOME", "/x"), ("HOME", "/h")];
        assert_eq!(root_from(env(&vars), false), PathBuf::from("/x/lamina"));
        let vars = [("XDG_DATA_HOME", ""), ("HOME", "/h")];
        assert_eq!(
            root_from(env(&vars), false),
            PathBuf::from("/h/.local/share/lamina")
        );
        assert_eq!(root_from(env(&[]), false), PathBuf::from(".lamina"));
    }
}
