//! The catalog's tables, importing `catalog.json` into them, and single-field edits.
//!
//! Owns: the schema (a `products` table, an external-content FTS5 trigram index kept in step
//! by triggers), value checks on import and edit. Must not: search (`search`).

use std::path::Path;

use rusqlite::{params, Connection};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::CatalogError;

const SCHEMA: &str = "
CREATE TABLE products (
    id INTEGER PRIMARY KEY,
    sku TEXT NOT NULL UNIQUE COLLATE NOCASE,
    name TEXT NOT NULL UNIQUE COLLATE NOCASE,
    brand TEXT NOT NULL,
    category TEXT NOT NULL,
    noun TEXT NOT NULL,
    price_cents INTEGER NOT NULL CHECK (price_cents >= 0),
    colour TEXT NOT NULL,
    rating REAL NOT NULL CHECK (rating BETWEEN 0 AND 5),
    warranty_years INTEGER NOT NULL CHECK (warranty_years >= 0),
    in_stock INTEGER NOT NULL CHECK (in_stock IN (0, 1)),
    specs TEXT NOT NULL
);
CREATE VIRTUAL TABLE product_text USING fts5(
    name, category, noun, content='products', content_rowid='id', tokenize='trigram'
);
CREATE TRIGGER products_ai AFTER INSERT ON products BEGIN
    INSERT INTO product_text(rowid, name, category, noun) VALUES (new.id, new.name, new.category, new.noun);
END;
CREATE TRIGGER products_ad AFTER DELETE ON products BEGIN
    INSERT INTO product_text(product_text, rowid, name, category, noun)
        VALUES ('delete', old.id, old.name, old.category, old.noun);
END;
CREATE TRIGGER products_au AFTER UPDATE ON products BEGIN
    INSERT INTO product_text(product_text, rowid, name, category, noun)
        VALUES ('delete', old.id, old.name, old.category, old.noun);
    INSERT INTO product_text(rowid, name, category, noun) VALUES (new.id, new.name, new.category, new.noun);
END;
";

#[derive(Deserialize)]
struct CatalogFile {
    products: Vec<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonProduct {
    sku: String,
    name: String,
    brand: String,
    category: String,
    noun: String,
    price: Value,
    colour: String,
    rating: Value,
    warranty_years: u32,
    in_stock: bool,
    #[serde(default)]
    specs: Map<String, Value>,
}

/// `"323.99"` or `323.99` as cents.
pub fn cents(v: &Value) -> Option<i64> {
    let s = match v {
        Value::String(s) => s.trim().trim_start_matches('$').to_string(),
        Value::Number(n) => n.to_string(),
        _ => return None,
    };
    let x: f64 = s.parse().ok()?;
    (x.is_finite() && (0.0..1e9).contains(&x)).then(|| (x * 100.0).round() as i64)
}

fn number(v: &Value) -> Option<f64> {
    match v {
        Value::String(s) => s.trim().parse().ok(),
        Value::Number(n) => n.as_f64(),
        _ => None,
    }
    .filter(|x: &f64| x.is_finite())
}

/// A spec is `{"value": "450", "unit": "W"}`.
fn check_specs(specs: &Map<String, Value>) -> Result<(), String> {
    for (k, s) in specs {
        let ok = s.get("value").is_some_and(|v| v.is_string() || v.is_number())
            && s.get("unit").is_some_and(Value::is_string);
        if !ok {
            return Err(format!("spec `{k}` must be {{\"value\": ..., \"unit\": \"...\"}}"));
        }
    }
    Ok(())
}

fn insert(conn: &Connection, p: &JsonProduct) -> Result<(), String> {
    let price = cents(&p.price).ok_or("price must be a non-negative number")?;
    let rating = number(&p.rating)
        .filter(|r| (0.0..=5.0).contains(r))
        .ok_or("rating must be a number from 0 to 5")?;
    check_specs(&p.specs)?;
    let specs = Value::Object(p.specs.clone()).to_string();
    conn.execute(
        "INSERT INTO products (sku, name, brand, category, noun, price_cents, colour, rating,
                               warranty_years, in_stock, specs)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        params![
            p.sku.trim(),
            p.name.trim(),
            p.brand,
            p.category,
            p.noun,
            price,
            p.colour,
            rating,
            p.warranty_years,
            p.in_stock as i64,
            specs
        ],
    )
    .map_err(|e| e.to_string())?;
    Ok(())
}

/// Create the schema in an empty database and fill it from a `catalog.json`; the number of
/// products.
pub fn import(conn: &Connection, path: &Path) -> Result<usize, CatalogError> {
    let text = std::fs::read_to_string(path).map_err(|source| CatalogError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let json_err = |message: String| CatalogError::Json {
        path: path.to_path_buf(),
        message,
    };
    let file: CatalogFile = serde_json::from_str(&text).map_err(|e| json_err(e.to_string()))?;
    let db = |e| CatalogError::Db {
        path: path.to_path_buf(),
        source: e,
    };
    conn.execute_batch(&format!("BEGIN; {SCHEMA}")).map_err(db)?;
    for (index, raw) in file.products.iter().enumerate() {
        let name = raw.get("name").and_then(Value::as_str).unwrap_or("?").to_string();
        let product_err = |message: String| CatalogError::Product {
            path: path.to_path_buf(),
            index,
            name: name.clone(),
            message,
        };
        let p: JsonProduct = serde_json::from_value(raw.clone()).map_err(|e| product_err(e.to_string()))?;
        insert(conn, &p).map_err(product_err)?;
    }
    conn.execute_batch("COMMIT").map_err(db)?;
    Ok(file.products.len())
}

/// An existing database has the tables this version reads.
pub fn check(conn: &Connection) -> rusqlite::Result<()> {
    conn.query_row(
        "SELECT id, sku, name, brand, category, noun, price_cents, colour, rating, warranty_years,
                in_stock, specs FROM products LIMIT 1",
        [],
        |_| Ok(()),
    )
    .or_else(|e| match e {
        rusqlite::Error::QueryReturnedNoRows => Ok(()),
        e => Err(e),
    })?;
    conn.query_row("SELECT count(*) FROM product_text", [], |_| Ok(()))
}

pub fn categories(conn: &Connection) -> rusqlite::Result<Vec<String>> {
    let mut st = conn.prepare("SELECT category FROM products GROUP BY category ORDER BY min(id)")?;
    let rows = st.query_map([], |r| r.get(0))?;
    rows.collect()
}

/// The spec names (wattage, capacity, ...) in the order they first occur.
pub fn spec_names(conn: &Connection) -> rusqlite::Result<Vec<String>> {
    let mut st =
        conn.prepare("SELECT j.key FROM products, json_each(products.specs) AS j ORDER BY products.id, j.id")?;
    let rows = st.query_map([], |r| r.get::<_, String>(0))?;
    let mut names: Vec<String> = Vec::new();
    for n in rows {
        let n = n?;
        if !names.contains(&n) {
            names.push(n);
        }
    }
    Ok(names)
}

pub enum EditError {
    Db(rusqlite::Error),
    NoSuchProduct,
    Bad(String),
}

/// The column and value an edit writes, or the spec it changes.
fn edit_value(field: &str, value: &str) -> Result<(&'static str, rusqlite::types::Value), EditError> {
    use rusqlite::types::Value as V;
    let bad = |m: &str| EditError::Bad(m.to_string());
    Ok(match field {
        "price" => (
            "price_cents",
            V::Integer(cents(&value.into()).ok_or_else(|| bad("a price like 129.99"))?),
        ),
        "in_stock" => match value {
            "true" | "yes" | "1" => ("in_stock", V::Integer(1)),
            "false" | "no" | "0" => ("in_stock", V::Integer(0)),
            _ => return Err(bad("true or false")),
        },
        "rating" => {
            let r: f64 = value.parse().map_err(|_| bad("a number from 0 to 5"))?;
            if !(0.0..=5.0).contains(&r) {
                return Err(bad("a number from 0 to 5"));
            }
            ("rating", V::Real(r))
        }
        "warranty_years" => (
            "warranty_years",
            V::Integer(value.parse().map_err(|_| bad("a whole number"))?),
        ),
        "colour" => ("colour", V::Text(value.to_string())),
        _ => return Err(EditError::Bad(String::new())),
    })
}

/// Set one field of the product with this SKU or (case-insensitive) name.
pub fn set(conn: &Connection, product: &str, field: &str, value: &str) -> Result<(), EditError> {
    let id: i64 = conn
        .query_row(
            "SELECT id FROM products WHERE sku = ?1 OR name = ?1",
            [product.trim()],
            |r| r.get(0),
        )
        .map_err(|e| match e {
            rusqlite::Error::QueryReturnedNoRows => EditError::NoSuchProduct,
            e => EditError::Db(e),
        })?;
    match edit_value(field, value) {
        Ok((column, v)) => {
            let sql = format!("UPDATE products SET {column} = ?1 WHERE id = ?2");
            conn.execute(&sql, params![v, id]).map_err(EditError::Db)?;
            Ok(())
        }
        Err(EditError::Bad(m)) if m.is_empty() => set_spec(conn, id, field, value),
        Err(e) => Err(e),
    }
}

fn set_spec(conn: &Connection, id: i64, field: &str, value: &str) -> Result<(), EditError> {
    let specs: String = conn
        .query_row("SELECT specs FROM products WHERE id = ?1", [id], |r| r.get(0))
        .map_err(EditError::Db)?;
    let mut specs: Map<String, Value> = serde_json::from_str(&specs).unwrap_or_default();
    let Some(spec) = specs.get_mut(field) else {
        let known: Vec<&str> = specs.keys().map(String::as_str).collect();
        return Err(EditError::Bad(format!(
            "not a field of this product (price, in_stock, rating, colour, warranty_years, {})",
            known.join(", ")
        )));
    };
    spec["value"] = Value::String(value.to_string());
    conn.execute(
        "UPDATE products SET specs = ?1 WHERE id = ?2",
        params![Value::Object(specs).to_string(), id],
    )
    .map_err(EditError::Db)?;
    Ok(())
}
