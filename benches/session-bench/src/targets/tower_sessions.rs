//! The peers: `tower-sessions-memory-store` and `tower-sessions-moka-store`, each through its
//! own `tower_sessions_core::SessionStore` trait.
//!
//! The published moka store is built on tower-sessions-core 0.14 and the memory store on 0.15:
//! two distinct traits and record types, so the target is written once as a macro. Both keep
//! the session as tower-sessions does: a `Record { id, data: HashMap<String, Value>,
//! expiry_date }`, cloned into the store on every write and out of it on every read.

use std::sync::Arc;

use time::OffsetDateTime;

use crate::keys::peer_id;
use crate::runner::instance;
use crate::session::{Payload, TTL, decode_json};
use crate::target::{BenchTarget, OpResult, Outcome, Role, Target};

fn ttl() -> time::Duration {
    time::Duration::milliseconds(TTL.as_millis() as i64)
}

macro_rules! peer_target {
    ($name:ident, $core:ident) => {
        pub(super) struct $name<S> {
            store: Arc<S>,
            record: $core::session::Record,
            /// Whether a load decodes the record's data (`--decode-on-load`).
            decode: bool,
            /// What must outlive the store (a benchmark table); dropped after it.
            guard: Option<Arc<dyn std::any::Any + Send + Sync>>,
        }

        // By hand: a derive would ask `S: Clone`, but handles share the store through the Arc.
        impl<S> Clone for $name<S> {
            fn clone(&self) -> Self {
                Self {
                    store: Arc::clone(&self.store),
                    record: self.record.clone(),
                    decode: self.decode,
                    guard: self.guard.clone(),
                }
            }
        }

        impl<S: $core::SessionStore> $name<S> {
            pub(super) fn new(store: S, payload: &Payload) -> Self {
                Self {
                    store: Arc::new(store),
                    record: $core::session::Record {
                        id: $core::session::Id(0),
                        data: payload.json.clone(),
                        expiry_date: OffsetDateTime::now_utc() + ttl(),
                    },
                    decode: payload.decode,
                    guard: None,
                }
            }

            /// Keeps `guard` alive as long as the last handle, after the store.
            #[allow(
                dead_code,
                reason = "only the 0.14 instantiation (the sqlx peer) needs a guard"
            )]
            pub(super) fn with_guard(
                mut self,
                guard: Arc<dyn std::any::Any + Send + Sync>,
            ) -> Self {
                self.guard = Some(guard);
                self
            }

            fn stamp(&mut self, i: u64) {
                self.record.id = $core::session::Id(peer_id(i));
                self.record.expiry_date = OffsetDateTime::now_utc() + ttl();
            }
        }

        impl<S: $core::SessionStore> BenchTarget for $name<S> {
            async fn create(&mut self, i: u64) -> OpResult {
                self.stamp(i);
                self.store.create(&mut self.record).await?;
                // Their create picks a new random id instead of failing on a taken one.
                Ok(if self.record.id.0 == peer_id(i) {
                    Outcome::Done
                } else {
                    Outcome::Conflict
                })
            }

            async fn load(&mut self, i: u64) -> OpResult {
                Ok(
                    match self.store.load(&$core::session::Id(peer_id(i))).await? {
                        Some(record) => {
                            if self.decode {
                                decode_json(&record.data)?;
                            }
                            Outcome::Done
                        }
                        None => Outcome::Missing,
                    },
                )
            }

            async fn save(&mut self, i: u64) -> OpResult {
                self.stamp(i);
                self.store.save(&self.record).await?;
                Ok(Outcome::Done)
            }

            async fn delete(&mut self, i: u64) -> OpResult {
                self.store.delete(&$core::session::Id(peer_id(i))).await?;
                Ok(Outcome::Done)
            }
        }
    };
}

peer_target!(Peer015, tower_sessions_core);
peer_target!(Peer014, tower_sessions_core_014);

pub(super) fn targets() -> [Target; 2] {
    [
        Target {
            name: "tower-sessions-memory-store",
            short: "ts-memory",
            role: Role::Peer,
            in_process: true,
            about: "tower-sessions-memory-store 0.15 (one tokio Mutex<HashMap<Id, Record>>), data as a JSON value map",
            build: |payload, _keys| {
                Box::pin(async move {
                    let store = tower_sessions_memory_store::MemoryStore::default();
                    Ok(Some(instance(Peer015::new(store, &payload))))
                })
            },
        },
        Target {
            name: "tower-sessions-moka-store",
            short: "ts-moka",
            role: Role::Peer,
            in_process: true,
            about: "tower-sessions-moka-store 0.15 on tower-sessions-core 0.14 (moka future::Cache, no capacity bound), data as a JSON value map",
            build: |payload, _keys| {
                Box::pin(async move {
                    let store = tower_sessions_moka_store::MokaStore::new(None);
                    Ok(Some(instance(Peer014::new(store, &payload))))
                })
            },
        },
    ]
}
