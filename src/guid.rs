//! Azure GUIDs: parsed once where input enters, in any letter case; compared by value (so
//! case-insensitively by construction) and shown lower-case.

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
}

impl fmt::Display for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v = self.0;
        write!(
            f,
            "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
            v >> 96,
            (v >> 80) & 0xffff,
            (v >> 64) & 0xffff,
            (v >> 48) & 0xffff,
            v & 0xffff_ffff_ffff
        )
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

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

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

    proptest! {
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
        }

        #[test]
        fn any_text_that_parses_displays_as_itself_in_lower_case(text in "[0-9a-fA-F-]{30,40}") {
            if let Some(guid) = Guid::parse(&text) {
                prop_assert_eq!(guid.to_string(), text.to_ascii_lowercase());
            }
        }
    }
}
