//! The user agent reduced to what events may carry: a browser family from a
//! fixed set and a bot flag. The raw string never leaves [`reduce`].

use std::sync::LazyLock;

use crate::event::UserAgent;

static BOTS: LazyLock<isbot::Bots> = LazyLock::new(isbot::Bots::default);
static PARSER: woothee::parser::Parser = woothee::parser::Parser {};

/// Browser family (woothee's name: "Chrome", "Firefox", "Safari", …, or
/// "Other") and whether a crawler pattern (isbot's list, or woothee's
/// crawler category) matches. An empty user agent counts as a bot: every
/// browser sends one, scripts often do not.
pub fn reduce(ua: &str) -> UserAgent {
    let ua = ua.trim();
    let parsed = PARSER.parse(ua);
    let family = parsed
        .as_ref()
        .map(|r| r.name)
        .filter(|name| !name.is_empty() && *name != woothee::woothee::VALUE_UNKNOWN)
        .unwrap_or("Other");
    let crawler = parsed.as_ref().is_some_and(|r| r.category == "crawler");
    UserAgent {
        family: family.to_string(),
        bot: ua.is_empty() || crawler || BOTS.is_bot(ua),
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

    #[test]
    fn no_part_of_the_raw_string_survives() {
        let r = reduce("Mozilla/5.0 (secret-token-abc123) Chrome/1.0 Safari/537.36");
        let json = serde_json::to_string(&r).unwrap();
        assert!(!json.contains("secret"));
    }
}
