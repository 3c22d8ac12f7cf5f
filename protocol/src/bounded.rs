//! Deserializers for lists and maps that stop at a fixed number of entries, for messages from volunteers.
//!
//! A WebSocket frame is bounded in bytes, but decoding can multiply bytes: an empty MessagePack string
//! is one byte on the wire and 24 bytes as a `String`, so a frame of half a gigabyte of empty strings
//! would take a dozen gigabytes. Every list or map a worker sends carries one of these bounds, checked
//! entry by entry as it is decoded, so a frame with too many entries is refused before they are built.

use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

/// Decodes a list of at most `MAX` entries.
pub fn vec<'de, D, T, const MAX: usize>(deserializer: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    struct Bounded<T, const MAX: usize>(PhantomData<T>);

    impl<'de, T: Deserialize<'de>, const MAX: usize> Visitor<'de> for Bounded<T, MAX> {
        type Value = Vec<T>;

        fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
            write!(formatter, "a list of at most {MAX} entries")
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
            let mut entries = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(MAX).min(1024));
            while let Some(entry) = seq.next_element()? {
                if entries.len() == MAX {
                    return Err(serde::de::Error::custom(format_args!("a list of more than {MAX} entries")));
                }
                entries.push(entry);
            }
            Ok(entries)
        }
    }

    deserializer.deserialize_seq(Bounded::<T, MAX>(PhantomData))
}

/// Decodes a map of at most `MAX` entries.
pub fn map<'de, D, K, V, const MAX: usize>(deserializer: D) -> Result<BTreeMap<K, V>, D::Error>
where
    D: Deserializer<'de>,
    K: Deserialize<'de> + Ord,
    V: Deserialize<'de>,
{
    struct Bounded<K, V, const MAX: usize>(PhantomData<(K, V)>);

    impl<'de, K: Deserialize<'de> + Ord, V: Deserialize<'de>, const MAX: usize> Visitor<'de> for Bounded<K, V, MAX> {
        type Value = BTreeMap<K, V>;

        fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
            write!(formatter, "a map of at most {MAX} entries")
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<BTreeMap<K, V>, A::Error> {
            let mut entries = BTreeMap::new();
            let mut count = 0;
            while let Some((key, value)) = map.next_entry()? {
                count += 1;
                if count > MAX {
                    return Err(serde::de::Error::custom(format_args!("a map of more than {MAX} entries")));
                }
                entries.insert(key, value);
            }
            Ok(entries)
        }
    }

    deserializer.deserialize_map(Bounded::<K, V, MAX>(PhantomData))
}
