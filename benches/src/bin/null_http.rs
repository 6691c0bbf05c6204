//! The do-nothing HTTP responder: the ceiling of the HTTP door. It speaks
//! the same routes and JSON shapes as the engine (it decodes each earn body
//! strictly, as the engine does, and answers a fixed earn answer), but
//! keeps no state and writes nothing. Load tests measure it beside the
//! engine in the same run.
//!
//! With `--durable-dir DIR` it is the *durable* do-nothing responder: each
//! earn's request and answer are appended to a log in DIR and fsync'd in
//! group commits ([`loyalty_benches::durable`]) before the answer goes
//! out: the ceiling of any engine that answers after an fsync, on this
//! machine and disk.
//!
//! Usage: `null_http [127.0.0.1:8090] [workers] [--durable-dir DIR]`

use actix_web::{web, App, HttpResponse, HttpServer};
use clap::Parser;
use loyalty_api::wire::{self, EarnBody, EnrollmentBody, RedeemBody, TransactionBody};
use loyalty_benches::durable::GroupLog;
use std::path::PathBuf;
use tokio::sync::oneshot;

#[derive(Parser)]
#[command(about = "The do-nothing HTTP responder (the HTTP door's ceiling), durable or not")]
struct Args {
    /// Address to listen on.
    #[arg(default_value = "127.0.0.1:8090")]
    addr: String,
    /// HTTP worker threads (default: one per core, as the engine).
    workers: Option<usize>,
    /// Answer each earn only once its request and answer are fsync'd in a
    /// log in this directory (group commit).
    #[arg(long)]
    durable_dir: Option<PathBuf>,
}

/// The durable log, when there is one: each earn waits for its record.
type Durable = Option<GroupLog<oneshot::Sender<()>>>;

/// The same allocator as the `loyalty` binary, so the comparison is of
/// the work done, not of allocators.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

async fn earn(
    path: web::Path<String>,
    body: web::Bytes,
    durable: web::Data<Durable>,
) -> HttpResponse {
    match wire::decode::<EarnBody>(&body) {
        Ok(earn) => {
            let answer = answer_body(&path, earn.points.unwrap_or(1));
            if let Some(log) = durable.get_ref() {
                let mut record = Vec::with_capacity(body.len() + answer.len());
                record.extend_from_slice(&body);
                record.extend_from_slice(&answer);
                let (done, made_durable) = oneshot::channel();
                // Refused (a full queue, a stopped writer) or never made
                // durable: 503, as the engine answers past its bounds.
                if log.submit(record, 1, done).is_err() || made_durable.await.is_err() {
                    return HttpResponse::ServiceUnavailable().finish();
                }
            }
            HttpResponse::Ok()
                .content_type("application/json")
                .body(answer)
        }
        Err(err) => HttpResponse::BadRequest()
            .content_type("application/json")
            .body(err.body()),
    }
}

async fn redeem(path: web::Path<String>, body: web::Bytes) -> HttpResponse {
    match wire::decode::<RedeemBody>(&body) {
        Ok(redeem) => HttpResponse::Ok()
            .content_type("application/json")
            .body(answer_body(&path, redeem.points)),
        Err(err) => HttpResponse::BadRequest()
            .content_type("application/json")
            .body(err.body()),
    }
}

/// A fixed earn answer, typed and encoded as the engine's door does (not
/// as a `serde_json::Value`, which would make the ceiling lower than the
/// door's own work).
fn answer_body(enrollment_id: &str, points: i64) -> Vec<u8> {
    wire::encode(&TransactionBody {
        transaction_id: "0190d6a1-2b3c-7d4e-8f90-000000000001".into(),
        enrollment_id: enrollment_id.to_owned(),
        points,
        balance: 1000,
        pending: 0,
        tier: Some("member".into()),
        event_id: "0190d6a1-2b3c-7d4e-8f90-000000000002".into(),
        shortfall: None,
    })
}

/// A fixed balance, typed like the earn answer.
async fn balance(path: web::Path<String>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(wire::encode(&EnrollmentBody {
            enrollment_id: path.into_inner(),
            customer_id: "0190d6a1-2b3c-7d4e-8f90-000000000003".into(),
            program_id: "0190d6a1-2b3c-7d4e-8f90-000000000004".into(),
            balance: 1000,
            pending: 0,
            lifetime_points: 1000,
            tier: Some("member".into()),
            version: 7,
        }))
}

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let workers = args.workers.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2)
    });
    let durable: web::Data<Durable> = web::Data::new(match &args.durable_dir {
        Some(dir) => Some(GroupLog::start(
            dir,
            |waiting: Vec<oneshot::Sender<()>>, _earns| {
                for done in waiting {
                    let _ = done.send(());
                }
            },
        )?),
        None => None,
    });
    HttpServer::new(move || {
        App::new()
            .app_data(web::PayloadConfig::new(wire::BODY_BYTES_MAX))
            .app_data(durable.clone())
            .route("/v1/enrollments/{id}/earn", web::post().to(earn))
            .route("/v1/enrollments/{id}/redeem", web::post().to(redeem))
            .route("/v1/enrollments/{id}", web::get().to(balance))
            .route("/healthz", web::get().to(HttpResponse::Ok))
    })
    .workers(workers)
    .backlog(4_096)
    .bind(args.addr)?
    .run()
    .await
}
