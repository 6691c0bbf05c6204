//! The do-nothing NATS responder: the ceiling of the NATS door. It serves
//! `<prefix>.earn` and `<prefix>.earn.batch` in a queue group, decodes each
//! body strictly as the engine does, and answers fixed earn answers (one
//! per item for a batch), keeping no state. A batch sent with
//! `Content-Type: application/protobuf` is decoded and answered in
//! protobuf, through the engine's own functions.
//!
//! With `--durable-dir DIR` it is the *durable* do-nothing responder: each
//! request's body and answer (a single earn's, or a whole batch's) are
//! appended to a log in DIR and fsync'd in group commits
//! ([`loyalty_benches::durable`]) before the answer goes out, and with
//! `--events` each durable earn (each item of a batch) also publishes one
//! event of the contract's size on a connection of its own, as the
//! engine's publisher does. That is the ceiling of any engine that answers
//! after an fsync and publishes its events, on this machine and disk.
//!
//! Usage: `null_nats [nats://127.0.0.1:4222] [prefix] [--durable-dir DIR [--events]]`
//! (prefix default `null.v1`)

use async_nats::{HeaderMap, Subject};
use bytes::Bytes;
use clap::Parser;
use futures_util::StreamExt;
use loyalty_api::batch_protobuf::BatchEncoding;
use loyalty_api::error::ApiError;
use loyalty_api::ops::{BatchItem, BatchResults};
use loyalty_api::wire::{self, EarnBatchBody, EarnBody, TransactionBody};
use loyalty_benches::durable::GroupLog;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

/// The same allocator as the `loyalty` binary, so the comparison is of
/// the work done, not of allocators.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(about = "The do-nothing NATS responder (the NATS door's ceiling), durable or not")]
struct Args {
    /// The NATS server.
    #[arg(default_value = "nats://127.0.0.1:4222")]
    url: String,
    /// Subjects served: `<prefix>.earn` and `<prefix>.earn.batch`.
    #[arg(default_value = "null.v1")]
    prefix: String,
    /// Answer each earn (single or batch) only once its request and answer
    /// are fsync'd in a log in this directory (group commit).
    #[arg(long)]
    durable_dir: Option<PathBuf>,
    /// With `--durable-dir`: publish one event per durable earn to
    /// `<prefix>.events.earned`, with a `Nats-Msg-Id` header, on a
    /// connection of its own.
    #[arg(long, requires = "durable_dir")]
    events: bool,
}

/// What the durable writer hands back: the reply to send once the request
/// is durable.
struct Reply {
    subject: Subject,
    headers: HeaderMap,
    body: Bytes,
}

#[tokio::main]
async fn main() -> Result<(), async_nats::Error> {
    let args = Args::parse();
    let connect = || {
        async_nats::ConnectOptions::new()
            .retry_on_initial_connect()
            .connect(args.url.clone())
    };
    let client = connect().await?;
    let prefix = &args.prefix;
    // The log's ring is written and synced before the first request is
    // taken, so no request waits for it.
    let durable = match &args.durable_dir {
        Some(dir) => {
            let events = if args.events {
                Some((
                    connect().await?,
                    Subject::from(format!("{prefix}.events.earned")),
                ))
            } else {
                None
            };
            Some(start_durable(dir, client.clone(), events)?)
        }
        None => None,
    };
    let single = client
        .queue_subscribe(format!("{prefix}.earn"), "null".into())
        .await?;
    let batch = client
        .queue_subscribe(format!("{prefix}.earn.batch"), "null".into())
        .await?;
    let mut requests = futures_util::stream::select(single, batch);
    let batch_subject = format!("{prefix}.earn.batch");
    // A single earn is answered in this loop, with no task of its own: it
    // needs no waiting, and a task per request costs a spawn and a wake-up
    // and lets the client write each reply alone. A batch (thousands of
    // items to decode and encode) gets a task, so batches use every core.
    // These are the cheapest ways found to answer each (the engine's door,
    // which must wait for the fsync, answers its single requests together
    // on one task per endpoint).
    while let Some(message) = requests.next().await {
        if message.subject.as_str() == batch_subject {
            let client = client.clone();
            let durable = durable.clone();
            tokio::spawn(async move { respond(&client, message, true, durable.as_ref()).await });
        } else {
            respond(&client, message, false, durable.as_ref()).await;
        }
    }
    Ok(())
}

/// Starts the durable writer. Its callback runs on the writer's thread and
/// hands each durable group to one task that sends its replies together,
/// as the engine's commit thread answers a written batch; the group's
/// events go to a task of their own on their own connection, as the
/// engine's publisher sends them, so no reply waits behind an event.
fn start_durable(
    dir: &std::path::Path,
    client: async_nats::Client,
    events: Option<(async_nats::Client, Subject)>,
) -> std::io::Result<GroupLog<Reply>> {
    // Unbounded, but each holds at most what the log took (its own queue
    // is bounded) and is drained as fast as the groups come.
    let (durable_tx, mut durable_rx) =
        tokio::sync::mpsc::unbounded_channel::<(Vec<Reply>, usize)>();
    let (earned_tx, mut earned_rx) = tokio::sync::mpsc::unbounded_channel::<usize>();
    let publishing = events.is_some();
    tokio::spawn(async move {
        while let Some((replies, earns)) = durable_rx.recv().await {
            for reply in replies {
                let _ = client
                    .publish_with_headers(reply.subject, reply.headers, reply.body)
                    .await;
            }
            if publishing {
                let _ = earned_tx.send(earns);
            }
        }
    });
    if let Some((events, subject)) = events {
        tokio::spawn(async move {
            let event_body = Bytes::from_static(EVENT.as_bytes());
            let mut event_number = 0u64;
            while let Some(earns) = earned_rx.recv().await {
                for _ in 0..earns {
                    event_number += 1;
                    let mut headers = HeaderMap::new();
                    headers.insert("Nats-Msg-Id", format!("null-{event_number}").as_str());
                    let _ = events
                        .publish_with_headers(subject.clone(), headers, event_body.clone())
                        .await;
                }
            }
        });
    }
    GroupLog::start(dir, move |replies, earns| {
        let _ = durable_tx.send((replies, earns));
    })
}

/// An earned event of the contract's shape and typical size (what the
/// engine publishes for an earn), sent as fixed bytes: the broker and the
/// client do the same work for it as for the engine's.
const EVENT: &str = concat!(
    r#"{"eventId":"0190d6a1-2b3c-7d4e-8f90-000000000002","eventType":"loyalty.points.earned","#,
    r#""version":8,"timestamp":"2026-12-06T21:00:00.000000Z","#,
    r#""aggregateId":"0190d6a1-2b3c-7d4e-8f90-000000000005","#,
    r#""businessId":"0190d6a1-2b3c-7d4e-8f90-000000000006","sequence":123456,"#,
    r#""data":{"transactionId":"0190d6a1-2b3c-7d4e-8f90-000000000001","points":10,"#,
    r#""balance":1000,"expiresAt":"2027-12-06T21:00:00.000000Z"}}"#
);

/// Decodes one request strictly and publishes its fixed answer, decoding
/// and encoding with the engine's own typed functions in either encoding
/// (so the ceiling is of the same door work, not of a slower JSON path).
/// A refused request is answered as the engine answers it: the JSON error
/// body with the service error headers. With `durable`, an answer waits
/// for its request and answer to be fsync'd.
async fn respond(
    client: &async_nats::Client,
    message: async_nats::Message,
    is_batch: bool,
    durable: Option<&GroupLog<Reply>>,
) {
    let Some(reply) = message.reply else { return };
    let content_type = message
        .headers
        .as_ref()
        .and_then(|h| h.get("Content-Type"))
        .map(|v| v.as_str());
    let mut headers = async_nats::HeaderMap::new();
    // Earns the request makes: one event each once durable.
    let mut earns = 1;
    let answered = if is_batch {
        let encoding = BatchEncoding::of(content_type);
        encoding.decode(&message.payload).map(|batch| {
            if encoding == BatchEncoding::Protobuf {
                headers.insert("Content-Type", encoding.content_type());
            }
            earns = batch.items.len();
            encoding.encode(answers(&batch))
        })
    } else {
        wire::decode::<EarnBody>(&message.payload).map(|earn| wire::encode(&answer(&earn)))
    };
    let (headers, body) = match (answered, durable) {
        (Err(err), _) => refusal(&err),
        (Ok(body), None) => (headers, body),
        (Ok(body), Some(log)) => {
            let mut record = Vec::with_capacity(message.payload.len() + body.len());
            record.extend_from_slice(&message.payload);
            record.extend_from_slice(&body);
            let durable_reply = Reply {
                subject: reply.clone(),
                headers,
                body: body.into(),
            };
            match log.submit(record, earns, durable_reply) {
                // The writer sends it once it is durable.
                Ok(()) => return,
                Err(err) => {
                    // Answered at once, as the engine answers past its bounds.
                    static SAID: AtomicBool = AtomicBool::new(false);
                    if !SAID.swap(true, Ordering::Relaxed) {
                        eprintln!("null_nats: refusing durable requests: {err}");
                    }
                    refusal(&ApiError::from(loyalty_actors::EngineError::Overloaded))
                }
            }
        }
    };
    let _ = client
        .publish_with_headers(reply, headers, body.into())
        .await;
}

/// The engine's answer to a refused request: the error body, with its
/// status in `Nats-Service-Error-Code` and its code in `Nats-Service-Error`.
fn refusal(err: &ApiError) -> (HeaderMap, Vec<u8>) {
    let mut headers = HeaderMap::new();
    headers.insert("Nats-Service-Error-Code", err.status.to_string().as_str());
    headers.insert("Nats-Service-Error", err.code);
    (headers, err.body())
}

fn answers(batch: &EarnBatchBody) -> BatchResults {
    BatchResults {
        results: batch
            .items
            .iter()
            .map(|earn| BatchItem::Ok(answer(earn)))
            .collect(),
    }
}

/// A fixed earn answer in the engine's typed shape.
fn answer(earn: &EarnBody) -> TransactionBody {
    TransactionBody {
        transaction_id: "0190d6a1-2b3c-7d4e-8f90-000000000001".into(),
        enrollment_id: earn.enrollment_id.clone().unwrap_or_default(),
        points: earn.points.unwrap_or(1),
        balance: 1000,
        pending: 0,
        tier: Some("member".into()),
        event_id: "0190d6a1-2b3c-7d4e-8f90-000000000002".into(),
        shortfall: None,
    }
}
