//! The smallest safe wrapper of libyaml's event parser (`unsafe-libyaml`, the parser inside
//! serde_yaml): one event at a time, nothing kept after it.
//!
//! Events that the catalog reader does not handle itself — anchors, aliases and tags — are
//! reported as [`Unsupported`], like a syntax error: the caller then leaves the whole document
//! to serde_yaml, which defines what a catalog document means and words every error.

use std::{marker::PhantomData, mem::MaybeUninit};

/// The document needs the reference parser (serde_yaml): it is malformed, or uses anchors,
/// aliases or tags.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Unsupported;

/// One parsing event; a scalar's text borrows the parser until the next event.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Event<'a> {
    StreamStart,
    StreamEnd,
    DocumentStart,
    DocumentEnd,
    /// `plain`: written without quotes or block indicators (only plain scalars are resolved
    /// to null, numbers and booleans).
    Scalar {
        value: &'a str,
        plain: bool,
    },
    SequenceStart,
    SequenceEnd,
    MappingStart,
    MappingEnd,
}

pub(super) struct Parser<'input> {
    // Boxed so that it never moves: libyaml keeps a pointer to the parser inside it.
    sys: Box<MaybeUninit<unsafe_libyaml::yaml_parser_t>>,
    // The current event (if `live`), deleted before the next one is parsed and on drop.
    event: unsafe_libyaml::yaml_event_t,
    live: bool,
    // libyaml reads from the input until the parser is deleted.
    _input: PhantomData<&'input [u8]>,
}

impl<'input> Parser<'input> {
    pub(super) fn new(input: &'input str) -> Self {
        let mut parser = Box::new(MaybeUninit::<unsafe_libyaml::yaml_parser_t>::uninit());
        // SAFETY: `yaml_parser_initialize` fully initializes the (boxed, hence pinned) parser;
        // the input outlives it (`'input`) and is valid UTF-8, the encoding set here.
        unsafe {
            let raw = parser.as_mut_ptr();
            let initialized = unsafe_libyaml::yaml_parser_initialize(raw);
            assert!(initialized.ok, "libyaml could not initialize a parser");
            unsafe_libyaml::yaml_parser_set_encoding(raw, unsafe_libyaml::YAML_UTF8_ENCODING);
            unsafe_libyaml::yaml_parser_set_input_string(raw, input.as_ptr(), input.len() as u64);
        }
        Self {
            sys: parser,
            // SAFETY: all zeroes is a valid event (`YAML_NO_EVENT`, null pointers).
            event: unsafe { std::mem::zeroed() },
            live: false,
            _input: PhantomData,
        }
    }

    /// The next event. After an `Err` the parser must not be used again.
    pub(super) fn next(&mut self) -> Result<Event<'_>, Unsupported> {
        self.delete_event();
        // SAFETY: the parser was initialized in `new`; on success the event owns buffers
        // until `yaml_event_delete`, which `delete_event` calls exactly once.
        let parsed =
            unsafe { unsafe_libyaml::yaml_parser_parse(self.sys.as_mut_ptr(), &mut self.event) };
        if parsed.fail {
            return Err(Unsupported);
        }
        self.live = true;
        let event = &self.event;
        // SAFETY: the union member read is the one `type_` names; the pointers are libyaml's
        // NUL-terminated strings or null, and `value` has `length` bytes; all live until the
        // event is deleted, which needs `&mut self`.
        unsafe {
            Ok(match event.type_ {
                unsafe_libyaml::YAML_STREAM_START_EVENT => Event::StreamStart,
                unsafe_libyaml::YAML_STREAM_END_EVENT => Event::StreamEnd,
                unsafe_libyaml::YAML_DOCUMENT_START_EVENT => Event::DocumentStart,
                unsafe_libyaml::YAML_DOCUMENT_END_EVENT => Event::DocumentEnd,
                unsafe_libyaml::YAML_SCALAR_EVENT => {
                    let scalar = &event.data.scalar;
                    if !scalar.anchor.is_null() || !scalar.tag.is_null() {
                        return Err(Unsupported);
                    }
                    let bytes = if scalar.length == 0 {
                        &[][..]
                    } else {
                        std::slice::from_raw_parts(scalar.value, scalar.length as usize)
                    };
                    Event::Scalar {
                        value: std::str::from_utf8(bytes).map_err(|_| Unsupported)?,
                        plain: scalar.style == unsafe_libyaml::YAML_PLAIN_SCALAR_STYLE,
                    }
                }
                unsafe_libyaml::YAML_SEQUENCE_START_EVENT => {
                    let start = &event.data.sequence_start;
                    if !start.anchor.is_null() || !start.tag.is_null() {
                        return Err(Unsupported);
                    }
                    Event::SequenceStart
                }
                unsafe_libyaml::YAML_SEQUENCE_END_EVENT => Event::SequenceEnd,
                unsafe_libyaml::YAML_MAPPING_START_EVENT => {
                    let start = &event.data.mapping_start;
                    if !start.anchor.is_null() || !start.tag.is_null() {
                        return Err(Unsupported);
                    }
                    Event::MappingStart
                }
                unsafe_libyaml::YAML_MAPPING_END_EVENT => Event::MappingEnd,
                // Aliases, and "no event" (asked past the end of the stream).
                _ => return Err(Unsupported),
            })
        }
    }

    fn delete_event(&mut self) {
        if std::mem::take(&mut self.live) {
            // SAFETY: the event came from a successful `yaml_parser_parse` and is deleted once.
            unsafe { unsafe_libyaml::yaml_event_delete(&mut self.event) };
        }
    }
}

impl Drop for Parser<'_> {
    fn drop(&mut self) {
        self.delete_event();
        // SAFETY: initialized in `new`, deleted once.
        unsafe { unsafe_libyaml::yaml_parser_delete(self.sys.as_mut_ptr()) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(text: &str) -> Result<Vec<String>, Unsupported> {
        let mut parser = Parser::new(text);
        let mut out = Vec::new();
        loop {
            let event = parser.next()?;
            let end = event == Event::StreamEnd;
            out.push(format!("{event:?}"));
            if end {
                return Ok(out);
            }
        }
    }

    #[test]
    fn reads_events_and_refuses_anchors_aliases_tags_and_errors() {
        assert_eq!(
            events("a: [x, 'y']\n").expect("valid"),
            [
                "StreamStart",
                "DocumentStart",
                "MappingStart",
                r#"Scalar { value: "a", plain: true }"#,
                "SequenceStart",
                r#"Scalar { value: "x", plain: true }"#,
                r#"Scalar { value: "y", plain: false }"#,
                "SequenceEnd",
                "MappingEnd",
                "DocumentEnd",
                "StreamEnd",
            ]
        );
        assert_eq!(events("").expect("valid"), ["StreamStart", "StreamEnd"]);
        for text in [
            "a: &x 1\n",
            "a: &x [1]\n",
            "a: &x {b: 1}\n",
            "a: !!str 1\n",
            "a: !custom {b: 1}\n",
            "a: !!seq []\n",
            "a: [",
            "a: \"unterminated\n",
        ] {
            assert_eq!(events(text), Err(Unsupported), "{text:?}");
        }
        let mut parser = Parser::new("- &a x\n- *a\n");
        assert_eq!(parser.next(), Ok(Event::StreamStart));
        assert_eq!(parser.next(), Ok(Event::DocumentStart));
        assert_eq!(parser.next(), Ok(Event::SequenceStart));
        assert_eq!(parser.next(), Err(Unsupported), "anchor");
    }
}
