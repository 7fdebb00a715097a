//! Session ids (the secret the client holds) and session keys (what stores see).

use std::fmt;
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore as _;
use sha2::{Digest, Sha256};

/// Number of random bytes in a [`SessionId`]: 192 bits, well above OWASP's 64-bit floor.
pub const ID_BYTES: usize = 24;
/// Length of a [`SessionId`] as text: base64url without padding of [`ID_BYTES`] bytes.
pub const ID_TEXT_LEN: usize = 32;

/// Why a text could not be parsed as a [`SessionId`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidId {
    /// The text is not exactly [`ID_TEXT_LEN`] bytes long.
    #[error("session id must be {ID_TEXT_LEN} characters, got {0} bytes")]
    Length(usize),
    /// The text holds a byte outside the base64url alphabet.
    #[error("session id holds a character outside the base64url alphabet")]
    Alphabet,
}

/// A session id: [`ID_BYTES`] random bytes from a cryptographically secure generator seeded by
/// the operating system (see [`SessionId::generate`]).
///
/// It is the bearer secret that travels in the cookie. Its [`Debug`](fmt::Debug) and [`Display`](fmt::Display) show only
/// the first four characters, so ids never reach logs whole; [`SessionId::expose`] gives the full
/// text for the one place that needs it (writing the cookie). Stores never see it: they see its
/// [`SessionKey`].
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct SessionId {
    text: [u8; ID_TEXT_LEN],
}

thread_local! {
    /// This thread's handle on `rand`'s thread-local generator, kept so an id drawn while
    /// thread-locals are being torn down can tell (and fall back) instead of panicking.
    static RNG: rand::rngs::ThreadRng = rand::rng();
}

impl SessionId {
    /// Draws a fresh id: [`ID_BYTES`] bytes (192 bits) from `rand`'s `ThreadRng`, a ChaCha12
    /// generator per thread, seeded from the operating system's CSPRNG and reseeded from it
    /// after every 64 KiB of output. That costs no system call per id (the OS source costs
    /// one each, far more than the id's other work), and it is still a CSPRNG: an id says
    /// nothing of the ids before or after it.
    ///
    /// The generator is not reseeded when the process forks: a child that forks without
    /// `exec` and draws ids would repeat its parent's. Such a child must call
    /// [`SessionId::reseed_after_fork`] first. (A Tokio runtime does not survive a fork, and
    /// `std::process::Command` execs, so a server built on this workspace does not meet it;
    /// a store refuses a `create` or `rotate` onto a key it holds either way.)
    ///
    /// # Panics
    /// Panics only if the operating system cannot supply randomness, in which case no secure id
    /// can exist and continuing would be worse.
    pub fn generate() -> Self {
        let mut bytes = [0u8; ID_BYTES];
        if RNG
            .try_with(|rng| rng.clone().fill_bytes(&mut bytes))
            .is_err()
        {
            // Thread-locals are being destroyed: draw from the OS directly.
            os_fill(&mut bytes);
        }
        Self::from_bytes(&bytes)
    }

    /// Reseeds this thread's generator from the operating system. Call it in a child process
    /// after `fork` (without `exec`) and before it draws ids; elsewhere it is not needed.
    ///
    /// # Panics
    /// Panics only if the operating system cannot supply randomness.
    pub fn reseed_after_fork() {
        #[expect(
            clippy::expect_used,
            reason = "no safe fallback exists without OS randomness"
        )]
        rand::rng()
            .reseed()
            .expect("the operating system's random source failed");
    }

    #[expect(
        clippy::expect_used,
        reason = "the buffer is exactly the encoded length, checked at compile time"
    )]
    fn from_bytes(bytes: &[u8; ID_BYTES]) -> Self {
        const _: () = assert!(matches!(
            base64::encoded_len(ID_BYTES, false),
            Some(ID_TEXT_LEN)
        ));
        let mut text = [0u8; ID_TEXT_LEN];
        URL_SAFE_NO_PAD
            .encode_slice(bytes, &mut text)
            .expect("ID_TEXT_LEN is the base64url length of ID_BYTES");
        Self { text }
    }

    /// The whole id as text. Only the cookie writer should call this: anything printed or
    /// logged should use the masked [`Display`](fmt::Display) instead.
    #[expect(
        clippy::expect_used,
        reason = "both constructors admit only the base64url alphabet, which is ASCII"
    )]
    pub fn expose(&self) -> &str {
        std::str::from_utf8(&self.text).expect("a session id is ASCII")
    }

    /// The one-way hash of this id that stores key records by.
    pub fn key(&self) -> SessionKey {
        SessionKey::derive(&self.text)
    }
}

#[expect(
    clippy::expect_used,
    reason = "no safe fallback exists without OS randomness"
)]
fn os_fill(bytes: &mut [u8]) {
    getrandom::fill(bytes).expect("the operating system's random source failed");
}

impl FromStr for SessionId {
    type Err = InvalidId;

    /// Parses strictly: exactly [`ID_TEXT_LEN`] characters of the base64url alphabet that decode
    /// canonically. Nothing else is accepted, so garbage never reaches a store.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let raw = s.as_bytes();
        if raw.len() != ID_TEXT_LEN {
            return Err(InvalidId::Length(raw.len()));
        }
        if !raw
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_')
        {
            return Err(InvalidId::Alphabet);
        }
        let mut text = [0u8; ID_TEXT_LEN];
        text.copy_from_slice(raw);
        Ok(Self { text })
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}…", &self.expose()[..4])
    }
}

impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SessionId({self})")
    }
}

/// What stores key records by: the SHA-256 of a [`SessionId`].
///
/// A leaked table, dump or directory of keys yields no cookie that works, because the hash
/// cannot be inverted. Keys are not secret, so they print whole (as hex).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionKey([u8; 32]);

impl SessionKey {
    /// The key for the id whose bytes are `id`: their SHA-256. [`SessionId::key`] is this over
    /// the id's text; bridges to other libraries' session ids call it on those ids' bytes, so
    /// their stores, too, see only a hash.
    pub fn derive(id: &[u8]) -> Self {
        Self(Sha256::digest(id).into())
    }

    /// Builds a key from its 32 raw bytes (as a store reads them back).
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The 32 raw bytes.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Lowercase hex, 64 characters: a name safe for files and Redis keys.
    pub fn to_hex(&self) -> String {
        // Through a buffer: `hex::encode` builds its string a `char` at a time, which was 3.6%
        // of a Redis save's client CPU (the owner index member is the key in hex).
        let mut digits = vec![0u8; 64];
        if hex::encode_to_slice(self.0, &mut digits).is_err() {
            unreachable!("32 bytes are 64 hex digits");
        }
        String::from_utf8(digits).unwrap_or_else(|_| unreachable!("hex digits are ASCII"))
    }

    /// Parses the 64-character lowercase hex form made by [`SessionKey::to_hex`]. Uppercase
    /// digits are refused, so each key has exactly one text form (a file or Redis key name).
    pub fn from_hex(s: &str) -> Option<Self> {
        if s.bytes().any(|b| b.is_ascii_uppercase()) {
            return None;
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).ok()?;
        Some(Self(out))
    }
}

/// A [`Hasher`](std::hash::Hasher) for maps keyed by [`SessionKey`]: it takes eight of the
/// key's bytes instead of running SipHash over all 32.
///
/// That is safe only because of what a key is: a SHA-256 output, already uniform, and made
/// from server-generated ids (unknown ids are never stored), so no client can choose keys that
/// collide. Do not use it for keys from outside input.
#[derive(Debug, Default, Clone, Copy)]
pub struct KeyHasher(u64);

impl std::hash::Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        match bytes.first_chunk::<8>() {
            Some(head) => self.0 ^= u64::from_ne_bytes(*head),
            None => {
                for b in bytes {
                    self.0 = self.0.rotate_left(8) ^ u64::from(*b);
                }
            }
        }
    }
}

/// The [`BuildHasher`](std::hash::BuildHasher) of [`KeyHasher`], for
/// `HashMap<SessionKey, V, KeyBuildHasher>`.
pub type KeyBuildHasher = std::hash::BuildHasherDefault<KeyHasher>;

impl fmt::Display for SessionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SessionKey({}…)", &self.to_hex()[..12])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_parse_back_and_differ() {
        let a = SessionId::generate();
        let b = SessionId::generate();
        assert_ne!(a, b);
        assert_eq!(a.expose().len(), ID_TEXT_LEN);
        assert_eq!(a.expose().parse::<SessionId>(), Ok(a.clone()));
        assert_eq!(
            a.key(),
            a.expose().parse::<SessionId>().expect("round trip").key()
        );
    }

    /// Ids drawn on many threads at once (each with its own generator, each seeded on its
    /// own) are all distinct and all well-formed, also after a reseed and from the OS
    /// fallback.
    #[test]
    fn ids_are_distinct_and_well_formed_across_threads() {
        const THREADS: usize = 8;
        const PER_THREAD: usize = 5_000;
        let ids: Vec<SessionId> = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..THREADS)
                .map(|t| {
                    scope.spawn(move || {
                        let mut ids: Vec<SessionId> =
                            (0..PER_THREAD).map(|_| SessionId::generate()).collect();
                        if t % 2 == 0 {
                            SessionId::reseed_after_fork();
                            ids.extend((0..PER_THREAD).map(|_| SessionId::generate()));
                        }
                        let mut bytes = [0u8; ID_BYTES];
                        os_fill(&mut bytes);
                        ids.push(SessionId::from_bytes(&bytes));
                        ids
                    })
                })
                .collect();
            workers
                .into_iter()
                .flat_map(|w| w.join().expect("a generating thread panicked"))
                .collect()
        });
        let distinct: std::collections::HashSet<&str> = ids.iter().map(SessionId::expose).collect();
        assert_eq!(distinct.len(), ids.len(), "an id was drawn twice");
        for id in &ids {
            assert_eq!(id.expose().parse::<SessionId>().as_ref(), Ok(id));
            let raw = URL_SAFE_NO_PAD
                .decode(id.expose())
                .expect("an id is base64url");
            assert_eq!(raw.len(), ID_BYTES);
        }
        // 192 random bits: over 85,000 ids every bit position takes both values.
        let (mut ones, mut zeros) = ([false; ID_BYTES * 8], [false; ID_BYTES * 8]);
        for id in &ids {
            let raw = URL_SAFE_NO_PAD.decode(id.expose()).expect("base64url");
            for (i, bit) in (0..ID_BYTES * 8).map(|i| (i, raw[i / 8] >> (i % 8) & 1)) {
                if bit == 1 {
                    ones[i] = true;
                } else {
                    zeros[i] = true;
                }
            }
        }
        assert!(ones.iter().chain(zeros.iter()).all(|b| *b), "a stuck bit");
    }

    #[test]
    fn ids_are_the_full_base64url_text_of_their_bytes() {
        assert_eq!(
            SessionId::from_bytes(&[0xff; ID_BYTES]).expose(),
            "_".repeat(32)
        );
        assert_eq!(
            SessionId::from_bytes(&[0; ID_BYTES]).expose(),
            "A".repeat(32)
        );
    }

    #[test]
    fn parsing_is_strict() {
        assert_eq!("".parse::<SessionId>(), Err(InvalidId::Length(0)));
        assert_eq!(
            "a".repeat(33).parse::<SessionId>(),
            Err(InvalidId::Length(33))
        );
        assert_eq!(
            "a".repeat(31).parse::<SessionId>(),
            Err(InvalidId::Length(31))
        );
        let mut bad = "a".repeat(31);
        bad.push('=');
        assert_eq!(bad.parse::<SessionId>(), Err(InvalidId::Alphabet));
        let mut plus = "a".repeat(31);
        plus.push('+');
        assert_eq!(plus.parse::<SessionId>(), Err(InvalidId::Alphabet));
        // Multi-byte characters count as bytes and never panic on slicing.
        assert!("é".repeat(16).parse::<SessionId>().is_err());
        assert!("a".repeat(32).parse::<SessionId>().is_ok());
    }

    #[test]
    fn printing_masks_the_id() {
        let id = SessionId::generate();
        let shown = format!("{id} {id:?}");
        assert!(!shown.contains(id.expose()));
        assert!(shown.contains(&id.expose()[..4]));
    }

    #[test]
    fn key_is_a_stable_hash_and_hex_round_trips() {
        let id: SessionId = "abcdefghijklmnopqrstuvwxyz012345"
            .parse()
            .expect("a well-formed id");
        // Computed independently: `printf %s abcdefghijklmnopqrstuvwxyz012345 | sha256sum`.
        assert_eq!(
            id.key().to_hex(),
            "653bb1245e828fcda4fa53fcd5a3def5bd7654e651f54b4132b73d74e64435c4"
        );
        let key = id.key();
        assert_eq!(key, id.key());
        assert_ne!(key, SessionId::generate().key());
        assert_eq!(SessionKey::from_hex(&key.to_hex()), Some(key));
        assert_eq!(SessionKey::from_hex("zz"), None);
        // Only the one form `to_hex` writes: 64 lowercase digits.
        assert_eq!(SessionKey::from_hex(&key.to_hex().to_uppercase()), None);
        assert_eq!(SessionKey::from_hex(&key.to_hex()[..62]), None);
        assert_eq!(SessionKey::from_hex(&format!("{}0", key.to_hex())), None);
        assert_eq!(
            SessionKey::from_hex(&format!("{}g", &key.to_hex()[..63])),
            None
        );
        assert!(!key.to_hex().contains(id.expose()));
    }
}
