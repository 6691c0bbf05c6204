//! The batch door's binary encoding: Protocol Buffers messages for
//! `earn.batch`, chosen by the request's `Content-Type:
//! application/protobuf` (HTTP and NATS alike) and answered in kind.
//!
//! The schema clients compile is `docs/api/earn_batch.proto`; the messages
//! below are written by hand to match it (a test reads that file and checks
//! every field's number and wire type against what these messages encode).
//! Only the encoding differs from JSON: the items become the same
//! [`EarnBatchBody`] and go through the same [`crate::ops::Ops::earn_batch`],
//! so validation, limits and answers are the JSON door's.
//!
//! Why this exists: a batch of a few thousand earns costs more to decode and
//! encode as JSON than the engine spends on many of its earns; the do-nothing
//! responder's ceiling for the JSON batch is below the batch door's target
//! (`docs/PERFORMANCE.md`).
//!
//! Differences from the JSON door, each documented in the API docs:
//! - an empty string stands for an absent `enrollment_id` or
//!   `idempotency_key` (proto3 cannot tell them apart), and is refused as
//!   missing;
//! - unknown fields are skipped, as every protobuf reader does, where the
//!   JSON door refuses them;
//! - an error for the whole request (401, 413, 400 for an undecodable body)
//!   is the contract's JSON error body, as on every other route.

use crate::error::ApiError;
use crate::ops::{BatchItem, BatchResults};
use crate::wire::{self, EarnBatchBody, EarnBody, BATCH_ITEMS_MAX};
use prost::bytes::Buf;
use prost::encoding::{decode_key, decode_varint, skip_field, DecodeContext, WireType};
use prost::Message;

/// The media type of a protobuf batch, sent back on its answer.
pub const CONTENT_TYPE: &str = "application/protobuf";

/// Whether a `Content-Type` asks for protobuf: `application/protobuf` (or
/// the older `application/x-protobuf`), any parameters after `;` ignored.
pub fn is_protobuf(content_type: Option<&str>) -> bool {
    content_type.is_some_and(|value| {
        let media = value.split(';').next().unwrap_or_default().trim();
        media.eq_ignore_ascii_case(CONTENT_TYPE)
            || media.eq_ignore_ascii_case("application/x-protobuf")
    })
}

/// The encoding a batch request chose by its `Content-Type`, which its
/// answer uses too. Both doors decode and encode a batch through it, so
/// they choose alike.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BatchEncoding {
    Json,
    Protobuf,
}

impl BatchEncoding {
    /// Protobuf when [`is_protobuf`] says so; any other media type is read
    /// as JSON, as before there was a choice.
    pub fn of(content_type: Option<&str>) -> Self {
        if is_protobuf(content_type) {
            BatchEncoding::Protobuf
        } else {
            BatchEncoding::Json
        }
    }

    pub fn decode(self, body: &[u8]) -> Result<EarnBatchBody, ApiError> {
        match self {
            BatchEncoding::Json => wire::decode(body),
            BatchEncoding::Protobuf => decode_request(body),
        }
    }

    pub fn encode(self, results: BatchResults) -> Vec<u8> {
        match self {
            BatchEncoding::Json => wire::encode(&results),
            BatchEncoding::Protobuf => encode_reply(results),
        }
    }

    /// The answer's media type.
    pub fn content_type(self) -> &'static str {
        match self {
            BatchEncoding::Json => "application/json",
            BatchEncoding::Protobuf => CONTENT_TYPE,
        }
    }
}

/// The error for a protobuf body on a route that only speaks JSON.
pub fn unsupported() -> ApiError {
    ApiError::new(
        415,
        "UNSUPPORTED_MEDIA_TYPE",
        "only the batch door (earn.batch) takes application/protobuf; send JSON",
    )
}

/// `loyalty.v1.EarnBatchRequest`: the items, in order.
#[derive(Clone, PartialEq, Message)]
pub struct EarnBatchRequest {
    #[prost(message, repeated, tag = "1")]
    pub items: Vec<EarnItem>,
}

/// `loyalty.v1.EarnItem`: one earn, as the JSON item.
#[derive(Clone, PartialEq, Message)]
pub struct EarnItem {
    #[prost(string, tag = "1")]
    pub enrollment_id: String,
    #[prost(int64, optional, tag = "2")]
    pub points: Option<i64>,
    #[prost(int64, optional, tag = "3")]
    pub amount: Option<i64>,
    #[prost(string, tag = "4")]
    pub idempotency_key: String,
    #[prost(string, optional, tag = "5")]
    pub reason: Option<String>,
    #[prost(string, optional, tag = "6")]
    pub reference: Option<String>,
}

/// `loyalty.v1.EarnBatchReply`: one result per item, in the items' order.
#[derive(Clone, PartialEq, Message)]
pub struct EarnBatchReply {
    #[prost(message, repeated, tag = "1")]
    pub results: Vec<EarnResult>,
}

/// `loyalty.v1.EarnResult`: the earn's answer or its error.
#[derive(Clone, PartialEq, Message)]
pub struct EarnResult {
    #[prost(oneof = "Outcome", tags = "1, 2")]
    pub outcome: Option<Outcome>,
}

/// The `outcome` of an [`EarnResult`].
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum Outcome {
    #[prost(message, tag = "1")]
    Earned(Earned),
    #[prost(message, tag = "2")]
    Error(ItemError),
}

/// `loyalty.v1.Earned`: the JSON earn answer's fields.
#[derive(Clone, PartialEq, Message)]
pub struct Earned {
    #[prost(string, tag = "1")]
    pub transaction_id: String,
    #[prost(string, tag = "2")]
    pub enrollment_id: String,
    #[prost(int64, tag = "3")]
    pub points: i64,
    #[prost(int64, tag = "4")]
    pub balance: i64,
    #[prost(int64, tag = "5")]
    pub pending: i64,
    #[prost(string, optional, tag = "6")]
    pub tier: Option<String>,
    #[prost(string, tag = "7")]
    pub event_id: String,
}

/// `loyalty.v1.ItemError`: the JSON item error's fields.
#[derive(Clone, PartialEq, Message)]
pub struct ItemError {
    #[prost(string, tag = "1")]
    pub code: String,
    #[prost(string, tag = "2")]
    pub message: String,
    #[prost(string, optional, tag = "3")]
    pub field: Option<String>,
    #[prost(uint32, tag = "4")]
    pub status: u32,
}

/// Field number of `EarnBatchRequest.items`.
const ITEMS_TAG: u32 = 1;

/// Decodes a protobuf batch into the JSON door's body. Items are decoded
/// one at a time, so a body declaring more than [`BATCH_ITEMS_MAX`] items
/// is refused before they are all allocated, and an undecodable item is
/// named by its index (`items[3].idempotencyKey`), as the JSON door does.
pub fn decode_request(body: &[u8]) -> Result<EarnBatchBody, ApiError> {
    let mut buf = body;
    let mut items = Vec::new();
    while buf.has_remaining() {
        let (tag, wire_type) = decode_key(&mut buf).map_err(|e| undecodable("items", &e))?;
        if tag != ITEMS_TAG {
            // Unknown fields are skipped, as protobuf readers do.
            skip_field(wire_type, tag, &mut buf, DecodeContext::default())
                .map_err(|e| undecodable("items", &e))?;
            continue;
        }
        // Named only when something is wrong: a string per item would cost
        // as much as decoding it.
        let field = || format!("items[{}]", items.len());
        if wire_type != WireType::LengthDelimited {
            return Err(undecodable_text(
                &field(),
                &format!("is not a message (wire type {wire_type:?})"),
            ));
        }
        if items.len() == BATCH_ITEMS_MAX {
            return Err(wire::batch_items_out_of_range());
        }
        let length = decode_varint(&mut buf).map_err(|e| undecodable(&field(), &e))?;
        let length = usize::try_from(length)
            .ok()
            .filter(|length| *length <= buf.remaining())
            .ok_or_else(|| undecodable_text(&field(), "its length runs past the body"))?;
        let (item, rest) = buf.split_at(length);
        buf = rest;
        let item = EarnItem::decode(item).map_err(|e| undecodable(&field(), &e))?;
        items.push(EarnBody {
            enrollment_id: non_empty(item.enrollment_id),
            points: item.points,
            amount: item.amount,
            idempotency_key: non_empty(item.idempotency_key),
            reason: item.reason,
            reference: item.reference,
        });
    }
    Ok(EarnBatchBody { items })
}

/// Encodes the batch's results; moves the strings, copies nothing.
pub fn encode_reply(results: BatchResults) -> Vec<u8> {
    let reply = EarnBatchReply {
        results: results
            .results
            .into_iter()
            .map(|result| EarnResult {
                outcome: Some(match result {
                    BatchItem::Ok(answer) => Outcome::Earned(Earned {
                        transaction_id: answer.transaction_id,
                        enrollment_id: answer.enrollment_id,
                        points: answer.points,
                        balance: answer.balance,
                        pending: answer.pending,
                        tier: answer.tier,
                        event_id: answer.event_id,
                    }),
                    BatchItem::Err(err) => Outcome::Error(ItemError {
                        code: err.error.code.to_owned(),
                        message: err.error.message,
                        field: err.error.field,
                        status: u32::from(err.error.status),
                    }),
                }),
            })
            .collect(),
    };
    reply.encode_to_vec()
}

fn non_empty(text: String) -> Option<String> {
    (!text.is_empty()).then_some(text)
}

/// A body that is not the schema's message: 400 `INVALID_PROTOBUF`, naming
/// the item and, where prost names it, the item's field by its JSON name.
fn undecodable(field: &str, err: &prost::DecodeError) -> ApiError {
    let detail = err.to_string();
    let inner = detail
        .split(": ")
        .find_map(|part| part.strip_prefix("EarnItem."))
        .map(json_name);
    let field = match inner {
        Some(inner) => format!("{field}.{inner}"),
        None => field.to_owned(),
    };
    undecodable_text(&field, &detail)
}

fn undecodable_text(field: &str, detail: &str) -> ApiError {
    ApiError {
        field: Some(field.to_owned()),
        ..ApiError::new(
            400,
            "INVALID_PROTOBUF",
            format!("{field}: the body is not a loyalty.v1.EarnBatchRequest: {detail}"),
        )
    }
}

/// The JSON name of an `EarnItem` field, so errors name fields alike
/// whichever the encoding.
fn json_name(proto_name: &str) -> &str {
    match proto_name {
        "enrollment_id" => "enrollmentId",
        "idempotency_key" => "idempotencyKey",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn item(n: usize) -> EarnItem {
        EarnItem {
            enrollment_id: format!("e-{n}"),
            points: Some(10),
            amount: None,
            idempotency_key: format!("k-{n}"),
            reason: None,
            reference: Some("till 4".into()),
        }
    }

    #[test]
    fn a_request_decodes_into_the_json_doors_items_in_order() {
        let body = EarnBatchRequest {
            items: vec![
                item(0),
                EarnItem {
                    enrollment_id: String::new(),
                    idempotency_key: String::new(),
                    points: None,
                    amount: Some(1250),
                    reason: Some("sale".into()),
                    ..item(1)
                },
            ],
        }
        .encode_to_vec();
        let decoded = decode_request(&body).unwrap();
        assert_eq!(decoded.items.len(), 2);
        let first = &decoded.items[0];
        assert_eq!(first.enrollment_id.as_deref(), Some("e-0"));
        assert_eq!(first.idempotency_key.as_deref(), Some("k-0"));
        assert_eq!((first.points, first.amount), (Some(10), None));
        assert_eq!(first.reference.as_deref(), Some("till 4"));
        let second = &decoded.items[1];
        assert_eq!(second.enrollment_id, None, "an empty id is an absent one");
        assert_eq!(second.idempotency_key, None);
        assert_eq!((second.points, second.amount), (None, Some(1250)));
        assert_eq!(second.reason.as_deref(), Some("sale"));
    }

    #[test]
    fn more_items_than_the_limit_are_refused_naming_items() {
        let body = EarnBatchRequest {
            items: (0..=BATCH_ITEMS_MAX).map(item).collect(),
        }
        .encode_to_vec();
        let err = decode_request(&body).err().expect("refused");
        assert_eq!((err.status, err.code), (400, "INVALID_FIELD"));
        assert_eq!(err.field.as_deref(), Some("items"));
        let at_limit = EarnBatchRequest {
            items: (0..BATCH_ITEMS_MAX).map(item).collect(),
        }
        .encode_to_vec();
        assert_eq!(
            decode_request(&at_limit).unwrap().items.len(),
            BATCH_ITEMS_MAX
        );
    }

    #[test]
    fn an_undecodable_item_is_named_by_its_index_and_field() {
        let mut body = EarnBatchRequest {
            items: vec![item(0), item(1)],
        }
        .encode_to_vec();
        // The second item's idempotency key ("k-1") made invalid UTF-8.
        let at = body.windows(3).rposition(|w| w == b"k-1").unwrap();
        body[at] = 0xff;
        let err = decode_request(&body).err().expect("refused");
        assert_eq!((err.status, err.code), (400, "INVALID_PROTOBUF"));
        assert_eq!(err.field.as_deref(), Some("items[1].idempotencyKey"));

        let truncated = &EarnBatchRequest {
            items: vec![item(0)],
        }
        .encode_to_vec()[..5];
        let err = decode_request(truncated).err().expect("refused");
        assert_eq!(err.code, "INVALID_PROTOBUF");
        assert_eq!(err.field.as_deref(), Some("items[0]"));

        // JSON sent with the protobuf media type is not a protobuf batch.
        let err = decode_request(br#"{"items":[]}"#).err().expect("refused");
        assert_eq!((err.status, err.code), (400, "INVALID_PROTOBUF"));

        // Field 1 as a number rather than a message.
        let mut not_a_message = Vec::new();
        prost::encoding::int64::encode(ITEMS_TAG, &7, &mut not_a_message);
        let err = decode_request(&not_a_message).err().expect("refused");
        assert_eq!(
            (err.code, err.field.as_deref()),
            ("INVALID_PROTOBUF", Some("items[0]"))
        );
    }

    #[test]
    fn an_empty_body_is_no_items_which_the_batch_door_refuses() {
        // Decoding cannot refuse it (an empty message is valid protobuf);
        // `Ops::earn_batch` refuses zero items on `items`, as in JSON.
        assert!(decode_request(b"").unwrap().items.is_empty());
    }

    #[test]
    fn unknown_fields_are_skipped() {
        let mut body = Vec::new();
        prost::encoding::string::encode(9, &"from a newer client".to_string(), &mut body);
        body.extend(
            EarnBatchRequest {
                items: vec![item(0)],
            }
            .encode_to_vec(),
        );
        assert_eq!(decode_request(&body).unwrap().items.len(), 1);
    }

    #[test]
    fn media_types() {
        assert!(is_protobuf(Some("application/protobuf")));
        assert!(is_protobuf(Some(
            "Application/X-Protobuf; proto=loyalty.v1.EarnBatchRequest"
        )));
        assert!(!is_protobuf(Some("application/json")));
        assert!(!is_protobuf(None));
    }

    /// `message Name {` ... `type name = N;` of the published schema.
    fn schema() -> BTreeMap<String, BTreeMap<String, (String, u32)>> {
        let text = include_str!("../../docs/api/earn_batch.proto");
        let mut messages = BTreeMap::new();
        let mut current: Option<String> = None;
        for line in text.lines().map(|l| l.split("//").next().unwrap().trim()) {
            if let Some(name) = line.strip_prefix("message ") {
                current = Some(name.trim_end_matches('{').trim().to_owned());
                messages.insert(current.clone().unwrap(), BTreeMap::new());
            } else if let (Some(message), Some((decl, number))) = (&current, line.split_once('=')) {
                let words: Vec<&str> = decl.split_whitespace().collect();
                let (kind, name) = match words.as_slice() {
                    [kind, name] | ["optional" | "repeated", kind, name] => (*kind, *name),
                    _ => continue,
                };
                let number: u32 = number.trim().trim_end_matches(';').parse().unwrap();
                messages
                    .get_mut(message)
                    .unwrap()
                    .insert(name.to_owned(), (kind.to_owned(), number));
            }
        }
        messages
    }

    /// The top-level fields of an encoded message: number -> wire type.
    fn fields_of(mut bytes: &[u8]) -> BTreeMap<u32, WireType> {
        let mut seen = BTreeMap::new();
        while bytes.has_remaining() {
            let (tag, wire_type) = decode_key(&mut bytes).unwrap();
            seen.insert(tag, wire_type);
            skip_field(wire_type, tag, &mut bytes, DecodeContext::default()).unwrap();
        }
        seen
    }

    /// Checks that an encoding with every field set uses exactly the
    /// numbers the schema gives that message, each with its type's wire type.
    fn matches_schema(message: &str, encoded: &[u8], also: &[&[u8]]) {
        let schema = schema();
        let declared = schema
            .get(message)
            .unwrap_or_else(|| panic!("{message} in the schema"));
        let mut seen = fields_of(encoded);
        for more in also {
            seen.extend(fields_of(more));
        }
        let expected: BTreeMap<u32, WireType> = declared
            .values()
            .map(|(kind, number)| {
                let wire = match kind.as_str() {
                    "int64" | "uint32" => WireType::Varint,
                    _ => WireType::LengthDelimited,
                };
                (*number, wire)
            })
            .collect();
        assert_eq!(
            seen, expected,
            "{message}: encoded fields against the schema's"
        );
    }

    /// Fields the schema marks `optional`, per message.
    fn optional_fields(message: &str) -> BTreeMap<u32, WireType> {
        let text = include_str!("../../docs/api/earn_batch.proto");
        let body = text
            .split(&format!("message {message} {{"))
            .nth(1)
            .and_then(|rest| rest.split('}').next())
            .unwrap_or_else(|| panic!("{message} in the schema"));
        body.lines()
            .map(|l| l.split("//").next().unwrap().trim())
            .filter_map(|l| l.strip_prefix("optional "))
            .map(|l| {
                let (decl, number) = l.split_once('=').unwrap();
                let wire = if decl.trim_start().starts_with("int64") {
                    WireType::Varint
                } else {
                    WireType::LengthDelimited
                };
                (number.trim().trim_end_matches(';').parse().unwrap(), wire)
            })
            .collect()
    }

    #[test]
    fn exactly_the_schemas_optional_fields_keep_a_zero_value() {
        // With every field at its zero value, proto3 encodes only the
        // fields with explicit presence: an `optional` lost on either side
        // would make a points or amount of 0 unsendable, or send it always.
        let zero_item = EarnItem {
            enrollment_id: String::new(),
            points: Some(0),
            amount: Some(0),
            idempotency_key: String::new(),
            reason: Some(String::new()),
            reference: Some(String::new()),
        };
        assert_eq!(
            fields_of(&zero_item.encode_to_vec()),
            optional_fields("EarnItem")
        );
        let zero_earned = Earned {
            tier: Some(String::new()),
            ..Earned::default()
        };
        assert_eq!(
            fields_of(&zero_earned.encode_to_vec()),
            optional_fields("Earned")
        );
        let zero_error = ItemError {
            field: Some(String::new()),
            ..ItemError::default()
        };
        assert_eq!(
            fields_of(&zero_error.encode_to_vec()),
            optional_fields("ItemError")
        );
    }

    #[test]
    fn the_messages_speak_the_published_schema() {
        let full_item = EarnItem {
            amount: Some(5),
            reason: Some("r".into()),
            ..item(0)
        };
        matches_schema("EarnItem", &full_item.encode_to_vec(), &[]);
        matches_schema(
            "EarnBatchRequest",
            &EarnBatchRequest {
                items: vec![full_item],
            }
            .encode_to_vec(),
            &[],
        );
        let earned = Earned {
            transaction_id: "t".into(),
            enrollment_id: "e".into(),
            points: 1,
            balance: 2,
            pending: 3,
            tier: Some("gold".into()),
            event_id: "v".into(),
        };
        let error = ItemError {
            code: "C".into(),
            message: "m".into(),
            field: Some("f".into()),
            status: 422,
        };
        matches_schema("Earned", &earned.encode_to_vec(), &[]);
        matches_schema("ItemError", &error.encode_to_vec(), &[]);
        let ok = EarnResult {
            outcome: Some(Outcome::Earned(earned)),
        };
        let failed = EarnResult {
            outcome: Some(Outcome::Error(error)),
        };
        matches_schema(
            "EarnResult",
            &ok.encode_to_vec(),
            &[&failed.encode_to_vec()],
        );
        matches_schema(
            "EarnBatchReply",
            &EarnBatchReply { results: vec![ok] }.encode_to_vec(),
            &[],
        );
        assert_eq!(schema().len(), 6, "every message of the schema is checked");
    }
}
