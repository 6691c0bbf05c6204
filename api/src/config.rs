//! Configuration of `loyalty serve`: flags, then environment variables,
//! then an optional TOML file, then defaults that work on a laptop.

use clap::{Args, Parser, Subcommand, ValueEnum};
use loyalty_actors::{Durability, EngineConfig};
use loyalty_persistence::IdempotencyRetention;
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "loyalty",
    version,
    about = "A durable, in-memory loyalty-points engine"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Start the engine: recover the data directory, then serve HTTP (and NATS when a URL is given).
    Serve(ServeArgs),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LogFormat {
    Human,
    Json,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DurabilityArg {
    /// Answer only after the fsync (the default, and the contract).
    Fsync,
    /// Answer before the fsync: a machine crash can lose acknowledged transactions.
    UnsafeNoFsync,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum VerifyArg {
    /// Read back and check every log record at start-up.
    Full,
    /// Check only the newest million records (faster start on large logs).
    Tail,
}

/// Every option of `serve`. Each is also an environment variable and a key
/// (snake_case) of the `--config` file.
#[derive(Args, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServeArgs {
    /// TOML file with any of the options below (flags and environment win).
    #[arg(long, env = "LOYALTY_CONFIG")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Data directory (RocksDB). Default: ./data
    #[arg(long, env = "LOYALTY_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// HTTP listen address. Default: 127.0.0.1:8080
    #[arg(long, env = "LOYALTY_HTTP_ADDR")]
    pub http_addr: Option<String>,
    /// NATS server URL, e.g. nats://127.0.0.1:4222. Without it, NATS is off.
    #[arg(long, env = "LOYALTY_NATS_URL")]
    pub nats_url: Option<String>,
    /// Operator token for creating businesses. Without it, one is generated
    /// and printed once on first start.
    #[arg(long, env = "LOYALTY_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Seconds an enrollment may sit idle before it leaves memory. Default: 300
    #[arg(long, env = "LOYALTY_PASSIVATE_AFTER_SECS")]
    pub passivate_after_secs: Option<u64>,
    /// Write a snapshot every this many events of an enrollment. Default: 64
    #[arg(long, env = "LOYALTY_SNAPSHOT_EVERY_EVENTS")]
    pub snapshot_every_events: Option<u64>,
    /// Actor threads. Default: one per core.
    #[arg(long, env = "LOYALTY_SHARDS")]
    pub shards: Option<usize>,
    /// HTTP worker threads. Default: one per core.
    #[arg(long, env = "LOYALTY_HTTP_WORKERS")]
    pub http_workers: Option<usize>,
    /// Commands in flight before new ones are refused with 429. Default: 65536
    #[arg(long, env = "LOYALTY_INFLIGHT_MAX")]
    pub inflight_max: Option<usize>,
    /// Log format. Default: human. Filter with RUST_LOG.
    #[arg(long, env = "LOYALTY_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
    /// When to answer. Default: fsync.
    #[arg(long, env = "LOYALTY_DURABILITY", value_enum)]
    pub durability: Option<DurabilityArg>,
    /// How much of the log start-up checks. Default: full.
    #[arg(long, env = "LOYALTY_VERIFY_ON_START", value_enum)]
    pub verify_on_start: Option<VerifyArg>,
    /// Days an idempotency key is remembered; after that its record is
    /// dropped and the key is new again. At least 7 (the contract). Default: 30
    #[arg(long, env = "LOYALTY_IDEMPOTENCY_RETENTION_DAYS")]
    pub idempotency_retention_days: Option<u64>,
    /// Durable events held in memory between two writes of the aggregate
    /// index; a restart after a crash indexes usually one to two times
    /// this many again from the log, at most about four. Default: 524288
    #[arg(long, env = "LOYALTY_INDEX_EVERY_EVENTS")]
    pub index_every_events: Option<usize>,
    /// Longest a durable event waits in memory for the aggregate index's
    /// writer when fewer than --index-every-events follow it. Default: 5000
    #[arg(long, env = "LOYALTY_INDEX_WITHIN_MS")]
    pub index_within_ms: Option<u64>,
}

/// The settings `serve` runs with, every default applied.
pub struct Settings {
    pub data_dir: PathBuf,
    pub http_addr: String,
    pub nats_url: Option<String>,
    pub admin_token: Option<String>,
    pub http_workers: usize,
    pub log_format: LogFormat,
    pub verify_full: bool,
    pub idempotency_retention: IdempotencyRetention,
    pub index_every_events: usize,
    pub index_within: Duration,
    pub engine: EngineConfig,
}

impl ServeArgs {
    /// Merges flags/environment (self) over the file over defaults.
    pub fn resolve(self) -> anyhow::Result<Settings> {
        let file: ServeArgs = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    anyhow::anyhow!("cannot read config file {}: {e}", path.display())
                })?;
                toml::from_str(&text)
                    .map_err(|e| anyhow::anyhow!("config file {}: {e}", path.display()))?
            }
            None => ServeArgs::default(),
        };
        let defaults = EngineConfig::default();
        let durability = match self
            .durability
            .or(file.durability)
            .unwrap_or(DurabilityArg::Fsync)
        {
            DurabilityArg::Fsync => Durability::Fsync,
            DurabilityArg::UnsafeNoFsync => Durability::UnsafeNoFsync,
        };
        let engine = EngineConfig {
            shards: self
                .shards
                .or(file.shards)
                .unwrap_or(defaults.shards)
                .max(1),
            passivate_after: self
                .passivate_after_secs
                .or(file.passivate_after_secs)
                .map_or(defaults.passivate_after, Duration::from_secs),
            snapshot_every_events: self
                .snapshot_every_events
                .or(file.snapshot_every_events)
                .unwrap_or(defaults.snapshot_every_events)
                .max(1),
            inflight_max: self
                .inflight_max
                .or(file.inflight_max)
                .unwrap_or(defaults.inflight_max),
            durability,
            ..defaults
        };
        let idempotency_retention = match self
            .idempotency_retention_days
            .or(file.idempotency_retention_days)
        {
            None => IdempotencyRetention::default(),
            Some(days) => IdempotencyRetention::days(days)
                .map_err(|e| anyhow::anyhow!("idempotency_retention_days: {e}"))?,
        };
        Ok(Settings {
            data_dir: self
                .data_dir
                .or(file.data_dir)
                .unwrap_or_else(|| PathBuf::from("./data")),
            http_addr: self
                .http_addr
                .or(file.http_addr)
                .unwrap_or_else(|| "127.0.0.1:8080".into()),
            nats_url: self.nats_url.or(file.nats_url),
            admin_token: self.admin_token.or(file.admin_token),
            http_workers: self.http_workers.or(file.http_workers).unwrap_or_else(|| {
                std::thread::available_parallelism()
                    .map(|n| n.get())
                    .unwrap_or(2)
            }),
            log_format: self
                .log_format
                .or(file.log_format)
                .unwrap_or(LogFormat::Human),
            verify_full: self
                .verify_on_start
                .or(file.verify_on_start)
                .unwrap_or(VerifyArg::Full)
                == VerifyArg::Full,
            idempotency_retention,
            index_every_events: self
                .index_every_events
                .or(file.index_every_events)
                .unwrap_or(loyalty_persistence::index::INDEX_EVERY_EVENTS)
                .max(1),
            index_within: self.index_within_ms.or(file.index_within_ms).map_or(
                loyalty_persistence::index::INDEX_WITHIN,
                Duration::from_millis,
            ),
            engine,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn serve_args(args: &[&str]) -> ServeArgs {
        let mut argv = vec!["loyalty", "serve"];
        argv.extend_from_slice(args);
        match Cli::try_parse_from(argv).unwrap().command {
            Command::Serve(args) => args,
        }
    }

    #[test]
    fn defaults_suit_a_laptop() {
        let settings = serve_args(&[]).resolve().unwrap();
        assert_eq!(settings.data_dir, PathBuf::from("./data"));
        assert_eq!(settings.http_addr, "127.0.0.1:8080");
        assert!(settings.nats_url.is_none());
        assert_eq!(settings.engine.durability, Durability::Fsync);
        assert!(settings.verify_full);
        assert_eq!(
            settings.idempotency_retention,
            IdempotencyRetention::days(30).unwrap()
        );
        assert_eq!(
            settings.index_every_events,
            loyalty_persistence::index::INDEX_EVERY_EVENTS
        );
        assert_eq!(
            settings.index_within,
            loyalty_persistence::index::INDEX_WITHIN
        );
    }

    #[test]
    fn idempotency_keys_are_kept_at_least_the_contracts_seven_days() {
        let settings = serve_args(&["--idempotency-retention-days", "7"])
            .resolve()
            .unwrap();
        assert_eq!(
            settings.idempotency_retention,
            IdempotencyRetention::days(7).unwrap()
        );
        let refused = serve_args(&["--idempotency-retention-days", "6"])
            .resolve()
            .err()
            .expect("6 days is refused");
        assert_eq!(
            refused.to_string(),
            "idempotency_retention_days: idempotency keys must be kept at least 7 days (the contract); 6 days asked"
        );
    }

    #[test]
    fn flags_win_over_the_file_which_wins_over_defaults() {
        let dir = std::env::temp_dir().join(format!("loyalty-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("loyalty.toml");
        std::fs::write(
            &file,
            "http_addr = \"0.0.0.0:9000\"\nsnapshot_every_events = 10\nnats_url = \"nats://n:4222\"\ndurability = \"unsafe-no-fsync\"\nindex_within_ms = 250\n",
        )
        .unwrap();
        let path = file.to_str().unwrap();
        let settings = serve_args(&["--config", path, "--http-addr", "127.0.0.1:1"])
            .resolve()
            .unwrap();
        assert_eq!(settings.http_addr, "127.0.0.1:1", "the flag wins");
        assert_eq!(
            settings.engine.snapshot_every_events, 10,
            "the file fills what flags leave"
        );
        assert_eq!(settings.nats_url.as_deref(), Some("nats://n:4222"));
        assert_eq!(settings.engine.durability, Durability::UnsafeNoFsync);
        assert_eq!(settings.index_within, Duration::from_millis(250));
        std::fs::write(&file, "no_such_option = 1\n").unwrap();
        assert!(
            serve_args(&["--config", path]).resolve().is_err(),
            "unknown keys are refused"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
