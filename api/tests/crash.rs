//! kill -9 the real `loyalty` process under HTTP load, again and again,
//! restart it on the same data, and check that every acknowledged
//! transaction is present exactly once.

mod common;

use common::*;
use rand::Rng;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const KILLS: usize = 12;
const CLIENTS: usize = 16;

#[test]
fn kill_9_under_http_load_loses_no_acknowledged_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), None);
    let t = tenant(&server, "Shop");
    let mut enrollments = vec![t.enrollment_id.clone()];
    for i in 0..3 {
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
    // (enrollment, transaction id) of every 200 answer.
    let acked: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let mut rng = rand::rng();
    let mut kills_under_load = 0;
    for round in 0..KILLS {
        let stop = Arc::new(AtomicBool::new(false));
        let port = server.port;
        let clients: Vec<_> = (0..CLIENTS)
            .map(|c| {
                let (stop, acked, key, enrollments) = (stop.clone(), acked.clone(), t.key.clone(), enrollments.clone());
                std::thread::spawn(move || {
                    let mut n = 0;
                    while !stop.load(Ordering::Relaxed) {
                        n += 1;
                        let enrollment = &enrollments[n % enrollments.len()];
                        let body = json!({"points": 1 + n % 50, "idempotencyKey": format!("r{round}-c{c}-{n}")}).to_string();
                        let answer = std::panic::catch_unwind(|| {
                            http(port, "POST", &format!("/v1/enrollments/{enrollment}/earn"), Some(&key), Some(&body), &[])
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
                })
            })
            .collect();
        let before = acked.lock().unwrap().len();
        std::thread::sleep(Duration::from_millis(rng.random_range(100..600)));
        server.kill();
        stop.store(true, Ordering::Relaxed);
        for client in clients {
            client.join().unwrap();
        }
        if acked.lock().unwrap().len() > before {
            kills_under_load += 1;
        }
        server = Server::start(dir.path(), None);
    }
    assert!(
        kills_under_load >= 10,
        "only {kills_under_load} kills under load"
    );
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() > 100, "too little load: {}", acked.len());

    // Every acknowledged earn is in its enrollment's history exactly once,
    // and each balance is the sum of its history.
    let mut seen: HashMap<String, usize> = HashMap::new();
    for enrollment in &enrollments {
        let mut cursor: Option<String> = None;
        let mut sum = 0;
        loop {
            let path = match &cursor {
                None => format!("/v1/enrollments/{enrollment}/transactions?limit=500"),
                Some(c) => {
                    format!("/v1/enrollments/{enrollment}/transactions?limit=500&cursor={c}")
                }
            };
            let (status, page) = server.get(&path, Some(&t.key));
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
            server.get(&format!("/v1/enrollments/{enrollment}"), Some(&t.key));
        assert_eq!(
            view["balance"].as_i64().unwrap(),
            sum,
            "balance of {enrollment} differs from its history"
        );
    }
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
