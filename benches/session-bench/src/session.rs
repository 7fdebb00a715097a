//! The session every workload stores: a logged-in user with a cart, encoded once.

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use session_core::BoxError;
use session_kit::{Codec, MessagePack};

/// How long every benchmark session lives: long enough that nothing expires during a run.
pub(crate) const TTL: Duration = Duration::from_secs(30 * 60);

/// One line of a shopping cart.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct CartItem {
    sku: String,
    qty: u16,
    /// In cents.
    price: u32,
}

/// What a typical web app keeps for a signed-in user.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct LoggedInSession {
    user_id: u64,
    name: String,
    roles: Vec<String>,
    csrf_token: String,
    cart: Vec<CartItem>,
    flash: Option<String>,
    created_at: i64,
    last_seen_at: i64,
    locale: String,
    theme: String,
}

impl LoggedInSession {
    /// A fixed, realistic session: every target stores this same logical value.
    pub(crate) fn sample() -> Self {
        Self {
            user_id: 4_211_907,
            name: "ada.lovelace".into(),
            roles: vec!["user".into(), "editor".into(), "billing".into()],
            csrf_token: "Zx3kQ9vLmP2rT8wYb5nHc7dF1gJ4sA6e".into(),
            cart: (0..5u16)
                .map(|i| CartItem {
                    sku: format!("SKU-{}", 10_000 + u32::from(i) * 137),
                    qty: 1 + i,
                    price: 1_999 + u32::from(i) * 500,
                })
                .collect(),
            flash: None,
            created_at: 1_764_000_000_000,
            last_seen_at: 1_764_000_360_000,
            locale: "en-GB".into(),
            theme: "dark".into(),
        }
    }
}

/// The session in the form each kind of target stores it.
#[derive(Debug)]
pub(crate) struct Payload {
    /// `session_kit::MessagePack` bytes: what our stores and the bare map keep.
    pub(crate) encoded: Bytes,
    /// tower-sessions' form: the session under one key of its JSON value map, as an app that
    /// keeps a typed session struct would `session.insert("session", &value)`.
    pub(crate) json: HashMap<String, serde_json::Value>,
    /// `--decode-on-load`: every load decodes what it fetched into the typed session, as the
    /// request that loads it would; otherwise loads stop at the bytes (or the peers' map).
    pub(crate) decode: bool,
}

impl Payload {
    pub(crate) fn new() -> Result<Self, BoxError> {
        let session = LoggedInSession::sample();
        let encoded = Bytes::from(MessagePack.encode(&session)?);
        let back: LoggedInSession = MessagePack.decode(&encoded)?;
        if back != session {
            return Err("the sample session does not round-trip through MessagePack".into());
        }
        let json = HashMap::from([("session".to_owned(), serde_json::to_value(&session)?)]);
        Ok(Self {
            encoded,
            json,
            decode: false,
        })
    }

    /// Size of the JSON text of the peers' data, for comparison.
    pub(crate) fn json_len(&self) -> usize {
        serde_json::to_vec(&self.json).map_or(0, |v| v.len())
    }
}

/// What a request does with loaded bytes: decodes them with the manager's default codec.
pub(crate) fn decode_bytes(data: &[u8]) -> Result<(), BoxError> {
    let session: LoggedInSession = MessagePack.decode(data)?;
    std::hint::black_box(session);
    Ok(())
}

/// What a tower-sessions request does with a loaded record: `Session::get` of the typed
/// value, which deserializes a clone of the stored JSON value.
pub(crate) fn decode_json(data: &HashMap<String, serde_json::Value>) -> Result<(), BoxError> {
    let value = data
        .get("session")
        .ok_or("the loaded record holds no session")?;
    let session: LoggedInSession = serde_json::from_value(value.clone())?;
    std::hint::black_box(session);
    Ok(())
}
