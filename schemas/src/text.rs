//! [`Text`]: an immutable, cheaply shared string for the fields of observed objects.
//!
//! A ledger at cluster scale keeps hundreds of thousands of object records in memory, and
//! the same strings recur across them: every uid is also a map key and the owner reference
//! of its dependents, and namespaces, API versions and groups come from a handful of
//! values. A `String` per copy costs 24 bytes plus a heap block each time; a `Text` is an
//! 8-byte pointer to one shared block (`arcstr::ArcStr`: the length and the reference
//! count live in the block, so the pointer is thin, and an empty or missing value costs
//! the pointer alone), so the projection can keep one copy of each and hand out clones
//! (see the ledger's projection, which interns them). It encodes exactly as
//! a string (MessagePack `str`, JSON string), so entries and their hashes do not change.
//!
//! **Back-references.** A snapshot of the projection names each uid in up to six places.
//! Inside [`encode_shared`], a `Text` whose allocation was already written on this thread
//! is written as the integer index of that first occurrence (in order of first
//! occurrence, from 0) instead of its string; inside [`decode_shared`], a string is kept in
//! a table as it is read and an integer is that table's entry. So a snapshot holds each
//! shared string once, and decoding allocates it once and shares it as the encoder did,
//! without hashing anything. Outside those scopes a `Text` is always its string, and an
//! integer where one is expected is refused.

use std::borrow::Borrow;
use std::cell::RefCell;
use std::collections::HashMap;

use rustc_hash::FxBuildHasher;
use std::fmt;
use std::ops::Deref;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An immutable string behind a shared pointer. Compares, hashes and orders as the `str`
/// it holds, so a map keyed by `Text` is looked up with a `&str`.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Text(arcstr::ArcStr);

impl Text {
    /// The string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether two values share one allocation (not only equal contents).
    pub fn shares_storage_with(&self, other: &Text) -> bool {
        arcstr::ArcStr::ptr_eq(&self.0, &other.0)
    }
}

impl Default for Text {
    fn default() -> Self {
        Text(arcstr::ArcStr::new())
    }
}

impl Deref for Text {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for Text {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for Text {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&*self.0, f)
    }
}

impl From<&str> for Text {
    fn from(value: &str) -> Self {
        Text(arcstr::ArcStr::from(value))
    }
}

impl From<String> for Text {
    fn from(value: String) -> Self {
        Text(arcstr::ArcStr::from(value))
    }
}

impl From<&String> for Text {
    fn from(value: &String) -> Self {
        Text::from(value.as_str())
    }
}

impl From<Text> for String {
    fn from(value: Text) -> Self {
        value.as_str().to_string()
    }
}

impl PartialEq<str> for Text {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Text {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialEq<String> for Text {
    fn eq(&self, other: &String) -> bool {
        self.as_str() == other.as_str()
    }
}

impl PartialEq<Text> for String {
    fn eq(&self, other: &Text) -> bool {
        self.as_str() == other.as_str()
    }
}

impl PartialEq<Text> for str {
    fn eq(&self, other: &Text) -> bool {
        self == other.as_str()
    }
}

impl PartialEq<Text> for &str {
    fn eq(&self, other: &Text) -> bool {
        *self == other.as_str()
    }
}

/// What a back-reference scope holds on its thread.
enum Shared {
    /// The index of each allocation written so far, by its address; the `Text` is held so
    /// that no allocation is freed, and its address reused, while the scope lasts.
    Encoding(HashMap<usize, (u32, Text), FxBuildHasher>),
    /// Every string read so far, in order.
    Decoding(Vec<Text>),
}

thread_local! {
    static SCOPE: RefCell<Option<Shared>> = const { RefCell::new(None) };
}

/// Runs `within` with the thread's scope set to `scope` (ends it even on a panic).
fn scoped<R>(scope: Shared, within: impl FnOnce() -> R) -> R {
    struct End(Option<Shared>);
    impl Drop for End {
        fn drop(&mut self) {
            let outer = self.0.take();
            SCOPE.with(|current| *current.borrow_mut() = outer);
        }
    }
    let outer = SCOPE.with(|current| current.borrow_mut().replace(scope));
    let _end = End(outer);
    within()
}

/// Runs `encode` so that every `Text` it serializes on this thread after the first of
/// its allocation is written as a back-reference (see the module doc). The bytes must be
/// read inside [`decode_shared`]. `distinct` is how many distinct allocations to expect
/// (a hint: the table of those written is sized once instead of grown by rehashing).
pub fn encode_shared<R>(distinct: usize, encode: impl FnOnce() -> R) -> R {
    // Keyed by address: a one-multiply hash is enough, and SipHash was a tenth of the
    // encode.
    let written = HashMap::with_capacity_and_hasher(distinct, FxBuildHasher);
    scoped(Shared::Encoding(written), encode)
}

/// Runs `decode` so that back-references written by [`encode_shared`] resolve, and every
/// string they name is one shared allocation.
pub fn decode_shared<R>(decode: impl FnOnce() -> R) -> R {
    scoped(Shared::Decoding(Vec::new()), decode)
}

impl Serialize for Text {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let address = self.0.as_ptr() as usize;
        let reference = SCOPE.with(|scope| match scope.borrow_mut().as_mut() {
            Some(Shared::Encoding(written)) => {
                let next = u32::try_from(written.len()).ok()?;
                match written.get(&address) {
                    Some((index, _)) => Some(*index),
                    None => {
                        written.insert(address, (next, self.clone()));
                        None
                    }
                }
            }
            _ => None,
        });
        match reference {
            Some(index) => serializer.serialize_u32(index),
            None => serializer.serialize_str(&self.0),
        }
    }
}

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Text;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }

            fn visit_str<E: serde::de::Error>(self, value: &str) -> Result<Text, E> {
                let text = Text::from(value);
                SCOPE.with(|scope| {
                    if let Some(Shared::Decoding(read)) = scope.borrow_mut().as_mut() {
                        read.push(text.clone());
                    }
                });
                Ok(text)
            }

            fn visit_u64<E: serde::de::Error>(self, index: u64) -> Result<Text, E> {
                SCOPE.with(|scope| match scope.borrow().as_ref() {
                    Some(Shared::Decoding(read)) => usize::try_from(index)
                        .ok()
                        .and_then(|index| read.get(index))
                        .cloned()
                        .ok_or_else(|| {
                            E::custom(format!(
                                "back-reference {index} to a string not yet read ({} read)",
                                read.len()
                            ))
                        }),
                    _ => Err(E::invalid_type(
                        serde::de::Unexpected::Unsigned(index),
                        &self,
                    )),
                })
            }
        }
        // `any`: inside `decode_shared` an integer is a back-reference.
        deserializer.deserialize_any(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_as_the_string_it_holds() {
        let text = Text::from("sandbox-1");
        assert_eq!(
            rmp_serde::to_vec(&text).unwrap(),
            rmp_serde::to_vec("sandbox-1").unwrap()
        );
        assert_eq!(serde_json::to_string(&text).unwrap(), "\"sandbox-1\"");
        let back: Text = rmp_serde::from_slice(&rmp_serde::to_vec(&text).unwrap()).unwrap();
        assert_eq!(back, "sandbox-1");
        let from_json: Text = serde_json::from_str("\"a\\\"b\"").unwrap();
        assert_eq!(from_json, "a\"b");
    }

    #[test]
    fn shared_strings_are_written_once_and_read_back_shared() {
        let uid = Text::from("uid-1");
        let copy = Text::from("uid-1");
        let values = (uid.clone(), uid.clone(), Text::from("uid-2"), copy, uid);
        let shared = encode_shared(0, || rmp_serde::to_vec(&values).unwrap());
        let plain = rmp_serde::to_vec(&values).unwrap();
        // The repeated allocation is an index (0); an equal string in another allocation
        // is written again, as it is not known to be shared.
        assert!(shared.len() < plain.len());
        assert_eq!(&shared[..1], &[0x95]);
        assert_eq!(shared[7], 0x00);
        let (a, b, c, d, e): (Text, Text, Text, Text, Text) =
            decode_shared(|| rmp_serde::from_slice(&shared).unwrap());
        assert!(a.shares_storage_with(&b) && a.shares_storage_with(&e));
        assert!(!a.shares_storage_with(&c) && !a.shares_storage_with(&d));
        assert_eq!(
            (a.as_str(), c.as_str(), d.as_str()),
            ("uid-1", "uid-2", "uid-1")
        );
        // Outside the scope an index is not a string; nor is a reference ahead of it.
        assert!(rmp_serde::from_slice::<(Text, Text, Text, Text, Text)>(&shared).is_err());
        let ahead = rmp_serde::to_vec(&(5u32,)).unwrap();
        let error = decode_shared(|| rmp_serde::from_slice::<(Text,)>(&ahead))
            .unwrap_err()
            .to_string();
        assert!(error.contains("not yet read"), "{error}");
        // And JSON and plain MessagePack are unchanged.
        assert!(serde_json::from_str::<Text>("7").is_err());
        assert_eq!(serde_json::to_string(&values.0).unwrap(), "\"uid-1\"");
    }

    #[test]
    fn a_text_and_a_missing_one_are_a_pointer_each() {
        assert_eq!(std::mem::size_of::<Text>(), 8);
        assert_eq!(std::mem::size_of::<Option<Text>>(), 8);
    }

    #[test]
    fn a_map_keyed_by_text_is_looked_up_with_a_str() {
        let mut map = std::collections::HashMap::new();
        map.insert(Text::from("uid-1"), 1);
        assert_eq!(map.get("uid-1"), Some(&1));
        let clone = map.keys().next().unwrap().clone();
        assert!(clone.shares_storage_with(map.keys().next().unwrap()));
        assert!(!Text::from("uid-1").shares_storage_with(&clone));
    }
}
