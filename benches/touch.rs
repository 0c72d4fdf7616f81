//! The touch rules on the landing path: a paid-search landing, a referrer
//! landing, the channel grouping alone, and the pass-through pre-check.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use touchgate::touch::{self, TouchRules};

const PAID_QUERY: &str = "utm_source=google&utm_medium=cpc&utm_campaign=spring_sale_2026\
&utm_term=running+shoes&utm_content=ad-variant-b&gclid=Cj0KCQiA4NWrBhD-ARIsAFCKwWt\
&gad_source=1&page=2";
const SEARCH_REFERRER: &str = "https://www.google.co.uk/";
const SITE_REFERRER: &str = "https://blog.example.org/posts/2026/best-shoes?ref=nav";
const PLAIN_QUERY: &str = "page=2&sort=price&color=blue&size=42";

fn bench(c: &mut Criterion) {
    let rules = TouchRules::default();

    c.bench_function("observe/paid_search_landing", |b| {
        b.iter(|| {
            touch::observe(
                &rules,
                black_box(Some(PAID_QUERY)),
                black_box(Some(SEARCH_REFERRER)),
                black_box("shop.example.com"),
            )
        })
    });
    c.bench_function("observe/search_referrer_landing", |b| {
        b.iter(|| {
            touch::observe(
                &rules,
                black_box(None),
                black_box(Some(SEARCH_REFERRER)),
                black_box("shop.example.com"),
            )
        })
    });
    c.bench_function("observe/site_referrer_landing", |b| {
        b.iter(|| {
            touch::observe(
                &rules,
                black_box(Some(PLAIN_QUERY)),
                black_box(Some(SITE_REFERRER)),
                black_box("shop.example.com"),
            )
        })
    });
    c.bench_function("channel/paid_search", |b| {
        b.iter(|| {
            touch::channel(
                black_box(Some("google")),
                black_box(Some("cpc")),
                black_box(Some("spring")),
            )
        })
    });
    c.bench_function("channel/unassigned", |b| {
        b.iter(|| {
            touch::channel(
                black_box(Some("some-source")),
                black_box(Some("some-medium")),
                black_box(Some("some-campaign")),
            )
        })
    });
    c.bench_function("query_may_carry_campaign/plain", |b| {
        b.iter(|| touch::query_may_carry_campaign(black_box(PLAIN_QUERY)))
    });
    c.bench_function("canonical_url/paid", |b| {
        b.iter(|| {
            touch::canonical_url(
                black_box("https"),
                black_box("Shop.Example.com:443"),
                black_box("/shoes"),
                black_box(Some(PAID_QUERY)),
            )
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
