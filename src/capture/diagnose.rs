//! Misconfigured forms, said out loud: a form path that never matched
//! while near paths were posted to, and a matched post without the
//! configured `lead_id` field. Each is logged once per form (a warning),
//! and kept for `touchgate audit --request`.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::config::{FormConfig, FormRule};

/// How a posted path differs from a form's path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Near {
    TrailingSlash,
    Case,
    CaseAndTrailingSlash,
}

impl Near {
    fn text(self) -> &'static str {
        match self {
            Near::TrailingSlash => "only a trailing slash differs",
            Near::Case => "only letter case differs",
            Near::CaseAndTrailingSlash => "only letter case and a trailing slash differ",
        }
    }
}

/// Whether `path` (which the rule does not match) is near the rule's
/// path: equal but for one trailing slash, or letter case, or both. It runs
/// on posts that match no form, so it allocates nothing.
pub fn near(rule_path: &str, path: &str) -> Option<Near> {
    fn trim(p: &str) -> &str {
        match p.strip_suffix('/') {
            Some(s) if !s.is_empty() => s,
            _ => p,
        }
    }
    /// `path` + "/" compared with `prefix`, exactly and ignoring case.
    fn with_slash(path: &str, prefix: &str) -> (bool, bool) {
        match prefix.strip_suffix('/') {
            Some(p) => (p == path, p.eq_ignore_ascii_case(path)),
            None => (false, false),
        }
    }
    match rule_path.strip_suffix('*') {
        Some(prefix) => {
            // `/forms/*` posted as `/forms`, `/Forms/contact` or `/FORMS`.
            if path.starts_with(prefix) {
                return None;
            }
            match with_slash(path, prefix) {
                (true, _) => Some(Near::TrailingSlash),
                (false, true) => Some(Near::CaseAndTrailingSlash),
                _ => path
                    .get(..prefix.len())
                    .is_some_and(|head| head.eq_ignore_ascii_case(prefix))
                    .then_some(Near::Case),
            }
        }
        None => {
            if path == rule_path {
                return None;
            }
            let (a, b) = (trim(rule_path), trim(path));
            if a == b {
                Some(Near::TrailingSlash)
            } else if rule_path.eq_ignore_ascii_case(path) {
                Some(Near::Case)
            } else if a.eq_ignore_ascii_case(b) {
                Some(Near::CaseAndTrailingSlash)
            } else {
                None
            }
        }
    }
}

#[derive(Default)]
struct Flags {
    matched: AtomicBool,
    near_told: AtomicBool,
    lead_told: AtomicBool,
}

/// Per-form state of what was already said.
pub struct Diagnostics {
    forms: Vec<Flags>,
    /// What was said, for the audit's dry run: at most two per form.
    notices: Mutex<Vec<String>>,
}

impl Diagnostics {
    pub fn new(forms: usize) -> Diagnostics {
        Diagnostics {
            forms: (0..forms).map(|_| Flags::default()).collect(),
            notices: Mutex::new(Vec::new()),
        }
    }

    /// A post matched form `i`: a near path is no longer a reason to warn.
    pub fn matched(&self, i: usize) {
        if let Some(f) = self.forms.get(i)
            && !f.matched.load(Ordering::Relaxed)
        {
            f.matched.store(true, Ordering::Relaxed);
        }
    }

    /// A `method` request to `path` matched no form: name a form it
    /// nearly matched, once, while that form has matched nothing.
    pub fn unmatched(&self, forms: &[FormConfig], method: &str, path: &str) {
        for (i, (form, flags)) in forms.iter().zip(&self.forms).enumerate() {
            let rule = &form.rule;
            if rule.method != method
                || flags.matched.load(Ordering::Relaxed)
                || flags.near_told.load(Ordering::Relaxed)
            {
                continue;
            }
            let Some(how) = near(&rule.path, path) else {
                continue;
            };
            if flags.near_told.swap(true, Ordering::Relaxed) {
                continue;
            }
            let text = format!(
                "form[{i}] ({}) path {:?} has matched no request, but {method} {:?} was posted to ({}): check [[form]] path",
                rule.event,
                rule.path,
                printable(path, 200),
                how.text()
            );
            tracing::warn!(form = %rule.event, configured = %rule.path, posted = %printable(path, 200), "{text}");
            self.notice(text);
        }
    }

    /// Whether a missing `lead_id` field of form `i` is still to be told
    /// (so that the body is parsed for its names only once).
    pub fn should_tell_missing_lead(&self, i: usize) -> bool {
        self.forms
            .get(i)
            .is_some_and(|f| !f.lead_told.load(Ordering::Relaxed))
    }

    /// A post to form `i` was read and has no `lead_id` field: say which
    /// fields it had (names only), once.
    pub fn missing_lead(&self, i: usize, rule: &FormRule, names: &[&str]) {
        let Some(flags) = self.forms.get(i) else {
            return;
        };
        if flags.lead_told.load(Ordering::Relaxed) || flags.lead_told.swap(true, Ordering::Relaxed)
        {
            return;
        }
        const MAX_NAMES: usize = 30;
        let mut list: Vec<String> = names
            .iter()
            .take(MAX_NAMES)
            .map(|n| printable(n, 60))
            .collect();
        if names.len() > MAX_NAMES {
            list.push(format!("… {} more", names.len() - MAX_NAMES));
        }
        let lead = rule.lead_id.as_deref().unwrap_or("");
        let text = format!(
            "form[{i}] ({}) lead_id field {lead:?} is not in the posted form; its fields are [{}]: check [[form]] lead_id",
            rule.event,
            list.join(", ")
        );
        tracing::warn!(form = %rule.event, lead_id = %lead, fields = %list.join(", "), "{text}");
        self.notice(text);
    }

    fn notice(&self, text: String) {
        if let Ok(mut n) = self.notices.lock() {
            n.push(text);
        }
    }

    /// Everything said so far.
    pub fn notices(&self) -> Vec<String> {
        self.notices.lock().map(|n| n.clone()).unwrap_or_default()
    }
}

/// A client-chosen string made safe for one log line: control characters
/// escaped, cut at `max` characters.
fn printable(s: &str, max: usize) -> String {
    let mut out: String = s
        .chars()
        .take(max)
        .flat_map(|c| {
            if c.is_control() {
                c.escape_default().collect::<Vec<_>>()
            } else {
                vec![c]
            }
        })
        .collect();
    if s.chars().count() > max {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn near_paths() {
        use Near::*;
        let cases: &[(&str, &str, Option<Near>)] = &[
            ("/admin/login/", "/admin/login", Some(TrailingSlash)),
            ("/signup", "/signup/", Some(TrailingSlash)),
            ("/signup", "/SignUp", Some(Case)),
            ("/signup", "/SIGNUP/", Some(CaseAndTrailingSlash)),
            ("/signup", "/signup", None),
            ("/signup", "/signin", None),
            ("/signup", "/signup//", None),
            ("/", "//", Some(TrailingSlash)),
            ("/forms/*", "/forms/contact", None),
            ("/forms/*", "/forms", Some(TrailingSlash)),
            ("/forms/*", "/Forms/contact", Some(Case)),
            ("/forms/*", "/FORMS", Some(CaseAndTrailingSlash)),
            ("/forms/*", "/other", None),
            ("/forms/*", "/f", None),
            ("/é/*", "/É", None),
        ];
        for (rule, path, want) in cases {
            assert_eq!(near(rule, path), *want, "{rule} {path}");
        }
    }

    fn rule(path: &str) -> FormRule {
        FormRule {
            path: path.into(),
            method: "POST".into(),
            event: "signup_submitted".into(),
            lead_id: Some("email".into()),
            user_id: None,
            natural_key: vec![],
            fields: vec![],
        }
    }

    fn form(path: &str) -> FormConfig {
        FormConfig {
            rule: rule(path),
            success: Default::default(),
            attempt_events: true,
            user_data: Default::default(),
        }
    }

    #[test]
    fn a_near_miss_is_told_once_and_not_after_a_match() {
        let forms = [form("/admin/login/"), form("/signup")];
        let d = Diagnostics::new(2);
        d.unmatched(&forms, "POST", "/admin/login");
        d.unmatched(&forms, "POST", "/admin/login");
        d.unmatched(&forms, "PUT", "/signup/");
        assert_eq!(d.notices().len(), 1, "{:?}", d.notices());
        assert!(d.notices()[0].contains("form[0]"), "{:?}", d.notices());
        assert!(d.notices()[0].contains("trailing slash"));
        d.matched(1);
        d.unmatched(&forms, "POST", "/signup/");
        assert_eq!(d.notices().len(), 1, "form[1] matched: no warning");
    }

    #[test]
    fn a_missing_lead_field_is_told_once_with_names_only() {
        let d = Diagnostics::new(1);
        let r = rule("/signup");
        d.missing_lead(0, &r, &["e_mail", "plan\n"]);
        d.missing_lead(0, &r, &["other"]);
        let n = d.notices();
        assert_eq!(n.len(), 1);
        assert!(n[0].contains(r#"lead_id field "email""#), "{n:?}");
        assert!(n[0].contains("[e_mail, plan\\n]"), "{n:?}");
    }
}
