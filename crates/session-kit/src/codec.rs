//! Turning typed session values into bytes and back.
//!
//! A session is a map from string keys to values. Each value is encoded on its own when it is
//! inserted, so reading one key decodes one value and a request's changes can be re-applied key
//! by key after a conflict; the map of encoded values is then encoded once more for the store.
//!
//! Decoding refuses values nested deeper than [`MAX_DEPTH`] arrays and maps with
//! [`Error::Corrupt`], for every target type: deserializers recurse once per level, and a
//! stack overflow aborts the whole process, not one request.

use std::collections::BTreeMap;
use std::fmt::Debug;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize, Serializer};

use session_core::{Error, Result};

/// A session's values, each already encoded by the session's codec.
pub type Values = BTreeMap<String, Vec<u8>>;

/// Deepest nesting of arrays and maps (and externally tagged enum variants, which are maps on
/// the wire) a decoded value may have; deeper data is [`Error::Corrupt`].
///
/// Deserializers recurse once per level. Measured in a debug build, MessagePack into
/// `serde_json::Value` takes about 3.5 KiB of stack per level, so 256 levels stay well inside a
/// tokio worker's 2 MiB, where rmp-serde's own default of 1024 does not. It is above
/// serde_json's 128 so that data nested a little deeper than serde_json's default (a 200-deep
/// tree) still reads.
pub const MAX_DEPTH: usize = 256;

/// A serialization format for session values.
///
/// Decoding never falls back to another format: bytes the codec cannot read are
/// [`Error::Corrupt`].
pub trait Codec: Clone + Debug + Default + Send + Sync + 'static {
    /// Encodes one value.
    fn encode<T: Serialize + ?Sized>(&self, value: &T) -> Result<Vec<u8>>;
    /// Decodes one value.
    fn decode<T: DeserializeOwned>(&self, bytes: &[u8]) -> Result<T>;
    /// Encodes a whole session (the map of encoded values) for the store.
    fn encode_map(&self, values: &Values) -> Result<Vec<u8>>;
    /// Decodes what [`encode_map`](Self::encode_map) made.
    fn decode_map(&self, bytes: &[u8]) -> Result<Values>;
}

/// MessagePack through `rmp-serde`: compact and fast. The default.
///
/// Structs are written with field names, so adding or reordering fields keeps old sessions
/// readable.
#[derive(Clone, Copy, Debug, Default)]
pub struct MessagePack;

struct BinMap<'a>(&'a Values);

impl Serialize for BinMap<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_map(
            self.0
                .iter()
                .map(|(k, v)| (k.as_str(), serde_bytes::Bytes::new(v))),
        )
    }
}

impl Codec for MessagePack {
    fn encode<T: Serialize + ?Sized>(&self, value: &T) -> Result<Vec<u8>> {
        rmp_serde::to_vec_named(value).map_err(|e| Error::Encode(e.into()))
    }

    fn decode<T: DeserializeOwned>(&self, bytes: &[u8]) -> Result<T> {
        // rmp-serde's own limit skips enum variants, so the bytes are measured first; its limit
        // is set too, as a second line.
        check_msgpack_depth(bytes)?;
        let mut de = rmp_serde::Deserializer::from_read_ref(bytes);
        de.set_max_depth(MAX_DEPTH + 1);
        T::deserialize(&mut de).map_err(Error::corrupt)
    }

    fn encode_map(&self, values: &Values) -> Result<Vec<u8>> {
        // Written into a buffer of exactly the encoded size: no regrowth while writing, and a
        // vector whose length is its capacity becomes `Bytes` without an allocation.
        let mut out = Vec::with_capacity(msgpack_map_len(values));
        rmp_serde::encode::write(&mut out, &BinMap(values)).map_err(|e| Error::Encode(e.into()))?;
        Ok(out)
    }

    fn decode_map(&self, bytes: &[u8]) -> Result<Values> {
        rmp_serde::from_slice::<OwnedBinMap>(bytes)
            .map(|map| map.0)
            .map_err(Error::corrupt)
    }
}

/// The MessagePack length of `values` as [`BinMap`] writes it: the map header, then per
/// entry a `str` header and the key, a `bin` header and the value.
fn msgpack_map_len(values: &Values) -> usize {
    let map_header = match values.len() {
        0..16 => 1,
        16..65536 => 3,
        _ => 5,
    };
    let str_header = |len: usize| match len {
        0..32 => 1,
        32..256 => 2,
        256..65536 => 3,
        _ => 5,
    };
    let bin_header = |len: usize| match len {
        0..256 => 2,
        256..65536 => 3,
        _ => 5,
    };
    values.iter().fold(map_header, |total, (k, v)| {
        total + str_header(k.len()) + k.len() + bin_header(v.len()) + v.len()
    })
}

/// The stored map read straight into [`Values`]: each value's bytes land in the vector the
/// map keeps, with no intermediate map to rebuild. A repeated key keeps its last value, as a
/// `BTreeMap`'s own deserializer does.
struct OwnedBinMap(Values);

impl<'de> Deserialize<'de> for OwnedBinMap {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct Entries;
        impl<'de> serde::de::Visitor<'de> for Entries {
            type Value = Values;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a map of names to byte strings")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<Values, A::Error> {
                let mut values = Values::new();
                while let Some((k, v)) = map.next_entry::<String, serde_bytes::ByteBuf>()? {
                    values.insert(k, v.into_vec());
                }
                Ok(values)
            }
        }
        d.deserialize_map(Entries).map(OwnedBinMap)
    }
}

/// JSON through `serde_json`: larger and slower, but a stored session reads as a plain JSON
/// object, for people who want to look inside their stores.
#[derive(Clone, Copy, Debug, Default)]
pub struct Json;

impl Codec for Json {
    fn encode<T: Serialize + ?Sized>(&self, value: &T) -> Result<Vec<u8>> {
        serde_json::to_vec(value).map_err(|e| Error::Encode(e.into()))
    }

    fn decode<T: DeserializeOwned>(&self, bytes: &[u8]) -> Result<T> {
        // serde_json's built-in limit is fixed at 128; the measured limit replaces it.
        check_json_depth(bytes)?;
        let mut de = serde_json::Deserializer::from_slice(bytes);
        de.disable_recursion_limit();
        let value = T::deserialize(&mut de).map_err(Error::corrupt)?;
        de.end().map_err(Error::corrupt)?;
        Ok(value)
    }

    fn encode_map(&self, values: &Values) -> Result<Vec<u8>> {
        let mut raw = BTreeMap::new();
        for (k, v) in values {
            let value: &serde_json::value::RawValue =
                serde_json::from_slice(v).map_err(|e| Error::Encode(e.into()))?;
            raw.insert(k.as_str(), value);
        }
        serde_json::to_vec(&raw).map_err(|e| Error::Encode(e.into()))
    }

    fn decode_map(&self, bytes: &[u8]) -> Result<Values> {
        #[derive(Deserialize)]
        #[serde(transparent)]
        struct Raw(BTreeMap<String, Box<serde_json::value::RawValue>>);
        let raw: Raw = serde_json::from_slice(bytes).map_err(Error::corrupt)?;
        Ok(raw
            .0
            .into_iter()
            .map(|(k, v)| (k, v.get().as_bytes().to_vec()))
            .collect())
    }
}

/// Why decoding refused data nested deeper than [`MAX_DEPTH`].
#[derive(Debug, thiserror::Error)]
#[error("value is nested deeper than {MAX_DEPTH} levels")]
struct TooDeep;

/// Refuses JSON nested deeper than [`MAX_DEPTH`], without recursing. Brackets inside strings do
/// not count; anything else malformed is left for serde_json to report.
fn check_json_depth(bytes: &[u8]) -> Result<()> {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &b in bytes {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err(Error::corrupt(TooDeep));
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

/// Refuses MessagePack nested deeper than [`MAX_DEPTH`], without recursing: walks the markers
/// (msgpack spec, "formats"), keeping for each open array or map how many items it still holds.
/// Every item takes at least one byte, so the walk ends within `bytes.len()` steps whatever the
/// lengths claim.
fn check_msgpack_depth(bytes: &[u8]) -> Result<()> {
    let mut rd = MsgpackReader { rest: bytes };
    // Items still to read in each enclosing container, innermost last; `left` is the current one.
    let mut open: Vec<u64> = Vec::new();
    let mut left: u64 = 1;
    loop {
        while left == 0 {
            match open.pop() {
                Some(outer) => left = outer,
                None => return Ok(()),
            }
        }
        left -= 1;
        let marker = rd.uint(1)?;
        let children = match marker {
            0x80..=0x8f => 2 * (marker & 0x0f),
            0x90..=0x9f => marker & 0x0f,
            0xdc => rd.uint(2)?,
            0xdd => rd.uint(4)?,
            0xde => 2 * rd.uint(2)?,
            0xdf => 2 * rd.uint(4)?,
            _ => {
                let skip = match marker {
                    0x00..=0x7f | 0xc0 | 0xc2 | 0xc3 | 0xe0..=0xff => 0,
                    0xa0..=0xbf => marker & 0x1f,
                    0xc4 | 0xd9 => rd.uint(1)?,
                    0xc5 | 0xda => rd.uint(2)?,
                    0xc6 | 0xdb => rd.uint(4)?,
                    // ext 8/16/32: a length, then a type byte and the payload.
                    0xc7 => rd.uint(1)? + 1,
                    0xc8 => rd.uint(2)? + 1,
                    0xc9 => rd.uint(4)? + 1,
                    0xca => 4,
                    0xcb => 8,
                    0xcc | 0xd0 => 1,
                    0xcd | 0xd1 => 2,
                    0xce | 0xd2 => 4,
                    0xcf | 0xd3 => 8,
                    // fixext 1/2/4/8/16: a type byte and the payload.
                    0xd4 => 2,
                    0xd5 => 3,
                    0xd6 => 5,
                    0xd7 => 9,
                    0xd8 => 17,
                    _ => return Err(Error::corrupt("0xc1 is not a MessagePack marker")),
                };
                rd.skip(skip)?;
                continue;
            }
        };
        // Empty containers count as a level too, as they do for rmp-serde and serde_json.
        if open.len() >= MAX_DEPTH {
            return Err(Error::corrupt(TooDeep));
        }
        open.push(left);
        left = children;
    }
}

struct MsgpackReader<'a> {
    rest: &'a [u8],
}

impl MsgpackReader<'_> {
    fn bytes(&mut self, n: u64) -> Result<&[u8]> {
        let n = usize::try_from(n).unwrap_or(usize::MAX);
        let (head, tail) = self
            .rest
            .split_at_checked(n)
            .ok_or_else(|| Error::corrupt("MessagePack value ends early"))?;
        self.rest = tail;
        Ok(head)
    }

    /// A big-endian unsigned integer of `n` (at most 4) bytes.
    fn uint(&mut self, n: u64) -> Result<u64> {
        Ok(self
            .bytes(n)?
            .iter()
            .fold(0, |acc, b| (acc << 8) | u64::from(*b)))
    }

    fn skip(&mut self, n: u64) -> Result<()> {
        self.bytes(n).map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The MessagePack map is written into a buffer of exactly its size, across every header
    /// width (fixmap/map16, fixstr/str8/str16, bin8/bin16/bin32), and reads back the same.
    #[test]
    fn the_msgpack_map_is_sized_exactly() {
        let mut shapes: Vec<Values> = Vec::new();
        shapes.push(Values::new());
        for key_len in [0, 1, 31, 32, 255, 256, 65_535, 65_536] {
            for value_len in [0, 255, 256, 65_535, 65_536] {
                let mut values = Values::new();
                values.insert("k".repeat(key_len), vec![7; value_len]);
                shapes.push(values);
            }
        }
        for entries in [15, 16, 17, 70_000] {
            shapes.push(
                (0..entries)
                    .map(|i| (i.to_string(), vec![1u8; i % 3]))
                    .collect(),
            );
        }
        for values in shapes {
            let bytes = MessagePack.encode_map(&values).expect("encode");
            assert_eq!(
                (bytes.len(), bytes.capacity()),
                (msgpack_map_len(&values), bytes.len()),
                "{} entries, first key {} bytes",
                values.len(),
                values.keys().next().map_or(0, String::len)
            );
            assert_eq!(MessagePack.decode_map(&bytes).expect("decode"), values);
        }
    }

    /// Stored maps read as before: a repeated key keeps its last value, and anything but a
    /// map of names to byte strings is corrupt.
    #[test]
    fn the_msgpack_map_decodes_as_a_btreemap_did() {
        // {"a": bin[1], "a": bin[2]}
        let repeated = [0x82, 0xa1, b'a', 0xc4, 1, 1, 0xa1, b'a', 0xc4, 1, 2];
        let values = MessagePack.decode_map(&repeated).expect("decode");
        assert_eq!(values.get("a"), Some(&vec![2]));
        for bad in [
            &[0x93, 1, 2, 3][..],
            &[0x81, 0x01, 0xc4, 0][..],
            &[0x81, 0xa1][..],
        ] {
            assert!(
                matches!(MessagePack.decode_map(bad), Err(Error::Corrupt(_))),
                "{bad:?}"
            );
        }
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Cart {
        items: Vec<(String, u32)>,
        note: Option<String>,
    }

    fn round_trip<C: Codec>(codec: C) {
        let cart = Cart {
            items: vec![("sku-1".into(), 2), ("ключ".into(), 1)],
            note: Some("🎉".into()),
        };
        let mut values = Values::new();
        values.insert("cart".into(), codec.encode(&cart).unwrap_or_default());
        values.insert("n".into(), codec.encode(&42u64).unwrap_or_default());
        let bytes = codec.encode_map(&values).unwrap_or_default();
        let back = codec.decode_map(&bytes).unwrap_or_default();
        assert_eq!(back, values);
        let cart_back: Cart = codec.decode(&back["cart"]).unwrap_or(Cart {
            items: vec![],
            note: None,
        });
        assert_eq!(cart_back, cart);
        assert!(matches!(
            codec.decode::<Cart>(b"\xc1garbage"),
            Err(Error::Corrupt(_))
        ));
        assert!(matches!(
            codec.decode_map(b"\xc1\x00\xff"),
            Err(Error::Corrupt(_))
        ));
        assert!(matches!(
            codec.decode::<u64>(&back["cart"]),
            Err(Error::Corrupt(_))
        ));
    }

    #[test]
    fn message_pack_round_trips() {
        round_trip(MessagePack);
    }

    #[test]
    fn json_round_trips_and_is_readable() {
        round_trip(Json);
        let mut values = Values::new();
        values.insert("user".into(), Json.encode("ann").unwrap_or_default());
        let text =
            String::from_utf8(Json.encode_map(&values).unwrap_or_default()).unwrap_or_default();
        assert_eq!(text, r#"{"user":"ann"}"#);
    }

    #[test]
    fn codecs_do_not_read_each_other() {
        let mut values = Values::new();
        values.insert("k".into(), MessagePack.encode(&7u8).unwrap_or_default());
        let mp = MessagePack.encode_map(&values).unwrap_or_default();
        assert!(Json.decode_map(&mp).is_err());
    }

    /// Where session values are decoded in production: a tokio worker, whose stack is 2 MiB.
    const WORKER_STACK: usize = 2 * 1024 * 1024;

    /// Runs `f` on a thread with a tokio worker's stack. Without a depth limit the deep cases
    /// below overflow it, which aborts the whole test binary.
    fn on_worker_stack<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        std::thread::Builder::new()
            .stack_size(WORKER_STACK)
            .spawn(f)
            .expect("spawn")
            .join()
            .expect("the decoding thread panicked")
    }

    /// A recursive type, as applications store (syntax trees, menus).
    #[derive(Debug, Deserialize)]
    #[expect(dead_code, reason = "only ever decoded, to make the decoder recurse")]
    enum Tree {
        Leaf,
        Node(Box<Tree>),
    }

    /// `depth` nested arrays, maps or externally tagged enum variants.
    #[derive(Clone, Copy, Debug)]
    enum Shape {
        Arrays,
        Maps,
        Enum,
    }

    fn nested_msgpack(shape: Shape, depth: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for _ in 1..depth {
            match shape {
                Shape::Arrays => out.push(0x91),
                Shape::Maps => out.extend_from_slice(b"\x81\xa1k"),
                Shape::Enum => out.extend_from_slice(b"\x81\xa4Node"),
            }
        }
        match shape {
            Shape::Arrays => out.push(0x90),
            Shape::Maps => out.push(0x80),
            Shape::Enum => out.extend_from_slice(b"\x81\xa4Node\xa4Leaf"),
        }
        out
    }

    fn nested_json(shape: Shape, depth: usize) -> Vec<u8> {
        let (open, inner, close) = match shape {
            Shape::Arrays => ("[", "", "]"),
            Shape::Maps => (r#"{"k":"#, "{}", "}"),
            Shape::Enum => (r#"{"Node":"#, r#"{"Node":"Leaf"}"#, "}"),
        };
        let inner = if matches!(shape, Shape::Arrays) {
            "[]"
        } else {
            inner
        };
        format!(
            "{}{inner}{}",
            open.repeat(depth - 1),
            close.repeat(depth - 1)
        )
        .into_bytes()
    }

    /// Decodes `depth`-deep data of every shape, as `serde_json::Value` (or as the recursive
    /// `Tree` for the enum shape), on a worker's stack: whether each one decoded, or why not.
    fn decode_deep<C: Codec>(
        codec: C,
        make: fn(Shape, usize) -> Vec<u8>,
        depth: usize,
    ) -> Vec<(Shape, Result<()>)> {
        on_worker_stack(move || {
            [Shape::Arrays, Shape::Maps, Shape::Enum]
                .into_iter()
                .map(|shape| {
                    let bytes = make(shape, depth);
                    let result = match shape {
                        Shape::Enum => codec.decode::<Tree>(&bytes).map(drop),
                        _ => codec.decode::<serde_json::Value>(&bytes).map(drop),
                    };
                    (shape, result)
                })
                .collect()
        })
    }

    fn nesting_is_bounded<C: Codec>(codec: C, make: fn(Shape, usize) -> Vec<u8>) {
        for depth in [200, MAX_DEPTH] {
            for (shape, result) in decode_deep(codec.clone(), make, depth) {
                assert!(
                    result.is_ok(),
                    "{shape:?} {depth} deep must decode: {result:?}"
                );
            }
        }
        for depth in [1_000, 10_000, MAX_DEPTH + 1] {
            for (shape, result) in decode_deep(codec.clone(), make, depth) {
                assert!(
                    matches!(result, Err(Error::Corrupt(_))),
                    "{shape:?} {depth} deep must be Corrupt: {result:?}"
                );
            }
        }
    }

    #[test]
    fn message_pack_nested_past_the_depth_limit_is_corrupt_not_a_stack_overflow() {
        nesting_is_bounded(MessagePack, nested_msgpack);
    }

    #[test]
    fn json_nested_past_the_depth_limit_is_corrupt_not_a_stack_overflow() {
        nesting_is_bounded(Json, nested_json);
    }

    #[test]
    fn the_depth_scan_reads_every_message_pack_format_and_ignores_brackets_in_json_strings() {
        #[derive(Debug, PartialEq, Serialize, Deserialize)]
        struct All {
            n: (u8, u16, u32, u64, i8, i16, i32, i64, f32, f64),
            s: (String, String, String, String),
            b: (
                serde_bytes::ByteBuf,
                serde_bytes::ByteBuf,
                serde_bytes::ByteBuf,
            ),
            l: (Vec<u32>, Vec<u32>),
            m: BTreeMap<String, Option<bool>>,
        }
        let value = All {
            n: (
                200,
                60_000,
                4_000_000_000,
                u64::MAX,
                -100,
                -30_000,
                -2_000_000_000,
                i64::MIN,
                1.5,
                2.5,
            ),
            s: (
                "short".into(),
                "w".repeat(100),
                "x".repeat(300),
                "y".repeat(70_000),
            ),
            b: (
                serde_bytes::ByteBuf::from(b"ab".to_vec()),
                serde_bytes::ByteBuf::from(vec![1; 300]),
                serde_bytes::ByteBuf::from(vec![1; 70_000]),
            ),
            l: ((0..300).collect(), (0..70_000).collect()),
            m: (0..20)
                .map(|i| (i.to_string(), (i % 2 == 0).then_some(true)))
                .collect(),
        };
        let bytes = MessagePack.encode(&value).unwrap_or_default();
        assert!(check_msgpack_depth(&bytes).is_ok());
        assert!(
            check_msgpack_depth(&bytes[..bytes.len() - 1]).is_err(),
            "truncated"
        );
        assert_eq!(MessagePack.decode::<All>(&bytes).ok(), Some(value));
        // Extension types (fixext 1, ext 8) inside an array; serde never writes them itself.
        let ext = b"\x92\xd4\x01\x02\xc7\x03\x01abc";
        assert!(check_msgpack_depth(ext).is_ok());
        assert!(
            check_msgpack_depth(&ext[..ext.len() - 1]).is_err(),
            "truncated"
        );
        let text = format!(
            r#"{{"a":"{}","b":"\"{}"}}"#,
            "[".repeat(1000),
            "{".repeat(1000)
        );
        assert!(check_json_depth(text.as_bytes()).is_ok());
        assert!(Json.decode::<serde_json::Value>(text.as_bytes()).is_ok());
    }
}
