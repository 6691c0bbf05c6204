//! The JSON shapes of the contract, and strict decoding: unknown fields,
//! wrong types and out-of-range numbers are refused with the path of the
//! field at fault.

use crate::error::ApiError;
use loyalty_engine::catalog::Customer;
use loyalty_engine::enrollment::BalanceView;
use loyalty_engine::program::Program;
use loyalty_engine::Timestamp;
use loyalty_persistence::StoredAnswer;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Largest request body, in bytes, on any route but the batch door.
pub const BODY_BYTES_MAX: usize = 16 * 1024;
/// Largest batch request body, in bytes.
pub const BATCH_BODY_BYTES_MAX: usize = 4 * 1024 * 1024;
/// Most items in one batch request.
pub const BATCH_ITEMS_MAX: usize = 5_000;
/// The refusal of a batch with no items or more than [`BATCH_ITEMS_MAX`]
/// (the protobuf decoder refuses the latter before decoding them all).
pub fn batch_items_out_of_range() -> ApiError {
    ApiError::invalid("items", format!("must hold 1 to {BATCH_ITEMS_MAX} items"))
}

/// Largest page of transactions or events.
pub const PAGE_ITEMS_MAX: usize = 500;
/// Page size when none is asked for.
pub const PAGE_ITEMS_DEFAULT: usize = 50;

/// Bytes reserved up front for an encoded answer: most fit (an earn's
/// answer is about 250 bytes), so the buffer is not regrown and copied
/// several times on the way.
const ENCODE_BYTES_RESERVED: usize = 512;

/// Encodes an answer as JSON. (The publisher writes events with
/// [`crate::events::publish_bytes`].)
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    let mut out = Vec::with_capacity(ENCODE_BYTES_RESERVED);
    serde_json::to_writer(&mut out, value).expect("answers serialize");
    out
}

/// Decodes a JSON body strictly, naming the field at fault.
pub fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::new(
            400,
            "INVALID_JSON",
            "the body is empty; a JSON object is expected",
        ));
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            ApiError::new(
                400,
                "INVALID_JSON",
                format!("the body is not valid JSON: {inner}"),
            )
        } else if path == "." {
            // A missing or unknown field is reported at the top level;
            // serde names it in the message.
            let field = field_in_message(&inner.to_string()).unwrap_or_else(|| ".".into());
            ApiError::invalid(field, inner.to_string())
        } else {
            ApiError::invalid(path, inner.to_string())
        }
    })?;
    de.end().map_err(|_| {
        ApiError::new(
            400,
            "INVALID_JSON",
            "trailing characters after the JSON object",
        )
    })?;
    Ok(value)
}

/// Pulls the field name out of serde's "missing field `x`" / "unknown field `x`".
fn field_in_message(message: &str) -> Option<String> {
    let start = message.find('`')? + 1;
    let end = start + message[start..].find('`')?;
    Some(message[start..end].to_owned())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CreateBusiness {
    pub name: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BusinessCreated {
    pub business_id: String,
    pub api_key: String,
}

#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EarnRuleBody {
    pub points_per_unit: i64,
    /// Minor units per currency unit; 100 when omitted.
    #[serde(default = "hundred")]
    pub minor_units_per_unit: i64,
}

fn hundred() -> i64 {
    100
}

#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TierBody {
    pub name: String,
    pub min_points: i64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CreateProgram {
    pub name: String,
    pub earn_rule: EarnRuleBody,
    #[serde(default)]
    pub tiers: Vec<TierBody>,
    pub points_expire_after_days: Option<u32>,
    pub pending_days: Option<u32>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProgramBody {
    pub program_id: String,
    pub name: String,
    pub status: &'static str,
    pub earn_rule: EarnRuleBody,
    pub tiers: Vec<TierBody>,
    pub points_expire_after_days: Option<u32>,
    pub pending_days: Option<u32>,
    pub created_at: String,
    pub activated_at: Option<String>,
}

impl From<&Program> for ProgramBody {
    fn from(p: &Program) -> Self {
        ProgramBody {
            program_id: p.program_id.to_string(),
            name: p.name.clone(),
            status: p.status.as_str(),
            earn_rule: EarnRuleBody {
                points_per_unit: p.rules.earn_rule.points_per_unit,
                minor_units_per_unit: p.rules.earn_rule.minor_units_per_unit,
            },
            tiers: p
                .rules
                .tiers
                .iter()
                .map(|t| TierBody {
                    name: t.name.clone(),
                    min_points: t.min_points,
                })
                .collect(),
            points_expire_after_days: p.rules.points_expire_after_days,
            pending_days: p.rules.pending_days,
            created_at: rfc3339(p.created_at),
            activated_at: p.activated_at.map(rfc3339),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CreateCustomer {
    pub external_id: String,
    pub name: Option<String>,
    pub email: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CustomerBody {
    pub customer_id: String,
    pub external_id: String,
    pub name: Option<String>,
    pub email: Option<String>,
    pub created_at: String,
}

impl From<&Customer> for CustomerBody {
    fn from(c: &Customer) -> Self {
        CustomerBody {
            customer_id: c.customer_id.to_string(),
            external_id: c.external_id.clone(),
            name: c.name.clone(),
            email: c.email.clone(),
            created_at: rfc3339(c.created_at),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CreateEnrollment {
    pub customer_id: String,
    pub program_id: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EnrollmentBody {
    pub enrollment_id: String,
    pub customer_id: String,
    pub program_id: String,
    pub balance: i64,
    pub pending: i64,
    pub lifetime_points: i64,
    pub tier: Option<String>,
    pub version: u64,
}

impl From<&BalanceView> for EnrollmentBody {
    fn from(v: &BalanceView) -> Self {
        EnrollmentBody {
            enrollment_id: v.enrollment_id.to_string(),
            customer_id: v.customer_id.to_string(),
            program_id: v.program_id.to_string(),
            balance: v.balance,
            pending: v.pending,
            lifetime_points: v.lifetime_points,
            tier: v.tier.clone(),
            version: v.version,
        }
    }
}

/// `earn` body. Over NATS `enrollmentId` comes in the body too.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EarnBody {
    pub enrollment_id: Option<String>,
    pub points: Option<i64>,
    pub amount: Option<i64>,
    pub idempotency_key: Option<String>,
    pub reason: Option<String>,
    pub reference: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RedeemBody {
    pub enrollment_id: Option<String>,
    pub points: i64,
    pub idempotency_key: Option<String>,
    pub reason: Option<String>,
    pub reference: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ReverseBody {
    pub enrollment_id: Option<String>,
    pub transaction_id: String,
    pub points: Option<i64>,
    pub idempotency_key: Option<String>,
    pub reason: Option<String>,
}

/// NATS `balance`: the id that HTTP carries in the path.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BalanceBody {
    pub enrollment_id: String,
}

/// NATS `transactions`: the path id and the query of HTTP.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TransactionsBody {
    pub enrollment_id: String,
    pub limit: Option<usize>,
    pub cursor: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EarnBatchBody {
    pub items: Vec<EarnBody>,
}

/// The answer to earn, redeem and reverse.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TransactionBody {
    pub transaction_id: String,
    pub enrollment_id: String,
    pub points: i64,
    pub balance: i64,
    pub pending: i64,
    pub tier: Option<String>,
    pub event_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shortfall: Option<i64>,
}

impl TransactionBody {
    /// `enrollment_id` as the answer shows it; given as a `String`, it is
    /// moved in, not copied.
    pub fn new(enrollment_id: impl Into<String>, answer: &StoredAnswer, reverse: bool) -> Self {
        let o = &answer.outcome;
        TransactionBody {
            transaction_id: o.transaction_id.to_string(),
            enrollment_id: enrollment_id.into(),
            points: o.points,
            balance: o.balance,
            pending: o.pending,
            tier: o.tier.as_deref().map(str::to_owned),
            event_id: answer.event_id.to_string(),
            shortfall: reverse.then_some(o.shortfall),
        }
    }
}

/// Formats milliseconds since the epoch as RFC 3339 UTC with milliseconds.
pub fn rfc3339(at: Timestamp) -> String {
    Rfc3339(at).to_string()
}

/// A timestamp shown as RFC 3339 UTC with milliseconds; serializes as that
/// string, written straight into the output.
#[derive(Clone, Copy, Debug)]
pub struct Rfc3339(pub Timestamp);

/// Length of `YYYY-MM-DDThh:mm:ss.mmmZ`.
const RFC3339_BYTES: usize = 24;

impl Rfc3339 {
    /// Year, month, day, hour, minute, second and millisecond, UTC.
    fn parts(self) -> [i64; 7] {
        let at = self.0;
        let ms = at.0.rem_euclid(1_000);
        let secs = at.0.div_euclid(1_000);
        let days = secs.div_euclid(86_400);
        let rem = secs.rem_euclid(86_400);
        // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        let year = yoe + era * 400 + i64::from(month <= 2);
        [
            year,
            month,
            day,
            rem / 3_600,
            rem % 3_600 / 60,
            rem % 60,
            ms,
        ]
    }

    /// The text written digit by digit, for years 0 to 9999 (every other
    /// year goes through `Display`). The publisher writes two or three of
    /// these per event, and the formatting machinery cost more than the
    /// rest of the timestamp.
    pub(crate) fn ascii(self) -> Option<[u8; RFC3339_BYTES]> {
        let [year, month, day, hour, minute, second, ms] = self.parts();
        if !(0..=9_999).contains(&year) {
            return None;
        }
        let mut out = *b"0000-00-00T00:00:00.000Z";
        let mut put = |at: usize, digits: usize, mut value: i64| {
            for i in (at..at + digits).rev() {
                out[i] = b'0' + (value % 10) as u8;
                value /= 10;
            }
        };
        put(0, 4, year);
        put(5, 2, month);
        put(8, 2, day);
        put(11, 2, hour);
        put(14, 2, minute);
        put(17, 2, second);
        put(20, 3, ms);
        Some(out)
    }
}

impl Serialize for Rfc3339 {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.ascii() {
            Some(text) => {
                serializer.serialize_str(std::str::from_utf8(&text).expect("ASCII digits"))
            }
            None => serializer.collect_str(self),
        }
    }
}

impl std::fmt::Display for Rfc3339 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(text) = self.ascii() {
            return f.write_str(std::str::from_utf8(&text).expect("ASCII digits"));
        }
        let [year, month, day, hour, minute, second, ms] = self.parts();
        write!(
            f,
            "{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}.{ms:03}Z"
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_rfc3339() {
        assert_eq!(rfc3339(Timestamp(0)), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            rfc3339(Timestamp(1_700_000_000_123)),
            "2023-11-14T22:13:20.123Z"
        );
        assert_eq!(
            rfc3339(Timestamp(951_782_400_000)),
            "2000-02-29T00:00:00.000Z"
        );
    }

    #[test]
    fn rfc3339_digits_match_the_formatter_from_year_0_to_9999() {
        // 0000-01-01, 9999-12-31T23:59:59.999, and one past either end
        // (written by the formatter), then 20 000 steps of about half a
        // year (and an odd number of milliseconds) across the range.
        let edges = [
            -62_167_219_200_000,
            253_402_300_799_999,
            -62_167_219_200_001,
            253_402_300_800_000,
            -1,
            0,
        ];
        let stride = (0..20_000).map(|i| -62_167_219_200_000 + i * 15_811_200_123);
        for ms in edges.into_iter().chain(stride) {
            let at = Rfc3339(Timestamp(ms));
            let [y, mo, d, h, mi, s, m] = at.parts();
            let formatted = format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{m:03}Z");
            assert_eq!(at.to_string(), formatted, "{ms}");
            assert_eq!(
                serde_json::to_string(&at).unwrap(),
                format!("\"{formatted}\""),
                "{ms}"
            );
        }
        assert_eq!(
            rfc3339(Timestamp(253_402_300_800_000)),
            "10000-01-01T00:00:00.000Z"
        );
    }

    #[test]
    fn decoding_names_the_field_at_fault() {
        let err = decode::<RedeemBody>(br#"{"points":"ten","idempotencyKey":"k"}"#)
            .err()
            .unwrap();
        assert_eq!((err.status, err.field.as_deref()), (400, Some("points")));
        let err = decode::<RedeemBody>(br#"{"points":1,"bogus":1}"#)
            .err()
            .unwrap();
        assert_eq!(err.field.as_deref(), Some("bogus"));
        let err = decode::<RedeemBody>(br#"{"idempotencyKey":"k"}"#)
            .err()
            .unwrap();
        assert_eq!(err.field.as_deref(), Some("points"));
        let err = decode::<RedeemBody>(br#"{"points":99999999999999999999}"#)
            .err()
            .unwrap();
        assert_eq!(err.field.as_deref(), Some("points"));
        let err = decode::<RedeemBody>(br#"{"points":1.5}"#).err().unwrap();
        assert_eq!(err.field.as_deref(), Some("points"));
        let err = decode::<RedeemBody>(b"{").err().unwrap();
        assert_eq!(err.code, "INVALID_JSON");
    }
}
