//! Python `json.dumps` formatting (`", "` and `": "` separators, optional indent, non-ASCII
//! kept), so chat templates that embed JSON render byte for byte as in `transformers`.
//!
//! Owns: one pure function from `serde_json::Value` to text. Must not: parse.

use serde_json::Value;

/// `json.dumps(value, ensure_ascii=False, indent=indent)`.
pub fn dumps(value: &Value, indent: Option<usize>) -> String {
    let mut out = String::new();
    write(value, indent, 0, &mut out);
    out
}

fn newline(indent: Option<usize>, depth: usize, out: &mut String) {
    if let Some(n) = indent {
        out.push('\n');
        out.push_str(&" ".repeat(n * depth));
    }
}

fn write(value: &Value, indent: Option<usize>, depth: usize, out: &mut String) {
    let item_sep = if indent.is_some() { "," } else { ", " };
    match value {
        Value::Array(items) if !items.is_empty() => {
            out.push('[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(item_sep);
                }
                newline(indent, depth + 1, out);
                write(v, indent, depth + 1, out);
            }
            newline(indent, depth, out);
            out.push(']');
        }
        Value::Object(map) if !map.is_empty() => {
            out.push('{');
            for (i, (k, v)) in map.iter().enumerate() {
                if i > 0 {
                    out.push_str(item_sep);
                }
                newline(indent, depth + 1, out);
                out.push_str(&Value::String(k.clone()).to_string());
                out.push_str(": ");
                write(v, indent, depth + 1, out);
            }
            newline(indent, depth, out);
            out.push('}');
        }
        other => out.push_str(&other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::dumps;
    use serde_json::json;

    #[test]
    fn matches_python_separators_and_indent() {
        let v = json!({"name": "drill", "watts": 750, "tags": ["a", "b"], "café": true});
        assert_eq!(
            dumps(&v, None),
            r#"{"name": "drill", "watts": 750, "tags": ["a", "b"], "café": true}"#
        );
        assert_eq!(dumps(&json!([1, {}]), Some(2)), "[\n  1,\n  {}\n]");
    }
}
