//! The HTTP contract against the real binary: every route, idempotency,
//! tenant isolation, bad input, limits.

mod common;

use common::*;
use serde_json::{json, Value};

fn earn_path(t: &Tenant) -> String {
    format!("/v1/enrollments/{}/earn", t.enrollment_id)
}

#[test]
fn the_contract_flow_works_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), None);
    let t = tenant(&server, "Corner Coffee");
    let key = Some(t.key.as_str());

    let (status, earned) = server.post(
        &earn_path(&t),
        key,
        &json!({"amount": 1250, "idempotencyKey": "e1", "reference": "receipt-1"}),
    );
    assert_eq!(status, 200, "{earned}");
    assert_eq!(
        (earned["points"].as_i64(), earned["balance"].as_i64()),
        (Some(125), Some(125))
    );
    for field in [
        "transactionId",
        "enrollmentId",
        "points",
        "balance",
        "pending",
        "tier",
        "eventId",
    ] {
        assert!(
            earned.get(field).is_some(),
            "earn answer lacks {field}: {earned}"
        );
    }
    let (status, redeemed) = server.post(
        &format!("/v1/enrollments/{}/redeem", t.enrollment_id),
        key,
        &json!({"points": 25, "idempotencyKey": "r1"}),
    );
    assert_eq!((status, redeemed["balance"].as_i64()), (200, Some(100)));
    let (status, short) = server.post(
        &format!("/v1/enrollments/{}/redeem", t.enrollment_id),
        key,
        &json!({"points": 1000, "idempotencyKey": "r2"}),
    );
    assert_eq!(
        (status, short["error"]["code"].as_str()),
        (422, Some("INSUFFICIENT_POINTS"))
    );
    let (status, reversed) = server.post(
        &format!("/v1/enrollments/{}/reverse", t.enrollment_id),
        key,
        &json!({"transactionId": earned["transactionId"], "points": 50, "idempotencyKey": "v1"}),
    );
    assert_eq!(
        (
            status,
            reversed["balance"].as_i64(),
            reversed["shortfall"].as_i64()
        ),
        (200, Some(50), Some(0))
    );

    let (status, enrollment) = server.get(&format!("/v1/enrollments/{}", t.enrollment_id), key);
    assert_eq!(status, 200);
    assert_eq!(enrollment["balance"], 50);
    assert_eq!(enrollment["lifetimePoints"], 75);
    assert_eq!(enrollment["tier"], "member");
    assert_eq!(enrollment["customerId"], t.customer_id.as_str());

    let (status, program) = server.get(&format!("/v1/programs/{}", t.program_id), key);
    assert_eq!((status, program["status"].as_str()), (200, Some("active")));
    let (status, customer) = server.get(&format!("/v1/customers/{}", t.customer_id), key);
    assert_eq!(
        (status, customer["externalId"].as_str()),
        (200, Some("pos-1"))
    );

    // History: newest first, paged by cursor.
    let (status, page1) = server.get(
        &format!("/v1/enrollments/{}/transactions?limit=2", t.enrollment_id),
        key,
    );
    assert_eq!(status, 200, "{page1}");
    let types: Vec<_> = page1["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["eventType"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        ["loyalty.points.reversed", "loyalty.points.redeemed"]
    );
    let cursor = page1["nextCursor"].as_str().unwrap();
    let (_, page2) = server.get(
        &format!(
            "/v1/enrollments/{}/transactions?limit=2&cursor={cursor}",
            t.enrollment_id
        ),
        key,
    );
    let items = page2["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["eventType"], "loyalty.points.earned");
    assert!(page2["nextCursor"].is_null());

    // The business's event feed, in commit order.
    let (status, feed) = server.get("/v1/events?limit=100", key);
    assert_eq!(status, 200);
    let items = feed["items"].as_array().unwrap();
    let types: Vec<_> = items
        .iter()
        .map(|i| i["eventType"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        [
            "loyalty.program.created",
            "loyalty.program.activated",
            "customer.created",
            "loyalty.customer.enrolled",
            "loyalty.points.earned",
            "loyalty.points.redeemed",
            "loyalty.points.reversed"
        ]
    );
    let sequences: Vec<_> = items
        .iter()
        .map(|i| i["sequence"].as_u64().unwrap())
        .collect();
    assert!(sequences.windows(2).all(|w| w[0] < w[1]));
    let after = feed["nextAfter"].as_u64().unwrap();
    let (_, rest) = server.get(&format!("/v1/events?after={after}"), key);
    assert!(rest["items"].as_array().unwrap().is_empty());

    // The batch door: independent items, answers in order.
    let (status, batch) = server.post(
        "/v1/earn/batch",
        key,
        &json!({"items": [
            {"enrollmentId": t.enrollment_id, "points": 5, "idempotencyKey": "b1"},
            {"enrollmentId": t.enrollment_id, "points": 0, "idempotencyKey": "b2"},
            {"enrollmentId": "00000000-0000-0000-0000-000000000000", "points": 5, "idempotencyKey": "b3"}
        ]}),
    );
    assert_eq!(status, 200, "{batch}");
    let results = batch["results"].as_array().unwrap();
    assert_eq!(results[0]["balance"], 55);
    assert_eq!(results[1]["error"]["code"], "INVALID_FIELD");
    assert_eq!(results[2]["error"]["code"], "NOT_FOUND");

    let (status, _) = server.get("/healthz", None);
    assert_eq!(status, 200);
    // Percent-encoded, the same route: the router matches the decoded path.
    let (status, _) = server.get("/%68ealthz", None);
    assert_eq!(status, 200);
    let (status, _) = server.get("/v1/no-such-route", key);
    assert_eq!(status, 404);
    let metrics = server.request("GET", "/metrics", None, None, &[]);
    let text = String::from_utf8(metrics.body).unwrap();
    // Requests are counted by the route's pattern, not its path (one
    // series per route, whatever the ids), and a path no route matches is
    // "unmatched".
    for series in [
        r#"loyalty_http_requests_total{method="POST",route="/v1/enrollments/{id}/earn",status="200"}"#,
        r#"loyalty_http_requests_total{method="POST",route="/v1/earn/batch",status="200"}"#,
        "loyalty_http_requests_total{method=\"GET\",route=\"/healthz\",status=\"200\"} 2\n",
        r#"loyalty_http_requests_total{method="GET",route="unmatched",status="404"}"#,
    ] {
        assert!(text.contains(series), "metrics lack {series}: {text}");
    }
    assert!(
        !text.contains(&t.enrollment_id),
        "a path's id made its own series: {text}"
    );
    for name in [
        "loyalty_http_requests_total",
        "loyalty_fsync_duration_seconds_bucket",
        "loyalty_commit_batch_events_bucket",
        "loyalty_active_enrollments",
        "loyalty_passivation_slices_total",
    ] {
        assert!(text.contains(name), "metrics lack {name}");
    }
    // Nothing is old enough to have been dropped past its retention.
    assert!(
        text.contains("\nloyalty_idempotency_records_expired_total 0\n"),
        "{text}"
    );
}

#[test]
fn idempotent_retries_answer_the_same_and_conflicts_are_409() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), None);
    let t = tenant(&server, "Shop");
    let key = Some(t.key.as_str());
    let (_, first) = server.post(
        &earn_path(&t),
        key,
        &json!({"points": 10, "idempotencyKey": "same"}),
    );
    let (status, again) = server.post(
        &earn_path(&t),
        key,
        &json!({"points": 10, "idempotencyKey": "same"}),
    );
    assert_eq!((status, &again), (200, &first));
    // The header form is the same key.
    let r = server.request(
        "POST",
        &earn_path(&t),
        key,
        Some(r#"{"points":10}"#),
        &[("Idempotency-Key", "same")],
    );
    assert_eq!((r.status, r.json()), (200, first.clone()));
    let (status, conflict) = server.post(
        &earn_path(&t),
        key,
        &json!({"points": 11, "idempotencyKey": "same"}),
    );
    assert_eq!(
        (status, conflict["error"]["code"].as_str()),
        (409, Some("IDEMPOTENCY_CONFLICT"))
    );

    // 50 concurrent requests with one key: one effect.
    let port = server.port;
    let path = earn_path(&t);
    let handles: Vec<_> = (0..50)
        .map(|_| {
            let (path, k) = (path.clone(), t.key.clone());
            std::thread::spawn(move || {
                http(
                    port,
                    "POST",
                    &path,
                    Some(&k),
                    Some(r#"{"points":7,"idempotencyKey":"burst"}"#),
                    &[],
                )
            })
        })
        .collect();
    let answers: Vec<Value> = handles
        .into_iter()
        .map(|h| h.join().unwrap().json())
        .collect();
    assert!(answers.iter().all(|a| a == &answers[0]), "{answers:?}");
    let (_, enrollment) = server.get(&format!("/v1/enrollments/{}", t.enrollment_id), key);
    assert_eq!(enrollment["balance"], 17);
}

#[test]
fn another_business_gets_404_on_every_route_and_learns_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), None);
    let a = tenant(&server, "A");
    let b = tenant(&server, "B");
    let (_, earned) = server.post(
        &earn_path(&a),
        Some(&a.key),
        &json!({"points": 10, "idempotencyKey": "k"}),
    );
    let bk = Some(b.key.as_str());
    let e = &a.enrollment_id;
    let cases: Vec<(&str, String, Value)> = vec![
        ("GET", format!("/v1/programs/{}", a.program_id), Value::Null),
        (
            "POST",
            format!("/v1/programs/{}/activate", a.program_id),
            Value::Null,
        ),
        (
            "GET",
            format!("/v1/customers/{}", a.customer_id),
            Value::Null,
        ),
        ("GET", format!("/v1/enrollments/{e}"), Value::Null),
        (
            "GET",
            format!("/v1/enrollments/{e}/transactions"),
            Value::Null,
        ),
        (
            "POST",
            format!("/v1/enrollments/{e}/earn"),
            json!({"points": 1, "idempotencyKey": "x"}),
        ),
        (
            "POST",
            format!("/v1/enrollments/{e}/redeem"),
            json!({"points": 1, "idempotencyKey": "x"}),
        ),
        (
            "POST",
            format!("/v1/enrollments/{e}/reverse"),
            json!({"transactionId": earned["transactionId"], "idempotencyKey": "x"}),
        ),
        (
            "POST",
            "/v1/enrollments".into(),
            json!({"customerId": a.customer_id, "programId": b.program_id}),
        ),
        (
            "POST",
            "/v1/enrollments".into(),
            json!({"customerId": b.customer_id, "programId": a.program_id}),
        ),
    ];
    for (method, path, body) in cases {
        let body = (!body.is_null()).then(|| body.to_string());
        let r = server.request(method, &path, bk, body.as_deref(), &[]);
        assert_eq!(
            r.status,
            404,
            "{method} {path}: {}",
            String::from_utf8_lossy(&r.body)
        );
        let text = String::from_utf8_lossy(&r.body);
        assert!(
            !text.contains("balance") && !text.contains(&a.business_id),
            "{method} {path} leaked: {text}"
        );
    }
    // B's feed holds none of A's events.
    let (_, feed) = server.get("/v1/events?limit=500", bk);
    assert!(feed["items"]
        .as_array()
        .unwrap()
        .iter()
        .all(|i| i["businessId"] == b.business_id.as_str()));
    let (_, batch) = server.post(
        "/v1/earn/batch",
        bk,
        &json!({"items": [{"enrollmentId": e, "points": 1, "idempotencyKey": "y"}]}),
    );
    assert_eq!(batch["results"][0]["error"]["code"], "NOT_FOUND");
    // A's balance did not move.
    let (_, enrollment) = server.get(&format!("/v1/enrollments/{e}"), Some(&a.key));
    assert_eq!(enrollment["balance"], 10);
}

#[test]
fn bad_input_is_refused_with_status_code_and_field_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), None);
    let t = tenant(&server, "Shop");
    let key = Some(t.key.as_str());
    server.post(
        &earn_path(&t),
        key,
        &json!({"points": 100, "idempotencyKey": "seed"}),
    );
    let redeem = format!("/v1/enrollments/{}/redeem", t.enrollment_id);
    let cases: Vec<(String, String, u16, &str, Option<&str>)> = vec![
        (earn_path(&t), r#"{"points":10,"idempotencyKey":"a","bogus":1}"#.into(), 400, "INVALID_FIELD", Some("bogus")),
        (earn_path(&t), r#"{"points":"10","idempotencyKey":"a"}"#.into(), 400, "INVALID_FIELD", Some("points")),
        (earn_path(&t), r#"{"points":1.5,"idempotencyKey":"a"}"#.into(), 400, "INVALID_FIELD", Some("points")),
        (earn_path(&t), r#"{"points":0,"idempotencyKey":"a"}"#.into(), 400, "INVALID_FIELD", Some("points")),
        (earn_path(&t), r#"{"points":-5,"idempotencyKey":"a"}"#.into(), 400, "INVALID_FIELD", Some("points")),
        (earn_path(&t), r#"{"points":99999999999999999999,"idempotencyKey":"a"}"#.into(), 400, "INVALID_FIELD", Some("points")),
        (earn_path(&t), r#"{"points":9223372036854775807,"idempotencyKey":"a"}"#.into(), 400, "INVALID_FIELD", Some("points")),
        (earn_path(&t), r#"{"points":10}"#.into(), 400, "INVALID_FIELD", Some("idempotencyKey")),
        (earn_path(&t), r#"{"points":10,"idempotencyKey":""}"#.into(), 400, "INVALID_FIELD", Some("idempotencyKey")),
        (earn_path(&t), r#"{"idempotencyKey":"a"}"#.into(), 400, "INVALID_FIELD", Some("points")),
        (earn_path(&t), r#"{"points":1,"amount":100,"idempotencyKey":"a"}"#.into(), 400, "INVALID_FIELD", Some("points")),
        (earn_path(&t), r#"{"amount":-100,"idempotencyKey":"a"}"#.into(), 400, "INVALID_FIELD", Some("amount")),
        (earn_path(&t), r#"{"points":1,"idempotencyKey":"a","reason":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}"#.into(), 400, "INVALID_FIELD", Some("reason")),
        (earn_path(&t), "not json".into(), 400, "INVALID_JSON", None),
        (earn_path(&t), "".into(), 400, "INVALID_JSON", None),
        (redeem.clone(), r#"{"points":0,"idempotencyKey":"a"}"#.into(), 400, "INVALID_FIELD", Some("points")),
        ("/v1/enrollments/not-an-id/earn".into(), r#"{"points":1,"idempotencyKey":"a"}"#.into(), 400, "INVALID_FIELD", Some("enrollmentId")),
        ("/v1/programs".into(), r#"{"name":"P","earnRule":{"pointsPerUnit":0}}"#.into(), 400, "INVALID_FIELD", Some("earnRule.pointsPerUnit")),
        ("/v1/programs".into(), r#"{"name":"","earnRule":{"pointsPerUnit":1}}"#.into(), 400, "INVALID_FIELD", Some("name")),
        ("/v1/customers".into(), r#"{"externalId":"x","email":"nope"}"#.into(), 400, "INVALID_FIELD", Some("email")),
    ];
    for (path, body, status, code, field) in cases {
        let r = server.request("POST", &path, key, Some(&body), &[]);
        let answer = r.json();
        assert_eq!(r.status, status, "{path} {body}: {answer}");
        assert_eq!(answer["error"]["code"], code, "{path} {body}: {answer}");
        if let Some(field) = field {
            assert_eq!(answer["error"]["field"], field, "{path} {body}: {answer}");
        }
    }
    // No key, a bad key.
    assert_eq!(
        server
            .request(
                "POST",
                &earn_path(&t),
                None,
                Some(r#"{"points":1,"idempotencyKey":"z"}"#),
                &[]
            )
            .status,
        401
    );
    assert_eq!(
        server
            .request(
                "POST",
                &earn_path(&t),
                Some("lk_nope"),
                Some(r#"{"points":1,"idempotencyKey":"z"}"#),
                &[]
            )
            .status,
        401
    );
    assert_eq!(
        server
            .request(
                "POST",
                "/v1/businesses",
                Some(&t.key),
                Some(r#"{"name":"x"}"#),
                &[]
            )
            .status,
        401
    );
    // Too large.
    let huge = format!(
        r#"{{"points":1,"idempotencyKey":"z","reason":"{}"}}"#,
        "x".repeat(100_000)
    );
    let r = server.request("POST", &earn_path(&t), key, Some(&huge), &[]);
    assert_eq!(
        (r.status, r.json()["error"]["code"].as_str()),
        (413, Some("PAYLOAD_TOO_LARGE"))
    );
    // Pages have limits.
    let (status, _) = server.get(
        &format!(
            "/v1/enrollments/{}/transactions?limit=100000",
            t.enrollment_id
        ),
        key,
    );
    assert_eq!(status, 400);
    // Nothing changed.
    let (_, enrollment) = server.get(&format!("/v1/enrollments/{}", t.enrollment_id), key);
    assert_eq!(
        (
            enrollment["balance"].as_i64(),
            enrollment["version"].as_u64()
        ),
        (Some(100), Some(2))
    );
}

#[test]
fn state_survives_a_graceful_restart() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), None);
    let t = tenant(&server, "Shop");
    let (_, first) = server.post(
        &earn_path(&t),
        Some(&t.key),
        &json!({"points": 42, "idempotencyKey": "k"}),
    );
    let status = server.terminate();
    assert!(status.success(), "SIGTERM exit: {status}");
    let server = Server::start(dir.path(), None);
    let (_, again) = server.post(
        &earn_path(&t),
        Some(&t.key),
        &json!({"points": 42, "idempotencyKey": "k"}),
    );
    assert_eq!(again, first);
    let (_, enrollment) = server.get(
        &format!("/v1/enrollments/{}", t.enrollment_id),
        Some(&t.key),
    );
    assert_eq!(enrollment["balance"], 42);
}

#[test]
fn an_online_checkpoint_is_a_working_copy_of_the_data() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), None);
    let t = tenant(&server, "Shop");
    server.post(
        &earn_path(&t),
        Some(&t.key),
        &json!({"points": 42, "idempotencyKey": "k"}),
    );
    let r = server.request(
        "POST",
        "/v1/admin/checkpoints",
        Some(&t.key),
        Some(r#"{"name":"b1"}"#),
        &[],
    );
    assert_eq!(r.status, 401, "only the operator may take checkpoints");
    let (status, made) = server.post(
        "/v1/admin/checkpoints",
        Some(OPERATOR_TOKEN),
        &json!({"name": "nightly-1"}),
    );
    assert_eq!(status, 201, "{made}");
    let (status, _) = server.post(
        "/v1/admin/checkpoints",
        Some(OPERATOR_TOKEN),
        &json!({"name": "../escape"}),
    );
    assert_eq!(status, 400);
    // The copy opens as a data directory of its own with the same state.
    let copy = std::path::PathBuf::from(made["path"].as_str().unwrap());
    let restored = Server::start(&copy, None);
    let (_, enrollment) = restored.get(
        &format!("/v1/enrollments/{}", t.enrollment_id),
        Some(&t.key),
    );
    assert_eq!(enrollment["balance"], 42);
}

#[test]
fn ids_of_other_kinds_of_record_are_simply_not_enrollments() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), None);
    let t = tenant(&server, "Shop");
    for id in [&t.customer_id, &t.program_id, &t.business_id] {
        let (status, body) = server.get(&format!("/v1/enrollments/{id}"), Some(&t.key));
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (404, Some("NOT_FOUND")),
            "{id}: {body}"
        );
        let (status, _) = server.post(
            &format!("/v1/enrollments/{id}/earn"),
            Some(&t.key),
            &json!({"points": 1, "idempotencyKey": "k"}),
        );
        assert_eq!(status, 404);
    }
}

/// The batch door in protobuf (`docs/api/earn_batch.proto`): the same
/// items give the same answers as in JSON, a retry in either encoding is
/// the same transaction, and whatever is refused changes nothing.
#[test]
fn the_batch_door_speaks_protobuf_with_the_json_doors_answers() {
    use loyalty_api::batch_protobuf::{
        EarnBatchReply, EarnBatchRequest, EarnItem, Outcome, CONTENT_TYPE,
    };
    use prost::Message;

    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), None);
    let t = tenant(&server, "Shop");
    let key = Some(t.key.as_str());
    let item = |points: i64, idempotency_key: &str| EarnItem {
        enrollment_id: t.enrollment_id.clone(),
        points: Some(points),
        idempotency_key: idempotency_key.into(),
        ..EarnItem::default()
    };
    let batch = EarnBatchRequest {
        items: vec![
            item(5, "p1"),
            item(0, "p2"),
            EarnItem {
                enrollment_id: "00000000-0000-0000-0000-000000000000".into(),
                ..item(5, "p3")
            },
            item(5, ""),
        ],
    }
    .encode_to_vec();
    let send = |body: &[u8]| server.post_bytes("/v1/earn/batch", key, body, CONTENT_TYPE);
    let answered = send(&batch);
    assert_eq!(answered.status, 200, "{}", answered.json());
    assert_eq!(answered.header("content-type"), Some(CONTENT_TYPE));
    let reply = EarnBatchReply::decode(answered.body.as_slice()).expect("a protobuf reply");
    let outcomes: Vec<_> = reply
        .results
        .iter()
        .map(|r| r.outcome.clone().unwrap())
        .collect();
    let Outcome::Earned(earned) = &outcomes[0] else {
        panic!("the first item earns: {:?}", outcomes[0]);
    };
    assert_eq!((earned.points, earned.balance), (5, 5));
    assert_eq!(earned.enrollment_id, t.enrollment_id);
    assert!(!earned.transaction_id.is_empty() && !earned.event_id.is_empty());
    let errors: Vec<_> = outcomes[1..]
        .iter()
        .map(|o| match o {
            Outcome::Error(e) => (e.status, e.code.as_str(), e.field.as_deref()),
            Outcome::Earned(e) => panic!("an invalid item earned: {e:?}"),
        })
        .collect();
    assert_eq!(
        errors,
        [
            (400, "INVALID_FIELD", Some("points")),
            (404, "NOT_FOUND", None),
            (400, "INVALID_FIELD", Some("idempotencyKey")),
        ]
    );

    // A retry in protobuf (here under the older media type name) answers
    // the same; the same items in JSON answer the same, field for field,
    // the first as the same transaction: one effect.
    let retried = server.post_bytes("/v1/earn/batch", key, &batch, "application/x-protobuf");
    assert_eq!(retried.header("content-type"), Some(CONTENT_TYPE));
    let again = EarnBatchReply::decode(retried.body.as_slice()).unwrap();
    assert_eq!(again, reply, "a retried batch answers the same");
    let (status, json_batch) = server.post(
        "/v1/earn/batch",
        key,
        &json!({"items": [
            {"enrollmentId": t.enrollment_id, "points": 5, "idempotencyKey": "p1"},
            {"enrollmentId": t.enrollment_id, "points": 0, "idempotencyKey": "p2"},
            {"enrollmentId": "00000000-0000-0000-0000-000000000000", "points": 5, "idempotencyKey": "p3"},
            {"enrollmentId": t.enrollment_id, "points": 5}
        ]}),
    );
    assert_eq!(status, 200);
    let in_json = json_batch["results"].as_array().unwrap();
    let first = &in_json[0];
    assert_eq!(
        (
            first["transactionId"].as_str(),
            first["enrollmentId"].as_str(),
            first["points"].as_i64(),
            first["balance"].as_i64(),
            first["pending"].as_i64(),
            first["tier"].as_str(),
            first["eventId"].as_str(),
        ),
        (
            Some(earned.transaction_id.as_str()),
            Some(earned.enrollment_id.as_str()),
            Some(earned.points),
            Some(earned.balance),
            Some(earned.pending),
            earned.tier.as_deref(),
            Some(earned.event_id.as_str()),
        )
    );
    for (outcome, in_json) in outcomes[1..].iter().zip(&in_json[1..]) {
        let Outcome::Error(e) = outcome else {
            unreachable!("checked above")
        };
        let j = &in_json["error"];
        assert_eq!(
            (
                Some(e.code.as_str()),
                Some(e.message.as_str()),
                e.field.as_deref(),
                Some(u64::from(e.status)),
            ),
            (
                j["code"].as_str(),
                j["message"].as_str(),
                j["field"].as_str(),
                j["status"].as_u64(),
            ),
            "the same item's error in protobuf and in JSON"
        );
    }

    // Refused as a whole, each with the contract's JSON error body.
    let refusals = [
        (send(b"\xff\xff\xff"), 400, "INVALID_PROTOBUF"),
        (
            send(
                &EarnBatchRequest {
                    items: (0..5_001).map(|n| item(1, &format!("many-{n}"))).collect(),
                }
                .encode_to_vec(),
            ),
            400,
            "INVALID_FIELD",
        ),
        (
            server.post_bytes("/v1/earn/batch", Some("lk_wrong"), &batch, CONTENT_TYPE),
            401,
            "UNAUTHORIZED",
        ),
        (
            server.post_bytes(&earn_path(&t), key, &batch, CONTENT_TYPE),
            415,
            "UNSUPPORTED_MEDIA_TYPE",
        ),
        (
            send(&vec![0u8; 4 * 1024 * 1024 + 1]),
            413,
            "PAYLOAD_TOO_LARGE",
        ),
        (send(b""), 400, "INVALID_FIELD"),
    ];
    for (response, status, code) in refusals {
        assert_eq!(
            (response.status, response.json()["error"]["code"].as_str()),
            (status, Some(code)),
            "{}",
            response.json()
        );
    }
    let (_, enrollment) = server.get(&format!("/v1/enrollments/{}", t.enrollment_id), key);
    assert_eq!(enrollment["balance"], 5, "one earn of 5, nothing else");
}
