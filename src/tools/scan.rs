//! Reading JSON out of model text that is still growing: where a value ends (if it has
//! ended yet) and what one call object `{"name": ..., "arguments": ...}` holds so far.
//!
//! Owns: a tolerant byte scanner (strings with escapes, nesting, scalars). Must not: know any
//! model's markup (`format` does) or decide what is sent (`stream` does).

/// What a growing call object holds so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallScan {
    /// The function name, once its string has closed.
    pub name: Option<String>,
    /// The arguments' raw JSON text so far (a prefix of the final text while incomplete).
    pub args: Option<String>,
    /// The arguments value has ended.
    pub args_complete: bool,
    /// The arguments were given as a JSON string holding JSON (decoded once complete).
    pub args_quoted: bool,
    /// The text is not a call object.
    pub invalid: bool,
}

pub fn skip_ws(s: &[u8], mut i: usize) -> usize {
    while i < s.len() && s[i].is_ascii_whitespace() {
        i += 1;
    }
    i
}

/// The end (exclusive) of the JSON string starting at `s[i] == b'"'`, if it has closed.
fn string_end(s: &[u8], i: usize) -> Option<usize> {
    let mut j = i + 1;
    while j < s.len() {
        match s[j] {
            b'\\' => j += 2,
            b'"' => return Some(j + 1),
            _ => j += 1,
        }
    }
    None
}

/// The end (exclusive) of the JSON value starting at `i`, or `None` while it is incomplete.
/// A scalar at the very end of the text is incomplete unless `complete` (more digits may come).
pub fn value_end(s: &[u8], i: usize, complete: bool) -> Option<usize> {
    match s.get(i)? {
        b'"' => string_end(s, i),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut j = i;
            while j < s.len() {
                match s[j] {
                    b'"' => {
                        j = string_end(s, j)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(j + 1);
                        }
                    }
                    _ => {}
                }
                j += 1;
            }
            None
        }
        _ => {
            let end = (i..s.len())
                .find(|&j| matches!(s[j], b',' | b'}' | b']') || s[j].is_ascii_whitespace())
                .unwrap_or(s.len());
            (end < s.len() || complete).then_some(end)
        }
    }
}

/// Scan one call object at the start of `text` (after whitespace). `arg_keys` are the names
/// the format uses for the arguments (`arguments`, or `parameters` for Llama 3).
pub fn call(text: &str, arg_keys: &[&str], complete: bool) -> CallScan {
    let s = text.as_bytes();
    let mut out = CallScan::default();
    let mut i = skip_ws(s, 0);
    match s.get(i) {
        None => return out,
        Some(b'{') => i += 1,
        Some(_) => {
            out.invalid = true;
            return out;
        }
    }
    loop {
        i = skip_ws(s, i);
        match s.get(i) {
            None | Some(b'}') => return out,
            Some(b',') => {
                i += 1;
                continue;
            }
            Some(b'"') => {}
            Some(_) => {
                out.invalid = true;
                return out;
            }
        }
        let Some(key_end) = string_end(s, i) else { return out };
        let key: String = serde_json::from_str(&text[i..key_end]).unwrap_or_default();
        i = skip_ws(s, key_end);
        match s.get(i) {
            None => return out,
            Some(b':') => i = skip_ws(s, i + 1),
            Some(_) => {
                out.invalid = true;
                return out;
            }
        }
        if i >= s.len() {
            return out;
        }
        let end = value_end(s, i, complete);
        if key == "name" {
            let Some(end) = end else { return out };
            match serde_json::from_str::<String>(&text[i..end]) {
                Ok(name) => out.name = Some(name),
                Err(_) => out.invalid = true,
            }
        } else if arg_keys.contains(&key.as_str()) {
            out.args_quoted = s[i] == b'"';
            out.args = Some(text[i..end.unwrap_or(s.len())].to_string());
            out.args_complete = end.is_some();
        }
        match end {
            Some(e) => i = e,
            None => return out,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_end_where_json_says() {
        let s = br#"{"a": "x}\"", "b": [1, {"c": 2}]} tail"#;
        assert_eq!(value_end(s, 0, false), Some(33));
        assert_eq!(value_end(br#"{"a": "x}"#, 0, true), None);
        assert_eq!(value_end(b"12", 0, false), None);
        assert_eq!(value_end(b"12", 0, true), Some(2));
        assert_eq!(value_end(b"12}", 0, false), Some(2));
    }

    #[test]
    fn a_call_reads_as_it_grows() {
        let full = r#"{"name": "get_price", "arguments": {"sku": "D-1", "n": 2}}"#;
        let mut last_args = String::new();
        for cut in 0..=full.len() {
            let c = call(&full[..cut], &["arguments"], cut == full.len());
            assert!(!c.invalid, "{cut}");
            if cut >= 20 {
                assert_eq!(c.name.as_deref(), Some("get_price"), "{cut}");
            } else {
                assert_eq!(c.name, None, "{cut}");
            }
            let args = c.args.unwrap_or_default();
            assert!(
                args.starts_with(&last_args),
                "arguments only grow: {last_args:?} then {args:?}"
            );
            last_args = args;
        }
        assert_eq!(last_args, r#"{"sku": "D-1", "n": 2}"#);
        let c = call(full, &["arguments"], true);
        assert!(c.args_complete && !c.args_quoted);
    }

    #[test]
    fn other_keys_orders_and_non_objects() {
        let c = call(
            r#"{"parameters": {"q": 1}, "id": 3, "name": "f"}"#,
            &["parameters"],
            true,
        );
        assert_eq!((c.name.as_deref(), c.args.as_deref()), (Some("f"), Some(r#"{"q": 1}"#)));
        let c = call(r#"{"name": "f", "arguments": "{\"q\": 1}"}"#, &["arguments"], true);
        assert!(c.args_quoted && c.args_complete);
        assert!(call("hello", &["arguments"], false).invalid);
        assert!(!call("  ", &["arguments"], false).invalid);
    }
}
