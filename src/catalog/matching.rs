//! How a name as people type it matches a product: case-blind, typo-tolerant, partial.
//!
//! Every word of the query must find a word of the product (its name, category or noun):
//! a word with a digit in it (a model code like `N20`) only matches itself; any other word
//! matches a word within Damerau–Levenshtein similarity 0.75 (one typo in a 4-letter word),
//! a word it starts, or a longer word it is part of. So `ironhnad edge n20` finds the
//! Ironhand Edge N20, `edge n20` finds it too, and `Ironhand Edge Z99` (a code the catalog does
//! not have) finds nothing.
//! Owns: query normalisation, the FTS5 candidate query, per-product scores. Must not: run SQL.

use strsim::normalized_damerau_levenshtein;

/// The lowest similarity at which a word counts as matched.
pub const THRESHOLD: f64 = 0.75;

/// Articles people type that say nothing about the product.
const STOP: &[&str] = &["the", "a", "an"];

/// A query, normalised into words.
#[derive(Debug, Clone, PartialEq)]
pub struct Matcher {
    words: Vec<String>,
}

/// How well a product matches: mean word similarity, and whether some word matched its
/// name (not only its category or noun).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Score {
    pub similarity: f64,
    pub named: bool,
}

/// Lower-case words of letters and digits.
pub fn words(text: &str) -> Vec<String> {
    text.to_lowercase()
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_string)
        .collect()
}

fn has_digit(w: &str) -> bool {
    w.chars().any(|c| c.is_ascii_digit())
}

/// Similarity of a query word to a product word, 0 to 1.
fn similarity(query: &str, word: &str) -> f64 {
    if query == word {
        return 1.0;
    }
    if has_digit(query) || has_digit(word) {
        return 0.0;
    }
    let lev = normalized_damerau_levenshtein(query, word);
    let prefix = query.len() >= 3 && word.starts_with(query);
    let inside = query.len() >= 4 && word.contains(query);
    if prefix || inside {
        lev.max(0.9)
    } else {
        lev
    }
}

impl Matcher {
    pub fn new(query: &str) -> Matcher {
        let words = words(query)
            .into_iter()
            .filter(|w| !STOP.contains(&w.as_str()) && (w.len() > 1 || has_digit(w)))
            .collect();
        Matcher { words }
    }

    pub fn is_empty(&self) -> bool {
        self.words.is_empty()
    }

    /// An FTS5 query matching any trigram of any word (the candidates), or `None` when no
    /// word is long enough to have one.
    pub fn fts_query(&self) -> Option<String> {
        let mut grams: Vec<String> = Vec::new();
        for w in &self.words {
            let chars: Vec<char> = w.chars().collect();
            for g in chars.windows(3) {
                let g: String = g.iter().collect();
                if !grams.contains(&g) {
                    grams.push(g);
                }
            }
        }
        (!grams.is_empty()).then(|| {
            grams
                .iter()
                .map(|g| format!("\"{}\"", g.replace('"', "\"\"")))
                .collect::<Vec<_>>()
                .join(" OR ")
        })
    }

    /// The product's score, or `None` when some query word matches none of its words.
    pub fn score(&self, name: &str, category: &str, noun: &str) -> Option<Score> {
        let name_words = words(name);
        let mut other = words(category);
        other.extend(words(noun));
        other.push(noun.to_lowercase().replace(|c: char| !c.is_alphanumeric(), ""));
        let best = |q: &str, ws: &[String]| ws.iter().map(|w| similarity(q, w)).fold(0.0, f64::max);
        let (mut total, mut named) = (0.0, false);
        for q in &self.words {
            let (in_name, in_other) = (best(q, &name_words), best(q, &other));
            let s = in_name.max(in_other);
            if s < THRESHOLD {
                return None;
            }
            named |= in_name >= THRESHOLD;
            total += s;
        }
        Some(Score {
            similarity: total / self.words.len().max(1) as f64,
            named,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn score(q: &str, name: &str) -> Option<Score> {
        Matcher::new(q).score(name, "power drills", "drill")
    }

    #[test]
    fn case_typos_and_partial_names_match() {
        for q in [
            "Ironhand Edge N20",
            "IRONHAND edge n20",
            "ironhnad edge n20",
            "Edge N20",
            "the ironhand n20 drill",
        ] {
            let s = score(q, "Ironhand Edge N20").unwrap_or_else(|| panic!("{q} should match"));
            assert!(s.named, "{q}");
        }
        assert!(score("Ironhand Edge N20", "Ironhand Edge N20").is_some_and(|s| s.similarity == 1.0));
    }

    #[test]
    fn model_codes_and_unknown_brands_do_not() {
        assert_eq!(score("Ironhand Edge Z99", "Ironhand Edge N20"), None);
        assert_eq!(score("Ironhand Edge N2", "Ironhand Edge N20"), None);
        assert_eq!(score("Zentrix Edge N20", "Ironhand Edge N20"), None);
        assert_eq!(score("kettle", "Ironhand Edge N20"), None);
    }

    #[test]
    fn a_category_word_matches_without_naming() {
        let s = score("drills", "Ironhand Edge N20").expect("category word");
        assert!(!s.named);
        assert!(score("Ironhand drill", "Ironhand Edge N20").is_some_and(|s| s.named));
    }

    #[test]
    fn fts_query_lists_distinct_trigrams() {
        assert_eq!(
            Matcher::new("the Edge").fts_query().as_deref(),
            Some("\"edg\" OR \"dge\"")
        );
        assert_eq!(Matcher::new("x3").fts_query(), None);
        assert!(Matcher::new("the a").is_empty());
    }
}
