//! Unit tests for config parsing and routing decisions.

use super::*;
use crate::fallback::config::RoutingConfig;

fn cfg() -> RoutingConfig {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/routing/aisle.toml"
    ))
    .unwrap();
    RoutingConfig::parse(&text, "aisle.toml").unwrap()
}

fn input(text: &str) -> RouteInput<'_> {
    RouteInput {
        model: None,
        prompt_tokens: 20,
        max_tokens: 50,
        context: 256,
        text,
        queue_full: false,
        predicted_wait_ms: 0,
    }
}

fn remote(reason: Reason) -> Route {
    Route::Remote {
        name: "big".into(),
        reason,
    }
}

#[test]
fn example_config_parses() {
    let c = cfg();
    assert_eq!(c.local.name.as_deref(), Some("shop"));
    assert_eq!(c.remotes[0].api_key_env.as_deref(), Some("AISLE_BIG_API_KEY"));
    assert!((c.remotes[0].price.cost(1_000_000, 500_000) - 0.45).abs() < 1e-12);
    assert_eq!(c.aliases["smart"], "big");
}

#[test]
fn requested_model_or_alias_picks_the_backend() {
    let c = cfg();
    let mut i = input("what is the wattage?");
    for (m, expected) in [
        ("shop", Route::Local { cascade: false }),
        ("fast", Route::Local { cascade: false }),
        ("smart", remote(Reason::Requested)),
        ("big", remote(Reason::Requested)),
    ] {
        i.model = Some(m);
        assert_eq!(decide(&c, "shop", &i), Ok(expected), "{m}");
    }
    i.model = Some("gpt-9");
    assert_eq!(decide(&c, "shop", &i), Err(UnknownModel("gpt-9".into())));
}

#[test]
fn automatic_reasons() {
    let c = cfg();
    let mut i = input("what is the wattage?");
    i.max_tokens = 250;
    assert_eq!(decide(&c, "shop", &i), Ok(remote(Reason::ContextOverflow)));
    let i = input("Compare the two drills");
    assert_eq!(decide(&c, "shop", &i), Ok(remote(Reason::Complex)));
    let i = input("Which tent is better for winter?");
    assert_eq!(decide(&c, "shop", &i), Ok(remote(Reason::Complex)), "regex rule");
    let mut i = input("price?");
    i.prompt_tokens = 401;
    i.context = 4096;
    assert_eq!(decide(&c, "shop", &i), Ok(remote(Reason::Complex)), "length rule");
    let mut i = input("price?");
    i.queue_full = true;
    assert_eq!(decide(&c, "shop", &i), Ok(remote(Reason::Overload)));
    let mut i = input("price?");
    i.predicted_wait_ms = 2500;
    assert_eq!(decide(&c, "shop", &i), Ok(remote(Reason::Overload)));
    assert_eq!(
        decide(&c, "shop", &input("price?")),
        Ok(Route::Local { cascade: false })
    );
}

#[test]
fn without_a_fallback_everything_local_stays_local() {
    let mut c = cfg();
    c.rules.fallback = None;
    let mut i = input("Compare these");
    i.queue_full = true;
    assert_eq!(decide(&c, "shop", &i), Ok(Route::Local { cascade: false }));
}

#[test]
fn config_errors_name_the_problem() {
    let base = "[local]\nmodel = \"m\"\n";
    let err = |extra: &str| {
        RoutingConfig::parse(&format!("{base}{extra}"), "a.toml")
            .unwrap_err()
            .to_string()
    };
    assert!(err("[aliases]\nx = \"nowhere\"\n").contains("alias `x` points to unknown backend `nowhere`"));
    assert!(err("[routing]\nfallback = \"big\"\n").contains("routing.fallback `big` is not a [[remote]] name"));
    assert!(err("[[remote]]\nname = \"r\"\nbase_url = \"ftp://x\"\nmodel = \"m\"\n")
        .contains("base_url must start with http"));
    assert!(err("[routing.complex]\npatterns = [\"(\"]\n").contains("routing.complex.patterns"));
    assert!(err("[local2]\n").contains("a.toml"));
    assert!(
        err("[[remote]]\nname = \"local\"\nbase_url = \"http://x\"\nmodel = \"m\"\n")
            .contains("duplicate backend name `local`")
    );
}
