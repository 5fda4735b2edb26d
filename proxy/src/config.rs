//! The command line of `ringkv`, and its validation.
//!
//! Every flag is checked once, at start, and a bad one is reported as one line that names it
//! (`ringkv: --dir ./x: …`) with exit code 2, the code clap itself uses for usage errors, so a
//! script or a service manager sees the same failure whichever check caught it.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use clap::error::ErrorKind;
use clap::Parser;
use ringkv_common::acl::Acl;

use crate::tls::Tls;
use ringkv_storage::{Fsync, StorageConfig, StorageError};

/// Fewest and most shards a store may have. The count is fixed when the data directory is
/// created; 16384 matches Redis Cluster's slot count, beyond which column families only cost.
pub const SHARDS_RANGE: std::ops::RangeInclusive<i64> = 1..=16384;

/// The standalone server's flags, as typed on the command line.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "ringkv",
    version,
    about = "ringkv: a Redis-protocol key-value store (standalone: proxy and storage engine in one process)",
    long_about = None
)]
pub struct Cli {
    /// IP address to listen on for clients (an IPv4 or IPv6 address, no host names).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1")]
    pub bind: IpAddr,

    /// TCP port for clients (0 lets the system pick a free one; the log says which).
    #[arg(long, value_name = "PORT", default_value_t = 6379)]
    pub port: u16,

    /// Directory of the data files (created if missing; ignored with --in-memory).
    #[arg(long, value_name = "PATH", default_value = "./data")]
    pub dir: PathBuf,

    /// Number of shards, 1 to 16384; fixed when the data directory is created.
    #[arg(long, value_name = "N", default_value_t = 256,
          value_parser = clap::value_parser!(u32).range(SHARDS_RANGE))]
    pub shards: u32,

    /// Keep all data in memory: nothing survives a restart.
    #[arg(long)]
    pub in_memory: bool,

    /// When writes reach the disk, as Redis's appendfsync: always, everysec or no.
    #[arg(long, value_name = "POLICY", default_value = "everysec")]
    pub fsync: Fsync,

    /// Serve Prometheus metrics on http://ADDR/metrics (off when absent).
    #[arg(long, value_name = "ADDR")]
    pub metrics_addr: Option<std::net::SocketAddr>,

    /// Event-loop threads serving connections (default: one per core). Sharing a small
    /// machine with other busy processes, fewer can serve more; see the README.
    #[arg(long, value_name = "N",
          value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub event_loops: Option<u16>,

    /// Password clients must give with AUTH (or HELLO … AUTH default PASS) before anything else.
    #[arg(long, value_name = "PASSWORD", conflicts_with = "aclfile")]
    pub requirepass: Option<String>,

    /// Users and their permissions, in (a subset of) Redis's ACL file syntax.
    #[arg(long, value_name = "PATH")]
    pub aclfile: Option<PathBuf>,

    #[command(flatten)]
    #[allow(missing_docs)]
    pub limits: ClientLimits,

    #[command(flatten)]
    #[allow(missing_docs)]
    pub tls: TlsFlags,
}

/// Limits on clients, the same flags on `ringkv` and `ringkv-proxy` (Redis's names and
/// defaults).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::Args)]
pub struct ClientLimits {
    /// Most clients connected at once; beyond it a new connection gets
    /// `-ERR max number of clients reached` and is closed.
    #[arg(long, value_name = "N", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub maxclients: u64,

    /// Close a client idle for this many seconds (0: never).
    #[arg(long, value_name = "SECONDS", default_value_t = 0)]
    pub timeout: u64,

    /// Largest bulk argument a request may carry, in bytes (Redis's proto-max-bulk-len).
    #[arg(long, value_name = "BYTES", default_value_t = 512 * 1024 * 1024,
          value_parser = clap::value_parser!(u64).range(1024..=(1u64 << 32)))]
    pub proto_max_bulk_len: u64,
}

impl Default for ClientLimits {
    fn default() -> Self {
        ClientLimits {
            maxclients: 10_000,
            timeout: 0,
            proto_max_bulk_len: 512 * 1024 * 1024,
        }
    }
}

/// TLS on the client port: the same flags on `ringkv` and `ringkv-proxy`.
#[derive(Debug, Clone, Default, PartialEq, Eq, clap::Args)]
pub struct TlsFlags {
    /// PEM certificate chain: with --tls-key, the client port speaks TLS only.
    #[arg(long, value_name = "PATH", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of --tls-cert.
    #[arg(long, value_name = "PATH", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// PEM CA certificates: clients must present a certificate signed by one of them.
    #[arg(long, value_name = "PATH", requires = "tls_cert")]
    pub tls_ca: Option<PathBuf>,
}

impl TlsFlags {
    /// The TLS set-up, if asked for; the error names the flag whose file is unusable.
    pub fn load(&self) -> Result<Option<Tls>, ConfigError> {
        let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) else {
            return Ok(None);
        };
        Tls::load(cert, key, self.tls_ca.as_deref())
            .map(Some)
            .map_err(|(flag, reason)| {
                let value = match flag {
                    "--tls-key" => key,
                    "--tls-ca" => self.tls_ca.as_ref().unwrap_or(cert),
                    _ => cert,
                };
                ConfigError {
                    flag,
                    value: value.display().to_string(),
                    reason,
                }
            })
    }
}

/// A flag whose value cannot be used. Displays as `--flag value: reason` (`--flag: reason`
/// for a flag without a value), the line `ringkv` prints after its own name before exiting
/// with code 2.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{flag}{}{value}: {reason}", if value.is_empty() { "" } else { " " })]
pub struct ConfigError {
    /// The flag, with its dashes (`--dir`).
    pub flag: &'static str,
    /// The value as given.
    pub value: String,
    /// Why it cannot be used.
    pub reason: String,
}

/// The validated settings the server runs with.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address to listen on.
    pub bind: IpAddr,
    /// Port to listen on (0: any).
    pub port: u16,
    /// Data directory, as given.
    pub dir: PathBuf,
    /// Shard count.
    pub shards: u32,
    /// Whether data lives only in memory.
    pub in_memory: bool,
    /// WAL sync policy.
    pub fsync: Fsync,
    /// Where to serve Prometheus metrics, if anywhere.
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// Event-loop threads (`None`: one per core).
    pub event_loops: Option<u16>,
    /// Users and permissions.
    pub acl: Acl,
    /// Client limits.
    pub limits: ClientLimits,
    /// TLS on the client port.
    pub tls: Option<Tls>,
}

impl Config {
    /// Parses the process's arguments. Help and version requests print and exit 0; any other
    /// usage error becomes one line on stderr naming the flag, and exit code 2.
    pub fn from_args() -> Result<Config, ConfigError> {
        match Cli::try_parse() {
            Ok(cli) => Config::validate(cli),
            Err(err)
                if matches!(
                    err.kind(),
                    ErrorKind::DisplayHelp | ErrorKind::DisplayVersion
                ) =>
            {
                // clap prints help to stdout and exits 0; a failed print has nowhere to go.
                let _ = err.print();
                std::process::exit(0);
            }
            Err(err) => {
                eprintln!("ringkv: {}", clap_error_line(&err));
                std::process::exit(2);
            }
        }
    }

    /// Checks what clap cannot: that the data directory exists or can be created.
    pub fn validate(cli: Cli) -> Result<Config, ConfigError> {
        if !cli.in_memory {
            prepare_dir(&cli.dir)?;
        }
        let acl = load_acl(cli.requirepass.as_deref(), cli.aclfile.as_deref())?;
        let tls = cli.tls.load()?;
        Ok(Config {
            acl,
            limits: cli.limits,
            tls,
            bind: cli.bind,
            port: cli.port,
            dir: cli.dir,
            shards: cli.shards,
            in_memory: cli.in_memory,
            fsync: cli.fsync,
            metrics_addr: cli.metrics_addr,
            event_loops: cli.event_loops,
        })
    }

    /// How to open the storage engine.
    pub fn storage(&self) -> StorageConfig {
        StorageConfig::new(self.dir.clone(), self.shards, self.in_memory, self.fsync)
    }

    /// The flag to blame when the storage engine refuses to open.
    pub fn storage_error(&self, err: &StorageError) -> ConfigError {
        match err {
            StorageError::ShardCount { .. } => ConfigError {
                flag: "--shards",
                value: self.shards.to_string(),
                reason: err.to_string(),
            },
            StorageError::Open { .. } | StorageError::Engine(_) if self.in_memory => ConfigError {
                flag: "--in-memory",
                value: String::new(),
                reason: err.to_string(),
            },
            StorageError::Open { .. } | StorageError::Engine(_) => ConfigError {
                flag: "--dir",
                value: self.dir.display().to_string(),
                reason: err.to_string(),
            },
        }
    }
}

/// The users clients authenticate as: `--requirepass` protects the default user, `--aclfile`
/// defines every user; neither leaves the default user open, as Redis does.
pub fn load_acl(requirepass: Option<&str>, aclfile: Option<&Path>) -> Result<Acl, ConfigError> {
    match (requirepass, aclfile) {
        (Some(_), Some(_)) => Err(ConfigError {
            flag: "--requirepass",
            value: String::new(),
            reason: "cannot be combined with --aclfile (set the default user's password there)"
                .into(),
        }),
        (Some(""), None) => Err(ConfigError {
            flag: "--requirepass",
            value: String::new(),
            reason: "the password cannot be empty".into(),
        }),
        (Some(password), None) => Ok(Acl::with_requirepass(password)),
        (None, Some(path)) => {
            let fail = |reason: String| ConfigError {
                flag: "--aclfile",
                value: path.display().to_string(),
                reason,
            };
            let text = std::fs::read_to_string(path)
                .map_err(|e| fail(format!("cannot read the file: {e}")))?;
            Acl::parse(&text).map_err(|e| fail(e.to_string()))
        }
        (None, None) => Ok(Acl::open()),
    }
}

/// Creates the data directory if needed and checks it is a directory.
fn prepare_dir(dir: &Path) -> Result<(), ConfigError> {
    let fail = |reason: String| ConfigError {
        flag: "--dir",
        value: dir.display().to_string(),
        reason,
    };
    if dir.as_os_str().is_empty() {
        return Err(fail("cannot use an empty path".into()));
    }
    if dir.exists() && !dir.is_dir() {
        return Err(fail("exists and is not a directory".into()));
    }
    std::fs::create_dir_all(dir).map_err(|e| fail(format!("cannot create the directory: {e}")))?;
    let meta =
        std::fs::metadata(dir).map_err(|e| fail(format!("cannot read the directory: {e}")))?;
    if meta.permissions().readonly() {
        return Err(fail("is read-only".into()));
    }
    Ok(())
}

/// The first line of a clap error without its `error: ` prefix, e.g.
/// `invalid value '0' for '--shards <N>': 0 is not in 1..=16384`.
pub fn clap_error_line(err: &clap::Error) -> String {
    let rendered = err.render().to_string();
    let first = rendered
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("invalid arguments");
    first
        .strip_prefix("error: ")
        .unwrap_or(first)
        .trim()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, String> {
        let argv = std::iter::once("ringkv").chain(args.iter().copied());
        Cli::try_parse_from(argv).map_err(|e| clap_error_line(&e))
    }

    #[test]
    fn defaults_match_the_documented_ones() {
        let cli = parse(&[]).expect("no flags is valid");
        assert_eq!(cli.bind.to_string(), "127.0.0.1");
        assert_eq!(cli.port, 6379);
        assert_eq!(cli.dir, PathBuf::from("./data"));
        assert_eq!(cli.shards, 256);
        assert!(!cli.in_memory);
        assert_eq!(cli.fsync, Fsync::Everysec);
    }

    #[test]
    fn every_flag_is_parsed() {
        let cli = parse(&[
            "--bind",
            "::1",
            "--port",
            "7000",
            "--dir",
            "/tmp/x",
            "--shards",
            "16384",
            "--in-memory",
            "--fsync",
            "always",
        ])
        .expect("valid flags");
        assert_eq!(cli.bind.to_string(), "::1");
        assert_eq!(
            (cli.port, cli.shards, cli.in_memory, cli.fsync),
            (7000, 16384, true, Fsync::Always)
        );
    }

    #[test]
    fn bad_values_name_their_flag_on_one_line() {
        for (args, flag) in [
            (&["--shards", "0"][..], "--shards"),
            (&["--shards", "16385"], "--shards"),
            (&["--shards", "abc"], "--shards"),
            (&["--port", "99999"], "--port"),
            (&["--fsync", "sometimes"], "--fsync"),
            (&["--bind", "nowhere"], "--bind"),
        ] {
            let line = parse(args).expect_err("invalid");
            assert!(line.contains(flag), "{args:?}: {line}");
            assert!(!line.contains('\n'), "{line}");
            assert!(!line.starts_with("error"), "{line}");
        }
        let line = parse(&["--nope"]).expect_err("unknown flag");
        assert_eq!(line, "unexpected argument '--nope' found");
    }

    #[test]
    fn dir_under_a_regular_file_is_refused() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let file = tmp.path().join("file");
        std::fs::write(&file, b"x").expect("write");
        let cli = parse(&["--dir", file.join("sub").to_str().expect("utf8")]).expect("parses");
        let err = Config::validate(cli).expect_err("cannot create a directory under a file");
        assert_eq!(err.flag, "--dir");
        assert!(
            err.to_string().starts_with(&format!(
                "--dir {}: cannot create",
                file.join("sub").display()
            )),
            "{err}"
        );

        let cli = parse(&["--dir", file.to_str().expect("utf8")]).expect("parses");
        assert_eq!(
            Config::validate(cli).expect_err("a file").reason,
            "exists and is not a directory"
        );
    }

    #[test]
    fn errors_read_as_one_line_naming_the_flag() {
        let with_value = ConfigError {
            flag: "--dir",
            value: "./x".into(),
            reason: "cannot".into(),
        };
        assert_eq!(with_value.to_string(), "--dir ./x: cannot");
        let without = ConfigError {
            flag: "--in-memory",
            value: String::new(),
            reason: "cannot".into(),
        };
        assert_eq!(without.to_string(), "--in-memory: cannot");
    }

    #[test]
    fn dir_is_created_and_ignored_in_memory() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("a/b");
        let cli = parse(&["--dir", dir.to_str().expect("utf8")]).expect("parses");
        Config::validate(cli).expect("created");
        assert!(dir.is_dir());

        let file = tmp.path().join("file");
        std::fs::write(&file, b"x").expect("write");
        let cli = parse(&["--in-memory", "--dir", file.to_str().expect("utf8")]).expect("parses");
        assert!(
            Config::validate(cli).is_ok(),
            "--dir is not used with --in-memory"
        );
    }
}
