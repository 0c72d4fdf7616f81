//! `postgres` sink: one row per event in a table keyed on `event_id`.
//!
//! The table is created on first connection when missing (`create_table`,
//! on by default; the DDL is [`create_table_sql`] and
//! `deploy/warehouse/postgres_table.sql`). A batch is one
//! `INSERT … SELECT … FROM UNNEST($1::text[], …) ON CONFLICT (event_id) DO NOTHING`:
//! one round trip whatever the batch size, and a re-sent batch adds nothing.
//!
//! Connection: `url_env` names an environment variable holding a libpq
//! connection string (URL or `key=value`). A connection that drops (server
//! restart, network) fails the batch as retryable and the next batch opens a
//! new one. TLS is not supported yet: `sslmode=require` (or stricter) is
//! refused by `check-config`; use a local TLS proxy or a private network.

use async_trait::async_trait;
use serde::Deserialize;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;
use tokio_postgres::config::SslMode;
use tokio_postgres::{Client, NoTls, Statement};

use super::{DeliveryConfig, Sink, SinkBuildError, SinkError};
use crate::event::{Envelope, rfc3339_millis};

/// Longest table name: index names are the table name plus a suffix of up
/// to 16 characters, within PostgreSQL's 63.
const MAX_TABLE_CHARS: usize = 47;
/// One key for every touchgate replica creating the table at once.
const DDL_LOCK_KEY: i64 = 0x746f_7563_6867_6174; // "touchgat"

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresSinkConfig {
    pub name: Option<String>,
    /// Environment variable holding the connection string.
    pub url_env: String,
    /// `table` or `schema.table`; lowercase letters, digits, `_`.
    pub table: String,
    /// Create the table and its indexes when missing.
    #[serde(default = "yes")]
    pub create_table: bool,
    /// Time allowed to connect, and for one insert.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    #[serde(default)]
    pub delivery: DeliveryConfig,
}

fn yes() -> bool {
    true
}

fn default_timeout() -> Duration {
    Duration::from_secs(30)
}

impl PostgresSinkConfig {
    pub fn validate(&self, env: &dyn Fn(&str) -> Option<String>) -> Vec<(String, String)> {
        let mut problems = Vec::new();
        if let Err(m) = TableName::parse(&self.table) {
            problems.push(("table".into(), m));
        }
        match env(&self.url_env) {
            None => problems.push((
                "url_env".into(),
                format!(
                    "environment variable {} is not set (a connection string, e.g. postgresql://user:password@host:5432/db)",
                    self.url_env
                ),
            )),
            Some(url) => match tokio_postgres::Config::from_str(&url) {
                // The parser's message never repeats the password.
                Err(e) => problems.push((
                    "url_env".into(),
                    format!("{} is not a valid connection string: {e}", self.url_env),
                )),
                Ok(c) if !matches!(c.get_ssl_mode(), SslMode::Disable | SslMode::Prefer) => {
                    problems.push((
                        "url_env".into(),
                        "TLS to PostgreSQL is not supported by this sink: use sslmode=disable or prefer (a private network or a local TLS proxy)".into(),
                    ))
                }
                Ok(_) => {}
            },
        }
        if self.timeout.is_zero() {
            problems.push(("timeout".into(), "must be more than zero".into()));
        }
        problems
    }
}

/// A validated table name, quoted for SQL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableName {
    pub schema: Option<String>,
    pub table: String,
}

impl TableName {
    pub fn parse(s: &str) -> Result<TableName, String> {
        let (schema, table) = match s.split_once('.') {
            Some((schema, table)) => (Some(schema), table),
            None => (None, s),
        };
        let ident = |part: &str, max: usize| -> Result<String, String> {
            let ok = !part.is_empty()
                && part.len() <= max
                && part.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
                && part
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
            if ok {
                Ok(part.to_string())
            } else {
                Err(format!(
                    "\"{s}\": a table name is `table` or `schema.table`, each part lowercase letters, digits and _, starting with a letter or _, the table at most {MAX_TABLE_CHARS} characters"
                ))
            }
        };
        Ok(TableName {
            schema: schema.map(|p| ident(p, 63)).transpose()?,
            table: ident(table, MAX_TABLE_CHARS)?,
        })
    }

    /// `"schema"."table"` or `"table"`.
    pub fn quoted(&self) -> String {
        match &self.schema {
            Some(s) => format!("\"{s}\".\"{}\"", self.table),
            None => format!("\"{}\"", self.table),
        }
    }

    fn index(&self, suffix: &str) -> String {
        format!("\"{}_{suffix}\"", self.table)
    }
}

/// The table and its indexes. The columns are those analysts filter and
/// group on most; everything else is in `payload`, the event JSON.
/// `channel`, `source`, `medium`, `campaign`, `click_id_type`, `valid` are
/// this request's touch; `first_channel` and `last_*` the remembered ones.
pub fn create_table_sql(t: &TableName) -> String {
    let q = t.quoted();
    let schema = t
        .schema
        .as_ref()
        .map(|s| format!("CREATE SCHEMA IF NOT EXISTS \"{s}\";\n"))
        .unwrap_or_default();
    format!(
        "{schema}CREATE TABLE IF NOT EXISTS {q} (
    event_id      text PRIMARY KEY,
    event_name    text NOT NULL,
    origin        text NOT NULL,
    occurred_at   timestamptz NOT NULL,
    received_at   timestamptz NOT NULL,
    device_id     text,
    session_id    text,
    user_id       text,
    lead_id       text,
    touchpoint_id text,
    natural_key   text,
    channel       text,
    source        text,
    medium        text,
    campaign      text,
    click_id_type text,
    valid         boolean,
    first_channel text,
    last_channel  text,
    last_source   text,
    last_medium   text,
    last_campaign text,
    page_path     text,
    status        integer,
    payload       jsonb NOT NULL,
    inserted_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS {i_time} ON {q} (occurred_at);
CREATE INDEX IF NOT EXISTS {i_name} ON {q} (event_name, occurred_at);
CREATE INDEX IF NOT EXISTS {i_device} ON {q} (device_id, occurred_at);
CREATE INDEX IF NOT EXISTS {i_user} ON {q} (user_id) WHERE user_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS {i_lead} ON {q} (lead_id) WHERE lead_id IS NOT NULL;
",
        i_time = t.index("occurred_at_idx"),
        i_name = t.index("name_idx"),
        i_device = t.index("device_idx"),
        i_user = t.index("user_idx"),
        i_lead = t.index("lead_idx"),
    )
}

/// The insert of one batch: one array parameter per column.
pub fn insert_sql(t: &TableName) -> String {
    format!(
        "INSERT INTO {} (event_id, event_name, origin, occurred_at, received_at, device_id, session_id, \
         user_id, lead_id, touchpoint_id, natural_key, channel, source, medium, campaign, click_id_type, \
         valid, first_channel, last_channel, last_source, last_medium, last_campaign, page_path, status, payload) \
         SELECT event_id, event_name, origin, occurred_at::timestamptz, received_at::timestamptz, device_id, \
         session_id, user_id, lead_id, touchpoint_id, natural_key, channel, source, medium, campaign, \
         click_id_type, valid, first_channel, last_channel, last_source, last_medium, last_campaign, page_path, \
         status, payload::jsonb \
         FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], \
         $8::text[], $9::text[], $10::text[], $11::text[], $12::text[], $13::text[], $14::text[], $15::text[], \
         $16::text[], $17::bool[], $18::text[], $19::text[], $20::text[], $21::text[], $22::text[], $23::text[], \
         $24::int4[], $25::text[]) \
         AS t(event_id, event_name, origin, occurred_at, received_at, device_id, session_id, user_id, lead_id, \
         touchpoint_id, natural_key, channel, source, medium, campaign, click_id_type, valid, first_channel, \
         last_channel, last_source, last_medium, last_campaign, page_path, status, payload) \
         ON CONFLICT (event_id) DO NOTHING",
        t.quoted()
    )
}

/// The batch as columns, in `insert_sql`'s parameter order.
#[derive(Default)]
struct Columns<'a> {
    /// The text columns, in parameter order (see `send`).
    text: [Vec<Option<&'a str>>; 20],
    occurred_at: Vec<Option<String>>,
    received_at: Vec<Option<String>>,
    valid: Vec<Option<bool>>,
    status: Vec<Option<i32>>,
    payload: Vec<Option<String>>,
}

impl<'a> Columns<'a> {
    fn of(batch: &'a [Envelope]) -> Result<Columns<'a>, String> {
        let mut c = Columns::default();
        for envelope in batch {
            let e = &envelope.event;
            let touch = e.touch.as_ref();
            let last = e.last_touch.as_ref().map(|t| &t.touch);
            let first = e.first_touch.as_ref().map(|t| &t.touch);
            let text: [Option<&'a str>; 20] = [
                Some(&e.event_id),
                Some(&e.event_name),
                Some(e.origin.as_str()),
                e.device_id.as_deref(),
                e.session_id.as_deref(),
                e.user_id.as_deref(),
                e.lead_id.as_deref(),
                e.touchpoint_id.as_deref(),
                e.natural_key.as_deref(),
                touch.map(|t| t.channel.as_str()),
                touch.and_then(|t| t.source.as_deref()),
                touch.and_then(|t| t.medium.as_deref()),
                touch.and_then(|t| t.campaign.as_deref()),
                touch.and_then(|t| t.click_id_type.as_deref()),
                first.map(|t| t.channel.as_str()),
                last.map(|t| t.channel.as_str()),
                last.and_then(|t| t.source.as_deref()),
                last.and_then(|t| t.medium.as_deref()),
                last.and_then(|t| t.campaign.as_deref()),
                e.page.as_ref().map(|p| p.path.as_str()),
            ];
            for (col, v) in c.text.iter_mut().zip(text) {
                col.push(v);
            }
            c.occurred_at
                .push(Some(rfc3339_millis::format(e.occurred_at)));
            c.received_at
                .push(Some(rfc3339_millis::format(e.received_at)));
            c.valid.push(touch.map(|t| t.valid));
            c.status.push(e.status.map(i32::from));
            c.payload.push(Some(payload(envelope)?));
        }
        Ok(c)
    }
}

/// The JSONB payload: the event only, never the ad-match keys.
fn payload(envelope: &Envelope) -> Result<String, String> {
    let json = serde_json::to_string(&envelope.event).map_err(|e| e.to_string())?;
    // PostgreSQL text and jsonb cannot hold NUL; one such event would make
    // the server refuse the whole batch.
    if json.contains("\\u0000") {
        return Err("the event holds a NUL character, which PostgreSQL cannot store".into());
    }
    Ok(json)
}

struct Connection {
    client: Client,
    insert: Statement,
}

pub struct PostgresSink {
    name: String,
    table: TableName,
    pg: tokio_postgres::Config,
    create_table: bool,
    timeout: Duration,
    current: tokio::sync::Mutex<Option<Arc<Connection>>>,
}

impl std::fmt::Debug for PostgresSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // `pg` holds the password.
        f.debug_struct("PostgresSink")
            .field("name", &self.name)
            .field("table", &self.table)
            .finish_non_exhaustive()
    }
}

impl PostgresSink {
    pub fn new(
        cfg: &PostgresSinkConfig,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<PostgresSink, SinkBuildError> {
        let problems = cfg.validate(env);
        if !problems.is_empty() {
            return Err(SinkBuildError::Invalid(problems));
        }
        let invalid = |m: &str| SinkBuildError::Invalid(vec![("url_env".into(), m.into())]);
        let url = env(&cfg.url_env).ok_or_else(|| invalid("not set"))?;
        let mut pg = tokio_postgres::Config::from_str(&url)
            .map_err(|_| invalid("not a connection string"))?;
        if pg.get_connect_timeout().is_none() {
            pg.connect_timeout(cfg.timeout);
        }
        if pg.get_application_name().is_none() {
            pg.application_name("touchgate");
        }
        let table = TableName::parse(&cfg.table)
            .map_err(|m| SinkBuildError::Invalid(vec![("table".into(), m)]))?;
        Ok(PostgresSink {
            name: cfg.name.clone().unwrap_or_else(|| "postgres".into()),
            table,
            pg,
            create_table: cfg.create_table,
            timeout: cfg.timeout,
            current: tokio::sync::Mutex::new(None),
        })
    }

    /// Go by `name` in metrics and logs instead of `name`/the type from
    /// the config (e.g. the unique name `sink::unique_name` gives).
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// The open connection, or a new one (table created, insert prepared).
    async fn connection(&self) -> Result<Arc<Connection>, SinkError> {
        let mut current = self.current.lock().await;
        if let Some(c) = current.as_ref().filter(|c| !c.client.is_closed()) {
            return Ok(c.clone());
        }
        *current = None;
        let fresh = tokio::time::timeout(self.timeout, self.connect())
            .await
            .map_err(|_| {
                retryable(format!(
                    "could not connect within {}",
                    humantime::format_duration(self.timeout)
                ))
            })??;
        let fresh = Arc::new(fresh);
        *current = Some(fresh.clone());
        Ok(fresh)
    }

    async fn connect(&self) -> Result<Connection, SinkError> {
        let (client, connection) = self
            .pg
            .connect(NoTls)
            .await
            .map_err(|e| classify(&e, "connect"))?;
        let name = self.name.clone();
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::warn!(sink = %name, "postgres connection closed: {e}");
            }
        });
        if self.create_table {
            let ddl = format!(
                "BEGIN;\nSELECT pg_advisory_xact_lock({DDL_LOCK_KEY});\n{}COMMIT;",
                create_table_sql(&self.table)
            );
            client
                .batch_execute(&ddl)
                .await
                .map_err(|e| classify(&e, "create table"))?;
        }
        let insert = client
            .prepare(&insert_sql(&self.table))
            .await
            .map_err(|e| classify(&e, "prepare insert"))?;
        Ok(Connection { client, insert })
    }

    /// Forget `conn` so the next batch connects anew.
    async fn discard(&self, conn: &Arc<Connection>) {
        let mut current = self.current.lock().await;
        if current.as_ref().is_some_and(|c| Arc::ptr_eq(c, conn)) {
            *current = None;
        }
    }
}

fn retryable(message: String) -> SinkError {
    SinkError::Retryable {
        message,
        retry_after: None,
    }
}

/// Data errors (class 22) and integrity violations (class 23) will fail
/// again the same way: rejected. Everything else (connection lost, server
/// shutting down, out of resources, permissions or a missing table an
/// operator can fix) is retryable.
fn classify(e: &tokio_postgres::Error, during: &str) -> SinkError {
    match e.as_db_error() {
        Some(db) => {
            let code = db.code().code();
            let message = format!("postgres {during}: {} ({code})", db.message());
            if code.starts_with("22") || code.starts_with("23") {
                SinkError::Rejected { message }
            } else {
                retryable(message)
            }
        }
        None => retryable(format!("postgres {during}: {e}")),
    }
}

#[async_trait]
impl Sink for PostgresSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn check(&self, envelope: &Envelope) -> Result<(), String> {
        payload(envelope).map(|_| ())
    }

    async fn send(&self, batch: &[Envelope]) -> Result<(), SinkError> {
        if batch.is_empty() {
            return Ok(());
        }
        let columns = Columns::of(batch).map_err(|message| SinkError::Rejected { message })?;
        let conn = self.connection().await?;
        let t = &columns.text;
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 25] = [
            &t[0],
            &t[1],
            &t[2],
            &columns.occurred_at,
            &columns.received_at,
            &t[3],
            &t[4],
            &t[5],
            &t[6],
            &t[7],
            &t[8],
            &t[9],
            &t[10],
            &t[11],
            &t[12],
            &t[13],
            &columns.valid,
            &t[14],
            &t[15],
            &t[16],
            &t[17],
            &t[18],
            &t[19],
            &columns.status,
            &columns.payload,
        ];
        match tokio::time::timeout(self.timeout, conn.client.execute(&conn.insert, &params)).await {
            Ok(Ok(_inserted)) => Ok(()),
            Ok(Err(e)) => {
                let err = classify(&e, "insert");
                if matches!(err, SinkError::Retryable { .. }) {
                    // The connection may be gone (or its prepared statement
                    // stale after a restart): start afresh next time.
                    self.discard(&conn).await;
                }
                Err(err)
            }
            Err(_) => {
                self.discard(&conn).await;
                Err(retryable(format!(
                    "postgres insert: no answer within {}",
                    humantime::format_duration(self.timeout)
                )))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_names_are_identifiers() {
        assert_eq!(
            TableName::parse("touchpoint_events").unwrap().quoted(),
            "\"touchpoint_events\""
        );
        assert_eq!(
            TableName::parse("analytics.touchpoint_events")
                .unwrap()
                .quoted(),
            "\"analytics\".\"touchpoint_events\""
        );
        for bad in [
            "",
            "a.b.c",
            "Events",
            "1events",
            "events; drop table x",
            "ev\"ents",
            ".events",
            "a.",
            &"a".repeat(48),
        ] {
            assert!(TableName::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn config_is_validated() {
        let cfg: PostgresSinkConfig =
            toml::from_str("url_env = \"PG\"\ntable = \"Bad-Name\"\n").unwrap();
        let keys: Vec<String> = cfg
            .validate(&|_| None)
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(keys, ["table", "url_env"]);
        let cfg: PostgresSinkConfig =
            toml::from_str("url_env = \"PG\"\ntable = \"events\"\n").unwrap();
        assert!(
            cfg.validate(&|_| Some("postgresql://u:p@127.0.0.1:5432/db".into()))
                .is_empty()
        );
        let tls = cfg.validate(&|_| Some("postgresql://u:secretpw@h/db?sslmode=require".into()));
        assert_eq!(tls.len(), 1);
        assert!(tls[0].1.contains("TLS") && !tls[0].1.contains("secretpw"));
        let garbage = cfg.validate(&|_| Some("postgresql://u:secretpw@h:notaport/db".into()));
        assert_eq!(garbage.len(), 1);
        assert!(!garbage[0].1.contains("secretpw"), "{}", garbage[0].1);
    }

    #[test]
    fn the_documented_ddl_is_the_one_the_sink_runs() {
        let doc = include_str!("../../deploy/warehouse/postgres_table.sql");
        let sql: String = doc
            .lines()
            .filter(|l| !l.starts_with("--"))
            .collect::<Vec<_>>()
            .join("\n");
        let table = TableName::parse("touchpoint_events").unwrap();
        assert_eq!(sql.trim(), create_table_sql(&table).trim());
    }

    #[test]
    fn nul_characters_are_caught_before_the_batch() {
        let t = time::macros::datetime!(2026-11-29 10:00:00 UTC);
        let e = crate::event::Event::new(
            "a\0b".into(),
            "x".into(),
            crate::event::Origin::Ingest,
            t,
            t,
        );
        assert!(payload(&Envelope::new(e)).is_err());
    }
}
