//! The NATS door: a request-reply service for point-of-sale systems, and
//! the publisher that sends durable events to the rest of the business.
//!
//! - Service: `loyalty.v1.<operation>` in the queue group `loyalty`,
//!   speaking the NATS micro-service protocol (`$SRV.PING/INFO/STATS`).
//!   Each request is decoded and handed to the same [`Ops`] as HTTP. An
//!   error reply carries the error body and the headers
//!   `Nats-Service-Error-Code` (the HTTP status) and `Nats-Service-Error`
//!   (the code).
//! - Publisher (outbox): reads the log from a durable cursor, publishes each
//!   published event to `loyalty.events.<businessId>.<eventType>` with
//!   `Nats-Msg-Id: <eventId>`, strictly in commit order and only once the
//!   event is durable. Events go out in rounds, several at once while it is
//!   behind; the cursor moves to a round's end only once the server has
//!   answered the barrier request sent behind it (start at [`publish`]).
//!   When NATS is away it waits and resumes from the cursor, so nothing is
//!   lost.
//!   The cursor is saved about once a second, when the publisher is idle,
//!   and on a clean stop, so a crash publishes again at most about the last
//!   second's events (consumers drop repeats by `eventId`).
//!   It has a NATS connection of its own, so events never queue behind
//!   replies; `/readyz` follows the service's connection.

use crate::auth::{self, Caller};
use crate::batch_protobuf::{self, BatchEncoding};
use crate::error::ApiError;
use crate::events;
use crate::metrics::Metrics;
use crate::ops::Ops;
use crate::wire;
use async_nats::service::ServiceExt;
use async_nats::{HeaderMap, HeaderName, Message, Subject};
use bytes::Bytes;
use futures_util::stream::FuturesUnordered;
use futures_util::{FutureExt, StreamExt};
use serde::Serialize;
use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tracing::{error, info, warn};

/// Operations served, as subject suffixes of `loyalty.v1.`.
pub const OPERATIONS: [&str; 7] = [
    "earn",
    "redeem",
    "reverse",
    "balance",
    "enroll",
    "transactions",
    "earn.batch",
];
/// Events read from the log per publishing round.
const PUBLISH_CHUNK_EVENTS: usize = 1_000;
/// Shortest time from the start of one publishing round to the next while
/// the publisher keeps up. A round has fixed costs (a log iterator, a
/// barrier round trip through the server), so under load a round carries a
/// few milliseconds' events instead of a handful; an event reaches NATS at
/// most this much later. A round that had more than a chunk to read starts
/// the next one at once.
const PUBLISH_ROUND_MIN: Duration = Duration::from_millis(5);
/// Publishing rounds out at once, awaiting their barriers, while the
/// publisher is a chunk or more behind. Under the batch load a barrier's
/// round trip took about 5 ms, and a publisher that sent nothing meanwhile
/// spent two thirds of its time waiting: it fell hundreds of thousands of
/// events behind at 150 000 earns/s and read them back from the log. Eight
/// rounds keep at most 8 000 events unconfirmed, which a reconnect sends
/// again.
const PUBLISH_ROUNDS_IN_FLIGHT: usize = 8;
/// How often the publish cursor is saved while events flow (it is also
/// saved once the publisher has been idle for [`CURSOR_SAVE_IDLE`], and on
/// a clean stop). It is a RocksDB write from the publisher's thread, which
/// queues behind the commit thread's fsync'd writes. A crash republishes
/// at most the events since the last save (at least once; consumers drop
/// repeats by `Nats-Msg-Id` / `eventId`).
const CURSOR_SAVE_INTERVAL: Duration = Duration::from_secs(1);
/// Idle time after which the publisher saves its cursor: a steady trickle
/// of events, caught up after every round, does not write on every round.
const CURSOR_SAVE_IDLE: Duration = Duration::from_millis(50);
/// How long a stopping service waits for its endpoints to answer the
/// requests they hold (within the door's own three seconds to stop).
const STOP_DRAIN_MAX: Duration = Duration::from_millis(800);
/// Largest request payload, in bytes.
const REQUEST_BYTES_MAX: usize = wire::BATCH_BODY_BYTES_MAX;

/// The header names the door reads and writes, made once. Given a `&str`,
/// `HeaderMap::get` and `insert` check the name on every call, and copy a
/// name NATS does not define itself (`Authorization`, `Idempotency-Key`)
/// into a new buffer: three lookups per request, and an insert per
/// published event. A clone of these is a pointer copy.
static AUTHORIZATION: HeaderName = HeaderName::from_static("Authorization");
static IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("Idempotency-Key");
static CONTENT_TYPE: HeaderName = HeaderName::from_static("Content-Type");
static SERVICE_ERROR_CODE: HeaderName = HeaderName::from_static("Nats-Service-Error-Code");
static SERVICE_ERROR: HeaderName = HeaderName::from_static("Nats-Service-Error");
static MSG_ID: HeaderName = HeaderName::from_static("Nats-Msg-Id");

/// The running NATS door; [`NatsHandle::stop`] ends it.
pub struct NatsHandle {
    stop: watch::Sender<bool>,
    done: tokio::sync::oneshot::Receiver<()>,
}

impl NatsHandle {
    /// Asks the service and the publisher to finish (the service leaves its
    /// queue group) and waits up to three seconds for the NATS runtime to
    /// wind down.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        if tokio::time::timeout(Duration::from_secs(3), self.done)
            .await
            .is_err()
        {
            warn!("the NATS door did not stop within 3 s");
        }
    }
}

/// Connects (retrying in the background until NATS is there), then runs the
/// service and the publisher. Never fails: without NATS the engine keeps
/// serving HTTP, says so in its logs and `/readyz`, and reconnects.
pub fn start(url: String, ops: Ops, metrics: Arc<Metrics>, up: Arc<AtomicBool>) -> NatsHandle {
    let (stop, stopped) = watch::channel(false);
    let (done_tx, done) = tokio::sync::oneshot::channel();
    // The NATS door gets a multi-threaded runtime of its own: decoding,
    // encoding and publishing then use every core, instead of sharing the
    // main thread's single-threaded runtime.
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    std::thread::Builder::new()
        .name("loyalty-nats".into())
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(threads)
                .thread_name("loyalty-nats")
                .enable_all()
                .build()
                .expect("build the NATS runtime");
            runtime.block_on(run(url, ops, metrics, up, stopped));
            // The service drained its requests before `run` returned; this
            // bounds what is left (tasks are dropped at their next yield).
            runtime.shutdown_timeout(Duration::from_secs(2));
            let _ = done_tx.send(());
        })
        .expect("spawn the NATS thread");
    NatsHandle { stop, done }
}

async fn run(
    url: String,
    ops: Ops,
    metrics: Arc<Metrics>,
    up: Arc<AtomicBool>,
    stopped: watch::Receiver<bool>,
) {
    {
        let client = connect(&url, "loyalty-engine", Some(up)).await;
        // The publisher has a connection of its own: each async-nats
        // connection is driven by one task, and sharing it would put every
        // event behind the replies on that one task's writes.
        let events = connect(&url, "loyalty-engine-events", None).await;
        let mut service = tokio::spawn(serve(client.clone(), ops.clone(), stopped.clone()));
        publish(events, ops, metrics, stopped).await;
        // The service sees the same stop signal and leaves its queue group.
        if tokio::time::timeout(Duration::from_secs(1), &mut service)
            .await
            .is_err()
        {
            service.abort();
        }
    }
}

/// Connects to NATS, retrying until it answers, with reconnects forever
/// after that. `up`, when given, follows this connection's state (it is what
/// `/readyz` reports).
async fn connect(url: &str, name: &str, up: Option<Arc<AtomicBool>>) -> async_nats::Client {
    loop {
        let flag = up.clone();
        let connection = name.to_owned();
        let connected = async_nats::ConnectOptions::new()
            .name(name)
            .retry_on_initial_connect()
            .max_reconnects(None)
            .event_callback(move |event| {
                let flag = flag.clone();
                let connection = connection.clone();
                async move {
                    match event {
                        async_nats::Event::Connected => {
                            if let Some(flag) = flag {
                                flag.store(true, Ordering::Release);
                            }
                            info!(%connection, "NATS connected");
                        }
                        async_nats::Event::Disconnected => {
                            if let Some(flag) = flag {
                                flag.store(false, Ordering::Release);
                            }
                            warn!(%connection, "NATS disconnected; serving HTTP, reconnecting");
                        }
                        other => info!(%connection, event = %other, "NATS event"),
                    }
                }
            })
            .connect(url)
            .await;
        match connected {
            Ok(client) => return client,
            Err(err) => {
                warn!(cause = %err, %url, "cannot reach NATS; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

async fn serve(client: async_nats::Client, ops: Ops, mut stopped: watch::Receiver<bool>) {
    let service = loop {
        let started = client
            .service_builder()
            .description("Loyalty points engine: earn, redeem, reverse, balance")
            .queue_group("loyalty")
            .start("loyalty", env!("CARGO_PKG_VERSION"))
            .await;
        match started {
            Ok(service) => break service,
            Err(err) => {
                warn!(cause = %err, "cannot start the NATS service; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    };
    let mut endpoints = Vec::new();
    for operation in OPERATIONS {
        let endpoint = service
            .endpoint_builder()
            .name(operation.replace('.', "_"))
            .add(format!("loyalty.v1.{operation}"))
            .await;
        match endpoint {
            Ok(endpoint) => endpoints.push((operation, endpoint)),
            Err(err) => warn!(cause = %err, operation, "cannot add NATS endpoint"),
        }
    }
    info!(
        endpoints = endpoints.len(),
        "NATS service listening on loyalty.v1.*"
    );
    let mut workers: Vec<_> = endpoints
        .into_iter()
        .map(|(operation, endpoint)| tokio::spawn(serve_endpoint(operation, endpoint, ops.clone())))
        .collect();
    let _ = stopped.changed().await;
    // Leave the queue group: each endpoint's subscription then ends, and
    // its worker answers the requests it holds before it returns. Without
    // a server the subscriptions cannot end, so the wait is bounded.
    let _ = service.stop().await;
    let drained = async {
        futures_util::future::join_all(workers.iter_mut()).await;
        // A reply is only queued for the connection until this flush.
        let _ = client.flush().await;
    };
    if tokio::time::timeout(STOP_DRAIN_MAX, drained).await.is_err() {
        for worker in &workers {
            worker.abort();
        }
    }
}

/// Answers one endpoint's requests until its subscription ends. At most
/// `--inflight-max` (the engine's own bound on commands in flight) are
/// answered at once per endpoint; past it a request is answered
/// `OVERLOADED` straight away rather than held without bound.
///
/// A single request is answered on this endpoint's task, among the others
/// in flight, rather than on a task of its own: most of its time is spent
/// waiting for the fsync, and a batch of fsync'd answers then wakes this
/// one task once instead of a task per answer. A batch (thousands of
/// earns to decode and encode) and a history page (store reads) get a
/// task each, so they use every worker thread and never hold up the
/// single requests behind them.
async fn serve_endpoint(
    operation: &'static str,
    mut endpoint: async_nats::service::endpoint::Endpoint,
    ops: Ops,
) {
    let inflight_max = ops.engine.inflight_max().max(1);
    let own_task = matches!(operation, "earn.batch" | "transactions");
    let mut answering = FuturesUnordered::new();
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            // Finished answers first, so the count below is of requests
            // really in flight; intake cannot starve, as only it adds.
            biased;
            Some(()) = answering.next(), if !answering.is_empty() => {}
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            request = endpoint.next() => match request {
                None => break,
                Some(request) if answering.len() + tasks.len() >= inflight_max => {
                    let refused = ApiError::from(loyalty_actors::EngineError::Overloaded);
                    reply(operation, &request, Err(refused)).await;
                }
                Some(request) if own_task => {
                    let ops = ops.clone();
                    tasks.spawn(async move { answer(operation, request, &ops).await });
                }
                Some(request) => answering.push(answer(operation, request, &ops)),
            }
        }
    }
    while answering.next().await.is_some() {}
    while tasks.join_next().await.is_some() {}
}

/// Handles one request and sends its reply. A panic on the way loses this
/// request only, not the endpoint's others: it is logged and not answered,
/// and the requester's retry with the same key is answered as usual.
async fn answer(operation: &'static str, request: async_nats::service::Request, ops: &Ops) {
    let answered = AssertUnwindSafe(async {
        let result = handle(operation, &request.message, ops).await;
        reply(operation, &request, result).await;
    })
    .catch_unwind()
    .await;
    if answered.is_err() {
        error!(
            operation,
            "a NATS request's handling panicked; it was not answered"
        );
    }
}

/// A reply's body, and its media type where it is not the default JSON.
struct Answer {
    body: Bytes,
    content_type: Option<&'static str>,
}

/// Sends a reply: the body on success (with a `Content-Type` header when
/// it is not JSON); on error, the error body with the
/// `Nats-Service-Error-Code` (the HTTP status) and `Nats-Service-Error`
/// (the code) headers.
async fn reply(
    operation: &'static str,
    request: &async_nats::service::Request,
    result: Result<Answer, ApiError>,
) {
    let mut headers = HeaderMap::new();
    let body = match result {
        Ok(answer) => {
            if let Some(content_type) = answer.content_type {
                headers.insert(CONTENT_TYPE.clone(), content_type);
            }
            answer.body
        }
        Err(err) => {
            headers.insert(SERVICE_ERROR_CODE.clone(), err.status.to_string().as_str());
            headers.insert(SERVICE_ERROR.clone(), err.code);
            Bytes::from(err.body())
        }
    };
    if let Err(err) = request.respond_with_headers(Ok(body), headers).await {
        warn!(cause = %err, operation, "cannot send a NATS reply");
    }
}

fn to_json<T: Serialize>(value: &T) -> Answer {
    Answer {
        body: Bytes::from(wire::encode(value)),
        content_type: None,
    }
}

/// Decodes one request and runs it through [`Ops`]: the same path as HTTP.
async fn handle(operation: &str, message: &Message, ops: &Ops) -> Result<Answer, ApiError> {
    if message.payload.len() > REQUEST_BYTES_MAX {
        return Err(ApiError::too_large(REQUEST_BYTES_MAX));
    }
    let header = |name: &HeaderName| {
        message
            .headers
            .as_ref()
            .and_then(|h| h.get(name.clone()))
            .map(|v| v.as_str())
    };
    let caller: Caller = auth::authenticate(&ops.engine, header(&AUTHORIZATION))?;
    let key = header(&IDEMPOTENCY_KEY);
    let body = &message.payload;
    // Only the batch door speaks protobuf (`batch_protobuf`); any other
    // media type is read as JSON, as before there was a choice.
    let content_type = header(&CONTENT_TYPE);
    if operation != "earn.batch" && batch_protobuf::is_protobuf(content_type) {
        return Err(batch_protobuf::unsupported());
    }
    if operation != "earn.batch" && body.len() > wire::BODY_BYTES_MAX {
        return Err(ApiError::too_large(wire::BODY_BYTES_MAX));
    }
    Ok(match operation {
        "earn" => to_json(&ops.earn(&caller, None, key, wire::decode(body)?).await?),
        "redeem" => to_json(&ops.redeem(&caller, None, key, wire::decode(body)?).await?),
        "reverse" => to_json(&ops.reverse(&caller, None, key, wire::decode(body)?).await?),
        "balance" => {
            let input: wire::BalanceBody = wire::decode(body)?;
            to_json(&ops.enrollment(&caller, &input.enrollment_id).await?)
        }
        "enroll" => to_json(&ops.enroll(&caller, wire::decode(body)?).await?),
        "transactions" => {
            let input: wire::TransactionsBody = wire::decode(body)?;
            to_json(
                &ops.transactions(
                    &caller,
                    &input.enrollment_id,
                    input.limit,
                    input.cursor.as_deref(),
                )
                .await?,
            )
        }
        "earn.batch" => {
            let encoding = BatchEncoding::of(content_type);
            let results = ops.earn_batch(&caller, encoding.decode(body)?).await?;
            Answer {
                body: Bytes::from(encoding.encode(results)),
                // A JSON reply carries no media type, as every other reply.
                content_type: (encoding == BatchEncoding::Protobuf)
                    .then(|| encoding.content_type()),
            }
        }
        _ => return Err(ApiError::not_found("operation")),
    })
}

/// Subject of the publisher's barrier request; nobody answers it, and the
/// server's "no responders" reply is the proof it has read everything the
/// publisher sent before.
const BARRIER_SUBJECT: &str = "_loyalty.publisher.barrier";

/// A round trip through the server after the events of a chunk. The server
/// handles one connection's messages in order, so its answer to this request
/// (normally "no responders") means it has received every publish before it.
async fn server_has_everything(client: &async_nats::Client) -> bool {
    use async_nats::client::RequestErrorKind;
    match tokio::time::timeout(
        Duration::from_secs(5),
        client.request(BARRIER_SUBJECT, Bytes::new()),
    )
    .await
    {
        Ok(Ok(_)) => true,
        Ok(Err(err)) => err.kind() == RequestErrorKind::NoResponders,
        Err(_) => false,
    }
}

/// A publishing round sent to the server and not yet confirmed.
struct Round {
    /// The sequence of the round's last record: the cursor once confirmed.
    last: u64,
    /// Events the round published (records not published are skipped).
    published: u64,
    /// The connection count when the round started: the round counts only
    /// if it and its barrier went over one connection.
    connects: u64,
    /// The round's barrier, sent after its events.
    confirmed: tokio::task::JoinHandle<bool>,
}

/// The outbox publisher: durable events, in commit order, at least once.
///
/// Events go out in rounds of up to [`PUBLISH_CHUNK_EVENTS`], each followed
/// by a barrier; the cursor moves to a round's last record when its barrier
/// answers. While a chunk or more is waiting, up to
/// [`PUBLISH_ROUNDS_IN_FLIGHT`] rounds are out at once, so the publisher
/// sends while the server works through what came before. A
/// round that fails, or whose connection changed, is given up with every
/// round after it, and publishing starts again from the cursor.
async fn publish(
    client: async_nats::Client,
    ops: Ops,
    metrics: Arc<Metrics>,
    stopped: watch::Receiver<bool>,
) {
    let store = ops.engine.store().clone();
    // Before the cursor is read: every record durable from here on is
    // kept for us, and those before it are read from the log.
    let recent = ops.engine.recent_records();
    recent.start();
    // However this returns, the commit thread stops keeping records for it.
    let _stop_keeping = StopKeeping(recent);
    // The last record the server has certainly taken.
    let mut cursor = match store.publish_cursor() {
        Ok(cursor) => cursor,
        Err(err) => {
            warn!(cause = %err, "cannot read the publish cursor; publishing from the start");
            0
        }
    };
    metrics.published_sequence.store(cursor, Ordering::Relaxed);
    // The last record handed to the client: `cursor` plus the rounds out.
    let mut sent = cursor;
    let mut rounds: VecDeque<Round> = VecDeque::with_capacity(PUBLISH_ROUNDS_IN_FLIGHT);
    let mut saved = SavedCursor::new(cursor);
    let mut subjects = EventSubjects::default();
    // When the last round started, while the publisher keeps up (pacing).
    let mut pace_from: Option<Instant> = None;
    let mut idle_since: Option<Instant> = None;
    let mut stop_signal = stopped.clone();
    let connection_count = || client.statistics().connects.load(Ordering::Acquire);
    while !*stopped.borrow() {
        let durable = ops
            .engine
            .commit_stats()
            .durable_sequence
            .load(Ordering::Acquire);
        // Rounds confirm in the order they were sent: the server answers a
        // barrier only after every message sent before it. The oldest is
        // awaited when there is nothing new to send, or no room to send it,
        // or less than a chunk waiting: a publisher that keeps up waits for
        // each barrier as it did before rounds overlapped, so that its
        // rounds stay large (sending one every `PUBLISH_ROUND_MIN` whatever
        // the barrier cost 4 % of the earns at 256 in flight). Otherwise
        // only those already answered are taken.
        let behind = durable.saturating_sub(sent) >= PUBLISH_CHUNK_EVENTS as u64;
        let must_wait = sent >= durable
            || rounds.len() >= PUBLISH_ROUNDS_IN_FLIGHT
            || (!rounds.is_empty() && !behind);
        if let Some(round) = rounds.front_mut() {
            if must_wait || round.confirmed.is_finished() {
                // A stop does not wait for the barrier's timeout: the
                // rounds out are dropped unconfirmed, and the cursor saved
                // at the end is the last confirmed one.
                let answered = tokio::select! {
                    answered = &mut round.confirmed => answered.unwrap_or(false),
                    _ = stop_signal.changed() => break,
                };
                let round = rounds.pop_front().expect("the round just awaited");
                let same_connection = connection_count() == round.connects
                    && client.connection_state() == async_nats::connection::State::Connected;
                if !answered || !same_connection {
                    give_up(&mut rounds);
                    sent = cursor;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
                cursor = round.last;
                metrics
                    .events_published
                    .fetch_add(round.published, Ordering::Relaxed);
                metrics.published_sequence.store(cursor, Ordering::Relaxed);
                if saved.due() {
                    saved.save(&store, cursor);
                }
                continue;
            }
        }
        if sent >= durable {
            let idle = idle_since.get_or_insert_with(Instant::now).elapsed();
            if idle >= CURSOR_SAVE_IDLE || saved.due() {
                saved.save(&store, cursor);
            }
            pace_from = None;
            tokio::time::sleep(Duration::from_millis(2)).await;
            continue;
        }
        idle_since = None;
        if let Some(pause) = pace_from.and_then(|at| PUBLISH_ROUND_MIN.checked_sub(at.elapsed())) {
            tokio::time::sleep(pause).await;
            pace_from = None;
            continue;
        }
        if client.connection_state() != async_nats::connection::State::Connected {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        let round_start = Instant::now();
        // The records just written are still in memory; the log is read
        // only for what the cache no longer (or never) held.
        let durable_ahead = usize::try_from(durable - sent).unwrap_or(usize::MAX);
        let mut chunk = recent.take_after(sent, PUBLISH_CHUNK_EVENTS.min(durable_ahead));
        if chunk.is_empty() {
            chunk = match store.read_log(sent, PUBLISH_CHUNK_EVENTS) {
                Ok(chunk) => chunk,
                Err(err) => {
                    warn!(cause = %err, cursor = sent, "cannot read the log to publish; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            metrics
                .events_read_back
                .fetch_add(chunk.len() as u64, Ordering::Relaxed);
        }
        // A reconnect drops what the client had buffered for the old
        // connection (and what the server had not read), while what was
        // still queued goes out on the new one: so a round counts only if
        // the whole of it went over one connection, and an event lost in an
        // outage can reach the server after later ones when the round is
        // sent again (at least once; consumers order by `sequence`).
        let connects = connection_count();
        let mut last = sent;
        let mut published = 0u64;
        let mut failed = false;
        for (seq, record) in chunk.iter().take_while(|(seq, _)| *seq <= durable) {
            if record.event.is_published() {
                let subject = subjects.of(record);
                let mut headers = HeaderMap::new();
                let msg_id = record
                    .event_id
                    .0
                    .hyphenated()
                    .encode_lower(&mut uuid::Uuid::encode_buffer())
                    .to_owned();
                headers.insert(MSG_ID.clone(), msg_id);
                let payload = Bytes::from(events::publish_bytes(*seq, record));
                if client
                    .publish_with_headers(subject, headers, payload)
                    .await
                    .is_err()
                {
                    failed = true;
                    break;
                }
                published += 1;
            }
            last = *seq;
        }
        if failed {
            give_up(&mut rounds);
            sent = cursor;
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        // The cursor moves only once the server has certainly taken the
        // events: a flush only empties our buffer, so each round ends with a
        // round trip the server answers after everything sent before it.
        // Spawned, so that it goes out without waiting for this task to
        // poll it: behind the round's events (perhaps behind some of the
        // next round's too, which only confirms more than it claims).
        let barrier = client.clone();
        rounds.push_back(Round {
            last,
            published,
            connects,
            confirmed: tokio::spawn(async move { server_has_everything(&barrier).await }),
        });
        sent = last;
        // Short of what was durable, the publisher is behind (a full chunk,
        // or memory held only part of it): no pause before the next.
        pace_from = (sent >= durable).then_some(round_start);
    }
    give_up(&mut rounds);
    saved.save(&store, cursor);
}

/// Drops the rounds out, unconfirmed: they are sent again from the cursor.
fn give_up(rounds: &mut VecDeque<Round>) {
    for round in rounds.drain(..) {
        round.confirmed.abort();
    }
}

/// Stops the engine keeping durable records for the publisher when the
/// publisher ends.
struct StopKeeping<'a>(&'a loyalty_actors::commit::RecentRecords);

impl Drop for StopKeeping<'_> {
    fn drop(&mut self) {
        self.0.stop();
    }
}

/// Event subjects by business and event type, made once rather than
/// formatted for every event (a subject is shared bytes: a clone is a
/// count). Emptied when it reaches [`EventSubjects::MAX`] entries, so many
/// businesses cost bounded memory.
#[derive(Default)]
struct EventSubjects {
    /// Each subject made so far, by business and event type.
    made: std::collections::HashMap<(loyalty_engine::BusinessId, &'static str), Subject>,
}

impl EventSubjects {
    const MAX: usize = 4_096;

    /// `loyalty.events.<businessId>.<eventType>`.
    fn of(&mut self, record: &loyalty_persistence::LogRecord) -> Subject {
        let key = (record.business_id, record.event.event_type());
        if let Some(subject) = self.made.get(&key) {
            return subject.clone();
        }
        if self.made.len() >= Self::MAX {
            self.made.clear();
        }
        let subject = Subject::from(format!("loyalty.events.{}.{}", key.0, key.1));
        self.made.insert(key, subject.clone());
        subject
    }
}

/// The publish cursor as last written to the store, and when.
struct SavedCursor {
    sequence: u64,
    at: Instant,
}

impl SavedCursor {
    fn new(sequence: u64) -> SavedCursor {
        SavedCursor {
            sequence,
            at: Instant::now(),
        }
    }

    /// Whether a save interval has passed since the last save (or failed
    /// attempt).
    fn due(&self) -> bool {
        self.at.elapsed() >= CURSOR_SAVE_INTERVAL
    }

    /// Writes `cursor` unless it is the one saved already. A failure is
    /// logged and tried again a save interval later: until then a restart
    /// would publish again from the older cursor.
    fn save(&mut self, store: &loyalty_persistence::Store, cursor: u64) {
        if cursor == self.sequence {
            return;
        }
        match store.set_publish_cursor(cursor) {
            Ok(()) => {
                self.sequence = cursor;
                self.at = Instant::now();
            }
            Err(err) => {
                // Tried again at the next save point, not on every round.
                self.at = Instant::now();
                warn!(cause = %err, cursor, "cannot save the publish cursor; a restart will publish again from the last saved one");
            }
        }
    }
}
