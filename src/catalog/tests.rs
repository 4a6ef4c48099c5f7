use std::path::PathBuf;

use serde_json::json;

use super::*;

pub fn fixture(dir: &std::path::Path) -> PathBuf {
    let p = |sku: &str, name: &str, cat: &str, noun: &str, price: &str, rating: &str, stock: bool| {
        json!({"sku": sku, "name": name, "brand": name.split(' ').next(), "category": cat, "noun": noun,
               "price": price, "colour": "red", "rating": rating, "warranty_years": 2, "in_stock": stock,
               "specs": {"wattage": {"value": "450", "unit": "W"}, "weight": {"value": "1.4", "unit": "kg"}}})
    };
    let products = vec![
        p(
            "SKU-1",
            "Ironhand Edge N20",
            "power drills",
            "drill",
            "89.99",
            "4.1",
            true,
        ),
        p(
            "SKU-2",
            "Ironhand Edge N35",
            "power drills",
            "drill",
            "129.50",
            "4.8",
            false,
        ),
        p(
            "SKU-3",
            "Voltrex Titan D29",
            "power drills",
            "drill",
            "62.00",
            "3.9",
            true,
        ),
        p(
            "SKU-4",
            "Brewmont Aroma K7",
            "electric kettles",
            "kettle",
            "39.95",
            "4.5",
            true,
        ),
        p(
            "SKU-5",
            "Caffio Velvet Q12",
            "electric kettles",
            "kettle",
            "24.99",
            "4.9",
            false,
        ),
    ];
    let path = dir.join("catalog.json");
    std::fs::write(&path, json!({"seed": 0, "products": products}).to_string()).expect("write fixture");
    path
}

fn open() -> (tempfile::TempDir, Catalog) {
    let dir = tempfile::tempdir().expect("tempdir");
    let cat = Catalog::open(&fixture(dir.path())).expect("open");
    (dir, cat)
}

fn names(r: &SearchResult) -> Vec<&str> {
    r.products.iter().map(|p| p.name.as_str()).collect()
}

fn filters(limit: usize) -> Filters {
    Filters {
        limit,
        ..Filters::default()
    }
}

#[test]
fn get_forgives_case_typos_and_partial_names() {
    let (_d, cat) = open();
    for q in [
        "Ironhand Edge N20",
        "ironhand edge n20",
        "Ironhnad Edge N20",
        "edge n20",
        "the Ironhand N20 drill",
    ] {
        let p = cat
            .get(&Lookup::Name(q.into()))
            .expect("query")
            .unwrap_or_else(|| panic!("{q}"));
        assert_eq!(p.name, "Ironhand Edge N20", "{q}");
    }
    assert_eq!(
        cat.get(&Lookup::Id("sku-4".into())).expect("query").map(|p| p.name),
        Some("Brewmont Aroma K7".into())
    );
    for q in ["Ironhand Edge Z99", "Zentrix Pro X3", "drill", "kettle"] {
        assert_eq!(cat.get(&Lookup::Name(q.into())).expect("query"), None, "{q}");
    }
}

#[test]
fn search_filters_sorts_and_counts() {
    let (_d, cat) = open();
    let r = cat
        .search(
            "drill",
            &Filters {
                max_price: Some(100.0),
                sort: Sort::PriceAsc,
                ..filters(5)
            },
        )
        .expect("search");
    assert_eq!(names(&r), ["Voltrex Titan D29", "Ironhand Edge N20"]);
    assert_eq!(r.total, 2);
    let r = cat
        .search(
            "kettles",
            &Filters {
                sort: Sort::PriceAsc,
                ..filters(1)
            },
        )
        .expect("search");
    assert_eq!((names(&r), r.total), (vec!["Caffio Velvet Q12"], 2));
    let r = cat
        .search(
            "drill",
            &Filters {
                in_stock: Some(true),
                sort: Sort::RatingDesc,
                ..filters(1)
            },
        )
        .expect("search");
    assert_eq!(names(&r), ["Ironhand Edge N20"]);
    let r = cat
        .search(
            "",
            &Filters {
                min_rating: Some(4.8),
                ..filters(10)
            },
        )
        .expect("search");
    assert_eq!(names(&r), ["Ironhand Edge N35", "Caffio Velvet Q12"]);
    let r = cat
        .search(
            "ironhand",
            &Filters {
                category: Some("Power Drills".into()),
                ..filters(10)
            },
        )
        .expect("search");
    assert_eq!(r.total, 2);
    let r = cat.search("Zentrix kettle", &filters(5)).expect("search");
    assert_eq!(r.total, 0);
}

#[test]
fn rows_quote_values_as_answers_do() {
    let (_d, cat) = open();
    let p = cat
        .get(&Lookup::Name("Ironhand Edge N35".into()))
        .expect("query")
        .expect("found");
    assert_eq!(
        p.row().to_string(),
        r#"{"id":"SKU-2","name":"Ironhand Edge N35","category":"power drills","price":"$129.50","stock":"out of stock","colour":"red","rating":"4.8","warranty_years":2,"wattage":"450 W","weight":"1.4 kg"}"#
    );
}

#[test]
fn a_database_file_sees_edits_from_another_connection() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("shop.db");
    assert_eq!(Catalog::build(&fixture(dir.path()), &db).expect("build"), 5);
    let server = Catalog::open(&db).expect("open");
    let editor = Catalog::open(&db).expect("open");
    editor.set("Ironhand Edge N20", "price", "79.00").expect("set price");
    editor.set("SKU-1", "in_stock", "false").expect("set stock");
    editor.set("SKU-1", "wattage", "500").expect("set spec");
    let row = server
        .get(&Lookup::Id("SKU-1".into()))
        .expect("query")
        .expect("found")
        .row();
    assert_eq!(
        (row["price"].as_str(), row["stock"].as_str(), row["wattage"].as_str()),
        (Some("$79.00"), Some("out of stock"), Some("500 W"))
    );
    assert!(matches!(
        editor.set("SKU-9", "price", "1"),
        Err(CatalogError::NoSuchProduct(_))
    ));
    assert!(matches!(
        editor.set("SKU-1", "price", "cheap"),
        Err(CatalogError::BadEdit { .. })
    ));
    assert!(matches!(
        editor.set("SKU-1", "horsepower", "3"),
        Err(CatalogError::BadEdit { .. })
    ));
}

#[test]
fn bad_catalog_files_name_the_product() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("c.json");
    std::fs::write(
        &path,
        r#"{"products": [{"sku": "A", "name": "X", "brand": "X", "category": "c", "noun": "n",
        "price": "free", "colour": "red", "rating": 4, "warranty_years": 1, "in_stock": true}]}"#,
    )
    .expect("write");
    let e = Catalog::open(&path).expect_err("bad price");
    assert!(e.to_string().contains("product 0 (X): price"), "{e}");
    std::fs::write(&path, "[1, 2]").expect("write");
    assert!(matches!(Catalog::open(&path), Err(CatalogError::Json { .. })));
    assert!(matches!(
        Catalog::open(&dir.path().join("none.db")),
        Err(CatalogError::Read { .. })
    ));
}

#[test]
fn a_database_file_answers_while_one_connection_is_busy() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("shop.db");
    Catalog::build(&fixture(dir.path()), &db).expect("build");
    let cat = std::sync::Arc::new(Catalog::open(&db).expect("open"));
    assert!(cat.conns.len() >= 2, "a database file gets a pool of connections");
    // Hold all but one connection, as slow queries would: a query still runs at once, on the
    // free one. (With a single shared connection it would wait for the others to finish.)
    let held: Vec<_> = cat.conns[1..].iter().map(|c| c.lock().expect("lock")).collect();
    let (tx, rx) = std::sync::mpsc::channel();
    let c = cat.clone();
    std::thread::spawn(move || tx.send(c.len().map_err(|e| e.to_string())));
    let got = rx.recv_timeout(std::time::Duration::from_secs(20));
    drop(held);
    assert_eq!(got.expect("the query ran on the free connection"), Ok(5));
}
