//! The product catalog as a live SQLite database: built from `catalog.json`, searched with an
//! FTS5 trigram index and a typo-tolerant re-ranking, read by the built-in tools and edited in
//! place (`aisle catalog set`) while a server reads it.
//!
//! Reading order: `schema` (tables, the JSON import, edits) → `matching` (how a typed name
//! matches a product) → `search` (the two queries the tools run and their JSON rows).
//! Owns: the connection and every SQL statement. Must not: know tools, HTTP or the model.

mod matching;
mod schema;
mod search;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use rusqlite::{Connection, OpenFlags};

pub use matching::Matcher;
pub use search::{Filters, Lookup, Product, SearchResult, Sort};

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("{path}: cannot read the catalog: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a catalog file: {message}")]
    Json { path: PathBuf, message: String },
    #[error("{path}: product {index} ({name}): {message}")]
    Product {
        path: PathBuf,
        index: usize,
        name: String,
        message: String,
    },
    #[error("{path}: catalog database: {source}")]
    Db {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("no product has the id or name `{0}`")]
    NoSuchProduct(String),
    #[error("cannot set `{field}`: {message}")]
    BadEdit { field: String, message: String },
}

/// Connections to a database file, so the parallel calls of one turn do not queue on one lock.
const POOL: usize = 4;

/// An open catalog. A query takes a free connection (or waits for one) for the few
/// milliseconds it runs; an imported `catalog.json` lives in one private in-memory connection.
pub struct Catalog {
    conns: Vec<Mutex<Connection>>,
    next: AtomicUsize,
    path: PathBuf,
}

impl std::fmt::Debug for Catalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Catalog").field("path", &self.path).finish()
    }
}

impl Catalog {
    /// Open `path`: a SQLite database (read live, so edits by other processes show in the next
    /// query) or a `catalog.json`, imported into a private in-memory database.
    pub fn open(path: &Path) -> Result<Catalog, CatalogError> {
        let is_json = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("json"));
        if is_json {
            let conn = Connection::open_in_memory().map_err(|e| db_err(path, e))?;
            schema::import(&conn, path)?;
            return Ok(Catalog::wrap(vec![conn], path));
        }
        if !path.is_file() {
            return Err(CatalogError::Read {
                path: path.to_path_buf(),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
            });
        }
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conns = (0..POOL)
            .map(|_| Connection::open_with_flags(path, flags).map_err(|e| db_err(path, e)))
            .collect::<Result<Vec<_>, _>>()?;
        schema::check(&conns[0]).map_err(|e| db_err(path, e))?;
        Ok(Catalog::wrap(conns, path))
    }

    /// Build a database file at `out` from a `catalog.json` (replacing `out`).
    pub fn build(json: &Path, out: &Path) -> Result<usize, CatalogError> {
        let tmp = out.with_extension("db.part");
        let _ = std::fs::remove_file(&tmp);
        let conn = Connection::open(&tmp).map_err(|e| db_err(out, e))?;
        let n = schema::import(&conn, json)?;
        drop(conn);
        std::fs::rename(&tmp, out).map_err(|source| CatalogError::Read {
            path: out.to_path_buf(),
            source,
        })?;
        Ok(n)
    }

    fn wrap(conns: Vec<Connection>, path: &Path) -> Catalog {
        Catalog {
            conns: conns.into_iter().map(Mutex::new).collect(),
            next: AtomicUsize::new(0),
            path: path.to_path_buf(),
        }
    }

    /// A free connection, else the next one in turn once it is free. A panic while a lock was
    /// held cannot leave SQLite inconsistent, so a poisoned lock keeps serving.
    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        if let Some(free) = self.conns.iter().find_map(|c| c.try_lock().ok()) {
            return free;
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.conns.len();
        self.conns[i].lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn with<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T, CatalogError> {
        let conn = self.conn();
        f(&conn).map_err(|e| db_err(&self.path, e))
    }

    /// Number of products.
    pub fn len(&self) -> Result<usize, CatalogError> {
        self.with(|c| c.query_row("SELECT count(*) FROM products", [], |r| r.get::<_, i64>(0)))
            .map(|n| n as usize)
    }

    pub fn is_empty(&self) -> Result<bool, CatalogError> {
        Ok(self.len()? == 0)
    }

    /// The categories, in catalog order.
    pub fn categories(&self) -> Result<Vec<String>, CatalogError> {
        self.with(schema::categories)
    }

    /// The fields a row has: the common ones, then every spec name in the catalog.
    pub fn fields(&self) -> Result<Vec<String>, CatalogError> {
        let mut out: Vec<String> = search::COMMON_FIELDS.iter().map(|s| s.to_string()).collect();
        out.extend(self.with(schema::spec_names)?);
        Ok(out)
    }

    /// `search_products`.
    pub fn search(&self, query: &str, filters: &Filters) -> Result<SearchResult, CatalogError> {
        self.with(|c| search::search(c, query, filters))
    }

    /// `get_product`: by id (SKU) or name; a name that is not exact gets the closest product
    /// that matches every word of it (typos and case forgiven).
    pub fn get(&self, lookup: &Lookup) -> Result<Option<Product>, CatalogError> {
        self.with(|c| search::get(c, lookup))
    }

    /// Change one field of one product (`price`, `in_stock`, `rating`, `colour`,
    /// `warranty_years` or a spec name), by id or exact name.
    pub fn set(&self, product: &str, field: &str, value: &str) -> Result<(), CatalogError> {
        let conn = self.conn();
        schema::set(&conn, product, field, value).map_err(|e| match e {
            schema::EditError::Db(e) => db_err(&self.path, e),
            schema::EditError::NoSuchProduct => CatalogError::NoSuchProduct(product.to_string()),
            schema::EditError::Bad(message) => CatalogError::BadEdit {
                field: field.to_string(),
                message,
            },
        })
    }
}

fn db_err(path: &Path, source: rusqlite::Error) -> CatalogError {
    CatalogError::Db {
        path: path.to_path_buf(),
        source,
    }
}

#[cfg(test)]
pub(crate) mod tests;
