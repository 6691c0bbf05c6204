//! The do-nothing NATS responder: the ceiling of the NATS door. It serves
//! `<prefix>.earn` and `<prefix>.earn.batch` in a queue group, decodes each
//! body strictly as the engine does, and answers fixed earn answers (one
//! per item for a batch), keeping no state. A batch sent with
//! `Content-Type: application/protobuf` is decoded and answered in
//! protobuf, through the engine's own functions.
//!
//! Usage: `null_nats nats://127.0.0.1:4222 [prefix]` (prefix default `null.v1`)

use futures_util::StreamExt;
use loyalty_api::batch_protobuf;
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

/// Decodes one request strictly and publishes its fixed answer.
async fn respond(client: &async_nats::Client, message: async_nats::Message, is_batch: bool) {
    let Some(reply) = message.reply else { return };
    let content_type = message
        .headers
        .as_ref()
        .and_then(|h| h.get("Content-Type"))
        .map(|v| v.as_str());
    if is_batch && batch_protobuf::is_protobuf(content_type) {
        let body = match batch_protobuf::decode_request(&message.payload) {
            Ok(batch) => batch_protobuf::encode_reply(BatchResults {
                results: batch.items.iter().map(typed_answer).collect(),
            }),
            Err(err) => err.body(),
        };
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Content-Type", batch_protobuf::CONTENT_TYPE);
        let _ = client
            .publish_with_headers(reply, headers, body.into())
            .await;
        return;
    }
    let body = if is_batch {
        match wire::decode::<EarnBatchBody>(&message.payload) {
            Ok(batch) => {
                let results: Vec<_> = batch.items.iter().map(answer).collect();
                serde_json::json!({ "results": results }).to_string()
            }
            Err(err) => String::from_utf8_lossy(&err.body()).into_owned(),
        }
    } else {
        match wire::decode::<EarnBody>(&message.payload) {
            Ok(earn) => answer(&earn).to_string(),
            Err(err) => String::from_utf8_lossy(&err.body()).into_owned(),
        }
    };
    let _ = client.publish(reply, body.into()).await;
}

/// A fixed earn answer in the engine's shape.
fn answer(earn: &EarnBody) -> serde_json::Value {
    serde_json::json!({
        "transactionId": "0190d6a1-2b3c-7d4e-8f90-000000000001",
        "enrollmentId": earn.enrollment_id,
        "points": earn.points.unwrap_or(1),
        "balance": 1000, "pending": 0, "tier": "member",
        "eventId": "0190d6a1-2b3c-7d4e-8f90-000000000002",
    })
}

/// The same fixed answer as the engine's typed answer, for the protobuf
/// batch (encoded by the engine's own function).
fn typed_answer(earn: &EarnBody) -> BatchItem {
    BatchItem::Ok(TransactionBody {
        transaction_id: "0190d6a1-2b3c-7d4e-8f90-000000000001".into(),
        enrollment_id: earn.enrollment_id.clone().unwrap_or_default(),
        points: earn.points.unwrap_or(1),
        balance: 1000,
        pending: 0,
        tier: Some("member".into()),
        event_id: "0190d6a1-2b3c-7d4e-8f90-000000000002".into(),
        shortfall: None,
    })
}
