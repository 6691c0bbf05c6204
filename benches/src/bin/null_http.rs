//! The do-nothing HTTP responder: the ceiling of the HTTP door. It speaks
//! the same routes and JSON shapes as the engine (it decodes each earn body
//! strictly, as the engine does, and answers a fixed earn answer), but
//! keeps no state and writes nothing. Load tests measure it beside the
//! engine in the same run.
//!
//! Usage: `null_http 127.0.0.1:8090 [workers]`

use actix_web::{web, App, HttpResponse, HttpServer};
use loyalty_api::wire::{self, EarnBody, EnrollmentBody, RedeemBody, TransactionBody};

/// The same allocator as the `loyalty` binary, so the comparison is of
/// the work done, not of allocators.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

async fn earn(path: web::Path<String>, body: web::Bytes) -> HttpResponse {
    match wire::decode::<EarnBody>(&body) {
        Ok(earn) => answer(&path, earn.points.unwrap_or(1)),
        Err(err) => HttpResponse::BadRequest()
            .content_type("application/json")
            .body(err.body()),
    }
}

async fn redeem(path: web::Path<String>, body: web::Bytes) -> HttpResponse {
    match wire::decode::<RedeemBody>(&body) {
        Ok(redeem) => answer(&path, redeem.points),
        Err(err) => HttpResponse::BadRequest()
            .content_type("application/json")
            .body(err.body()),
    }
}

/// A fixed earn answer, typed and encoded as the engine's door does (not
/// as a `serde_json::Value`, which would make the ceiling lower than the
/// door's own work).
fn answer(enrollment_id: &str, points: i64) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(wire::encode(&TransactionBody {
            transaction_id: "0190d6a1-2b3c-7d4e-8f90-000000000001".into(),
            enrollment_id: enrollment_id.to_owned(),
            points,
            balance: 1000,
            pending: 0,
            tier: Some("member".into()),
            event_id: "0190d6a1-2b3c-7d4e-8f90-000000000002".into(),
            shortfall: None,
        }))
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
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:8090".into());
    let workers = args.next().and_then(|w| w.parse().ok()).unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2)
    });
    HttpServer::new(|| {
        App::new()
            .app_data(web::PayloadConfig::new(wire::BODY_BYTES_MAX))
            .route("/v1/enrollments/{id}/earn", web::post().to(earn))
            .route("/v1/enrollments/{id}/redeem", web::post().to(redeem))
            .route("/v1/enrollments/{id}", web::get().to(balance))
            .route("/healthz", web::get().to(HttpResponse::Ok))
    })
    .workers(workers)
    .backlog(4_096)
    .bind(addr)?
    .run()
    .await
}
