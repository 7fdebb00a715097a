//! The bridge's own error, and how it becomes tower-sessions' string-typed store error.

/// What went wrong inside the bridge, before it is flattened into their error type.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BridgeError {
    /// Our store failed; its error keeps the source.
    #[error(transparent)]
    Store(#[from] session_core::Error),
    /// The data map could not be encoded.
    #[error("session data could not be encoded")]
    Encode(#[source] rmp_serde::encode::Error),
    /// Stored bytes were not a data map this bridge wrote.
    #[error("stored session data could not be decoded")]
    Decode(#[source] rmp_serde::decode::Error),
    /// The encoded data passed the size limit; nothing was written.
    #[error("encoded session data is above the limit of {limit} bytes; nothing was written")]
    TooLarge {
        /// The limit, in bytes.
        limit: usize,
    },
    /// Every id tried for a new session was taken (in practice: a broken id generator).
    #[error("no free session id after {0} attempts")]
    NoFreeId(usize),
}

/// Their three categories, which all carry a `String`.
pub(crate) enum Category {
    Encode,
    Decode,
    Backend,
}

impl BridgeError {
    pub(crate) fn category(&self) -> Category {
        match self {
            Self::Encode(_)
            | Self::TooLarge { .. }
            | Self::Store(session_core::Error::TooLarge { .. } | session_core::Error::Encode(_)) => {
                Category::Encode
            }
            Self::Decode(_) | Self::Store(session_core::Error::Corrupt(_)) => Category::Decode,
            _ => Category::Backend,
        }
    }

    /// The message with every source appended, since their error keeps only a string.
    pub(crate) fn chain(&self) -> String {
        let mut out = self.to_string();
        let mut source = std::error::Error::source(self);
        while let Some(e) = source {
            out.push_str(": ");
            out.push_str(&e.to_string());
            source = e.source();
        }
        out
    }
}
