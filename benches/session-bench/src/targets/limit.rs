//! The limit: a bare `DashMap<SessionKey, Bytes>` holding the same encoded bytes.
//!
//! No expiry, no version, no owner: what any concurrent-map store pays at least. `save`
//! replaces only a present entry, as a store that never resurrects a deleted session must.
//!
//! Each entry holds its own copy of the bytes, as it does when every request encodes its own
//! session. Sharing one buffer across all entries would spare the bare map the cache miss on
//! the bytes' header that every load of a real session pays, and make it a limit no store
//! could meet.

use std::sync::Arc;

use bytes::Bytes;
use dashmap::DashMap;
use dashmap::mapref::entry::Entry;
use session_core::SessionKey;

use crate::keys::session_key;
use crate::runner::instance;
use crate::session::decode_bytes;
use crate::target::{BenchTarget, OpResult, Outcome, Role, Target};

pub(super) fn targets() -> [Target; 1] {
    [Target {
        name: "dashmap",
        short: "dashmap",
        role: Role::Limit,
        in_process: true,
        about: "bare dashmap::DashMap<SessionKey, Bytes> (default hasher), each entry its own copy of the same MessagePack bytes",
        build: |payload, _keys| {
            Box::pin(async move {
                Ok(Some(instance(BareMap {
                    map: Arc::new(DashMap::new()),
                    data: payload.encoded.clone(),
                    decode: payload.decode,
                })))
            })
        },
    }]
}

#[derive(Clone)]
struct BareMap {
    map: Arc<DashMap<SessionKey, Bytes>>,
    data: Bytes,
    decode: bool,
}

impl BenchTarget for BareMap {
    async fn create(&mut self, i: u64) -> OpResult {
        match self.map.entry(session_key(i)) {
            Entry::Vacant(slot) => {
                slot.insert(Bytes::copy_from_slice(&self.data));
                Ok(Outcome::Done)
            }
            Entry::Occupied(_) => Ok(Outcome::Conflict),
        }
    }

    async fn load(&mut self, i: u64) -> OpResult {
        let data = self.map.get(&session_key(i)).map(|e| e.value().clone());
        Ok(match data {
            Some(data) => {
                if self.decode {
                    decode_bytes(&data)?;
                }
                Outcome::Done
            }
            None => Outcome::Missing,
        })
    }

    async fn save(&mut self, i: u64) -> OpResult {
        match self.map.get_mut(&session_key(i)) {
            Some(mut entry) => {
                *entry = Bytes::copy_from_slice(&self.data);
                Ok(Outcome::Done)
            }
            None => Ok(Outcome::Missing),
        }
    }

    async fn delete(&mut self, i: u64) -> OpResult {
        Ok(match self.map.remove(&session_key(i)) {
            Some(_) => Outcome::Done,
            None => Outcome::Missing,
        })
    }
}
