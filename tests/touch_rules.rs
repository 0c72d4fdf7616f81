//! Table tests for the pure touch rules: normalization, click ids,
//! referrers, aliases, precedence, canonical URLs and GA4 channel grouping.

use std::collections::BTreeMap;

use touchgate::config::TouchConfig;
use touchgate::event::Touch;
use touchgate::touch::{
    self, Observation, ReferrerKind, RuleSet, TouchRules, canonical_url, channel, normalize,
    query_may_carry_campaign, referrer_host,
};

const HOST: &str = "www.example.com";

fn rules() -> TouchRules {
    TouchRules::default()
}

fn ga4_rules() -> TouchRules {
    TouchRules::new(&TouchConfig {
        channels: RuleSet::Ga4,
        ..TouchConfig::default()
    })
}

fn observe(query: Option<&str>, referrer: Option<&str>) -> Observation {
    touch::observe(&rules(), query, referrer, HOST)
}

fn touch_of(obs: Observation) -> (Touch, Option<String>) {
    match obs {
        Observation::Touch { touch, fbclid } => (touch, fbclid),
        other => panic!("expected a touch, got {other:?}"),
    }
}

/// (source, medium, channel) of a touch.
fn smc(t: &Touch) -> (Option<&str>, Option<&str>, &str) {
    (t.source.as_deref(), t.medium.as_deref(), t.channel.as_str())
}

#[test]
fn normalization_table() {
    let cases: &[(&str, Option<&str>)] = &[
        ("Google", Some("google")),
        ("  Google  ", Some("google")),
        ("spring+sale", Some("spring sale")),
        ("spring%20%20sale", Some("spring sale")),
        ("Spring%2BSale", Some("spring+sale")),
        ("a%09b%0Ac", Some("a b c")),
        ("tab\there", Some("tab here")),
        ("ctl%00%1F%7Fchars", Some("ctlchars")),
        ("zero%E2%80%8Bwidth", Some("zerowidth")),
        ("%FF%FEbad", Some("\u{FFFD}\u{FFFD}bad")),
        ("%E2%82%AC", Some("€")),
        ("CAFÉ", Some("café")),
        ("100%", Some("100%")),
        ("%", Some("%")),
        ("", None),
        ("+++", None),
        ("%20%09%0D%0A", None),
        ("%00", None),
    ];
    for (raw, want) in cases {
        assert_eq!(normalize(raw).as_deref(), *want, "normalize({raw:?})");
    }
    let long = "a".repeat(150);
    assert_eq!(normalize(&long).unwrap().chars().count(), 100);
    let multibyte = "é".repeat(150);
    let cut = normalize(&multibyte).unwrap();
    assert_eq!(cut.chars().count(), 100);
    assert_eq!(cut.len(), 200);
}

#[test]
fn utm_values_are_normalized_and_complete() {
    let q = "utm_source=Google&utm_medium=CPC&utm_campaign=Spring+Sale%202026\
             &utm_term=Running%20Shoes&utm_content=Ad%20B&utm_id=ABC-123";
    let (t, fbclid) = touch_of(observe(Some(q), None));
    assert_eq!(smc(&t), (Some("google"), Some("cpc"), "Paid Search"));
    assert_eq!(t.campaign.as_deref(), Some("spring sale 2026"));
    assert_eq!(t.term.as_deref(), Some("running shoes"));
    assert_eq!(t.content.as_deref(), Some("ad b"));
    assert_eq!(t.campaign_id.as_deref(), Some("abc-123"));
    assert_eq!(t.click_id_type, None);
    assert!(t.valid);
    assert_eq!(fbclid, None);
}

#[test]
fn empty_utm_values_count_as_absent() {
    assert_eq!(
        observe(Some("utm_source=&utm_medium=+"), None),
        Observation::Direct
    );
    let (t, _) = touch_of(observe(
        Some("utm_source=&utm_source=bing&utm_medium=cpc"),
        None,
    ));
    assert_eq!(
        t.source.as_deref(),
        Some("bing"),
        "first non-empty occurrence wins"
    );
    let (t, _) = touch_of(observe(Some("utm_campaign=only"), None));
    assert_eq!(smc(&t), (None, None, "Unassigned"));
    assert!(!t.valid, "no source and medium");
}

#[test]
fn every_click_id() {
    // (parameter, source, medium, channel)
    let cases = [
        ("gclid", "google", "cpc", "Paid Search"),
        ("gbraid", "google", "cpc", "Paid Search"),
        ("wbraid", "google", "cpc", "Paid Search"),
        ("dclid", "google", "cpc", "Paid Search"),
        ("gad_source", "google", "cpc", "Paid Search"),
        ("msclkid", "bing", "cpc", "Paid Search"),
        ("fbclid", "facebook", "social", "Organic Social"),
        ("ttclid", "tiktok", "cpc", "Paid Social"),
        ("li_fat_id", "linkedin", "cpc", "Paid Social"),
        ("twclid", "twitter", "cpc", "Paid Social"),
        ("epik", "pinterest", "cpc", "Paid Social"),
        ("sccid", "snapchat", "cpc", "Paid Social"),
        ("srsltid", "google", "organic", "Organic Search"),
        ("igshid", "instagram", "social", "Organic Social"),
        ("rdt_cid", "reddit", "cpc", "Paid Social"),
        ("qclid", "quora", "cpc", "Paid Social"),
    ];
    // These and the eight of `more_click_ids` are every listed id.
    assert_eq!(cases.len() + 8, touch::click_id::CLICK_IDS.len());
    for (key, source, medium, ch) in cases {
        let q = format!("page=1&{key}=AbC-123_x");
        assert!(query_may_carry_campaign(&q), "{key}");
        let (t, _) = touch_of(observe(Some(&q), Some("https://www.example.com/")));
        assert_eq!(smc(&t), (Some(source), Some(medium), ch), "{key}");
        assert_eq!(t.click_id_type.as_deref(), Some(key));
        assert!(t.valid, "{key}");
        assert_eq!(t.campaign, None);
    }
}

#[test]
fn click_ids_need_a_value_and_the_first_listed_wins() {
    assert_eq!(observe(Some("gclid="), None), Observation::Direct);
    let (t, _) = touch_of(observe(Some("fbclid=abc&gad_source=1&gclid=xyz"), None));
    assert_eq!(t.click_id_type.as_deref(), Some("gclid"));
    assert_eq!(smc(&t), (Some("google"), Some("cpc"), "Paid Search"));
    let (t, _) = touch_of(observe(Some("GCLID=x&fbclid=abc"), None));
    assert_eq!(
        t.click_id_type.as_deref(),
        Some("fbclid"),
        "parameter names are case-sensitive"
    );
}

#[test]
fn utm_wins_over_click_ids_which_fill_the_gaps() {
    let (t, _) = touch_of(observe(
        Some("utm_source=newsletter&utm_medium=email&utm_campaign=may&gclid=abc"),
        None,
    ));
    assert_eq!(smc(&t), (Some("newsletter"), Some("email"), "Email"));
    assert_eq!(t.click_id_type.as_deref(), Some("gclid"));

    let (t, _) = touch_of(observe(Some("utm_campaign=spring&gclid=abc"), None));
    assert_eq!(smc(&t), (Some("google"), Some("cpc"), "Paid Search"));
    assert_eq!(t.campaign.as_deref(), Some("spring"));

    let (t, _) = touch_of(observe(Some("utm_source=partner&msclkid=abc"), None));
    assert_eq!(smc(&t), (Some("partner"), Some("cpc"), "Paid Other"));

    // fbclid is organic social unless the UTM parameters say paid.
    let (t, fbclid) = touch_of(observe(
        Some("utm_source=facebook&utm_medium=paid_social&fbclid=IwAR0abc_DEF-123"),
        None,
    ));
    assert_eq!(
        smc(&t),
        (Some("facebook"), Some("paid_social"), "Paid Social")
    );
    assert_eq!(t.click_id_type.as_deref(), Some("fbclid"));
    assert_eq!(
        fbclid.as_deref(),
        Some("IwAR0abc_DEF-123"),
        "raw, case kept"
    );

    let (t, _) = touch_of(observe(Some("utm_source=facebook&fbclid=abc"), None));
    assert_eq!(
        smc(&t),
        (Some("facebook"), Some("social"), "Organic Social")
    );
}

#[test]
fn fbclid_is_returned_raw_only_when_plausible() {
    let (_, f) = touch_of(observe(Some("fbclid=IwAR2xYz"), None));
    assert_eq!(f.as_deref(), Some("IwAR2xYz"));
    let (t, f) = touch_of(observe(Some("fbclid=caf%C3%A9"), None));
    assert_eq!(f, None, "non-ASCII");
    assert_eq!(t.click_id_type.as_deref(), Some("fbclid"));
    let (_, f) = touch_of(observe(Some("fbclid=a%20b"), None));
    assert_eq!(f, None, "space");
    let long = format!("fbclid={}", "a".repeat(touch::click_id::MAX_FBCLID_LEN + 1));
    let (_, f) = touch_of(observe(Some(&long), None));
    assert_eq!(f, None, "too long");
    let (_, f) = touch_of(observe(Some("gclid=x"), None));
    assert_eq!(f, None);
}

/// Under GA4's rules (`touch.channels = "ga4"`): webmail, AI assistants
/// and shops are referrals named by their host.
#[test]
fn referrers_under_ga4_rules() {
    // (referrer, source, medium, channel)
    let cases = [
        (
            "https://www.google.com/",
            "google",
            "organic",
            "Organic Search",
        ),
        (
            "https://www.google.co.uk/search?q=shoes",
            "google",
            "organic",
            "Organic Search",
        ),
        (
            "https://www.bing.com/search?q=shoes",
            "bing",
            "organic",
            "Organic Search",
        ),
        (
            "https://duckduckgo.com/",
            "duckduckgo",
            "organic",
            "Organic Search",
        ),
        (
            "https://de.search.yahoo.com/",
            "yahoo",
            "organic",
            "Organic Search",
        ),
        (
            "https://www.google.com/products?q=x",
            "google shopping",
            "organic",
            "Organic Shopping",
        ),
        (
            "https://m.facebook.com/",
            "facebook",
            "social",
            "Organic Social",
        ),
        (
            "https://l.facebook.com/l.php?u=x",
            "facebook",
            "social",
            "Organic Social",
        ),
        ("https://t.co/abc123", "twitter", "social", "Organic Social"),
        (
            "https://www.linkedin.com/feed/",
            "linkedin",
            "social",
            "Organic Social",
        ),
        (
            "https://lnkd.in/xyz",
            "linkedin",
            "social",
            "Organic Social",
        ),
        (
            "https://bsky.app/profile/x",
            "bluesky",
            "social",
            "Organic Social",
        ),
        (
            "https://www.youtube.com/watch?v=1",
            "youtube",
            "referral",
            "Organic Video",
        ),
        (
            "https://chatgpt.com/",
            "chatgpt.com",
            "referral",
            "Referral",
        ),
        (
            "https://chat.openai.com/c/1",
            "chat.openai.com",
            "referral",
            "Referral",
        ),
        (
            "https://www.perplexity.ai/search",
            "perplexity.ai",
            "referral",
            "Referral",
        ),
        (
            "https://x.com/i/grok?conversation=1",
            "x.com",
            "referral",
            "Referral",
        ),
        (
            "https://www.plainsite.org/blog/post?id=3",
            "plainsite.org",
            "referral",
            "Referral",
        ),
        (
            "https://mail.google.com/mail/u/0/",
            "mail.google.com",
            "referral",
            "Referral",
        ),
        (
            "https://www.amazon.com/dp/1",
            "amazon.com",
            "referral",
            "Organic Shopping",
        ),
        (
            "android-app://com.google.android.gm/",
            "com.google.android.gm",
            "referral",
            "Referral",
        ),
    ];
    for (referrer, source, medium, ch) in cases {
        let (t, fbclid) = touch_of(touch::observe(&ga4_rules(), None, Some(referrer), HOST));
        assert_eq!(smc(&t), (Some(source), Some(medium), ch), "{referrer}");
        assert_eq!(t.channel_ga4, None, "GA4's own channel: {referrer}");
        assert_eq!((t.campaign, t.term, t.click_id_type), (None, None, None));
        assert_eq!(fbclid, None);
        assert!(t.valid, "{referrer}");
    }
}

#[test]
fn referrer_kinds() {
    let kind = |r: &str| touch::referrer::classify(r).map(|c| c.kind);
    assert_eq!(
        kind("https://www.google.de/"),
        Some(ReferrerKind::SearchEngine)
    );
    assert_eq!(
        kind("https://www.facebook.com/"),
        Some(ReferrerKind::Social)
    );
    assert_eq!(
        kind("https://claude.ai/chat/1"),
        Some(ReferrerKind::AiAssistant)
    );
    assert_eq!(kind("https://example.net/"), Some(ReferrerKind::Website));
    assert_eq!(kind("about:blank"), None);
    assert_eq!(kind("/relative/path"), None);
}

#[test]
fn same_site_referrers_are_internal() {
    let rules = rules();
    let obs = |referrer: &str, host: &str| touch::observe(&rules, None, Some(referrer), host);
    assert_eq!(
        obs("https://www.example.com/a", "www.example.com"),
        Observation::Internal
    );
    assert_eq!(
        obs("https://example.com/a", "www.example.com:8443"),
        Observation::Internal
    );
    assert_eq!(
        obs("http://WWW.Example.COM./", "www.example.com"),
        Observation::Internal
    );
    assert_eq!(
        obs("https://shop.example.co.uk/cart", "www.example.co.uk"),
        Observation::Internal
    );
    assert_eq!(
        obs("http://localhost:3000/", "localhost:8080"),
        Observation::Internal
    );
    assert_eq!(
        obs("http://127.0.0.1:3000/", "127.0.0.1:8080"),
        Observation::Internal
    );
    // Different registrable domains under a shared (private) suffix.
    let (t, _) = touch_of(obs("https://alice.github.io/", "bob.github.io"));
    assert_eq!(t.source.as_deref(), Some("alice.github.io"));
    let (t, _) = touch_of(obs("https://example.co.uk/", "www.example.com"));
    assert_eq!(t.source.as_deref(), Some("example.co.uk"));
    // Campaign parameters win over an internal referrer.
    let o = touch::observe(
        &rules,
        Some("utm_source=x&utm_medium=email"),
        Some("https://www.example.com/"),
        HOST,
    );
    assert_eq!(smc(&touch_of(o).0), (Some("x"), Some("email"), "Email"));
}

#[test]
fn nothing_is_direct() {
    assert_eq!(observe(None, None), Observation::Direct);
    assert_eq!(observe(Some(""), Some("")), Observation::Direct);
    assert_eq!(observe(Some("page=2&q=shoes"), None), Observation::Direct);
    assert_eq!(observe(None, Some("not a url")), Observation::Direct);
    assert_eq!(observe(None, Some("about:blank")), Observation::Direct);
}

#[test]
fn default_aliases() {
    let cases = [
        (
            "utm_source=FB&utm_medium=PPC",
            "facebook",
            "cpc",
            "Paid Social",
        ),
        (
            "utm_source=ig&utm_medium=paid-social",
            "instagram",
            "paid_social",
            "Paid Social",
        ),
        (
            "utm_source=m.facebook.com&utm_medium=paidsocial",
            "facebook",
            "paid_social",
            "Paid Social",
        ),
        (
            "utm_source=l.facebook.com&utm_medium=social-media",
            "facebook",
            "social",
            "Organic Social",
        ),
        (
            "utm_source=adwords&utm_medium=paid-search",
            "google",
            "cpc",
            "Paid Search",
        ),
        (
            "utm_source=bing&utm_medium=paidsearch",
            "bing",
            "cpc",
            "Paid Search",
        ),
        ("utm_source=crm&utm_medium=e-mail", "crm", "email", "Email"),
        ("utm_source=crm&utm_medium=E_Mail", "crm", "email", "Email"),
        (
            "utm_source=partner&utm_medium=affiliates",
            "partner",
            "affiliate",
            "Affiliates",
        ),
        (
            "utm_source=%20cpc%20&utm_medium=cpc+",
            "cpc",
            "cpc",
            "Paid Other",
        ),
    ];
    for (q, source, medium, ch) in cases {
        let (t, _) = touch_of(observe(Some(q), None));
        assert_eq!(smc(&t), (Some(source), Some(medium), ch), "{q}");
    }
}

#[test]
fn configured_aliases_are_normalized_and_override_defaults() {
    let cfg = TouchConfig {
        source_aliases: BTreeMap::from([
            ("  Newsletter  JAN ".to_string(), "Newsletter".to_string()),
            ("fb".to_string(), "meta".to_string()),
            ("   ".to_string(), "ignored".to_string()),
        ]),
        medium_aliases: BTreeMap::from([("Mail".to_string(), "EMAIL".to_string())]),
        ..TouchConfig::default()
    };
    let rules = TouchRules::new(&cfg);
    let obs = |q: &str| touch_of(touch::observe(&rules, Some(q), None, HOST)).0;
    let t = obs("utm_source=newsletter+jan&utm_medium=mail");
    assert_eq!(smc(&t), (Some("newsletter"), Some("email"), "Email"));
    let t = obs("utm_source=fb&utm_medium=cpc");
    assert_eq!(t.source.as_deref(), Some("meta"));
    let t = obs("utm_source=ig&utm_medium=ppc");
    assert_eq!(
        smc(&t),
        (Some("instagram"), Some("cpc"), "Paid Social"),
        "defaults kept"
    );
    assert_eq!(rules.source_alias("unknown".into()), "unknown");
}

#[test]
fn campaign_precheck() {
    let yes = [
        "utm_source=x",
        "a=1&utm_medium=y",
        "gclid=1",
        "x=1&fbclid=2",
        "li_fat_id=3",
        "utm_",
        "utm%5Fsource=x",
        "gad_source=1",
        "srsltid=abc",
        "igshid=1",
    ];
    for q in yes {
        assert!(query_may_carry_campaign(q), "{q}");
    }
    let no = [
        "",
        "page=2",
        "xutm_source=1",
        "q=utm_source",
        "gclidx=1",
        "a=gclid",
        "GCLID=1",
    ];
    for q in no {
        assert!(!query_may_carry_campaign(q), "{q}");
    }
}

#[test]
fn referrer_hosts() {
    let cases = [
        ("https://www.Google.com/search?q=1", Some("google.com")),
        ("https://sub.www.example.com/", Some("sub.www.example.com")),
        ("http://example.com:8080/x", Some("example.com")),
        ("https://t.co/x", Some("t.co")),
        ("http://[::1]:8080/", Some("[::1]")),
        (
            "android-app://com.google.android.gm/",
            Some("com.google.android.gm"),
        ),
        ("no scheme", None),
        ("mailto:a@b.c", None),
        ("", None),
    ];
    for (r, want) in cases {
        assert_eq!(referrer_host(r).as_deref(), want, "{r}");
    }
}

#[test]
fn canonical_urls() {
    let cases: &[(&str, &str, &str, Option<&str>, &str)] = &[
        ("https", "Example.COM", "/", None, "https://example.com/"),
        (
            "HTTPS",
            "example.com:443",
            "/a",
            None,
            "https://example.com/a",
        ),
        ("http", "example.com:80", "/a", None, "http://example.com/a"),
        (
            "http",
            "example.com:443",
            "/a",
            None,
            "http://example.com:443/a",
        ),
        (
            "https",
            "example.com:8443",
            "/a",
            None,
            "https://example.com:8443/a",
        ),
        (
            "https",
            "example.com:0443",
            "/a",
            None,
            "https://example.com/a",
        ),
        ("https", "[::1]:443", "/", None, "https://[::1]/"),
        ("https", "example.com", "", None, "https://example.com/"),
        (
            "https",
            "example.com",
            "/Path/Kept",
            None,
            "https://example.com/Path/Kept",
        ),
        (
            "https",
            "example.com",
            "/a#frag",
            None,
            "https://example.com/a",
        ),
        (
            "https",
            "example.com",
            "/a",
            Some(""),
            "https://example.com/a",
        ),
        (
            "https",
            "example.com",
            "/a",
            Some("page=2&sort=asc"),
            "https://example.com/a",
        ),
        (
            "https",
            "example.com",
            "/a",
            // Ad click ids reach only their ad platform, never the URL.
            Some("utm_source=google&page=2&gclid=abc&utm_medium=cpc&msclkid=m"),
            "https://example.com/a?msclkid=m&utm_medium=cpc&utm_source=google",
        ),
        (
            "https",
            "example.com",
            "/a",
            Some("utm_term=b&utm_term=a&utm_custom=Z"),
            "https://example.com/a?utm_custom=Z&utm_term=a&utm_term=b",
        ),
        (
            "https",
            "example.com",
            "/a",
            Some("utm_campaign=Spring%20Sale&utm_source=a+b"),
            "https://example.com/a?utm_campaign=Spring+Sale&utm_source=a+b",
        ),
        (
            "https",
            "example.com",
            "/a",
            Some("utm_content=%e2%82%ac%2F&fbclid=IwAR"),
            "https://example.com/a?utm_content=%E2%82%AC%2F",
        ),
        (
            "https",
            "example.com",
            "/a",
            Some("utm_source=x#frag"),
            "https://example.com/a?utm_source=x",
        ),
    ];
    for (scheme, host, path, query, want) in cases {
        assert_eq!(
            canonical_url(scheme, host, path, *query),
            *want,
            "{scheme} {host} {path} {query:?}"
        );
    }
    // Equal campaigns, differently spelled, give one URL.
    assert_eq!(
        canonical_url(
            "https",
            "EXAMPLE.com:443",
            "/p",
            Some("b=1&utm_source=a%20b&gclid=1")
        ),
        canonical_url("https", "example.com", "/p", Some("gclid=1&utm_source=a+b")),
    );
}

#[test]
fn ga4_conformance_cases() {
    let csv = include_str!("../data/ga4-channel-cases.csv");
    let mut rows = 0;
    for line in csv.lines().skip(1).filter(|l| !l.trim().is_empty()) {
        let cols: Vec<&str> = line.split(',').collect();
        assert_eq!(cols.len(), 4, "{line}");
        let opt = |s: &str| (!s.is_empty()).then(|| s.to_string());
        let (s, m, c) = (opt(cols[0]), opt(cols[1]), opt(cols[2]));
        assert_eq!(
            channel(s.as_deref(), m.as_deref(), c.as_deref()),
            cols[3],
            "{line}"
        );
        rows += 1;
    }
    assert_eq!(rows, 29);
}

#[test]
fn channel_grouping_own_cases() {
    // (source, medium, campaign, expected channel)
    type Case = (
        Option<&'static str>,
        Option<&'static str>,
        Option<&'static str>,
        &'static str,
    );
    let cases: &[Case] = &[
        (Some("(DIRECT)"), Some("(None)"), None, "Direct"),
        (Some("(direct)"), Some("referral"), None, "Referral"),
        (None, None, None, "Unassigned"),
        (
            Some("google"),
            Some("cpc"),
            Some("pmax Cross-Network q3"),
            "Cross-network",
        ),
        (
            Some("google"),
            Some("cpc"),
            Some("summer-shop"),
            "Paid Shopping",
        ),
        (Some("google"), Some("cpc"), Some("workshop"), "Paid Search"),
        (Some("google"), Some("cpc"), Some("bookshop"), "Paid Search"),
        (Some("amazon"), Some("paid"), None, "Paid Shopping"),
        (Some("Google"), Some("CPC"), None, "Paid Search"),
        (Some("bing"), Some("retargeting"), None, "Paid Search"),
        (Some("instagram"), Some("paid_social"), None, "Paid Social"),
        (Some("linkedin.com"), Some("cpm"), None, "Paid Social"),
        (Some("tiktok"), Some("display"), None, "Display"),
        (Some("some-site"), Some("banner"), None, "Display"),
        (Some("some-site"), Some("interstitial"), None, "Display"),
        (Some("twitch"), Some("cpv"), None, "Paid Video"),
        (Some("newsletter"), Some("paid"), None, "Paid Other"),
        (Some("ebay"), None, None, "Organic Shopping"),
        (Some("some-site"), Some("sm"), None, "Organic Social"),
        (Some("reddit"), Some("referral"), None, "Organic Social"),
        (Some("vimeo"), Some("referral"), None, "Organic Video"),
        (
            Some("some-site"),
            Some("video-embed"),
            None,
            "Organic Video",
        ),
        (Some("duckduckgo"), Some("referral"), None, "Organic Search"),
        (Some("example.org"), Some("link"), None, "Referral"),
        (Some("example.org"), Some("app"), None, "Referral"),
        (Some("newsletter"), Some("my-email-blast"), None, "Email"),
        (Some("e_mail"), Some("crm"), None, "Email"),
        (Some("partner"), Some("affiliate"), None, "Affiliates"),
        (Some("partner"), Some("affiliates"), None, "Unassigned"),
        (Some("spotify"), Some("audio"), None, "Audio"),
        (Some("twilio"), Some("SMS"), None, "SMS"),
        (
            Some("app"),
            Some("web-push"),
            None,
            "Mobile Push Notifications",
        ),
        (Some("app"), Some("push-web"), None, "Unassigned"),
        (Some("Firebase"), None, None, "Mobile Push Notifications"),
        (Some(""), Some(""), Some(""), "Unassigned"),
    ];
    for (s, m, c, want) in cases {
        assert_eq!(channel(*s, *m, *c), *want, "{s:?} {m:?} {c:?}");
    }
}

#[test]
fn touch_validity() {
    let (t, _) = touch_of(observe(Some("utm_source=x&utm_medium=y"), None));
    assert_eq!(t.channel, "Unassigned");
    assert!(!t.valid);
    let (t, _) = touch_of(observe(Some("utm_medium=email"), None));
    assert_eq!(t.channel, "Email");
    assert!(!t.valid, "no source");
    let (t, _) = touch_of(observe(Some("utm_source=x&utm_medium=email"), None));
    assert!(t.valid);
}

/// (referrer, channel under the extended rules, source, GA4's channel).
fn assert_extended(cases: &[(&str, &str, &str, &str)]) {
    for (referrer, ch, source, ga4) in cases {
        let (t, _) = touch_of(observe(None, Some(referrer)));
        assert_eq!(
            (t.channel.as_str(), t.source.as_deref()),
            (*ch, Some(*source)),
            "{referrer}"
        );
        let want_ga4 = (ch != ga4).then_some(*ga4);
        assert_eq!(t.channel_ga4.as_deref(), want_ga4, "{referrer}");
        assert!(t.valid, "{referrer}");
        let (g, _) = touch_of(touch::observe(&ga4_rules(), None, Some(referrer), HOST));
        assert_eq!(g.channel, *ga4, "GA4 rules: {referrer}");
    }
}

#[test]
fn webmail_referrers_are_email() {
    assert_extended(&[
        (
            "https://mail.google.com/mail/u/0/",
            "Email",
            "gmail",
            "Referral",
        ),
        (
            "android-app://com.google.android.gm/",
            "Email",
            "gmail",
            "Referral",
        ),
        (
            "https://outlook.live.com/mail/0/inbox",
            "Email",
            "outlook.com",
            "Referral",
        ),
        (
            "https://co106w.col106.mail.live.com/default.aspx",
            "Email",
            "outlook.com",
            "Referral",
        ),
        (
            "https://outlook.office.com/mail/",
            "Email",
            "outlook.com",
            "Referral",
        ),
        (
            "https://us-mg6.mail.yahoo.com/neo/launch",
            "Email",
            "yahoo mail",
            "Referral",
        ),
        (
            "https://f12c.yom.mail.yahoo.net/om/api/1.0/",
            "Email",
            "yahoo mail",
            "Referral",
        ),
        (
            "https://deref-gmx.net/mail/client/abc/dereferrer/",
            "Email",
            "gmx",
            "Referral",
        ),
        ("https://navigator.gmx.net/mail", "Email", "gmx", "Referral"),
        (
            "https://deref-web.de/mail/client/x/dereferrer/",
            "Email",
            "web.de",
            "Referral",
        ),
        (
            "https://messagerie.orange.fr/",
            "Email",
            "orange",
            "Referral",
        ),
        (
            "https://mail01.orange.fr/webmail/fr_FR/read.html",
            "Email",
            "orange",
            "Referral",
        ),
        (
            "https://webmail.bluewin.ch/cp/ps/main/",
            "Email",
            "bluewin",
            "Referral",
        ),
        ("https://e.mail.ru/inbox/", "Email", "mail.ru", "Referral"),
        // GA4's own list has this host as a search engine.
        (
            "https://mail.yandex.ru/",
            "Email",
            "yandex mail",
            "Organic Search",
        ),
        ("https://poczta.onet.pl/", "Email", "onet", "Referral"),
        // Any provider's webmail front end, by its first label or path.
        (
            "https://webmail.example-isp.de/?_task=mail",
            "Email",
            "example-isp.de",
            "Referral",
        ),
        (
            "https://mail.acme-corp.com/owa/",
            "Email",
            "acme-corp.com",
            "Referral",
        ),
        (
            "https://intranet.acme-corp.com/roundcube/?_task=mail",
            "Email",
            "acme-corp.com",
            "Referral",
        ),
    ]);
    // A mail brand's portal and search are not its webmail.
    let (t, _) = touch_of(observe(None, Some("https://go.mail.ru/search?q=x")));
    assert_eq!(t.channel, "Organic Search");
}

#[test]
fn search_engines_by_subdomain_country_and_partner() {
    assert_extended(&[
        (
            "https://images.search.yahoo.com/search/images",
            "Organic Search",
            "yahoo! images",
            "Organic Search",
        ),
        (
            "https://de.images.search.yahoo.com/search/images",
            "Organic Search",
            "yahoo! images",
            "Organic Search",
        ),
        (
            "https://uk.images.search.yahoo.com/",
            "Organic Search",
            "yahoo! images",
            "Organic Search",
        ),
        (
            "https://images.google.co.jp/imgres",
            "Organic Search",
            "google images",
            "Organic Search",
        ),
        (
            "https://news.google.com.au/",
            "Organic Search",
            "google news",
            "Organic Search",
        ),
        (
            "https://ipv4.google.fr/",
            "Organic Search",
            "google",
            "Organic Search",
        ),
        (
            "https://s1-eu4.ixquick.com/do/search",
            "Organic Search",
            "ixquick",
            "Organic Search",
        ),
        (
            "https://aolsearch.aol.co.uk/aol/search?q=x",
            "Organic Search",
            "aol",
            "Organic Search",
        ),
        (
            "https://search.aol.com/aol/search",
            "Organic Search",
            "aol",
            "Organic Search",
        ),
        (
            "https://www.dogpile.com/serp?q=x",
            "Organic Search",
            "infospace",
            "Organic Search",
        ),
        (
            "https://www.google.com/cse?cx=0123:abc&q=x",
            "Organic Search",
            "google custom search",
            "Organic Search",
        ),
        (
            "https://www.partner-site.example/results?cx=partner-pub-1234:5678&q=x",
            "Organic Search",
            "google",
            "Organic Search",
        ),
        (
            "https://www.idealo.de/preisvergleich/",
            "Organic Search",
            "idealo",
            "Organic Search",
        ),
        (
            "https://www.pricerunner.dk/",
            "Organic Search",
            "pricerunner",
            "Organic Search",
        ),
        (
            "https://search.brave.com/search?q=x",
            "Organic Search",
            "brave",
            "Organic Search",
        ),
    ]);
}

#[test]
fn non_search_pages_of_search_companies_are_referrals() {
    for (referrer, source) in [
        (
            "https://support.google.com/analytics/answer/1",
            "support.google.com",
        ),
        (
            "https://docs.google.com/document/d/1/edit",
            "docs.google.com",
        ),
        (
            "https://www.google.com/url?q=https://example.org/&sa=D&usg=x",
            "google.com",
        ),
        ("https://www.google.com/intl/en/about/", "google.com"),
    ] {
        let (t, _) = touch_of(observe(None, Some(referrer)));
        assert_eq!(
            smc(&t),
            (Some(source), Some("referral"), "Referral"),
            "{referrer}"
        );
    }
    let (t, _) = touch_of(observe(None, Some("https://www.google.com/url?q=x&sa=t")));
    assert_eq!(t.channel, "Organic Search", "a search result's redirect");
}

#[test]
fn ai_assistants_have_their_own_channel() {
    assert_extended(&[
        (
            "https://chatgpt.com/",
            "AI Assistants",
            "chatgpt",
            "Referral",
        ),
        (
            "https://chat.openai.com/c/1",
            "AI Assistants",
            "chatgpt",
            "Referral",
        ),
        (
            "https://www.perplexity.ai/search/x",
            "AI Assistants",
            "perplexity",
            "Referral",
        ),
        (
            "https://gemini.google.com/app",
            "AI Assistants",
            "gemini",
            "Referral",
        ),
        (
            "https://copilot.microsoft.com/",
            "AI Assistants",
            "copilot",
            "Referral",
        ),
        (
            "https://claude.ai/chat/1",
            "AI Assistants",
            "claude",
            "Referral",
        ),
        (
            "https://x.com/i/grok?conversation=1",
            "AI Assistants",
            "grok",
            "Referral",
        ),
    ]);
    // ChatGPT tags its own links with utm_source=chatgpt.com.
    let (t, _) = touch_of(observe(Some("utm_source=chatgpt.com"), None));
    assert_eq!(t.channel, "AI Assistants");
    assert_eq!(t.channel_ga4.as_deref(), Some("Unassigned"));
    let (t, _) = touch_of(observe(
        Some("utm_source=chatgpt.com&utm_medium=referral"),
        None,
    ));
    assert_eq!(t.channel, "AI Assistants");
    // Paid stays paid.
    let (t, _) = touch_of(observe(Some("utm_source=chatgpt&utm_medium=cpc"), None));
    assert_eq!(t.channel, "Paid Other");
}

#[test]
fn ad_network_referrers_are_paid() {
    assert_extended(&[
        (
            "https://www.googleadservices.com/pagead/aclk?sa=L",
            "Paid Search",
            "google",
            "Referral",
        ),
        (
            "https://www.google.com/aclk?sa=l&ai=x",
            "Paid Search",
            "google",
            "Referral",
        ),
        (
            "https://www.bing.com/aclk?ld=x",
            "Paid Search",
            "bing",
            "Referral",
        ),
        (
            "https://ad.doubleclick.net/ddm/trackclk/x",
            "Display",
            "google",
            "Referral",
        ),
        (
            "https://tpc.googlesyndication.com/safeframe/1-0-40/html/container.html",
            "Display",
            "google",
            "Referral",
        ),
        (
            "https://trc.taboola.com/x",
            "Display",
            "taboola",
            "Referral",
        ),
        (
            "https://paid.outbrain.com/network/redir",
            "Display",
            "outbrain",
            "Referral",
        ),
        (
            "https://cas.criteo.com/delivery/ck.php",
            "Display",
            "criteo",
            "Referral",
        ),
        (
            "https://aax-eu.amazon-adsystem.com/x/c/x",
            "Paid Shopping",
            "amazon",
            "Referral",
        ),
        (
            "https://www.awin1.com/cread.php?awinmid=1",
            "Affiliates",
            "awin",
            "Referral",
        ),
        (
            "https://www.anrdoezrs.net/click-1-2",
            "Affiliates",
            "cj",
            "Referral",
        ),
        (
            "https://brand.sjv.io/c/1/2/3",
            "Affiliates",
            "impact",
            "Referral",
        ),
    ]);
}

#[test]
fn missing_utm_source_is_taken_from_the_referrer() {
    let obs = |q, r| touch_of(observe(Some(q), Some(r))).0;
    let t = obs("utm_medium=cpc", "https://www.google.de/");
    assert_eq!(smc(&t), (Some("google"), Some("cpc"), "Paid Search"));
    assert_eq!(t.channel_ga4.as_deref(), Some("Paid Other"));
    let t = obs(
        "utm_medium=email&utm_campaign=jan",
        "https://mail.google.com/",
    );
    assert_eq!(smc(&t), (Some("gmail"), Some("email"), "Email"));
    let t = obs("utm_medium=referral", "https://blog.partner.example/post");
    assert_eq!(
        smc(&t),
        (Some("blog.partner.example"), Some("referral"), "Referral")
    );
    // A same-site referrer names nothing; a given source is never replaced.
    let t = obs("utm_medium=cpc", "https://www.example.com/cart");
    assert_eq!(t.source, None);
    let t = obs(
        "utm_source=newsletter&utm_medium=email",
        "https://www.google.de/",
    );
    assert_eq!(t.source.as_deref(), Some("newsletter"));
    // GA4's rules leave the source empty.
    let (g, _) = touch_of(touch::observe(
        &ga4_rules(),
        Some("utm_medium=cpc"),
        Some("https://www.google.de/"),
        HOST,
    ));
    assert_eq!(smc(&g), (None, Some("cpc"), "Paid Other"));
}

#[test]
fn community_chat_and_shopping_sites() {
    assert_extended(&[
        (
            "https://discord.com/channels/1/2",
            "Organic Social",
            "discord",
            "Organic Social",
        ),
        (
            "https://app.slack.com/client/T1",
            "Organic Social",
            "slack",
            "Organic Social",
        ),
        (
            "https://web.telegram.org/k/",
            "Organic Social",
            "telegram",
            "Organic Social",
        ),
        (
            "https://web.whatsapp.com/",
            "Organic Social",
            "whatsapp",
            "Organic Social",
        ),
        (
            "https://news.ycombinator.com/item?id=1",
            "Organic Social",
            "hacker news",
            "Organic Social",
        ),
        (
            "https://bsky.app/profile/x",
            "Organic Social",
            "bluesky",
            "Organic Social",
        ),
        (
            "https://www.threads.net/@x",
            "Organic Social",
            "threads",
            "Organic Social",
        ),
        (
            "https://mastodon.social/@x",
            "Organic Social",
            "mastodon",
            "Organic Social",
        ),
        (
            "https://www.amazon.de/dp/1",
            "Organic Shopping",
            "amazon",
            "Referral",
        ),
        (
            "https://www.ebay.fr/itm/1",
            "Organic Shopping",
            "ebay",
            "Referral",
        ),
        (
            "https://www.zalando.de/x",
            "Organic Shopping",
            "zalando",
            "Referral",
        ),
        (
            "https://www.aliexpress.com/item/1",
            "Organic Shopping",
            "aliexpress",
            "Referral",
        ),
    ]);
}

#[test]
fn more_click_ids() {
    // (parameter, source, medium, channel)
    for (key, source, medium, ch) in [
        ("gclsrc", "google", "cpc", "Paid Search"),
        ("irclid", "impact", "affiliate", "Affiliates"),
        ("_kx", "klaviyo", "email", "Email"),
        ("yclid", "yandex", "cpc", "Paid Search"),
        ("ScCid", "snapchat", "cpc", "Paid Social"),
        ("tblci", "taboola", "display", "Display"),
        ("cjevent", "cj", "affiliate", "Affiliates"),
        ("awc", "awin", "affiliate", "Affiliates"),
    ] {
        let q = format!("{key}=abc123");
        assert!(query_may_carry_campaign(&q), "{key}");
        let (t, _) = touch_of(observe(Some(&q), None));
        assert_eq!(smc(&t), (Some(source), Some(medium), ch), "{key}");
        assert_eq!(t.click_id_type.as_deref(), Some(key));
    }
    // gclid names the touch when gclsrc comes with it.
    let (t, _) = touch_of(observe(Some("gclsrc=aw.ds&gclid=x"), None));
    assert_eq!(t.click_id_type.as_deref(), Some("gclid"));
}

#[test]
fn channels_key_is_validated() {
    use touchgate::config::Config;
    let env = |k: &str| (k == "TOUCHGATE_SECRET").then(|| "s".repeat(40));
    for (value, want) in [("ga4", RuleSet::Ga4), ("extended", RuleSet::Extended)] {
        let cfg = Config::parse(
            "t.toml",
            &format!("[touch]\nchannels = \"{value}\"\n"),
            &env,
        )
        .expect("a valid rule set");
        assert_eq!(cfg.touch.channels, want);
    }
    let cfg = Config::parse("t.toml", "", &env).expect("defaults");
    assert_eq!(cfg.touch.channels, RuleSet::Extended);
    let err = Config::parse("t.toml", "[touch]\nchannels = \"GA-4\"\n", &env)
        .expect_err("an unknown rule set");
    let msg = format!("{err:#}");
    assert!(msg.contains("ga4") && msg.contains("extended"), "{msg}");
}
