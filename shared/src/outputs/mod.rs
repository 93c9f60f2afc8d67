//! Finding the files in a job's output.
//!
//! Replicate's `output` may be a URL string, a list of URLs, URLs nested in an object (a
//! training's `weights`), `data:` URIs, or plain text and token lists, which are not files.

pub mod copy;
pub mod hosts;

use serde_json::Value;

/// Whether a string in an output is a file to keep (a URL or a `data:` URI), as opposed
/// to text the model produced.
pub fn is_file_reference(s: &str) -> bool {
    let s = s.trim_start();
    let has_scheme = |scheme: &str| {
        s.get(..scheme.len())
            .is_some_and(|head| head.eq_ignore_ascii_case(scheme))
    };
    // A whole-string URL with no whitespace; a sentence that mentions a URL is text.
    (has_scheme("https://") || has_scheme("http://") || has_scheme("data:"))
        && !s.trim_end().contains(char::is_whitespace)
}

/// Whether the JSON text `raw` could hold a file reference: it names a scheme
/// [`is_file_reference`] accepts (any case), or escapes a character with `\u`, which could
/// spell one. A cheap scan, so that a long token list is never built into a tree just to
/// learn it has no files; when it answers true, [`file_references`] decides.
pub fn may_reference_files(raw: &str) -> bool {
    let bytes = raw.as_bytes();
    // memchr jumps between the few colons and backslashes instead of testing every byte.
    memchr::memchr2_iter(b':', b'\\', bytes).any(|i| {
        if bytes[i] == b'\\' {
            return bytes.get(i + 1) == Some(&b'u');
        }
        ["http", "https", "data"].iter().any(|scheme| {
            i.checked_sub(scheme.len())
                .and_then(|start| bytes.get(start..i))
                .is_some_and(|head| head.eq_ignore_ascii_case(scheme.as_bytes()))
        })
    })
}

/// Every file reference in `output`, depth first in document order.
pub fn file_references(output: &Value) -> Vec<&str> {
    let mut found = Vec::new();
    collect(output, &mut found);
    found
}

fn collect<'a>(value: &'a Value, found: &mut Vec<&'a str>) {
    match value {
        Value::String(s) if is_file_reference(s) => found.push(s),
        Value::Array(items) => items.iter().for_each(|v| collect(v, found)),
        Value::Object(map) => map.values().for_each(|v| collect(v, found)),
        _ => {}
    }
}

/// `output` with its file references replaced, in the order [`file_references`] lists
/// them, by `stored`; a reference whose entry is `None` (not a file we may fetch) stays as
/// it was received.
pub fn rewrite(output: &Value, stored: &[Option<String>]) -> Value {
    let mut next = stored.iter();
    replace(output, &mut next)
}

fn replace<'a>(value: &Value, next: &mut impl Iterator<Item = &'a Option<String>>) -> Value {
    match value {
        Value::String(s) if is_file_reference(s) => match next.next() {
            Some(Some(url)) => Value::String(url.clone()),
            _ => value.clone(),
        },
        Value::Array(items) => Value::Array(items.iter().map(|v| replace(v, next)).collect()),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), replace(v, next)))
                .collect(),
        ),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_raw_scan_never_misses_a_file() {
        let with_files = [
            json!("https://replicate.delivery/a.png"),
            json!(["  HTTP://example.com/x.wav"]),
            json!({"weights": "Data:application/octet-stream;base64,AA=="}),
        ];
        for output in &with_files {
            assert!(!file_references(output).is_empty(), "{output}");
            assert!(may_reference_files(&output.to_string()), "{output}");
        }
        // A scheme spelled with escapes still reaches the full check.
        let escaped = r#"["\u0068ttps://replicate.delivery/a.png"]"#;
        let tree: Value = serde_json::from_str(escaped).unwrap();
        assert_eq!(file_references(&tree).len(), 1);
        assert!(may_reference_files(escaped));
        // Token lists and prose without a scheme are skipped.
        assert!(!may_reference_files(r#"["Hello", " world", ":", " done"]"#));
        assert!(!may_reference_files(r#""ratio 16:9, note: none""#));
    }

    #[test]
    fn finds_files_in_every_shape() {
        assert_eq!(
            file_references(&json!("https://replicate.delivery/xezq/a/out.png")),
            vec!["https://replicate.delivery/xezq/a/out.png"]
        );
        assert_eq!(
            file_references(&json!([
                "https://a.replicate.delivery/1.png",
                "data:text/plain;base64,aGk="
            ]))
            .len(),
            2
        );
        assert_eq!(
            file_references(
                &json!({"version": "abc", "weights": "https://replicate.delivery/w.tar"})
            ),
            vec!["https://replicate.delivery/w.tar"]
        );
    }

    #[test]
    fn rewrite_keeps_the_shape() {
        let output = json!({"version": "v", "weights": "https://replicate.delivery/w.tar", "extra": ["data:,x", 3]});
        let stored = vec![
            Some("s3://b/0.txt".to_owned()),
            Some("s3://b/1.tar".to_owned()),
        ];
        // Document order of serde_json's map is key order: extra, version, weights.
        assert_eq!(
            rewrite(&output, &stored),
            json!({"version": "v", "weights": "s3://b/1.tar", "extra": ["s3://b/0.txt", 3]})
        );
        // A value that was not stored stays exactly as received.
        assert_eq!(
            rewrite(&output, &[None, Some("s3://b/1.tar".to_owned())]),
            json!({"version": "v", "weights": "s3://b/1.tar", "extra": ["data:,x", 3]})
        );
    }

    #[test]
    fn text_and_tokens_are_not_files() {
        assert!(file_references(&json!("A cat on a mat")).is_empty());
        assert!(file_references(&json!(["The", " answer", " is https://x.y"])).is_empty());
        assert!(file_references(&json!("see https://replicate.delivery/a.png for it")).is_empty());
        assert!(file_references(&json!(null)).is_empty());
        assert!(file_references(&json!({"version": "abc123"})).is_empty());
    }
}
