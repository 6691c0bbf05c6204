//! `loyalty serve`: recover, start the engine, serve until told to stop.
//!
//! Start-up: open the data directory (RocksDB replays its WAL; recovery
//! checks the log), start the engine, then open the HTTP port; `/readyz`
//! answers ready from then on. Stop (Ctrl-C or SIGTERM): the HTTP server
//! stops accepting and finishes the requests in flight (whose commits
//! finish with them), then the engine stops its actors, the commit thread
//! writes what is queued, and RocksDB closes.

use crate::auth;
use crate::config::Settings;
use crate::http::{self, AppState};
use crate::metrics::Metrics;
use crate::ops::Ops;
use actix_web::{web, HttpServer};
use loyalty_actors::{Engine, SystemClock};
use loyalty_persistence::{Store, StoreOptions, VerifyOnOpen};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;
use tracing::{error, info, warn};

/// Exit status when a write failed and the engine stopped (fail-stop).
pub const EXIT_STORAGE_FAILED: i32 = 70;

/// The operator token: the configured one, or one generated on first start,
/// printed once, and remembered only as its SHA-256 in the data directory.
fn operator_token(settings: &Settings) -> anyhow::Result<String> {
    if let Some(token) = &settings.admin_token {
        return Ok(token.clone());
    }
    let path = settings.data_dir.join("operator-token.sha256");
    if let Ok(hex) = std::fs::read_to_string(&path) {
        // Marked so `auth::is_operator` compares hashes, not text.
        return Ok(format!("sha256:{}", hex.trim()));
    }
    let token = auth::new_api_key().replacen("lk_", "op_", 1);
    let digest = auth::hex(&auth::sha256(&token));
    std::fs::write(&path, &digest)?;
    // Printed once, on purpose, to the terminal that started the engine.
    eprintln!("\n  Operator token (shown once; keep it): {token}\n  Set LOYALTY_ADMIN_TOKEN to choose your own.\n");
    Ok(format!("sha256:{digest}"))
}

/// How `serve` opens its data directory.
fn store_options(settings: &Settings) -> StoreOptions {
    let mut options = StoreOptions::new(&settings.data_dir);
    options.verify = if settings.verify_full {
        VerifyOnOpen::Full
    } else {
        VerifyOnOpen::Tail(1_000_000)
    };
    options.idempotency_retention = Some(settings.idempotency_retention);
    options.index_every_events = settings.index_every_events;
    options.index_within = settings.index_within;
    options
}

pub async fn serve(settings: Settings) -> anyhow::Result<()> {
    let options = store_options(&settings);
    info!(data_dir = %settings.data_dir.display(), "recovering");
    let (store, report) = Store::open(&options)?;
    info!(
        next_sequence = report.next_sequence,
        records_verified = report.records_verified,
        events_indexed = report.events_indexed,
        duration_ms = report.duration_ms,
        "recovery done"
    );
    let operator_token = operator_token(&settings)?;
    let engine = Arc::new(Engine::start(
        store,
        &report,
        settings.engine.clone(),
        Arc::new(SystemClock),
    )?);
    let metrics = Arc::new(Metrics::default());
    let nats_up = settings
        .nats_url
        .as_ref()
        .map(|_| Arc::new(AtomicBool::new(false)));
    let state = web::Data::new(AppState {
        ops: Ops {
            engine: engine.clone(),
        },
        operator_token,
        ready: AtomicBool::new(true),
        metrics: metrics.clone(),
        nats: nats_up.clone(),
    });
    let nats = match (&settings.nats_url, &nats_up) {
        (Some(url), Some(up)) => Some(crate::nats::start(
            url.clone(),
            Ops {
                engine: engine.clone(),
            },
            metrics.clone(),
            up.clone(),
        )),
        _ => None,
    };

    // Fail-stop: a failed write leaves actors ahead of the disk; the process
    // exits so a restart recovers from what is durable.
    let watched = Arc::downgrade(&engine);
    actix_rt::spawn(async move {
        loop {
            actix_rt::time::sleep(Duration::from_millis(50)).await;
            let Some(engine) = watched.upgrade() else {
                return;
            };
            if engine.has_failed() {
                error!("a write to the data directory failed; exiting so a restart recovers from durable state");
                std::process::exit(EXIT_STORAGE_FAILED);
            }
        }
    });

    let app_state = state.clone();
    let server = HttpServer::new(move || http::app(app_state.clone()))
        .workers(settings.http_workers)
        .backlog(4_096)
        .shutdown_timeout(30)
        .bind(&settings.http_addr)
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", settings.http_addr))?;
    for addr in server.addrs() {
        info!(%addr, "HTTP listening");
    }
    server.run().await?;
    info!("HTTP stopped; stopping the engine");
    if let Some(nats) = nats {
        nats.stop().await;
    }
    drop(state);
    match Arc::try_unwrap(engine) {
        Ok(engine) => engine.shutdown(),
        Err(_) => {
            warn!("engine still referenced at shutdown; the commit thread ends with the process")
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ServeArgs;
    use loyalty_persistence::IdempotencyRetention;

    /// The library keeps idempotency records for ever unless told; the
    /// engine always gives it the configured retention.
    #[test]
    fn the_engine_opens_its_store_with_the_configured_retention() {
        let settings = ServeArgs::default().resolve().unwrap();
        assert_eq!(
            store_options(&settings).idempotency_retention,
            Some(IdempotencyRetention::default())
        );
        let settings = ServeArgs {
            idempotency_retention_days: Some(9),
            verify_on_start: Some(crate::config::VerifyArg::Tail),
            ..ServeArgs::default()
        }
        .resolve()
        .unwrap();
        let options = store_options(&settings);
        assert_eq!(
            options.idempotency_retention,
            Some(IdempotencyRetention::days(9).unwrap())
        );
        assert_eq!(options.verify, VerifyOnOpen::Tail(1_000_000));
    }
}
