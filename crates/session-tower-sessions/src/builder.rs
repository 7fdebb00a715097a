//! [`TowerSessionStoreBuilder`]: the owner extractor and the size limit.

use std::sync::Arc;

use session_core::SessionStore;

use crate::format::Data;
use crate::store::{OwnerFn, TowerSessionStore};

/// The session key axum-login 0.18 keeps its data under (`AuthManagerLayerBuilder`'s default
/// `data_key`): `{"user_id": .., "auth_hash": [..]}`.
pub const AXUM_LOGIN_DATA_KEY: &str = "axum-login.data";

/// The owner extractor for axum-login 0.18 with its default data key: the logged-in user's
/// id, as text (a JSON string as is, anything else, such as a number, as JSON). Sessions with
/// no user logged in have no owner.
///
/// With it, `TowerSessionStore::delete_by_owner(&user.id().to_string())` signs the user out
/// everywhere (for string and integer ids, whose JSON text is their `to_string`).
pub fn axum_login_owner(data: &Data) -> Option<String> {
    match data.get(AXUM_LOGIN_DATA_KEY)?.get("user_id")? {
        serde_json::Value::Null => None,
        serde_json::Value::String(id) => Some(id.clone()),
        other => Some(other.to_string()),
    }
}

/// Builds a [`TowerSessionStore`].
pub struct TowerSessionStoreBuilder {
    store: Arc<dyn SessionStore>,
    owner: Option<Arc<OwnerFn>>,
    max_data_len: Option<Option<usize>>,
}

impl std::fmt::Debug for TowerSessionStoreBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TowerSessionStoreBuilder")
            .field("store", &self.store)
            .field("owner", &self.owner.is_some())
            .field("max_data_len", &self.max_data_len)
            .finish()
    }
}

impl TowerSessionStoreBuilder {
    pub(crate) fn new(store: Arc<dyn SessionStore>) -> Self {
        Self {
            store,
            owner: None,
            max_data_len: None,
        }
    }

    /// Fills the store's owner index from each session's data on every create and save, so
    /// `delete_by_owner` ends all of one owner's sessions. [`axum_login_owner`] is the one for
    /// axum-login. Without an extractor sessions have no owner.
    pub fn owner(
        mut self,
        owner: impl Fn(&Data) -> Option<String> + Send + Sync + 'static,
    ) -> Self {
        self.owner = Some(Arc::new(owner));
        self
    }

    /// The largest encoded session written, in bytes; a larger one fails with their
    /// `Error::Encode` and writes nothing. Defaults to the store's own
    /// [`max_data_len`](SessionStore::max_data_len); `None` leaves only the store's limit.
    pub fn max_data_len(mut self, limit: Option<usize>) -> Self {
        self.max_data_len = Some(limit);
        self
    }

    /// The store.
    pub fn build(self) -> TowerSessionStore {
        let store_limit = self.store.max_data_len();
        let max_data_len = match self.max_data_len {
            None => store_limit,
            Some(None) => None,
            // The store refuses past its own limit anyway: stop encoding at the lower one.
            Some(Some(limit)) => Some(store_limit.map_or(limit, |s| s.min(limit))),
        };
        TowerSessionStore {
            store: self.store,
            owner: self.owner,
            max_data_len,
            hints: Default::default(),
        }
    }
}
