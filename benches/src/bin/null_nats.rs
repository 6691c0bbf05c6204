//! The do-nothing NATS responder: the ceiling of the NATS door. It serves
//! `<prefix>.earn` and `<prefix>.earn.batch` in a queue group, decodes each
//! body strictly as the engine does, and answers fixed earn answers (one
//! per item for a batch), keeping no state. A batch sent with
//! `Content-Type: application/protobuf` is decoded and answered in
//! protobuf, through the engine's own functions.
//!
//! Usage: `null_nats nats://127.0.0.1:4222 [prefix]` (prefix default `null.v1`)

use futures_util::StreamExt;
use loyalty_api::batch_protobuf::BatchEncoding;
use loyalty_api::ops::{BatchItem, BatchResults};
use loyalty_api::wire::{self, EarnBatchBody, EarnBody, TransactionBody};

/// The same allocator as the `loyalty` binary, so the comparison is of
/// the work done, not of allocators.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> Result<(), async_nats::Error> {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .unwrap_or_else(|| "nats://127.0.0.1:4222".into());
    let prefix = args.next().unwrap_or_else(|| "null.v1".into());
    let client = async_nats::ConnectOptions::new()
        .retry_on_initial_connect()
        .connect(url)
        .await?;
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
            tokio::spawn(async move { respond(&client, message, true).await });
        } else {
            respond(&client, message, false).await;
        }
    }
    Ok(())
}

/// Decodes one request strictly and publishes its fixed answer, decoding
/// and encoding with the engine's own typed functions in either encoding
/// (so the ceiling is of the same door work, not of a slower JSON path).
/// A refused request is answered as the engine answers it: the JSON error
/// body with the service error headers.
async fn respond(client: &async_nats::Client, message: async_nats::Message, is_batch: bool) {
    let Some(reply) = message.reply else { return };
    let content_type = message
        .headers
        .as_ref()
        .and_then(|h| h.get("Content-Type"))
        .map(|v| v.as_str());
    let mut headers = async_nats::HeaderMap::new();
    let answered = if is_batch {
        let encoding = BatchEncoding::of(content_type);
        encoding.decode(&message.payload).map(|batch| {
            if encoding == BatchEncoding::Protobuf {
                headers.insert("Content-Type", encoding.content_type());
            }
            encoding.encode(answers(&batch))
        })
    } else {
        wire::decode::<EarnBody>(&message.payload).map(|earn| wire::encode(&answer(&earn)))
    };
    let body = answered.unwrap_or_else(|err| {
        headers.insert("Nats-Service-Error-Code", err.status.to_string().as_str());
        headers.insert("Nats-Service-Error", err.code);
        err.body()
    });
    let _ = client
        .publish_with_headers(reply, headers, body.into())
        .await;
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
