//! Structured-output fields of a request: which grammar, if any, its output must follow.
//!
//! Owns: reading OpenAI's `response_format` (`text`, `json_object`, `json_schema`), vLLM's
//! `structured_outputs` (`json`, `regex`, `choice`, `grammar`, `json_object`) and the older
//! `guided_json` / `guided_regex` / `guided_choice` / `guided_grammar`, into one
//! `GrammarSpec`, and compiling it. Every error is a 400 naming the field it came from.
//! Must not: decode or sample; the engine applies the compiled grammar.

use serde_json::Value;

use super::api::CommonParams;
use super::errors::ApiError;
use crate::grammar::{Grammar, GrammarSpec, Grammars};

/// A constraint and the request field it came from (for error messages).
#[derive(Debug, Clone, PartialEq)]
pub struct Requested {
    pub spec: GrammarSpec,
    pub param: &'static str,
}

/// The grammar the request's output must match: at most one of the fields may ask for one.
pub fn requested(c: &CommonParams) -> Result<Option<Requested>, ApiError> {
    let mut found: Vec<Requested> = Vec::new();
    let mut put = |param: &'static str, spec: Option<GrammarSpec>| {
        if let Some(spec) = spec {
            found.push(Requested { spec, param });
        }
    };
    put("response_format", response_format(c.response_format.as_ref())?);
    put("structured_outputs", structured_outputs(c.structured_outputs.as_ref())?);
    put(
        "guided_json",
        c.guided_json
            .as_ref()
            .map(|v| json_schema("guided_json", v))
            .transpose()?,
    );
    put(
        "guided_regex",
        c.guided_regex
            .as_ref()
            .map(|v| string("guided_regex", v))
            .transpose()?
            .map(GrammarSpec::Regex),
    );
    put(
        "guided_choice",
        c.guided_choice
            .as_ref()
            .map(|v| choice("guided_choice", v))
            .transpose()?,
    );
    put(
        "guided_grammar",
        c.guided_grammar
            .as_ref()
            .map(|v| string("guided_grammar", v))
            .transpose()?
            .map(GrammarSpec::Lark),
    );
    at_most_one(found, |a, b| {
        ApiError::invalid(
            b.param,
            format!("`{}` and `{}` both constrain the output; give one", a.param, b.param),
        )
    })
}

/// The one item given, if any; `two(first, second)` is the error when there are more.
fn at_most_one<T>(mut items: Vec<T>, two: impl FnOnce(&T, &T) -> ApiError) -> Result<Option<T>, ApiError> {
    match items.len() {
        0 | 1 => Ok(items.pop()),
        _ => Err(two(&items[0], &items[1])),
    }
}

/// Compile what the request asked for; llguidance's complaint goes back naming the field.
pub fn compile(r: &Requested, grammars: &Grammars) -> Result<Grammar, ApiError> {
    grammars
        .compile(&r.spec)
        .map_err(|e| ApiError::invalid(r.param, format!("{}: {e}", r.param)))
}

/// OpenAI's `response_format`.
fn response_format(v: Option<&Value>) -> Result<Option<GrammarSpec>, ApiError> {
    const P: &str = "response_format";
    let Some(v) = v else { return Ok(None) };
    let kind = v.get("type").and_then(Value::as_str);
    match kind {
        Some("text") => Ok(None),
        Some("json_object") => Ok(Some(GrammarSpec::JsonObject)),
        Some("json_schema") => {
            let Some(js) = v.get("json_schema").filter(|j| j.is_object()) else {
                return Err(ApiError::invalid(
                    P,
                    "response_format of type `json_schema` needs a `json_schema` object",
                ));
            };
            if !js.get("name").is_some_and(Value::is_string) {
                return Err(ApiError::invalid(
                    P,
                    "response_format.json_schema needs a `name` string",
                ));
            }
            if js.get("strict").is_some_and(|s| !s.is_boolean() && !s.is_null()) {
                return Err(ApiError::invalid(
                    P,
                    "response_format.json_schema.strict must be a boolean",
                ));
            }
            // `strict: false` is honoured too: the output always follows the schema.
            match js.get("schema") {
                None | Some(Value::Null) => Ok(Some(GrammarSpec::JsonSchema(Value::Object(Default::default())))),
                Some(schema) => json_schema(P, schema).map(Some),
            }
        }
        Some(other) => Err(ApiError::invalid(
            P,
            format!("response_format type `{other}` is not supported; use `text`, `json_object` or `json_schema`"),
        )),
        None => Err(ApiError::invalid(P, "response_format needs a `type` string")),
    }
}

/// vLLM's `structured_outputs`: exactly one of its constraint keys.
fn structured_outputs(v: Option<&Value>) -> Result<Option<GrammarSpec>, ApiError> {
    const P: &str = "structured_outputs";
    let Some(v) = v else { return Ok(None) };
    let Some(map) = v.as_object() else {
        return Err(ApiError::invalid(P, "structured_outputs must be an object"));
    };
    let mut specs = Vec::new();
    for (key, val) in map.iter().filter(|(_, v)| !v.is_null()) {
        let spec = match key.as_str() {
            "json" => json_schema(P, val)?,
            "regex" => GrammarSpec::Regex(string(P, val)?),
            "choice" => choice(P, val)?,
            "grammar" => GrammarSpec::Lark(string(P, val)?),
            "json_object" if val == &Value::Bool(true) => GrammarSpec::JsonObject,
            "json_object" => continue,
            other => {
                return Err(ApiError::invalid(
                    P,
                    format!(
                        "structured_outputs.{other} is not supported; use json, regex, choice, grammar or json_object"
                    ),
                ))
            }
        };
        specs.push(spec);
    }
    at_most_one(specs, |_, _| {
        ApiError::invalid(P, "structured_outputs takes exactly one constraint")
    })
}

/// A JSON schema given as an object, a boolean, or a string holding one.
fn json_schema(param: &str, v: &Value) -> Result<GrammarSpec, ApiError> {
    let schema = match v {
        Value::String(s) => serde_json::from_str(s)
            .map_err(|e| ApiError::invalid(param, format!("{param}: the schema string is not JSON: {e}")))?,
        other => other.clone(),
    };
    if !schema.is_object() && !schema.is_boolean() {
        return Err(ApiError::invalid(
            param,
            format!("{param}: a JSON schema must be an object"),
        ));
    }
    Ok(GrammarSpec::JsonSchema(schema))
}

fn string(param: &str, v: &Value) -> Result<String, ApiError> {
    v.as_str()
        .map(str::to_string)
        .ok_or_else(|| ApiError::invalid(param, format!("{param} must be a string")))
}

fn choice(param: &str, v: &Value) -> Result<GrammarSpec, ApiError> {
    let options: Option<Vec<String>> = v
        .as_array()
        .and_then(|a| a.iter().map(|x| x.as_str().map(str::to_string)).collect());
    match options {
        Some(o) if !o.is_empty() => Ok(GrammarSpec::Choice(o)),
        _ => Err(ApiError::invalid(
            param,
            format!("{param} must be a non-empty list of strings"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn common(v: Value) -> CommonParams {
        serde_json::from_value(v).unwrap()
    }

    fn param_of(v: Value) -> Option<String> {
        requested(&common(v)).err().and_then(|e| e.param().map(str::to_string))
    }

    #[test]
    fn each_field_maps_to_its_spec() {
        let got = |v| requested(&common(v)).unwrap().map(|r| (r.param, r.spec));
        assert_eq!(got(json!({"response_format": {"type": "text"}})), None);
        assert_eq!(
            got(json!({"response_format": {"type": "json_object"}})),
            Some(("response_format", GrammarSpec::JsonObject))
        );
        let schema = json!({"type": "object"});
        let rf = json!({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": schema, "strict": true}}});
        assert_eq!(
            got(rf),
            Some(("response_format", GrammarSpec::JsonSchema(schema.clone())))
        );
        assert_eq!(
            got(json!({"structured_outputs": {"choice": ["a", "b"]}})),
            Some(("structured_outputs", GrammarSpec::Choice(vec!["a".into(), "b".into()])))
        );
        assert_eq!(
            got(json!({"guided_json": "{\"type\": \"object\"}"})),
            Some(("guided_json", GrammarSpec::JsonSchema(schema)))
        );
        assert_eq!(
            got(json!({"guided_regex": "a+"})),
            Some(("guided_regex", GrammarSpec::Regex("a+".into())))
        );
        assert_eq!(
            got(json!({"guided_grammar": "start: \"x\""})),
            Some(("guided_grammar", GrammarSpec::Lark("start: \"x\"".into())))
        );
    }

    #[test]
    fn bad_or_conflicting_fields_name_themselves() {
        assert_eq!(
            param_of(json!({"response_format": {"type": "xml"}})).as_deref(),
            Some("response_format")
        );
        assert_eq!(
            param_of(json!({"response_format": {"type": "json_schema"}})).as_deref(),
            Some("response_format")
        );
        let no_name = json!({"response_format": {"type": "json_schema", "json_schema": {"schema": {}}}});
        assert_eq!(param_of(no_name).as_deref(), Some("response_format"));
        assert_eq!(
            param_of(json!({"structured_outputs": {"xml": "a"}})).as_deref(),
            Some("structured_outputs")
        );
        assert_eq!(param_of(json!({"guided_choice": []})).as_deref(), Some("guided_choice"));
        let both = json!({"response_format": {"type": "json_object"}, "guided_regex": "a"});
        assert_eq!(param_of(both).as_deref(), Some("guided_regex"));
    }
}
