//! The user agent reduced to what events may carry: a browser family from a
//! fixed set and a bot flag. The raw string never leaves [`reduce`].
//!
//! Bots are what the MIT-licensed crawler-user-agents list
//! (`data/crawler-user-agents.txt`, refreshed by
//! `data/refresh-crawler-user-agents.sh`) or woothee's crawler category
//! matches, less the known false positives of [`TIGHTENED`]. The list's
//! ~1,500 patterns are compiled once into one regex.
//!
//! Parsing costs a few microseconds (woothee's rules plus the pattern set),
//! and browsers send the same few hundred strings over and over, so
//! [`reduce`] keeps a small per-thread memo of its answers: at most
//! [`MEMO_ENTRIES`] strings of at most [`MEMO_MAX_LEN`] bytes each, emptied
//! when full. Per thread, so there is no lock on the request path; the
//! memo holds the raw string only as a key, in memory, and it is never
//! logged or emitted.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::LazyLock;

use regex::{Regex, RegexBuilder};

use crate::event::UserAgent;

const CRAWLER_PATTERNS: &str = include_str!("../../data/crawler-user-agents.txt");

/// Patterns of the list that match real browsers, each with the narrower
/// form used instead: `Butterfly` (a crawler) is also the HTC Butterfly
/// phone, `Blackboard` (a crawler) also the Blackboard app's web view.
const TIGHTENED: &[(&str, &str)] = &[
    ("Butterfly", r"^Butterfly|[ (]Butterfly/"),
    ("Blackboard", r"^Blackboard|Blackboard Safeassign"),
];

static BOTS: LazyLock<Regex> = LazyLock::new(|| {
    let alternation = CRAWLER_PATTERNS
        .lines()
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| {
            TIGHTENED
                .iter()
                .find(|(listed, _)| *listed == p)
                .map_or(p, |(_, narrower)| narrower)
        })
        .map(|p| format!("(?:{p})"))
        .collect::<Vec<_>>()
        .join("|");
    RegexBuilder::new(&alternation)
        .size_limit(64 << 20)
        .dfa_size_limit(64 << 20)
        .build()
        .expect("the shipped crawler patterns compile (a test checks each)")
});
static PARSER: woothee::parser::Parser = woothee::parser::Parser {};

/// Browser family (woothee's name: "Chrome", "Firefox", "Safari", …, or
/// "Other") and whether a crawler pattern (crawler-user-agents, or
/// woothee's crawler category) matches. An empty user agent counts as a bot: every
/// browser sends one, scripts often do not.
pub fn reduce(ua: &str) -> UserAgent {
    let ua = ua.trim();
    if ua.len() > MEMO_MAX_LEN {
        return parse(ua);
    }
    MEMO.with_borrow_mut(|memo| {
        if let Some(hit) = memo.get(ua) {
            return hit.clone();
        }
        if memo.len() >= MEMO_ENTRIES {
            // Emptied rather than evicted one by one: the strings that
            // matter come back at once, and a clear is cheap.
            memo.clear();
        }
        let reduced = parse(ua);
        memo.insert(ua.into(), reduced.clone());
        reduced
    })
}

/// Most user agents the per-thread memo holds before it is emptied.
pub const MEMO_ENTRIES: usize = 1024;
/// Longest user agent (after trimming) the memo keeps; longer ones are
/// parsed every time. Real browsers' strings are 100–300 bytes.
pub const MEMO_MAX_LEN: usize = 512;

thread_local! {
    static MEMO: RefCell<HashMap<Box<str>, UserAgent>> = RefCell::new(HashMap::new());
}

/// [`reduce`] without the memo; `ua` is already trimmed.
fn parse(ua: &str) -> UserAgent {
    let parsed = PARSER.parse(ua);
    let family = parsed
        .as_ref()
        .map(|r| r.name)
        .filter(|name| !name.is_empty() && *name != woothee::woothee::VALUE_UNKNOWN)
        .unwrap_or("Other");
    let crawler = parsed.as_ref().is_some_and(|r| r.category == "crawler");
    UserAgent {
        family: family.to_string(),
        bot: ua.is_empty() || crawler || BOTS.is_match(ua),
    }
}

/// Loads the bot pattern list now rather than on the first request.
pub fn preload() {
    LazyLock::force(&BOTS);
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHROME: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36";
    const FIREFOX: &str = "Mozilla/5.0 (X11; Linux x86_64; rv:127.0) Gecko/20100101 Firefox/127.0";
    const SAFARI: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1";
    const GOOGLEBOT: &str =
        "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)";

    #[test]
    fn families_and_bots() {
        let cases = [
            (CHROME, "Chrome", false),
            (FIREFOX, "Firefox", false),
            (SAFARI, "Safari", false),
            (GOOGLEBOT, "Googlebot", true),
            ("curl/8.5.0", "HTTP Library", true),
            ("python-requests/2.32.3", "Other", true),
            ("", "Other", true),
            ("something entirely unknown", "Other", false),
        ];
        for (ua, family, bot) in cases {
            let r = reduce(ua);
            assert_eq!(r.family, family, "{ua}");
            assert_eq!(r.bot, bot, "{ua}");
        }
    }

    /// One of each kind the crawler list names, none of them written
    /// `…bot`-shaped on purpose.
    #[test]
    fn bots_of_every_kind() {
        for ua in [
            // SEO crawlers
            "Mozilla/5.0 (compatible; AhrefsBot/7.0; +http://ahrefs.com/robot/)",
            "Mozilla/5.0 (compatible; SemrushBot/7~bl; +http://www.semrush.com/bot.html)",
            "Screaming Frog SEO Spider/19.0",
            // uptime and monitoring
            "Mozilla/5.0+(compatible; UptimeRobot/2.0; http://www.uptimerobot.com/)",
            "Pingdom.com_bot_version_1.4_(http://www.pingdom.com/)",
            "Datadog Agent/7.50.0",
            // security scanners
            "Mozilla/5.0 (compatible; CensysInspect/1.1; +https://about.censys.io/)",
            "Mozilla/5.0 zgrab/0.x",
            // link previews of social and chat apps
            "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)",
            "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)",
            "WhatsApp/2.23.20.0",
            "TelegramBot (like TwitterBot)",
            "Mozilla/5.0 (compatible; Discordbot/2.0; +https://discordapp.com)",
            // browser automation and headless browsers
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/120.0.0.0 Safari/537.36",
            // feed readers
            "Feedly/1.0 (+http://www.feedly.com/fetcher.html; 3 subscribers)",
            // search engines
            "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
            "Mozilla/5.0 (compatible; YandexBot/3.0; +http://yandex.com/bots)",
            // ad verification
            "AdsBot-Google (+http://www.google.com/adsbot.html)",
            // AI crawlers
            "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; GPTBot/1.2; +https://openai.com/gptbot)",
            "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko); compatible; ClaudeBot/1.0; +claudebot@anthropic.com)",
            "CCBot/2.0 (https://commoncrawl.org/faq/)",
            // HTTP libraries
            "Go-http-client/1.1",
            "python-requests/2.32.3",
            "Wget/1.21.4",
            // archivers
            "ia_archiver (+http://www.alexa.com/site/help/webmasters; crawler@alexa.com)",
        ] {
            assert!(parse(ua).bot, "{ua}");
        }
    }

    /// Real browsers, among them brands that contain "bot" and the list's
    /// patterns known to hit browsers.
    #[test]
    fn browsers_are_not_bots() {
        for ua in [
            CHROME,
            FIREFOX,
            SAFARI,
            "Mozilla/5.0 (Linux; Android 9; CUBOT P30) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/116.0.0.0 Mobile Safari/537.36",
            "Mozilla/5.0 (Linux; Android 10; CUBOT_X30) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.6099.144 Mobile Safari/537.36",
            "Mozilla/5.0 (Linux; Android 6.0.1; HTC Butterfly 2 Build/MMB29M) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/54.0.2840.68 Mobile Safari/537.36",
            "Mozilla/5.0 (Linux; Android 6.0.1; D6603 Build/23.5.A.1.291; wv) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/64.0.3282.137 Mobile Safari/537.36 Blackboard/3.5.0",
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36 Edg/131.0.0.0",
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0.0.0 Safari/537.36 OPR/115.0.0.0",
            "Mozilla/5.0 (Linux; Android 14; SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) SamsungBrowser/26.0 Chrome/122.0.0.0 Mobile Safari/537.36",
            "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Safari/605.1.15",
            "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) CriOS/131.0.6778.73 Mobile/15E148 Safari/604.1",
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/128.0.0.0 YaBrowser/24.10.0.0 Safari/537.36",
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36 Vivaldi/7.0",
            "Mozilla/5.0 (Android 14; Mobile; rv:132.0) Gecko/132.0 Firefox/132.0",
        ] {
            assert!(!parse(ua).bot, "{ua}");
        }
    }

    #[test]
    fn every_shipped_pattern_compiles() {
        for p in CRAWLER_PATTERNS.lines().filter(|p| !p.trim().is_empty()) {
            assert!(Regex::new(p).is_ok(), "{p}");
        }
        for (listed, narrower) in TIGHTENED {
            assert!(CRAWLER_PATTERNS.lines().any(|p| p == *listed), "{listed}");
            assert!(Regex::new(narrower).is_ok(), "{narrower}");
        }
        assert!(BOTS.is_match("Googlebot/2.1"));
    }

    #[test]
    fn no_part_of_the_raw_string_survives() {
        let r = reduce("Mozilla/5.0 (secret-token-abc123) Chrome/1.0 Safari/537.36");
        let json = serde_json::to_string(&r).unwrap();
        assert!(!json.contains("secret"));
    }

    fn memo_len() -> usize {
        MEMO.with_borrow(HashMap::len)
    }

    #[test]
    fn memoized_answers_equal_parsed_ones() {
        let long = format!("{CHROME} {}", "x".repeat(MEMO_MAX_LEN));
        let uas = [
            CHROME,
            FIREFOX,
            SAFARI,
            GOOGLEBOT,
            "curl/8.5.0",
            "",
            "  padded  ",
            long.as_str(),
        ];
        for ua in uas {
            let fresh = parse(ua.trim());
            // First call fills the memo, the second answers from it.
            assert_eq!(reduce(ua), fresh, "{ua}");
            assert_eq!(reduce(ua), fresh, "{ua}");
        }
        MEMO.with_borrow(|memo| {
            assert!(memo.contains_key(CHROME));
            assert!(memo.contains_key("padded"), "keyed by the trimmed string");
            assert!(
                !memo.keys().any(|k| k.len() > MEMO_MAX_LEN),
                "long ones are not kept"
            );
        });
    }

    #[test]
    fn memo_stays_bounded() {
        // Tests run on their own threads, so this memo is this test's alone.
        for i in 0..(3 * MEMO_ENTRIES + 7) {
            let ua =
                format!("Mozilla/5.0 (X11; Linux x86_64; rv:{i}.0) Gecko/20100101 Firefox/{i}.0");
            let r = reduce(&ua);
            assert_eq!(r.family, "Firefox");
            assert!(memo_len() <= MEMO_ENTRIES);
        }
        assert!(memo_len() > 0);
    }
}
