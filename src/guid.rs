//! Azure GUIDs: accepted in any letter case, compared case-insensitively, shown lower-case.

/// Whether `s` has the 8-4-4-4-12 hexadecimal shape of a GUID.
pub fn is_guid(s: &str) -> bool {
    let bytes = s.as_bytes();
    bytes.len() == 36
        && bytes.iter().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => *b == b'-',
            _ => b.is_ascii_hexdigit(),
        })
}

/// The canonical (lower-case) form of a GUID, or `None` when `s` is not one.
pub fn normalize(s: &str) -> Option<String> {
    is_guid(s).then(|| s.to_ascii_lowercase())
}

/// Case-insensitive GUID equality (plain string equality for non-GUIDs).
pub fn eq(a: &str, b: &str) -> bool {
    a.eq_ignore_ascii_case(b)
}

#[cfg(test)]
mod tests {
    use super::*;

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
        ];
        for (input, want) in cases {
            assert_eq!(is_guid(input), want, "{input:?}");
        }
    }

    #[test]
    fn normalizes_to_lower_case() {
        assert_eq!(
            normalize("E09A4E93-29a7-4EBA-a7f2-3B2C1D0E9F8A").as_deref(),
            Some("e09a4e93-29a7-4eba-a7f2-3b2c1d0e9f8a")
        );
        assert_eq!(normalize("not-a-guid"), None);
        assert!(eq("ABC", "abc"));
    }
}
