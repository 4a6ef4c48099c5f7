//! The catalog tools, `search_products` and `get_product`: their JSON-schema definitions
//! (written once, here) and turning a call's arguments into a catalog query and its result
//! into the compact JSON the model reads.
//!
//! Must not: run SQL (`crate::catalog`) or time calls (`Toolbox`).

use serde::Deserialize;
use serde_json::{json, Value};

use crate::catalog::{Catalog, CatalogError, Filters, Lookup, Sort};

pub const SEARCH: &str = "search_products";
pub const GET: &str = "get_product";
/// Default and largest `limit` of a search.
pub const DEFAULT_LIMIT: usize = 5;
pub const MAX_LIMIT: usize = 20;

/// The optional `fields` parameter of both tools: which fields each row keeps besides `name`.
fn fields_schema(fields: &[String]) -> Value {
    json!({"type": "array", "items": {"type": "string", "enum": fields}, "minItems": 1, "maxItems": fields.len(),
           "description": "Only these fields of each row (besides the name); every field when absent."})
}

/// `search_products`' parameters. Property order is the order calls write them in.
pub fn search_schema(categories: &[String], fields: &[String]) -> Value {
    json!({
        "type": "object",
        "properties": {
            "query": {"type": "string", "maxLength": 120,
                      "description": "Words of the product's name, brand or kind, as the customer wrote them (typos are fine)."},
            "category": {"type": "string", "enum": categories},
            "min_price": {"type": "number", "minimum": 0},
            "max_price": {"type": "number", "minimum": 0},
            "min_rating": {"type": "number", "minimum": 0, "maximum": 5},
            "in_stock": {"type": "boolean"},
            "sort": {"type": "string", "enum": ["relevance", "price_asc", "price_desc", "rating_desc"]},
            "limit": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT},
            "fields": fields_schema(fields)
        },
        "additionalProperties": false
    })
}

pub fn get_schema(fields: &[String]) -> Value {
    json!({
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 120,
                     "description": "The product's name as the customer wrote it (case and typos are forgiven)."},
            "id": {"type": "string", "maxLength": 40, "description": "The product id (SKU), e.g. SKU-1000."},
            "fields": fields_schema(fields)
        },
        "additionalProperties": false
    })
}

pub fn descriptions() -> [(&'static str, &'static str); 2] {
    [
        (
            SEARCH,
            "Search the store's catalog by words of a product's name or kind, with optional filters; returns the total and the best rows (only `fields` of them when given).",
        ),
        (
            GET,
            "Look up one product by name or id; returns its row (only `fields` of it when given), or an error when the catalog has no such product.",
        ),
    ]
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SearchArgs {
    #[serde(default)]
    query: String,
    category: Option<String>,
    min_price: Option<f64>,
    max_price: Option<f64>,
    min_rating: Option<f64>,
    in_stock: Option<bool>,
    #[serde(default)]
    sort: Sort,
    limit: Option<usize>,
    fields: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GetArgs {
    name: Option<String>,
    id: Option<String>,
    fields: Option<Vec<String>>,
}

/// Why a call gave no result; the model reads the message as `{"error": ...}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallError {
    /// The call does not fit the tool (unknown tool, arguments not JSON or not its schema).
    Invalid(String),
    /// A valid call that failed (timeout, service down).
    Failed(String),
}

impl CallError {
    pub fn message(&self) -> &str {
        match self {
            CallError::Invalid(m) | CallError::Failed(m) => m,
        }
    }
}

/// A call's outcome before timing: the JSON for the model and the rows returned.
pub type Outcome = Result<(Value, usize), CallError>;

fn catalog_err(e: CatalogError) -> CallError {
    tracing::warn!(target: "aisle::tools", error = %e, "catalog query failed");
    CallError::Failed("the catalog is not available right now".to_string())
}

fn bad(e: impl std::fmt::Display) -> CallError {
    CallError::Invalid(format!("bad arguments: {e}"))
}

/// `fields` checked against the catalog's, repeats dropped; an empty list is none.
fn projection(catalog: &Catalog, fields: Option<Vec<String>>) -> Result<Option<Vec<String>>, CallError> {
    let Some(asked) = fields.filter(|f| !f.is_empty()) else {
        return Ok(None);
    };
    let known = catalog.fields().map_err(catalog_err)?;
    let mut out: Vec<String> = Vec::new();
    for f in asked {
        if !known.contains(&f) {
            return Err(bad(format!(
                "unknown field `{f}`, expected one of {}",
                known.join(", ")
            )));
        }
        if !out.contains(&f) {
            out.push(f);
        }
    }
    Ok(Some(out))
}

pub fn search(catalog: &Catalog, args: Value) -> Outcome {
    let a: SearchArgs = serde_json::from_value(args).map_err(bad)?;
    let fields = projection(catalog, a.fields)?;
    let filters = Filters {
        category: a.category,
        min_price: a.min_price,
        max_price: a.max_price,
        min_rating: a.min_rating,
        in_stock: a.in_stock,
        sort: a.sort,
        limit: a.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT),
    };
    let r = catalog.search(&a.query, &filters).map_err(catalog_err)?;
    Ok((r.json(fields.as_deref()), r.products.len()))
}

pub fn get(catalog: &Catalog, args: Value) -> Outcome {
    let a: GetArgs = serde_json::from_value(args).map_err(bad)?;
    let fields = projection(catalog, a.fields)?;
    let lookup = match (a.id, a.name) {
        (Some(id), _) if !id.trim().is_empty() => Lookup::Id(id),
        (_, Some(n)) if !n.trim().is_empty() => Lookup::Name(n),
        _ => return Err(CallError::Invalid("give the product's `name` or `id`".into())),
    };
    match catalog.get(&lookup).map_err(catalog_err)? {
        Some(p) => Ok((p.projected(fields.as_deref()), 1)),
        None => Ok((json!({"error": "not found"}), 0)),
    }
}
