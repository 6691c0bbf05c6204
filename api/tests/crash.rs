//! kill -9 the real `loyalty` process under HTTP load, again and again,
//! restart it on the same data, and check that every acknowledged
//! transaction is present exactly once, and that its event reaches NATS.

mod common;

use common::*;
use futures_util::StreamExt;
use rand::Rng;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const KILLS: usize = 12;
const CLIENTS: usize = 16;

/// The aggregate index's rounds come every few hundred events instead of
/// every million, so that kills land before, during and between them and
/// each restart indexes a tail of the log again.
const INDEX_EVERY_300_EVENTS: &[&str] = &["--index-every-events", "300"];

/// The kill tests run one at a time: each needs most of its kills to land
/// under load, which two of them sharing the cores made less likely.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

#[test]
fn kill_9_under_http_load_loses_no_acknowledged_transaction() {
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(dir.path(), None, INDEX_EVERY_300_EVENTS);
    let t = tenant(&server, "Shop");
    let enrollments = enrollments(&server, &t, 4);
    // (enrollment, transaction id) of every 200 answer.
    let acked: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let client = {
        let (acked, key, enrollments) = (acked.clone(), t.key.clone(), enrollments.clone());
        move |round: usize, c: usize, port: u16, stop: &AtomicBool| {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let enrollment = &enrollments[n % enrollments.len()];
                let body =
                    json!({"points": 1 + n % 50, "idempotencyKey": format!("r{round}-c{c}-{n}")})
                        .to_string();
                let answer = std::panic::catch_unwind(|| {
                    http(
                        port,
                        "POST",
                        &format!("/v1/enrollments/{enrollment}/earn"),
                        Some(&key),
                        Some(&body),
                        &[],
                    )
                });
                match answer {
                    Ok(r) if r.status == 200 => {
                        let id = r.json()["transactionId"].as_str().unwrap().to_owned();
                        acked.lock().unwrap().push((enrollment.clone(), id));
                    }
                    // The server died mid-request, or refused: not acknowledged.
                    _ => {}
                }
            }
        }
    };
    let (server, kills_under_load) = kill_rounds(
        server,
        KILLS,
        CLIENTS,
        100..600,
        || acked.lock().unwrap().len(),
        client,
        || Server::start_with(dir.path(), None, INDEX_EVERY_300_EVENTS),
    );
    assert!(
        kills_under_load >= 10,
        "only {kills_under_load} kills under load"
    );
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() > 100, "too little load: {}", acked.len());

    // Every acknowledged earn is in its enrollment's history exactly once,
    // and each balance is the sum of its history.
    let seen = histories(&server, &t.key, &enrollments);
    for (enrollment, id) in &acked {
        assert_eq!(
            seen.get(id).copied(),
            Some(1),
            "acknowledged earn {id} on {enrollment} is not in its history exactly once"
        );
    }
    assert!(
        seen.values().all(|n| *n == 1),
        "a transaction appears twice"
    );
}

/// `kills` rounds of load and kill -9: each round runs `client(round, c,
/// port, stop)` on `clients` threads until `stop`, kills the server after a
/// random pause of `pause_ms`, and starts it again with `restart`. Returns
/// the server last started, and how many kills came while `acknowledged()`
/// was growing.
fn kill_rounds<C>(
    mut server: Server,
    kills: usize,
    clients: usize,
    pause_ms: std::ops::Range<u64>,
    acknowledged: impl Fn() -> usize,
    client: C,
    restart: impl Fn() -> Server,
) -> (Server, usize)
where
    C: Fn(usize, usize, u16, &AtomicBool) + Clone + Send + 'static,
{
    let mut rng = rand::rng();
    let mut kills_under_load = 0;
    for round in 0..kills {
        let stop = Arc::new(AtomicBool::new(false));
        let port = server.port;
        let threads: Vec<_> = (0..clients)
            .map(|c| {
                let (stop, client) = (stop.clone(), client.clone());
                std::thread::spawn(move || client(round, c, port, &stop))
            })
            .collect();
        let before = acknowledged();
        std::thread::sleep(Duration::from_millis(rng.random_range(pause_ms.clone())));
        server.kill();
        stop.store(true, Ordering::Relaxed);
        for thread in threads {
            thread.join().unwrap();
        }
        if acknowledged() > before {
            kills_under_load += 1;
        }
        server = restart();
    }
    (server, kills_under_load)
}

/// The tenant's enrollment and `count - 1` more, of new customers.
fn enrollments(server: &Server, t: &Tenant, count: usize) -> Vec<String> {
    let mut enrollments = vec![t.enrollment_id.clone()];
    for i in 1..count {
        let (_, c) = server.post(
            "/v1/customers",
            Some(&t.key),
            &json!({"externalId": format!("extra-{i}")}),
        );
        let (_, e) = server.post(
            "/v1/enrollments",
            Some(&t.key),
            &json!({"customerId": c["customerId"], "programId": t.program_id}),
        );
        enrollments.push(e["enrollmentId"].as_str().unwrap().to_owned());
    }
    enrollments
}

/// How many times each transaction id appears in the histories of
/// `enrollments`, after checking that each balance is the sum of its
/// history.
fn histories(server: &Server, key: &str, enrollments: &[String]) -> HashMap<String, usize> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    for enrollment in enrollments {
        let mut cursor: Option<String> = None;
        let mut sum = 0;
        loop {
            let path = match &cursor {
                None => format!("/v1/enrollments/{enrollment}/transactions?limit=500"),
                Some(c) => {
                    format!("/v1/enrollments/{enrollment}/transactions?limit=500&cursor={c}")
                }
            };
            let (status, page) = server.get(&path, Some(key));
            assert_eq!(status, 200, "{page}");
            for item in page["items"].as_array().unwrap() {
                let id = item["data"]["transactionId"].as_str().unwrap().to_owned();
                *seen.entry(id).or_default() += 1;
                sum += item["data"]["points"].as_i64().unwrap();
            }
            match page["nextCursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => break,
            }
        }
        let (_, view): (u16, Value) =
            server.get(&format!("/v1/enrollments/{enrollment}"), Some(key));
        assert_eq!(
            view["balance"].as_i64().unwrap(),
            sum,
            "balance of {enrollment} differs from its history"
        );
    }
    seen
}

const PUBLISHING_KILLS: usize = 8;
const BATCH_CLIENTS: usize = 3;
const BATCH_EARNS: usize = 400;

/// kill -9 the engine again and again while it publishes, with batches of
/// earns that keep its publisher behind (so that rounds are likely out
/// awaiting their barriers when it dies), and restart it: every
/// acknowledged earn's event reaches NATS at least once, and every earned
/// event that reaches it is of a durable earn.
#[test]
fn kill_9_while_publishing_loses_no_event_and_publishes_none_not_durable() {
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let nats = NatsServer::start();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    // eventId -> (times received, transactionId) of every earned event.
    let received: Arc<Mutex<HashMap<String, (usize, String)>>> = Arc::default();
    let url = nats.url();
    let (client, mut subscriber) = runtime.block_on(async {
        // Room for every event of the test, so a slow test thread loses
        // none on the client's side.
        let client = async_nats::ConnectOptions::new()
            .subscription_capacity(1 << 20)
            .connect(&url)
            .await
            .unwrap();
        let subscriber = client.subscribe("loyalty.events.>").await.unwrap();
        client.flush().await.unwrap();
        (client, subscriber)
    });
    {
        let received = received.clone();
        runtime.spawn(async move {
            let _client = client;
            while let Some(message) = subscriber.next().await {
                let event: Value = serde_json::from_slice(&message.payload).unwrap();
                if event["eventType"] != "loyalty.points.earned" {
                    continue;
                }
                let id = event["eventId"].as_str().unwrap().to_owned();
                let transaction = event["data"]["transactionId"].as_str().unwrap().to_owned();
                received
                    .lock()
                    .unwrap()
                    .entry(id)
                    .or_insert((0, transaction))
                    .0 += 1;
            }
        });
    }

    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(dir.path(), Some(&url), INDEX_EVERY_300_EVENTS);
    let t = tenant(&server, "Shop");
    let enrollments = enrollments(&server, &t, 8);
    // The eventId of every earn answered 200.
    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    let client = {
        let (acked, key, enrollments) = (acked.clone(), t.key.clone(), enrollments.clone());
        move |round: usize, c: usize, port: u16, stop: &AtomicBool| {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let items: Vec<Value> = (0..BATCH_EARNS)
                    .map(|i| json!({"enrollmentId": enrollments[i % enrollments.len()], "points": 1, "idempotencyKey": format!("p{round}-c{c}-{n}-{i}")}))
                    .collect();
                let body = json!({ "items": items }).to_string();
                let answer = std::panic::catch_unwind(|| {
                    http(port, "POST", "/v1/earn/batch", Some(&key), Some(&body), &[])
                });
                let r = match answer {
                    Ok(r) if r.status == 200 => r,
                    // The server died mid-request, or refused: not acknowledged.
                    _ => continue,
                };
                let results = r.json()["results"].as_array().unwrap().clone();
                let mut acked = acked.lock().unwrap();
                for result in results {
                    if let Some(id) = result["eventId"].as_str() {
                        acked.push(id.to_owned());
                    }
                }
            }
        }
    };
    let (server, kills_under_load) = kill_rounds(
        server,
        PUBLISHING_KILLS,
        BATCH_CLIENTS,
        400..1_000,
        || acked.lock().unwrap().len(),
        client,
        || Server::start_with(dir.path(), Some(&url), INDEX_EVERY_300_EVENTS),
    );
    assert!(
        kills_under_load >= PUBLISHING_KILLS / 2,
        "only {kills_under_load} kills under load"
    );
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() > 10_000, "too little load: {}", acked.len());

    // The last start publishes what the kills left unconfirmed.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let missing = {
            let received = received.lock().unwrap();
            acked
                .iter()
                .filter(|id| !received.contains_key(*id))
                .count()
        };
        if missing == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{missing} of {} acknowledged earns never had their event published",
            acked.len()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let durable = histories(&server, &t.key, &enrollments);
    let received = received.lock().unwrap();
    let not_durable: Vec<&String> = received
        .values()
        .map(|(_, transaction)| transaction)
        .filter(|transaction| !durable.contains_key(*transaction))
        .collect();
    assert!(
        not_durable.is_empty(),
        "{} events published for earns that are not durable, e.g. {:?}",
        not_durable.len(),
        not_durable.first()
    );
}
