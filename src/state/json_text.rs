//! A webhook's JSON body, kept as the text it is sent as.
//!
//! The body was a `serde_json::Value`: a tree built by the engine, encoded
//! to MessagePack node by node when queued, decoded into a tree again when
//! delivery claimed the row, encoded again at the claim and at the record,
//! and written out as JSON for the request. Kept as text, it is written
//! once, by the engine, and copied after.
//!
//! Stored as MessagePack bytes, which a `Value` never is, so a row stored
//! before (its body a map, a list or a scalar) reads back as it was. Shown
//! (the API, the console) as the JSON it is.

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::Value as Json;
use serde_json::value::RawValue;

/// JSON text, checked to be JSON. Two are equal when their text is: every
/// one dealflow makes is written by serde_json, compactly.
#[derive(Debug, Clone)]
pub struct JsonText(Box<RawValue>);

impl JsonText {
    /// The text.
    pub fn as_str(&self) -> &str {
        self.0.get()
    }

    /// The value the text spells.
    pub fn to_json(&self) -> Json {
        // Checked when made; `Null` only if that check were broken.
        serde_json::from_str(self.as_str()).unwrap_or(Json::Null)
    }
}

impl JsonText {
    /// `value` written out; `null` if it cannot be (a map whose keys are
    /// not text, which no value dealflow makes has).
    pub fn of<T: Serialize + ?Sized>(value: &T) -> Self {
        let text =
            serde_json::value::to_raw_value(value).unwrap_or_else(|_| RawValue::NULL.to_owned());
        JsonText(text)
    }
}

impl From<&Json> for JsonText {
    fn from(value: &Json) -> Self {
        JsonText::of(value)
    }
}

impl From<Json> for JsonText {
    fn from(value: Json) -> Self {
        JsonText::from(&value)
    }
}

impl PartialEq for JsonText {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Serialize for JsonText {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            self.to_json().serialize(s)
        } else {
            s.serialize_bytes(self.as_str().as_bytes())
        }
    }
}

/// A stored `body`: JSON text (a webhook's, stored as bytes) or a value
/// (an email's or a text's body, or a webhook's stored before its text
/// was kept).
#[derive(Debug)]
pub(crate) enum StoredBody {
    Text(JsonText),
    Value(Json),
}

impl StoredBody {
    /// As a webhook's body.
    pub(crate) fn into_json_text(self) -> JsonText {
        match self {
            StoredBody::Text(text) => text,
            StoredBody::Value(value) => JsonText::from(&value),
        }
    }
}

impl<'de> Deserialize<'de> for StoredBody {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(BodyVisitor)
    }
}

struct BodyVisitor;

impl BodyVisitor {
    fn text<E: de::Error>(text: String) -> Result<StoredBody, E> {
        RawValue::from_string(text)
            .map(|raw| StoredBody::Text(JsonText(raw)))
            .map_err(|e| E::custom(format!("a stored JSON body does not read: {e}")))
    }
}

impl<'de> Visitor<'de> for BodyVisitor {
    type Value = StoredBody;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a body")
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<StoredBody, E> {
        let text = std::str::from_utf8(v).map_err(E::custom)?;
        Self::text(text.to_owned())
    }

    fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<StoredBody, E> {
        Self::text(String::from_utf8(v).map_err(E::custom)?)
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<StoredBody, E> {
        Ok(StoredBody::Value(Json::Bool(v)))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<StoredBody, E> {
        Ok(StoredBody::Value(Json::from(v)))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<StoredBody, E> {
        Ok(StoredBody::Value(Json::from(v)))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<StoredBody, E> {
        Ok(StoredBody::Value(Json::from(v)))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<StoredBody, E> {
        Ok(StoredBody::Value(Json::String(v.to_owned())))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<StoredBody, E> {
        Ok(StoredBody::Value(Json::String(v)))
    }

    fn visit_unit<E: de::Error>(self) -> Result<StoredBody, E> {
        Ok(StoredBody::Value(Json::Null))
    }

    fn visit_none<E: de::Error>(self) -> Result<StoredBody, E> {
        Ok(StoredBody::Value(Json::Null))
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<StoredBody, D::Error> {
        Json::deserialize(d).map(StoredBody::Value)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<StoredBody, A::Error> {
        Json::deserialize(de::value::SeqAccessDeserializer::new(seq)).map(StoredBody::Value)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<StoredBody, A::Error> {
        Json::deserialize(de::value::MapAccessDeserializer::new(map)).map(StoredBody::Value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn stored_as_bytes_and_read_back_as_the_same_text() {
        let body = JsonText::from(json!({"n": u64::MAX, "f": -1.5, "list": [null, "é"]}));
        let bytes = rmp_serde::to_vec_named(&body).unwrap();
        // MessagePack `bin`, which no `Value` is stored as.
        assert!(matches!(bytes[0], 0xc4..=0xc6), "{bytes:?}");
        let back: StoredBody = rmp_serde::from_slice(&bytes).unwrap();
        assert_eq!(back.into_json_text(), body);
    }

    #[test]
    fn a_body_stored_as_a_value_reads_as_its_text() {
        for old in [json!({"a": [1, "b", null]}), json!("just text"), json!(2.5)] {
            let bytes = rmp_serde::to_vec_named(&old).unwrap();
            let back: StoredBody = rmp_serde::from_slice(&bytes).unwrap();
            assert_eq!(back.into_json_text().to_json(), old);
        }
    }

    #[test]
    fn shown_as_the_json_it_is() {
        let body = JsonText::from(json!({"lead": {"score": 72}}));
        let shown = serde_json::to_value(&body).unwrap();
        assert_eq!(shown, json!({"lead": {"score": 72}}));
    }

    #[test]
    fn stored_bytes_that_are_not_json_are_refused() {
        let bytes = rmp_serde::to_vec_named(&serde_bytes_of(b"{not json")).unwrap();
        let read = rmp_serde::from_slice::<StoredBody>(&bytes);
        assert!(read.unwrap_err().to_string().contains("does not read"));
    }

    /// `bytes` as MessagePack `bin`.
    fn serde_bytes_of(bytes: &[u8]) -> impl Serialize + '_ {
        struct Bin<'a>(&'a [u8]);
        impl Serialize for Bin<'_> {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_bytes(self.0)
            }
        }
        Bin(bytes)
    }
}
