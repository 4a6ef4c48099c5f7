//! The two catalog queries behind the tools, and the compact JSON rows they return.
//!
//! `search`: FTS5 trigram candidates (any trigram of any query word), SQL filters, then every
//! candidate scored by `Matcher` (all words must match), sorted and cut to the limit.
//! `get`: by SKU, by exact name (case-blind), else the best-scoring product whose name the
//! query names. Must not: hold the connection (the caller does) or know tools.

use rusqlite::types::Value as Sql;
use rusqlite::{params_from_iter, Connection, Row};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::matching::{Matcher, Score};

/// Most candidates one query scores.
const MAX_CANDIDATES: usize = 2000;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Sort {
    /// Best match first (catalog order among equals).
    #[default]
    Relevance,
    PriceAsc,
    PriceDesc,
    RatingDesc,
}

/// The optional conditions of `search_products`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Filters {
    pub category: Option<String>,
    pub min_price: Option<f64>,
    pub max_price: Option<f64>,
    pub min_rating: Option<f64>,
    pub in_stock: Option<bool>,
    pub sort: Sort,
    pub limit: usize,
}

/// What `get_product` looks a product up by.
#[derive(Debug, Clone, PartialEq)]
pub enum Lookup {
    Id(String),
    Name(String),
}

/// One product as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Product {
    pub id: i64,
    pub sku: String,
    pub name: String,
    pub brand: String,
    pub category: String,
    pub noun: String,
    pub price_cents: i64,
    pub colour: String,
    pub rating: f64,
    pub warranty_years: i64,
    pub in_stock: bool,
    /// attribute -> `{"value", "unit"}`, in catalog order.
    pub specs: Map<String, Value>,
}

/// The fields every row has besides `name` (spec names follow, per product).
pub const COMMON_FIELDS: [&str; 7] = ["id", "category", "price", "stock", "colour", "rating", "warranty_years"];

pub fn price_text(cents: i64) -> String {
    format!("${}.{:02}", cents / 100, cents % 100)
}

impl Product {
    /// The row a tool returns: every value as it would be quoted in an answer.
    pub fn row(&self) -> Value {
        let mut row = json!({
            "id": self.sku,
            "name": self.name,
            "category": self.category,
            "price": price_text(self.price_cents),
            "stock": if self.in_stock { "in stock" } else { "out of stock" },
            "colour": self.colour,
            "rating": format!("{:.1}", self.rating),
            "warranty_years": self.warranty_years,
        });
        for (k, s) in &self.specs {
            let value = match &s["value"] {
                Value::String(v) => v.clone(),
                v => v.to_string(),
            };
            let unit = s["unit"].as_str().unwrap_or_default();
            row[k] = Value::String(format!("{value} {unit}").trim().to_string());
        }
        row
    }

    /// `row()` cut to `name` and the given fields, in the order given; a field this product
    /// lacks is `null`. `None` is the whole row.
    pub fn projected(&self, fields: Option<&[String]>) -> Value {
        let row = self.row();
        let Some(fields) = fields else { return row };
        let mut out = Map::new();
        out.insert("name".into(), row["name"].clone());
        for f in fields {
            out.insert(f.clone(), row.get(f).cloned().unwrap_or(Value::Null));
        }
        Value::Object(out)
    }

    fn read(r: &Row) -> rusqlite::Result<Product> {
        let specs: String = r.get(11)?;
        Ok(Product {
            id: r.get(0)?,
            sku: r.get(1)?,
            name: r.get(2)?,
            brand: r.get(3)?,
            category: r.get(4)?,
            noun: r.get(5)?,
            price_cents: r.get(6)?,
            colour: r.get(7)?,
            rating: r.get(8)?,
            warranty_years: r.get(9)?,
            in_stock: r.get::<_, i64>(10)? != 0,
            specs: serde_json::from_str(&specs).unwrap_or_default(),
        })
    }
}

/// What `search_products` found: how many matched, and the first `limit` of them.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchResult {
    pub total: usize,
    pub products: Vec<Product>,
}

impl SearchResult {
    /// The result as the tool returns it, each row cut to `fields` (see `Product::projected`).
    pub fn json(&self, fields: Option<&[String]>) -> Value {
        let rows: Vec<Value> = self.products.iter().map(|p| p.projected(fields)).collect();
        json!({"total": self.total, "results": rows})
    }
}

const COLUMNS: &str = "p.id, p.sku, p.name, p.brand, p.category, p.noun, p.price_cents, p.colour, p.rating,
                       p.warranty_years, p.in_stock, p.specs";

/// The filters as SQL conditions on `p` and their parameters.
fn conditions(f: &Filters) -> (Vec<String>, Vec<Sql>) {
    let (mut sql, mut args) = (Vec::new(), Vec::new());
    if let Some(c) = &f.category {
        sql.push("(p.category = ? COLLATE NOCASE OR p.noun = ? COLLATE NOCASE)".to_string());
        args.push(Sql::Text(c.trim().to_string()));
        args.push(Sql::Text(c.trim().to_string()));
    }
    let cents = |x: f64| Sql::Integer((x * 100.0).round() as i64);
    if let Some(x) = f.min_price {
        sql.push("p.price_cents >= ?".into());
        args.push(cents(x));
    }
    if let Some(x) = f.max_price {
        sql.push("p.price_cents <= ?".into());
        args.push(cents(x));
    }
    if let Some(x) = f.min_rating {
        sql.push("p.rating >= ? - 1e-9".into());
        args.push(Sql::Real(x));
    }
    if let Some(s) = f.in_stock {
        sql.push("p.in_stock = ?".into());
        args.push(Sql::Integer(s as i64));
    }
    (sql, args)
}

/// Products passing the filters that may match `m` (all of them when `m` is empty or has
/// no trigram).
fn candidates(conn: &Connection, m: &Matcher, f: &Filters) -> rusqlite::Result<Vec<Product>> {
    let (mut conds, mut args) = conditions(f);
    let fts = m.fts_query();
    let from = match &fts {
        Some(q) => {
            conds.insert(0, "product_text MATCH ?".into());
            args.insert(0, Sql::Text(q.clone()));
            "product_text JOIN products p ON p.id = product_text.rowid"
        }
        None => "products p",
    };
    let filter = match conds.is_empty() {
        true => String::new(),
        false => format!("WHERE {}", conds.join(" AND ")),
    };
    let order = if fts.is_some() {
        "bm25(product_text), p.id"
    } else {
        "p.id"
    };
    let sql = format!("SELECT {COLUMNS} FROM {from} {filter} ORDER BY {order} LIMIT {MAX_CANDIDATES}");
    let mut st = conn.prepare_cached(&sql)?;
    let rows = st.query_map(params_from_iter(args), Product::read)?;
    rows.collect()
}

fn scored(m: &Matcher, products: Vec<Product>) -> Vec<(Product, Score)> {
    let everything = Score {
        similarity: 1.0,
        named: false,
    };
    products
        .into_iter()
        .filter_map(|p| match m.is_empty() {
            true => Some((p, everything)),
            false => m.score(&p.name, &p.category, &p.noun).map(|s| (p, s)),
        })
        .collect()
}

pub fn search(conn: &Connection, query: &str, f: &Filters) -> rusqlite::Result<SearchResult> {
    let m = Matcher::new(query);
    let mut found = scored(&m, candidates(conn, &m, f)?);
    match f.sort {
        Sort::Relevance => found.sort_by(|(a, x), (b, y)| {
            (y.named, y.similarity)
                .partial_cmp(&(x.named, x.similarity))
                .unwrap_or(std::cmp::Ordering::Equal)
                .then(a.id.cmp(&b.id))
        }),
        Sort::PriceAsc => found.sort_by_key(|(p, _)| (p.price_cents, p.id)),
        Sort::PriceDesc => found.sort_by_key(|(p, _)| (-p.price_cents, p.id)),
        Sort::RatingDesc => found.sort_by(|(a, _), (b, _)| b.rating.total_cmp(&a.rating).then(a.id.cmp(&b.id))),
    }
    let total = found.len();
    let products = found.into_iter().take(f.limit).map(|(p, _)| p).collect();
    Ok(SearchResult { total, products })
}

fn one(conn: &Connection, sql: &str, key: &str) -> rusqlite::Result<Option<Product>> {
    let mut st = conn.prepare_cached(sql)?;
    let mut rows = st.query_map([key.trim()], Product::read)?;
    rows.next().transpose()
}

pub fn get(conn: &Connection, lookup: &Lookup) -> rusqlite::Result<Option<Product>> {
    let name = match lookup {
        Lookup::Id(id) => return one(conn, &format!("SELECT {COLUMNS} FROM products p WHERE p.sku = ?1"), id),
        Lookup::Name(n) => n,
    };
    if let Some(p) = one(
        conn,
        &format!("SELECT {COLUMNS} FROM products p WHERE p.name = ?1"),
        name,
    )? {
        return Ok(Some(p));
    }
    let m = Matcher::new(name);
    if m.is_empty() {
        return Ok(None);
    }
    let best = scored(&m, candidates(conn, &m, &Filters::default())?)
        .into_iter()
        .filter(|(_, s)| s.named)
        .fold(None::<(Product, Score)>, |best, (p, s)| match &best {
            Some((_, b)) if b.similarity >= s.similarity => best,
            _ => Some((p, s)),
        });
    Ok(best.map(|(p, _)| p))
}
