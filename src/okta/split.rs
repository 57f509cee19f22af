//! Splitting a System Log page (a JSON array of LogEvents) into the bytes of its elements.
//!
//! The poller fetches pages one after another, each request waiting for the previous page,
//! so whatever the fetch does with a page delays the next one. Each element is parsed
//! strictly later, when it is mapped (off that chain, while the next page is fetched); here only the
//! array's structure is read: strings are skipped to their closing quote, brackets counted,
//! and the top-level commas found. This is a few times faster than a validating parse of the
//! whole page, which measured about 6% of the poller's CPU (BENCHMARKS.md, issue 15). An
//! element that is not valid JSON is quarantined when it is mapped, like any event that does
//! not map, instead of failing its whole page again and again.

use bytes::Bytes;

/// Why a page body is not a JSON array of elements.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SplitError {
    /// What was wrong, and the byte offset where it was found.
    #[error("{what} at byte {at}")]
    Malformed {
        /// What the splitter expected or found.
        what: &'static str,
        /// Byte offset into the body.
        at: usize,
    },
}

fn malformed(what: &'static str, at: usize) -> SplitError {
    SplitError::Malformed { what, at }
}

/// The elements of the JSON array `body`, each the slice of `body` that holds it (no
/// surrounding whitespace, no copy).
pub fn split_array(body: &Bytes) -> Result<Vec<Bytes>, SplitError> {
    let bytes = &body[..];
    let mut at = skip_whitespace(bytes, 0);
    if bytes.get(at) != Some(&b'[') {
        return Err(malformed("expected `[`", at));
    }
    at = skip_whitespace(bytes, at + 1);
    let mut elements = Vec::new();
    if bytes.get(at) == Some(&b']') {
        return end(bytes, at + 1).map(|()| elements);
    }
    loop {
        let start = at;
        let (stop, last) = element_end(bytes, start)?;
        let trimmed = trim_end(bytes, start, stop);
        if trimmed == start {
            return Err(malformed("expected an element", start));
        }
        elements.push(body.slice(start..trimmed));
        if last {
            return end(bytes, stop + 1).map(|()| elements);
        }
        at = skip_whitespace(bytes, stop + 1);
    }
}

/// Finds the end of the element starting at `start`: the offset of the top-level `,` or `]`
/// after it, and whether that was the array's `]`.
fn element_end(bytes: &[u8], start: usize) -> Result<(usize, bool), SplitError> {
    let mut depth = 0usize;
    let mut at = start;
    while let Some(&byte) = bytes.get(at) {
        match byte {
            b'"' => at = string_end(bytes, at)?,
            b'{' | b'[' => depth += 1,
            b'}' | b']' if depth > 0 => depth -= 1,
            b']' => return Ok((at, true)),
            b'}' => return Err(malformed("unbalanced `}`", at)),
            b',' if depth == 0 => return Ok((at, false)),
            _ => {}
        }
        at += 1;
    }
    Err(malformed("unterminated array", bytes.len()))
}

/// The offset of the quote that closes the string opening at `open`.
fn string_end(bytes: &[u8], open: usize) -> Result<usize, SplitError> {
    let mut at = open + 1;
    loop {
        match memchr::memchr2(b'"', b'\\', &bytes[at.min(bytes.len())..]) {
            Some(found) if bytes[at + found] == b'"' => return Ok(at + found),
            // A backslash escapes the byte after it (a quote, or the first of `\uXXXX`).
            Some(found) => at += found + 2,
            None => return Err(malformed("unterminated string", open)),
        }
    }
}

/// Only whitespace may follow the array.
fn end(bytes: &[u8], after: usize) -> Result<(), SplitError> {
    let at = skip_whitespace(bytes, after);
    if at < bytes.len() {
        return Err(malformed("trailing characters", at));
    }
    Ok(())
}

fn is_whitespace(byte: u8) -> bool {
    matches!(byte, b' ' | b'\t' | b'\n' | b'\r')
}

fn skip_whitespace(bytes: &[u8], mut at: usize) -> usize {
    while bytes.get(at).copied().is_some_and(is_whitespace) {
        at += 1;
    }
    at
}

/// `stop` moved back over whitespace, no further than `start`.
fn trim_end(bytes: &[u8], start: usize, mut stop: usize) -> usize {
    while stop > start && is_whitespace(bytes[stop - 1]) {
        stop -= 1;
    }
    stop
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn split(text: &'static str) -> Result<Vec<String>, SplitError> {
        split_array(&Bytes::from_static(text.as_bytes())).map(|elements| {
            elements
                .iter()
                .map(|e| String::from_utf8(e.to_vec()).unwrap())
                .collect()
        })
    }

    #[test]
    fn elements_are_the_exact_slices_between_top_level_commas() {
        let text = " [ {\"uuid\":\"a\",\"x\":[1,{\"y\":\"]\"}]} ,{\"uuid\":\"b\\\"}\\\\\"}\n, 7 ,\"s,]\" ] ";
        assert_eq!(
            split(text).unwrap(),
            [
                r#"{"uuid":"a","x":[1,{"y":"]"}]}"#,
                r#"{"uuid":"b\"}\\"}"#,
                "7",
                r#""s,]""#
            ]
        );
        let body = Bytes::from_static(br#"[{"uuid":"a"}]"#);
        let elements = split_array(&body).unwrap();
        assert!(
            body.as_ptr_range().contains(&elements[0].as_ptr()),
            "a slice of the body, not a copy"
        );
        assert!(split(" [ ] ").unwrap().is_empty());
    }

    #[test]
    fn what_is_not_an_array_of_elements_is_named_with_its_offset() {
        let error = |text| split(text).unwrap_err().to_string();
        assert_eq!(error(r#"{"uuid":"a"}"#), "expected `[` at byte 0");
        assert_eq!(error(""), "expected `[` at byte 0");
        assert_eq!(error(r#"[{"uuid":"a"}"#), "unterminated array at byte 13");
        assert_eq!(error(r#"[{"uuid":"a}]"#), "unterminated string at byte 9");
        assert_eq!(error("[1,]"), "expected an element at byte 3");
        assert_eq!(error("[,1]"), "expected an element at byte 1");
        assert_eq!(error("[1]x"), "trailing characters at byte 3");
        assert_eq!(error("[1}]"), "unbalanced `}` at byte 2");
        assert_eq!(error("[\"\\"), "unterminated string at byte 1");
    }

    proptest! {
        /// On any array serde_json reads, the elements are exactly serde_json's, byte for byte.
        #[test]
        fn valid_arrays_split_as_serde_json_splits_them(
            values in prop::collection::vec(any::<(String, i64, bool)>(), 0..6),
            spaces in " {0,2}",
        ) {
            let elements: Vec<serde_json::Value> = values
                .iter()
                .map(|(s, n, b)| serde_json::json!({"uuid": s, "n": n, "list": [b, s, {"k": s}]}))
                .collect();
            let text = serde_json::to_string(&elements).unwrap().replace(',', &format!("{spaces},{spaces}"));
            let body = Bytes::from(text.clone());
            let ours = split_array(&body).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let theirs: Vec<&serde_json::value::RawValue> = serde_json::from_str(&text).unwrap();
            let ours: Vec<&[u8]> = ours.iter().map(|e| &e[..]).collect();
            let theirs: Vec<&[u8]> = theirs.iter().map(|e| e.get().as_bytes()).collect();
            prop_assert_eq!(ours, theirs);
        }

        /// Any bytes at all: an answer, never a panic.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
            let _ = split_array(&Bytes::from(bytes));
        }
    }
}
