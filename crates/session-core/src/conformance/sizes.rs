//! A store's size limit as its builder sets it: the default, and none at all. (The suite's
//! own `size_limit_is_exact` case checks whatever limit a store has; this checks that the
//! default is the documented one and that "no limit" really stores large sessions.)

use std::time::Duration;

use crate::{Error, Record, SessionId, SessionStore, Timestamp};

fn live(len: usize, byte: u8) -> Record {
    Record::new(
        SessionId::generate().key(),
        vec![byte; len],
        Timestamp::now() + Duration::from_secs(3600),
    )
}

/// `default`, built without a size option, reports and enforces `expected` bytes: a session
/// of exactly that size is stored, one byte more is [`Error::TooLarge`] and stores nothing.
/// `unlimited`, built with `max_data_len(None)` (on the same data, or not), reports no limit
/// and stores and returns a 3 MiB session, beyond the 64 KiB and 2 MiB column types.
///
/// # Panics
/// When either store behaves otherwise.
pub async fn default_limit_and_none(
    default: &impl SessionStore,
    expected: usize,
    unlimited: &impl SessionStore,
) {
    assert_eq!(default.max_data_len(), Some(expected), "the default limit");
    let fits = live(expected, 1);
    default
        .create(&fits)
        .await
        .expect("a session of exactly the default limit fits");
    let big = live(expected + 1, 1);
    let err = default
        .create(&big)
        .await
        .expect_err("one byte over the default limit is too many");
    assert!(
        matches!(err, Error::TooLarge { size, limit } if size == expected + 1 && limit == expected),
        "got {err:?}"
    );
    assert!(
        !default.exists(&big.key).await.expect("exists"),
        "a refused session was stored"
    );

    assert_eq!(unlimited.max_data_len(), None, "no limit");
    let huge = live(3 << 20, 9);
    unlimited.create(&huge).await.expect("no limit");
    assert_eq!(unlimited.load(&huge.key).await.expect("load"), Some(huge));
}
