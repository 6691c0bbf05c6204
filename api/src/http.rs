//! The HTTP door (actix-web): decodes requests, calls [`Ops`], encodes
//! answers. Every route of the contract is here, each a few lines.

use crate::auth::{self, Caller};
use crate::batch_protobuf::{self, BatchEncoding};
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::ops::Ops;
use crate::wire::{self, BATCH_BODY_BYTES_MAX, BODY_BYTES_MAX};
use actix_web::body::BoxBody;
use actix_web::dev::{Service, ServiceResponse};
use actix_web::http::header;
use actix_web::http::StatusCode;
use actix_web::{web, App, HttpRequest, HttpResponse, ResponseError};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// What every handler shares.
pub struct AppState {
    pub ops: Ops,
    pub operator_token: String,
    /// Set once recovery is done and the engine is serving.
    pub ready: AtomicBool,
    pub metrics: Arc<Metrics>,
    /// Whether NATS is configured, and whether it is connected now.
    pub nats: Option<Arc<AtomicBool>>,
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    fn error_response(&self) -> HttpResponse<BoxBody> {
        let mut response = HttpResponse::build(self.status_code());
        response.content_type("application/json");
        if let Some(seconds) = self.retry_after_s {
            response.insert_header((header::RETRY_AFTER, seconds.to_string()));
        }
        response.body(self.body())
    }
}

type Result<T> = std::result::Result<T, ApiError>;

fn json<T: Serialize>(status: StatusCode, value: &T) -> HttpResponse {
    HttpResponse::build(status)
        .content_type("application/json")
        .body(wire::encode(value))
}

fn header_str<'a>(req: &'a HttpRequest, name: &str) -> Option<&'a str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

fn caller(req: &HttpRequest, state: &AppState) -> Result<Caller> {
    auth::authenticate(&state.ops.engine, header_str(req, "authorization"))
}

/// Reads a body up to `limit` bytes; beyond it, 413 without reading on.
async fn body(mut payload: web::Payload, limit: usize) -> Result<web::BytesMut> {
    let mut out = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| ApiError::new(400, "INVALID_BODY", e.to_string()))?;
        if out.len() + chunk.len() > limit {
            return Err(ApiError::too_large(limit));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// Reads and decodes a JSON body. A protobuf body is refused (415): only
/// the batch door takes one.
async fn decode<T: serde::de::DeserializeOwned>(
    req: &HttpRequest,
    payload: web::Payload,
    limit: usize,
) -> Result<T> {
    if batch_protobuf::is_protobuf(header_str(req, "content-type")) {
        return Err(batch_protobuf::unsupported());
    }
    wire::decode(&body(payload, limit).await?)
}

fn path<'a>(req: &'a HttpRequest, name: &str) -> &'a str {
    req.match_info().get(name).unwrap_or_default()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TransactionsQuery {
    limit: Option<usize>,
    cursor: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EventsQuery {
    after: Option<u64>,
    limit: Option<usize>,
}

fn query<T: serde::de::DeserializeOwned>(req: &HttpRequest) -> Result<T> {
    web::Query::<T>::from_query(req.query_string())
        .map(web::Query::into_inner)
        .map_err(|e| ApiError::new(400, "INVALID_FIELD", format!("query: {e}")))
}

/// Routes for the operator only: the operator token, not an API key.
fn require_operator(req: &HttpRequest, state: &AppState) -> Result<()> {
    if auth::is_operator(&state.operator_token, header_str(req, "authorization")) {
        Ok(())
    } else {
        Err(ApiError::unauthorized())
    }
}

async fn create_business(
    req: HttpRequest,
    state: web::Data<AppState>,
    payload: web::Payload,
) -> Result<HttpResponse> {
    require_operator(&req, &state)?;
    let input: wire::CreateBusiness = decode(&req, payload, BODY_BYTES_MAX).await?;
    let engine = &state.ops.engine;
    let business = engine.catalog.create_business(&input.name).await?;
    let api_key = auth::new_api_key();
    engine
        .catalog
        .issue_api_key(business.business_id, auth::sha256(&api_key))
        .await?;
    Ok(json(
        StatusCode::CREATED,
        &wire::BusinessCreated {
            business_id: business.business_id.to_string(),
            api_key,
        },
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckpointBody {
    /// A directory name for the copy, created inside `<data dir>/checkpoints/`.
    name: String,
}

/// Operator only: a consistent online copy of the data directory, for backups.
async fn checkpoint(
    req: HttpRequest,
    state: web::Data<AppState>,
    payload: web::Payload,
) -> Result<HttpResponse> {
    require_operator(&req, &state)?;
    let input: CheckpointBody = decode(&req, payload, BODY_BYTES_MAX).await?;
    let valid = !input.name.is_empty()
        && input.name.len() <= 64
        && input
            .name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !valid {
        return Err(ApiError::invalid(
            "name",
            "1 to 64 letters, digits, '-' or '_'",
        ));
    }
    let store = state.ops.engine.store().clone();
    let dir = store.path().join("checkpoints");
    let target = dir.join(&input.name);
    if target.exists() {
        return Err(ApiError::new(
            409,
            "CHECKPOINT_EXISTS",
            "a checkpoint of that name exists",
        ));
    }
    let made = web::block(move || {
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        store
            .checkpoint(&target)
            .map_err(|e| e.to_string())
            .map(|()| target)
    })
    .await
    .map_err(|e| ApiError::new(500, "CHECKPOINT_FAILED", e.to_string()))?
    .map_err(|e| ApiError::new(500, "CHECKPOINT_FAILED", e))?;
    Ok(json(
        StatusCode::CREATED,
        &serde_json::json!({"path": made.display().to_string()}),
    ))
}

async fn create_program(
    req: HttpRequest,
    state: web::Data<AppState>,
    payload: web::Payload,
) -> Result<HttpResponse> {
    let caller = caller(&req, &state)?;
    let input = decode(&req, payload, BODY_BYTES_MAX).await?;
    Ok(json(
        StatusCode::CREATED,
        &state.ops.create_program(&caller, input).await?,
    ))
}

async fn activate_program(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse> {
    let caller = caller(&req, &state)?;
    Ok(json(
        StatusCode::OK,
        &state
            .ops
            .activate_program(&caller, path(&req, "id"))
            .await?,
    ))
}

async fn get_program(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse> {
    let caller = caller(&req, &state)?;
    Ok(json(
        StatusCode::OK,
        &state.ops.program(&caller, path(&req, "id"))?,
    ))
}

async fn create_customer(
    req: HttpRequest,
    state: web::Data<AppState>,
    payload: web::Payload,
) -> Result<HttpResponse> {
    let caller = caller(&req, &state)?;
    let input = decode(&req, payload, BODY_BYTES_MAX).await?;
    Ok(json(
        StatusCode::CREATED,
        &state.ops.create_customer(&caller, input).await?,
    ))
}

async fn get_customer(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse> {
    let caller = caller(&req, &state)?;
    Ok(json(
        StatusCode::OK,
        &state.ops.customer(&caller, path(&req, "id"))?,
    ))
}

async fn create_enrollment(
    req: HttpRequest,
    state: web::Data<AppState>,
    payload: web::Payload,
) -> Result<HttpResponse> {
    let caller = caller(&req, &state)?;
    let input = decode(&req, payload, BODY_BYTES_MAX).await?;
    Ok(json(
        StatusCode::CREATED,
        &state.ops.enroll(&caller, input).await?,
    ))
}

async fn get_enrollment(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse> {
    let caller = caller(&req, &state)?;
    Ok(json(
        StatusCode::OK,
        &state.ops.enrollment(&caller, path(&req, "id")).await?,
    ))
}

async fn earn(
    req: HttpRequest,
    state: web::Data<AppState>,
    payload: web::Payload,
) -> Result<HttpResponse> {
    let caller = caller(&req, &state)?;
    let input = decode(&req, payload, BODY_BYTES_MAX).await?;
    let answer = state
        .ops
        .earn(
            &caller,
            Some(path(&req, "id")),
            header_str(&req, "idempotency-key"),
            input,
        )
        .await?;
    Ok(json(StatusCode::OK, &answer))
}

async fn redeem(
    req: HttpRequest,
    state: web::Data<AppState>,
    payload: web::Payload,
) -> Result<HttpResponse> {
    let caller = caller(&req, &state)?;
    let input = decode(&req, payload, BODY_BYTES_MAX).await?;
    let answer = state
        .ops
        .redeem(
            &caller,
            Some(path(&req, "id")),
            header_str(&req, "idempotency-key"),
            input,
        )
        .await?;
    Ok(json(StatusCode::OK, &answer))
}

async fn reverse(
    req: HttpRequest,
    state: web::Data<AppState>,
    payload: web::Payload,
) -> Result<HttpResponse> {
    let caller = caller(&req, &state)?;
    let input = decode(&req, payload, BODY_BYTES_MAX).await?;
    let answer = state
        .ops
        .reverse(
            &caller,
            Some(path(&req, "id")),
            header_str(&req, "idempotency-key"),
            input,
        )
        .await?;
    Ok(json(StatusCode::OK, &answer))
}

async fn earn_batch(
    req: HttpRequest,
    state: web::Data<AppState>,
    payload: web::Payload,
) -> Result<HttpResponse> {
    let caller = caller(&req, &state)?;
    let encoding = BatchEncoding::of(header_str(&req, "content-type"));
    let input = encoding.decode(&body(payload, BATCH_BODY_BYTES_MAX).await?)?;
    let results = state.ops.earn_batch(&caller, input).await?;
    Ok(HttpResponse::Ok()
        .content_type(encoding.content_type())
        .body(encoding.encode(results)))
}

async fn transactions(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse> {
    let caller = caller(&req, &state)?;
    let q: TransactionsQuery = query(&req)?;
    let page = state
        .ops
        .transactions(&caller, path(&req, "id"), q.limit, q.cursor.as_deref())
        .await?;
    Ok(json(StatusCode::OK, &page))
}

async fn events(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse> {
    let caller = caller(&req, &state)?;
    let q: EventsQuery = query(&req)?;
    Ok(json(
        StatusCode::OK,
        &state.ops.events(&caller, q.after, q.limit)?,
    ))
}

async fn healthz() -> HttpResponse {
    json(StatusCode::OK, &serde_json::json!({"status": "ok"}))
}

async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let engine = &state.ops.engine;
    let ready = state.ready.load(Ordering::Acquire) && !engine.has_failed();
    let nats = match &state.nats {
        None => "not configured",
        Some(up) if up.load(Ordering::Acquire) => "connected",
        Some(_) => "disconnected (serving HTTP; reconnecting)",
    };
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    json(
        status,
        &serde_json::json!({
            "ready": ready,
            "recovery": if state.ready.load(Ordering::Acquire) { "done" } else { "in progress" },
            "storage": if engine.has_failed() { "failed: engine stopped" } else { "ok" },
            "nats": nats,
        }),
    )
}

async fn metrics_text(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(state.metrics.render(&state.ops.engine))
}

async fn not_found() -> Result<HttpResponse> {
    Err(ApiError::not_found("route"))
}

/// Every route of the contract, with request metrics around them.
pub fn app(
    state: web::Data<AppState>,
) -> App<
    impl actix_web::dev::ServiceFactory<
        actix_web::dev::ServiceRequest,
        Config = (),
        Response = ServiceResponse<BoxBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    let metrics = state.metrics.clone();
    App::new()
        .app_data(state)
        .wrap_fn(move |req, srv| {
            let started = Instant::now();
            let metrics = metrics.clone();
            let response = srv.call(req);
            async move {
                let response = response.await?;
                // Asked after routing, the pattern comes from the route the
                // router chose (it matched the percent-decoded path); asked
                // before, it matched the path against the routes' patterns a
                // second time. Only a path no route matched (the 404) is
                // looked up again, to find it has none.
                let request = response.request();
                let route = request.match_pattern();
                metrics.observe(
                    request.method().as_str(),
                    route.as_deref().unwrap_or("unmatched"),
                    response.status().as_u16(),
                    started.elapsed(),
                );
                Ok(response)
            }
        })
        .service(
            web::scope("/v1")
                .route("/businesses", web::post().to(create_business))
                .route("/programs", web::post().to(create_program))
                .route("/programs/{id}/activate", web::post().to(activate_program))
                .route("/programs/{id}", web::get().to(get_program))
                .route("/customers", web::post().to(create_customer))
                .route("/customers/{id}", web::get().to(get_customer))
                .route("/enrollments", web::post().to(create_enrollment))
                .route("/enrollments/{id}", web::get().to(get_enrollment))
                .route("/enrollments/{id}/earn", web::post().to(earn))
                .route("/enrollments/{id}/redeem", web::post().to(redeem))
                .route("/enrollments/{id}/reverse", web::post().to(reverse))
                .route(
                    "/enrollments/{id}/transactions",
                    web::get().to(transactions),
                )
                .route("/earn/batch", web::post().to(earn_batch))
                .route("/events", web::get().to(events))
                .route("/admin/checkpoints", web::post().to(checkpoint)),
        )
        .route("/healthz", web::get().to(healthz))
        .route("/readyz", web::get().to(readyz))
        .route("/metrics", web::get().to(metrics_text))
        .default_service(web::to(not_found))
}
