//! Azure GUIDs: parsed once where input enters, in any letter case; compared by value (so
//! case-insensitively by construction) and shown lower-case.
//!
//! [`Guid`] is what validated input holds (catalog entries, http and ARM answers, a spec field
//! once rule 0 passed). [`GuidText`] is what a spec field documented as a GUID holds before any
//! rule judged it: an object stored before admission checked the shape may hold other text, and
//! the rules that do not reject it (a Registration's cloudId and subscriptionId, the indexes)
//! compare that text as they always did, ignoring ASCII letter case. This module is the only
//! place where GUID text is lower-cased or compared case-insensitively.

use std::{fmt, str::FromStr};

/// A GUID in the 8-4-4-4-12 hexadecimal form, held as its 128 bits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Guid(u128);

/// Why a text is not a [`Guid`]; the text is quoted as written.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
#[error("{0:?} is not a GUID")]
pub struct NotAGuid(pub String);

impl Guid {
    /// The GUID `s` spells (any letter case), `None` when `s` is not one.
    pub fn parse(s: &str) -> Option<Self> {
        let bytes = s.as_bytes();
        if bytes.len() != 36 {
            return None;
        }
        let mut value = 0u128;
        for (i, b) in bytes.iter().enumerate() {
            if matches!(i, 8 | 13 | 18 | 23) {
                if *b != b'-' {
                    return None;
                }
                continue;
            }
            let nibble = char::from(*b).to_digit(16)?;
            value = value << 4 | u128::from(nibble);
        }
        Some(Self(value))
    }

    /// The 128 bits, first hex digit most significant.
    pub fn as_u128(self) -> u128 {
        self.0
    }

    /// The GUID of these 128 bits (the inverse of [`Guid::as_u128`]).
    pub const fn from_u128(bits: u128) -> Self {
        Self(bits)
    }
}

impl Guid {
    /// The lower-case 8-4-4-4-12 text, on the stack: a usage record shows several GUIDs, and
    /// a formatter each was a measurable share of its cost.
    pub fn text(self) -> GuidStr {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut text = [b'-'; 36];
        let mut shift = 128;
        for (i, byte) in text.iter_mut().enumerate() {
            if matches!(i, 8 | 13 | 18 | 23) {
                continue;
            }
            shift -= 4;
            *byte = DIGITS[((self.0 >> shift) & 0xf) as usize];
        }
        GuidStr(text)
    }
}

/// A [`Guid`]'s text (see [`Guid::text`]).
#[derive(Clone, Copy)]
pub struct GuidStr([u8; 36]);

impl GuidStr {
    pub fn as_str(&self) -> &str {
        // Only ASCII hex digits and dashes are ever written into it.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Display for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.text().as_str())
    }
}

impl fmt::Debug for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Guid({self})")
    }
}

impl FromStr for Guid {
    type Err = NotAGuid;
    fn from_str(s: &str) -> Result<Self, NotAGuid> {
        Self::parse(s).ok_or_else(|| NotAGuid(s.to_string()))
    }
}

impl serde::Serialize for Guid {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Guid {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// The text of a spec field documented as a GUID: the [`Guid`] when it is one, else the text
/// itself (ASCII lower-cased). Two values are equal exactly when their texts are equal ignoring
/// ASCII letter case; it shows as the text in ASCII lower case (for a GUID, its display).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum GuidText {
    Guid(Guid),
    /// Not a GUID: the text, ASCII lower-cased.
    Other(Box<str>),
}

impl GuidText {
    pub fn parse(text: &str) -> Self {
        match Guid::parse(text) {
            Some(guid) => Self::Guid(guid),
            None => Self::Other(text.to_ascii_lowercase().into()),
        }
    }

    /// The GUID, when the text is one.
    pub fn guid(&self) -> Option<Guid> {
        match self {
            Self::Guid(guid) => Some(*guid),
            Self::Other(_) => None,
        }
    }
}

impl From<Guid> for GuidText {
    fn from(guid: Guid) -> Self {
        Self::Guid(guid)
    }
}

impl From<&str> for GuidText {
    fn from(text: &str) -> Self {
        Self::parse(text)
    }
}

impl From<&String> for GuidText {
    fn from(text: &String) -> Self {
        Self::parse(text)
    }
}

impl fmt::Display for GuidText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Guid(guid) => fmt::Display::fmt(guid, f),
            Self::Other(text) => f.write_str(text),
        }
    }
}

impl fmt::Debug for GuidText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Guid(guid) => fmt::Debug::fmt(guid, f),
            Self::Other(text) => write!(f, "GuidText({text:?})"),
        }
    }
}

impl serde::Serialize for GuidText {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for GuidText {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        Ok(Self::parse(&text))
    }
}

/// The GUID a test writes as text.
#[cfg(test)]
pub(crate) fn g(text: &str) -> Guid {
    Guid::parse(text).unwrap_or_else(|| panic!("{text:?} is not a GUID"))
}

#[cfg(test)]
mod tests {
    use std::hash::{BuildHasher, RandomState};

    use proptest::prelude::*;

    use super::*;

    fn hash_of<T: std::hash::Hash>(hasher: &RandomState, value: &T) -> u64 {
        hasher.hash_one(value)
    }

    /// `text` with the letters at the positions `upper` marks flipped in case.
    fn flip_case(text: &str, upper: &[bool]) -> String {
        text.chars()
            .zip(upper.iter().chain(std::iter::repeat(&false)))
            .map(|(c, flip)| match (flip, c.is_ascii_uppercase()) {
                (false, _) => c,
                (true, true) => c.to_ascii_lowercase(),
                (true, false) => c.to_ascii_uppercase(),
            })
            .collect()
    }

    const A: &str = "e09a4e93-29a7-4eba-a7f2-3b2c1d0e9f8a";

    #[test]
    fn shapes() {
        let cases = [
            ("e09a4e93-29a7-4eba-a7f2-3b2c1d0e9f8a", true),
            ("E09A4E93-29A7-4EBA-A7F2-3B2C1D0E9F8A", true),
            ("e09a4e93-29a7-4eba-a7f2-3b2c1d0e9f8", false),
            ("e09a4e93-29a7-4eba-a7f2-3b2c1d0e9f8aa", false),
            ("e09a4e9329a74ebaa7f23b2c1d0e9f8a", false),
            ("g09a4e93-29a7-4eba-a7f2-3b2c1d0e9f8a", false),
            ("{e09a4e93-29a7-4eba-a7f2-3b2c1d0e9f8a}", false),
            ("e09a4e93_29a7-4eba-a7f2-3b2c1d0e9f8a", false),
            ("", false),
            ("é09a4e93-29a7-4eba-a7f2-3b2c1d0e9f8", false),
            ("+09a4e93-29a7-4eba-a7f2-3b2c1d0e9f8a", false),
            ("e09a4e93-29a7-4eba-a7f2+3b2c1d0e9f8a", false),
            // No trimming: whitespace around a GUID makes it another text.
            (" e09a4e93-29a7-4eba-a7f2-3b2c1d0e9f8a", false),
            ("e09a4e93-29a7-4eba-a7f2-3b2c1d0e9f8a ", false),
            ("e09a4e93-29a7-4eba-a7f2-3b2c1d0e9f8a\n", false),
            ("\te09a4e93-29a7-4eba-a7f2-3b2c1d0e9f8", false),
            ("e09a4e93-29a7-4eba-a7f2-3b2c1d0e 9f8", false),
            ("e09a4e93-29A7-4EBA-a7f2-3b2c1D0E9F8A", true),
            ("{E09A4E93-29A7-4EBA-A7F2-3B2C1D0E9F8A}", false),
            ("(e09a4e93-29a7-4eba-a7f2-3b2c1d0e9f8a)", false),
            ("urn:uuid:e09a4e93-29a7-4eba-a7f2-3b2c1d0e9f8a", false),
            ("not-a-guid", false),
        ];
        for (input, want) in cases {
            assert_eq!(Guid::parse(input).is_some(), want, "{input:?}");
        }
    }

    #[test]
    fn normalizes_to_lower_case() {
        let cases = [
            ("E09A4E93-29a7-4EBA-a7f2-3B2C1D0E9F8A", A),
            (A, A),
            (
                "00000000-0000-0000-0000-000000000000",
                "00000000-0000-0000-0000-000000000000",
            ),
            (
                "FFFFFFFF-ffff-FFFF-ffff-FFFFFFFFFFFF",
                "ffffffff-ffff-ffff-ffff-ffffffffffff",
            ),
        ];
        for (input, want) in cases {
            let guid = Guid::parse(input).expect("a GUID");
            assert_eq!(guid.to_string(), want, "{input:?}");
            assert_eq!(format!("{guid:?}"), format!("Guid({want})"));
        }
        assert_eq!(
            Guid::parse(A).map(Guid::as_u128),
            Some(0xe09a4e93_29a7_4eba_a7f2_3b2c1d0e9f8a)
        );
        assert_eq!(
            "not-a-guid".parse::<Guid>(),
            Err(NotAGuid("not-a-guid".to_string()))
        );
        assert_eq!(NotAGuid("x".into()).to_string(), r#""x" is not a GUID"#);
        assert_eq!(Guid::parse(A), Guid::parse(&A.to_uppercase()));
    }

    #[test]
    fn serde_reads_any_case_and_writes_lower_case() {
        let guid: Guid = serde_json::from_str(&format!("\"{}\"", A.to_uppercase())).unwrap();
        assert_eq!(serde_json::to_string(&guid).unwrap(), format!("\"{A}\""));
        let error = serde_json::from_str::<Guid>("\"abc\"").unwrap_err();
        assert!(
            error.to_string().contains(r#""abc" is not a GUID"#),
            "{error}"
        );
    }

    #[test]
    fn guid_text_keeps_what_is_not_a_guid() {
        let guid = Guid::parse(A).expect("a GUID");
        let cases = [
            (A, GuidText::Guid(guid)),
            ("E09A4E93-29A7-4EBA-A7F2-3B2C1D0E9F8A", GuidText::Guid(guid)),
            ("Not-A-GUID", GuidText::Other("not-a-guid".into())),
            (
                " e09a4e93-29a7-4eba-a7f2-3b2c1d0e9f8a",
                GuidText::Other(format!(" {A}").into()),
            ),
            ("", GuidText::Other("".into())),
            ("ÉTÉ", GuidText::Other("ÉtÉ".into())),
        ];
        for (input, want) in cases {
            assert_eq!(GuidText::parse(input), want, "{input:?}");
            assert_eq!(GuidText::from(input), want, "{input:?}");
        }
        assert_eq!(GuidText::from(guid), GuidText::parse(A));
        assert_eq!(GuidText::parse(A).guid(), Some(guid));
        assert_eq!(GuidText::parse("x").guid(), None);
        assert_eq!(format!("{:?}", GuidText::parse(A)), format!("Guid({A})"));
        assert_eq!(format!("{:?}", GuidText::parse("X")), r#"GuidText("x")"#);
        assert_ne!(GuidText::parse("x"), GuidText::parse("y"));
        let json = serde_json::to_string(&GuidText::parse("NOT")).unwrap();
        assert_eq!(json, r#""not""#);
        let read: GuidText = serde_json::from_str(&format!("\"{}\"", A.to_uppercase())).unwrap();
        assert_eq!(read, GuidText::Guid(guid));
    }

    proptest! {
        #[test]
        fn the_text_is_the_formatted_hex_of_the_bits(bits in any::<u128>()) {
            let formatted = format!(
                "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
                bits >> 96,
                (bits >> 80) & 0xffff,
                (bits >> 64) & 0xffff,
                (bits >> 48) & 0xffff,
                bits & 0xffff_ffff_ffff
            );
            let text = Guid(bits).text();
            prop_assert_eq!(text.as_str(), formatted.as_str());
            prop_assert_eq!(Guid(bits).to_string(), formatted);
        }

        #[test]
        fn display_parses_back_and_letter_case_does_not_matter(
            bits in any::<u128>(),
            upper in prop::collection::vec(any::<bool>(), 36),
        ) {
            let guid = Guid(bits);
            let text = guid.to_string();
            prop_assert_eq!(Guid::parse(&text), Some(guid));
            prop_assert_eq!(&text, &text.to_ascii_lowercase());
            let mixed: String = text
                .chars()
                .zip(&upper)
                .map(|(c, up)| if *up { c.to_ascii_uppercase() } else { c })
                .collect();
            prop_assert_eq!(Guid::parse(&mixed), Some(guid));
            let hasher = RandomState::new();
            let other = Guid::parse(&mixed).expect("parses");
            prop_assert_eq!(hash_of(&hasher, &other), hash_of(&hasher, &guid));
            prop_assert_eq!(other, guid);
        }

        #[test]
        fn two_spellings_differing_only_in_case_are_one_guid(
            bits in any::<u128>(),
            first in prop::collection::vec(any::<bool>(), 36),
            second in prop::collection::vec(any::<bool>(), 36),
        ) {
            let text = Guid(bits).to_string();
            let (a, b) = (flip_case(&text, &first), flip_case(&text, &second));
            let (a, b) = (Guid::parse(&a).expect("a"), Guid::parse(&b).expect("b"));
            let hasher = RandomState::new();
            prop_assert_eq!(a, b);
            prop_assert_eq!(hash_of(&hasher, &a), hash_of(&hasher, &b));
            prop_assert_eq!(a.cmp(&b), std::cmp::Ordering::Equal);
        }

        /// GuidText compares exactly as the code before it did (`eq_ignore_ascii_case`) and shows
        /// as it did (`to_ascii_lowercase`), for GUIDs and for any other text.
        #[test]
        fn guid_text_is_the_text_ignoring_ascii_case(
            text in prop_oneof![
                "[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}",
                "[0-9a-fA-F -]{0,40}",
                "\\PC{0,40}",
            ],
            other in "[0-9a-fA-F -]{0,40}",
            flips in prop::collection::vec(any::<bool>(), 40),
        ) {
            let hasher = RandomState::new();
            let parsed = GuidText::parse(&text);
            prop_assert_eq!(parsed.to_string(), text.to_ascii_lowercase());
            prop_assert_eq!(parsed.guid(), Guid::parse(&text));
            let flipped = GuidText::parse(&flip_case(&text, &flips));
            prop_assert_eq!(&flipped, &parsed);
            prop_assert_eq!(hash_of(&hasher, &flipped), hash_of(&hasher, &parsed));
            prop_assert_eq!(
                GuidText::parse(&other) == parsed,
                other.eq_ignore_ascii_case(&text)
            );
        }

        #[test]
        fn any_text_that_parses_displays_as_itself_in_lower_case(text in "[0-9a-fA-F-]{30,40}") {
            if let Some(guid) = Guid::parse(&text) {
                prop_assert_eq!(guid.to_string(), text.to_ascii_lowercase());
            }
        }
    }
}
