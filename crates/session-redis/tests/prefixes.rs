//! Key prefixes that would let two stores on one server share keys are refused when the store
//! is built, before any I/O.

use session_core::Error;
use session_redis::RedisStore;

/// A prefix containing `owner:` is refused. Owner indexes live under `<prefix>owner:<owner>`,
/// so next to a store with prefix `P`, a store with prefix `Powner:` would keep its session
/// `Powner:<hex>` under the key of `P`'s index for the owner `<hex>`: one store's writes
/// would fail on the other's values, and `P`'s `delete_by_owner` would miss sessions.
#[test]
fn a_prefix_inside_another_prefixs_owner_namespace_is_refused() {
    for prefix in ["session:owner:", "Powner:", "owner:", "app:owner:tenant:"] {
        let built = RedisStore::builder()
            .url("redis://127.0.0.1:1")
            .prefix(prefix)
            .build();
        match built {
            Err(Error::Config(message)) => assert!(
                message.contains("owner:"),
                "the error must name the reserved part: {message}"
            ),
            other => panic!("prefix {prefix:?} must be refused, got {other:?}"),
        }
    }
}

/// Prefixes that merely resemble the owner namespace stay valid: only `owner:` itself is
/// reserved, because only a prefix containing it can reach another store's keys.
#[test]
fn prefixes_near_the_owner_namespace_are_accepted() {
    for prefix in ["session:", "owners:", "owner", "app:owner-", "P", "a{b}c:"] {
        if let Err(e) = RedisStore::builder()
            .url("redis://127.0.0.1:1")
            .prefix(prefix)
            .build()
        {
            panic!("prefix {prefix:?} must be accepted, got {e:?}");
        }
    }
}
