//! The command line, as clap parses it. The names here are the CLI's contract.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

/// Lamina: container storage drivers (overlay2, aufs, vfs, squashfs) with kernel and FUSE frontends.
#[derive(Debug, Parser)]
#[command(name = "lamina", version, about, max_term_width = 100)]
pub struct Cli {
    /// The store root (default: $LAMINA_ROOT, else /var/lib/lamina as root, else $XDG_DATA_HOME/lamina).
    #[arg(long, global = true, value_name = "DIR")]
    pub root: Option<PathBuf>,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Output format of listing commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum Format {
    /// Aligned columns for people.
    #[default]
    Table,
    /// JSON for scripts.
    Json,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Import a docker-archive (`docker save`), an OCI image layout (dir or tar) or a single layer tar (plain, gzip, zstd).
    Import {
        /// The archive, layout directory or layer tar.
        path: PathBuf,
        /// Name the image NAME:TAG (overrides the names in the archive).
        #[arg(long, value_name = "NAME:TAG")]
        name: Option<String>,
    },
    /// List images.
    Images {
        /// Output format.
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Show an image's metadata, layers and config as JSON.
    Inspect {
        /// Image name, id or id prefix.
        image: String,
    },
    /// Remove an image name (by id: every name); blobs stay until `gc`.
    Rmi {
        /// Image name, id or id prefix.
        image: String,
    },
    /// Remove unreferenced blobs, layers and driver data.
    Gc,
    /// Disk usage of images, layers and containers (shared layers counted once).
    Df {
        /// Output format.
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// List every driver × frontend and whether it works here.
    Drivers {
        /// Output format.
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Create a container: a writable layer on top of an image.
    Create {
        /// Storage driver (default: the best available here).
        #[arg(long)]
        driver: Option<String>,
        /// Image name, id or id prefix.
        image: String,
        /// The container's name.
        container: String,
    },
    /// Remove a container and its writable layer.
    Rm {
        /// Container name or id.
        container: String,
    },
    /// List containers.
    Ps {
        /// Output format.
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Mount an image (read-only) or a container (read-write) on MOUNTPOINT.
    Mount {
        /// Storage driver for images (containers use their own).
        #[arg(long)]
        driver: Option<String>,
        /// Who performs the mount.
        #[arg(long)]
        frontend: Option<String>,
        /// Mount a container read-only.
        #[arg(long)]
        read_only: bool,
        /// Mount only layer N's own diff (1-based, whiteouts shown as `.wh.` files).
        #[arg(long, value_name = "N", conflicts_with = "upto")]
        layer: Option<usize>,
        /// Mount the image as of layer N (1-based).
        #[arg(long, value_name = "N")]
        upto: Option<usize>,
        /// Stay in the foreground (FUSE frontend) for debugging.
        #[arg(long)]
        foreground: bool,
        /// FUSE: present stored uids through CONTAINER:HOST:LEN ranges
        /// (fuse-overlayfs's uidmapping), e.g. `0:1000:1` shows root's files as uid 1000's.
        #[arg(long, value_name = "MAP")]
        uidmap: Option<fuse_frontend::IdMap>,
        /// FUSE: the same for gids.
        #[arg(long, value_name = "MAP")]
        gidmap: Option<fuse_frontend::IdMap>,
        /// FUSE: like overlayfs's `volatile`, never flush the container's layer to
        /// stable storage (faster copy-ups; after a host crash, discard the container).
        #[arg(long)]
        volatile: bool,
        /// FUSE: answer through `/dev/fuse` only, not FUSE over io_uring (which
        /// is used where the kernel offers it: Linux 6.14+, `fuse.enable_uring=Y`).
        #[arg(long)]
        no_io_uring: bool,
        /// Image or container.
        target: String,
        /// An existing directory.
        mountpoint: PathBuf,
    },
    /// Unmount what `lamina mount` mounted.
    Umount {
        /// The mountpoint.
        mountpoint: PathBuf,
    },
    /// What changed in a container, as `docker diff` prints it (`A`, `C`, `D`).
    Diff {
        /// Container name or id.
        container: String,
        /// Output format.
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Turn a container's changes into a new layer and image.
    Commit {
        /// Container name or id.
        container: String,
        /// The new image's name.
        reference: String,
    },
    /// Write the merged root filesystem of an image or container as one tar.
    Export {
        /// Image or container.
        target: String,
        /// The tar file to write.
        #[arg(short, long)]
        output: PathBuf,
    },
    /// Write an image as a docker-archive (`docker save` format).
    Save {
        /// Image name, id or id prefix.
        image: String,
        /// The tar file to write.
        #[arg(short, long)]
        output: PathBuf,
    },
    /// Generate and import the built-in sample image (needs a static busybox).
    Sample {
        /// The sample's name.
        #[arg(long, value_name = "NAME:TAG", default_value = "lamina-sample:latest")]
        name: String,
    },
    /// Make an OCI runtime bundle: the root filesystem mounted at DIR/rootfs and a
    /// config.json from the image config, so `runc run -b DIR NAME` starts it.
    Bundle {
        /// Storage driver for images (containers use their own).
        #[arg(long)]
        driver: Option<String>,
        /// Who performs the mount.
        #[arg(long)]
        frontend: Option<String>,
        /// Tear the bundle down instead (unmount DIR/rootfs, remove config.json).
        #[arg(long)]
        remove: bool,
        /// FUSE: uid mapping of the root filesystem (default for an unprivileged
        /// user: `0:UID:1`, the rootless container's user namespace).
        #[arg(long, value_name = "MAP")]
        uidmap: Option<fuse_frontend::IdMap>,
        /// FUSE: gid mapping of the root filesystem (default when unprivileged: `0:GID:1`).
        #[arg(long, value_name = "MAP")]
        gidmap: Option<fuse_frontend::IdMap>,
        /// Image (mounted read-only) or container (read-write); not with --remove.
        #[arg(required_unless_present = "remove")]
        target: Option<String>,
        /// The bundle directory.
        dir: Option<PathBuf>,
    },
    /// Run the same workloads on every driver × frontend and the peers, head to head.
    Bench {
        /// Drivers (and peers by id) to measure, comma-separated; default all available.
        /// `overlay2-volatile` adds overlay2 through FUSE with containers mounted `--volatile`,
        /// `overlay2-devfuse` overlay2 through FUSE mounted `--no-io-uring`.
        #[arg(long, value_delimiter = ',')]
        drivers: Vec<String>,
        /// Frontends to measure (kernel, fuse), comma-separated; default both.
        #[arg(long, value_delimiter = ',')]
        frontends: Vec<String>,
        /// Workloads to run, comma-separated; default all.
        #[arg(long, value_delimiter = ',')]
        workloads: Vec<String>,
        /// Smaller data sets and fewer repetitions.
        #[arg(long)]
        quick: bool,
        /// Samples per workload and target.
        #[arg(long)]
        repetitions: Option<usize>,
        /// Where the run's scratch store lives (its filesystem is what is measured).
        #[arg(long, value_name = "DIR")]
        scratch: Option<PathBuf>,
        /// Output format.
        #[arg(long, value_enum, default_value_t)]
        format: Format,
        /// Also write an HTML report with charts (and report.json) into DIR.
        #[arg(long, value_name = "DIR")]
        report: Option<PathBuf>,
    },
    /// Mount plain overlay-format directories like fuse-overlayfs (`-o lowerdir=A:B,upperdir=U,workdir=W MOUNTPOINT`).
    #[command(name = "fuse-overlay", disable_help_flag = true)]
    FuseOverlay {
        /// fuse-overlayfs's arguments.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<std::ffi::OsString>,
    },
    /// Per layer: digest, size, files added/changed/whited out, created_by.
    History {
        /// Image name, id or id prefix.
        image: String,
        /// Output format.
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
}
