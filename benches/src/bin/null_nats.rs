//! The do-nothing NATS responder: the ceiling of the NATS door. It serves
//! `<prefix>.earn` in a queue group, decodes each earn body strictly as the
//! engine does, and answers a fixed earn answer, keeping no state.
//!
//! Usage: `null_nats nats://127.0.0.1:4222 [prefix]` (prefix default `null.v1`)

use futures_util::StreamExt;
use loyalty_api::wire::{self, EarnBody};

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
    let mut requests = client
        .queue_subscribe(format!("{prefix}.earn"), "null".into())
        .await?;
    while let Some(message) = requests.next().await {
        let client = client.clone();
        tokio::spawn(async move {
            let Some(reply) = message.reply else { return };
            let body = match wire::decode::<EarnBody>(&message.payload) {
                Ok(earn) => serde_json::json!({
                    "transactionId": "0190d6a1-2b3c-7d4e-8f90-000000000001",
                    "enrollmentId": earn.enrollment_id,
                    "points": earn.points.unwrap_or(1),
                    "balance": 1000, "pending": 0, "tier": "member",
                    "eventId": "0190d6a1-2b3c-7d4e-8f90-000000000002",
                })
                .to_string(),
                Err(err) => String::from_utf8_lossy(&err.body()).into_owned(),
            };
            let _ = client.publish(reply, body.into()).await;
        });
    }
    Ok(())
}
