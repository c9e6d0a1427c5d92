//! The `lamina` command.

use clap::Parser;
use tracing_subscriber::EnvFilter;

fn main() {
    // Exit quietly when the reader of our output goes away (`lamina images | head`).
    // SAFETY: restoring the default disposition of SIGPIPE before any thread starts.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    tracing_subscriber::fmt()
        .with_env_filter(
            // fuser warns at the end of every session whose filesystem was unmounted
            // from outside (its own unmount then fails): that is how sessions end here.
            EnvFilter::try_from_env("LAMINA_LOG")
                .unwrap_or_else(|_| EnvFilter::new("warn,fuser::session=error")),
        )
        .with_writer(std::io::stderr)
        .init();
    // Invoked as `lamina-fuse-overlay` (a link to lamina): fuse-overlayfs's command line.
    let mut argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let program = argv
        .first()
        .and_then(|a| std::path::Path::new(a).file_name())
        .and_then(|n| n.to_str())
        .unwrap_or_default()
        .to_string();
    if lamina::fuse_overlay::PROGRAM_NAMES.contains(&program.as_str()) {
        argv.splice(0..1, ["lamina".into(), "fuse-overlay".into()]);
    }
    let cli = lamina::cli::Cli::parse_from(argv);
    if let Err(e) = lamina::commands::run(cli) {
        // Causes whose text an outer message already quotes are not repeated.
        let mut message = String::new();
        for cause in e.chain().map(|c| c.to_string()) {
            if message.contains(&cause) {
                continue;
            }
            if !message.is_empty() {
                message.push_str(": ");
            }
            message.push_str(&cause);
        }
        eprintln!("lamina: {message}");
        std::process::exit(1);
    }
}
