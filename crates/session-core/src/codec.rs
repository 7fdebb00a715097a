//! Turning typed session values into bytes and back.
//!
//! A session is a map from string keys to values. Each value is encoded on its own when it is
//! inserted, so reading one key decodes one value and a request's changes can be re-applied key
//! by key after a conflict; the map of encoded values is then encoded once more for the store.

use std::collections::BTreeMap;
use std::fmt::Debug;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize, Serializer};

use crate::error::{Error, Result};

/// A session's values, each already encoded by the session's codec.
pub type Values = BTreeMap<String, Vec<u8>>;

/// A serialization format for session values.
///
/// Decoding never falls back to another format: bytes the codec cannot read are
/// [`Error::Corrupt`].
pub trait Codec: Clone + Debug + Default + Send + Sync + 'static {
    /// Encodes one value.
    fn encode<T: Serialize + ?Sized>(&self, value: &T) -> Result<Vec<u8>>;
    /// Decodes one value.
    fn decode<T: DeserializeOwned>(&self, bytes: &[u8]) -> Result<T>;
    /// Encodes a whole session (the map of encoded values) for the store.
    fn encode_map(&self, values: &Values) -> Result<Vec<u8>>;
    /// Decodes what [`encode_map`](Self::encode_map) made.
    fn decode_map(&self, bytes: &[u8]) -> Result<Values>;
}

/// MessagePack through `rmp-serde`: compact and fast. The default.
///
/// Structs are written with field names, so adding or reordering fields keeps old sessions
/// readable.
#[derive(Clone, Copy, Debug, Default)]
pub struct MessagePack;

struct BinMap<'a>(&'a Values);

impl Serialize for BinMap<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_map(
            self.0
                .iter()
                .map(|(k, v)| (k.as_str(), serde_bytes::Bytes::new(v))),
        )
    }
}

impl Codec for MessagePack {
    fn encode<T: Serialize + ?Sized>(&self, value: &T) -> Result<Vec<u8>> {
        rmp_serde::to_vec_named(value).map_err(|e| Error::Encode(e.into()))
    }

    fn decode<T: DeserializeOwned>(&self, bytes: &[u8]) -> Result<T> {
        rmp_serde::from_slice(bytes).map_err(Error::corrupt)
    }

    fn encode_map(&self, values: &Values) -> Result<Vec<u8>> {
        rmp_serde::to_vec(&BinMap(values)).map_err(|e| Error::Encode(e.into()))
    }

    fn decode_map(&self, bytes: &[u8]) -> Result<Values> {
        let raw: BTreeMap<String, serde_bytes::ByteBuf> =
            rmp_serde::from_slice(bytes).map_err(Error::corrupt)?;
        Ok(raw.into_iter().map(|(k, v)| (k, v.into_vec())).collect())
    }
}

/// JSON through `serde_json`: larger and slower, but a stored session reads as a plain JSON
/// object, for people who want to look inside their stores.
#[derive(Clone, Copy, Debug, Default)]
pub struct Json;

impl Codec for Json {
    fn encode<T: Serialize + ?Sized>(&self, value: &T) -> Result<Vec<u8>> {
        serde_json::to_vec(value).map_err(|e| Error::Encode(e.into()))
    }

    fn decode<T: DeserializeOwned>(&self, bytes: &[u8]) -> Result<T> {
        serde_json::from_slice(bytes).map_err(Error::corrupt)
    }

    fn encode_map(&self, values: &Values) -> Result<Vec<u8>> {
        let mut raw = BTreeMap::new();
        for (k, v) in values {
            let value: &serde_json::value::RawValue =
                serde_json::from_slice(v).map_err(|e| Error::Encode(e.into()))?;
            raw.insert(k.as_str(), value);
        }
        serde_json::to_vec(&raw).map_err(|e| Error::Encode(e.into()))
    }

    fn decode_map(&self, bytes: &[u8]) -> Result<Values> {
        #[derive(Deserialize)]
        #[serde(transparent)]
        struct Raw(BTreeMap<String, Box<serde_json::value::RawValue>>);
        let raw: Raw = serde_json::from_slice(bytes).map_err(Error::corrupt)?;
        Ok(raw
            .0
            .into_iter()
            .map(|(k, v)| (k, v.get().as_bytes().to_vec()))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Cart {
        items: Vec<(String, u32)>,
        note: Option<String>,
    }

    fn round_trip<C: Codec>(codec: C) {
        let cart = Cart {
            items: vec![("sku-1".into(), 2), ("ключ".into(), 1)],
            note: Some("🎉".into()),
        };
        let mut values = Values::new();
        values.insert("cart".into(), codec.encode(&cart).unwrap_or_default());
        values.insert("n".into(), codec.encode(&42u64).unwrap_or_default());
        let bytes = codec.encode_map(&values).unwrap_or_default();
        let back = codec.decode_map(&bytes).unwrap_or_default();
        assert_eq!(back, values);
        let cart_back: Cart = codec.decode(&back["cart"]).unwrap_or(Cart {
            items: vec![],
            note: None,
        });
        assert_eq!(cart_back, cart);
        assert!(matches!(
            codec.decode::<Cart>(b"\xc1garbage"),
            Err(Error::Corrupt(_))
        ));
        assert!(matches!(
            codec.decode_map(b"\xc1\x00\xff"),
            Err(Error::Corrupt(_))
        ));
        assert!(matches!(
            codec.decode::<u64>(&back["cart"]),
            Err(Error::Corrupt(_))
        ));
    }

    #[test]
    fn message_pack_round_trips() {
        round_trip(MessagePack);
    }

    #[test]
    fn json_round_trips_and_is_readable() {
        round_trip(Json);
        let mut values = Values::new();
        values.insert("user".into(), Json.encode("ann").unwrap_or_default());
        let text =
            String::from_utf8(Json.encode_map(&values).unwrap_or_default()).unwrap_or_default();
        assert_eq!(text, r#"{"user":"ann"}"#);
    }

    #[test]
    fn codecs_do_not_read_each_other() {
        let mut values = Values::new();
        values.insert("k".into(), MessagePack.encode(&7u8).unwrap_or_default());
        let mp = MessagePack.encode_map(&values).unwrap_or_default();
        assert!(Json.decode_map(&mp).is_err());
    }
}
