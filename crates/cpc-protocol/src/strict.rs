//! Objects are objects: serde's derive also reads a struct from a JSON
//! array (its fields by position), so `"entity": ["notes", "n1"]` would be
//! accepted. Wire objects are read through `deserialize_map` only, and a
//! request with an array where an object belongs is `400 bad_request`.

use std::fmt;
use std::marker::PhantomData;

use serde::de::value::MapAccessDeserializer;
use serde::de::{MapAccess, Visitor};

/// A wire object read from a JSON object only.
pub(crate) trait FromObject: Sized {
    /// What an error says was expected.
    const EXPECTING: &'static str;
    /// Reads the object's members.
    fn from_object<'de, A: MapAccess<'de>>(map: A) -> Result<Self, A::Error>;
}

/// The visitor that accepts a map and nothing else.
pub(crate) struct ObjectOnly<T>(pub(crate) PhantomData<T>);

impl<'de, T: FromObject> Visitor<'de> for ObjectOnly<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(T::EXPECTING)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
        T::from_object(map)
    }
}

/// Reads a map through the struct's derived (`remote = "Self"`) reader.
pub(crate) fn derived<'de, A, T, F>(map: A, read: F) -> Result<T, A::Error>
where
    A: MapAccess<'de>,
    F: FnOnce(MapAccessDeserializer<A>) -> Result<T, A::Error>,
{
    read(MapAccessDeserializer::new(map))
}

/// Implements `Serialize` (the derived form) and an object-only
/// `Deserialize` for structs derived with `#[serde(remote = "Self")]`.
macro_rules! objects_only {
    ($($ty:ident),* $(,)?) => {$(
        impl serde::Serialize for $ty {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                $ty::serialize(self, s)
            }
        }
        impl crate::strict::FromObject for $ty {
            const EXPECTING: &'static str = concat!("a JSON object (", stringify!($ty), ")");
            fn from_object<'de, A: serde::de::MapAccess<'de>>(map: A) -> Result<Self, A::Error> {
                crate::strict::derived(map, |d| $ty::deserialize(d))
            }
        }
        impl<'de> serde::Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                d.deserialize_map(crate::strict::ObjectOnly(std::marker::PhantomData))
            }
        }
    )*};
}
pub(crate) use objects_only;
