//! The trait impls, one per tower-sessions-core version, from one macro: each converts their
//! `Id` (an `i128`), `Record` and string-typed error, and calls the shared logic in
//! `store.rs`.

macro_rules! impl_tower_sessions {
    ($core:ident) => {
        use $core::session::{Id, Record};
        use $core::session_store::{Error, Result};

        use crate::error::{BridgeError, Category};
        use crate::store::TowerSessionStore;

        impl From<BridgeError> for Error {
            fn from(e: BridgeError) -> Self {
                let text = e.chain();
                match e.category() {
                    Category::Encode => Error::Encode(text),
                    Category::Decode => Error::Decode(text),
                    Category::Backend => Error::Backend(text),
                }
            }
        }

        #[async_trait::async_trait]
        impl $core::SessionStore for TowerSessionStore {
            /// Inserts the record under the hash of its id; a taken id is replaced by a fresh
            /// `Id::default()` (in `record.id`) until one is free. Nothing is overwritten.
            async fn create(&self, record: &mut Record) -> Result<()> {
                let mut id = record.id.0;
                let created = self
                    .create_data(&mut id, &record.data, record.expiry_date, || {
                        Id::default().0
                    })
                    .await;
                record.id = Id(id);
                Ok(created?)
            }

            /// Replaces the live record's data and expiry. A record that is gone is not
            /// brought back: the call writes nothing and succeeds.
            async fn save(&self, record: &Record) -> Result<()> {
                Ok(self
                    .save_data(record.id.0, &record.data, record.expiry_date)
                    .await?)
            }

            /// The live record, or `None`; expired and unknown ids are `None` and nothing is
            /// created.
            async fn load(&self, session_id: &Id) -> Result<Option<Record>> {
                let loaded = self.load_data(session_id.0).await?;
                Ok(loaded.map(|(data, expiry_date)| Record {
                    id: *session_id,
                    data,
                    expiry_date,
                }))
            }

            async fn delete(&self, session_id: &Id) -> Result<()> {
                Ok(self.delete_id(session_id.0).await?)
            }
        }

        /// Sweeps through the store's `delete_expired`. Stores that expire records by
        /// themselves (Redis) hold none, so there it removes nothing.
        #[async_trait::async_trait]
        impl $core::ExpiredDeletion for TowerSessionStore {
            async fn delete_expired(&self) -> Result<()> {
                Ok(self.sweep().await?)
            }
        }
    };
}

#[cfg(feature = "v0_14")]
mod v0_14 {
    impl_tower_sessions!(tower_sessions_core_014);
}

#[cfg(feature = "v0_15")]
mod v0_15 {
    impl_tower_sessions!(tower_sessions_core_015);
}
