//! The at-rest form of their record: its data map as MessagePack (rmp-serde, as their sqlx and
//! redis stores encode), and nothing else. The id is never encoded (the store keys the record
//! by the id's hash), and the expiry is the store's own `expires_at`.

use std::collections::HashMap;
use std::io;

use crate::error::BridgeError;

/// Their record's data, the same type in tower-sessions-core 0.14 and 0.15.
pub type Data = HashMap<String, serde_json::Value>;

/// Encodes `data`, stopping as soon as the output passes `limit` bytes: an oversized session
/// is refused without being encoded whole, and nothing partial ever reaches the store.
pub(crate) fn encode(data: &Data, limit: Option<usize>) -> Result<Vec<u8>, BridgeError> {
    let mut out = Bounded {
        buf: Vec::with_capacity(128),
        limit: limit.unwrap_or(usize::MAX),
        over: false,
    };
    match rmp_serde::encode::write(&mut out, data) {
        Ok(()) => Ok(out.buf),
        Err(_) if out.over => Err(BridgeError::TooLarge { limit: out.limit }),
        Err(e) => Err(BridgeError::Encode(e)),
    }
}

/// Decodes what [`encode`] wrote.
pub(crate) fn decode(bytes: &[u8]) -> Result<Data, BridgeError> {
    rmp_serde::from_slice(bytes).map_err(BridgeError::Decode)
}

/// A buffer that refuses to grow past `limit`.
struct Bounded {
    buf: Vec<u8>,
    limit: usize,
    over: bool,
}

impl io::Write for Bounded {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        if self.buf.len().saturating_add(bytes.len()) > self.limit {
            self.over = true;
            return Err(io::Error::other("session data above the size limit"));
        }
        self.buf.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn data() -> Data {
        HashMap::from([
            ("n".to_owned(), json!(42)),
            ("s".to_owned(), json!("é\u{0}x")),
            ("big".to_owned(), json!(u64::MAX)),
            ("neg".to_owned(), json!(-7)),
            ("f".to_owned(), json!(1.5)),
            (
                "nested".to_owned(),
                json!({"a": [1, null, true, {"b": "c"}]}),
            ),
        ])
    }

    #[test]
    fn round_trips_every_json_kind() {
        let bytes = encode(&data(), None).expect("encodes");
        assert_eq!(decode(&bytes).expect("decodes"), data());
    }

    #[test]
    fn the_limit_is_exact_and_refuses_without_output() {
        let len = encode(&data(), None).expect("encodes").len();
        assert_eq!(encode(&data(), Some(len)).expect("fits").len(), len);
        match encode(&data(), Some(len - 1)) {
            Err(BridgeError::TooLarge { limit }) => assert_eq!(limit, len - 1),
            other => panic!("expected TooLarge, got {other:?}"),
        }
    }

    #[test]
    fn garbage_is_a_decode_error() {
        assert!(matches!(decode(&[0xc1, 0xff]), Err(BridgeError::Decode(_))));
        assert!(matches!(decode(&[]), Err(BridgeError::Decode(_))));
    }
}
