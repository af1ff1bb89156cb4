//! Text read from a JSON document without copying it: borrowed from the document unless it
//! has escapes. serde's own `Cow<str>` borrows only as a field of its own; inside an `Option`
//! (or a `Vec`) it always copies, which for a page of usage records was every property of
//! every record.

use std::{borrow::Cow, fmt};

use serde::de::{self, Deserialize, Deserializer, IgnoredAny, Visitor};

/// A JSON string; any other JSON type is an error, as it is for a `String`.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Str<'a>(pub Cow<'a, str>);

impl Str<'_> {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

struct StrVisitor;

impl<'de> Visitor<'de> for StrVisitor {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v))
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Str<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(StrVisitor).map(Str)
    }
}

/// A value of any JSON type, kept only when it is a string: what a property read as a
/// `serde_json::Value` and then asked `as_str()` gives, without building the value.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct AnyText<'a>(pub Option<Cow<'a, str>>);

impl AnyText<'_> {
    /// The text, `""` when the value was absent or not a string.
    pub fn text(&self) -> &str {
        self.0.as_deref().unwrap_or("")
    }
}

struct AnyTextVisitor;

impl<'de> Visitor<'de> for AnyTextVisitor {
    type Value = Option<Cow<'de, str>>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Some(Cow::Borrowed(v)))
    }

    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Some(Cow::Owned(v.to_owned())))
    }

    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(Some(Cow::Owned(v)))
    }

    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_none<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(None)
    }

    fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(None)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for AnyText<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(AnyTextVisitor).map(AnyText)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde::Deserialize;
    use serde_json::{Value, json};

    use super::*;

    #[derive(Deserialize)]
    struct Both<'a> {
        #[serde(borrow, default)]
        s: Option<Str<'a>>,
        #[serde(borrow, default)]
        any: AnyText<'a>,
    }

    #[test]
    fn plain_strings_are_borrowed_escaped_ones_copied() {
        let text = r#"{"s":"plain","any":"a\"b"}"#;
        let both: Both = serde_json::from_str(text).unwrap();
        assert!(matches!(both.s, Some(Str(Cow::Borrowed("plain")))));
        assert!(matches!(&both.any.0, Some(Cow::Owned(t)) if t == "a\"b"));
        let none: Both = serde_json::from_str("{}").unwrap();
        assert_eq!((none.s, none.any.text()), (None, ""));
    }

    #[test]
    fn str_refuses_what_a_string_refuses() {
        for value in [json!(1), json!(true), json!([]), json!({})] {
            let text = json!({ "s": value }).to_string();
            assert!(serde_json::from_str::<Both>(&text).is_err(), "{text}");
            assert!(serde_json::from_str::<Option<String>>(&value.to_string()).is_err());
        }
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            (-1e300f64..1e300).prop_map(Value::from),
            ".{0,12}".prop_map(Value::from),
        ];
        leaf.prop_recursive(3, 16, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map(".{0,4}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// What the records' properties were read as before: a `Value`, then `as_str()`.
        #[test]
        fn any_text_is_the_values_string_or_nothing(value in json_value()) {
            let text = json!({ "any": value }).to_string();
            let both: Both = serde_json::from_str(&text).unwrap();
            prop_assert_eq!(both.any.0.as_deref(), value.as_str());
        }
    }
}
