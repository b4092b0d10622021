//! A deterministic data generator for the reference schema: the same [`GeneratorSpec`] (seed,
//! sizes and `now`) always yields byte-identical table contents, so tests and drills can compare
//! a restored database with what was generated.
//!
//! Rows are streamed with `COPY ... FROM STDIN` (text format) in chunks of [`CHUNK_BYTES`], so
//! memory stays bounded whatever the size. Each table draws from its own ChaCha8 stream of the
//! seed. Timestamps are relative to the fixed [`EPOCH`], except the `updated_at` of dead-lettered
//! deliveries, which lies within the last `dead_letter_window_hours` before `spec.now` so that the
//! runbook's dead-letter query finds them.

use bytes::{BufMut, Bytes, BytesMut};
use catalyst_dr::catalyst_db::CatalystDbError;
use catalyst_dr::catalyst_db::schema::DeliveryStatus;
use futures_util::SinkExt;
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use serde_json::json;
use std::fmt::Write as _;
use time::macros::datetime;
use time::{Duration, OffsetDateTime, UtcOffset};
use tokio_postgres::Client;

/// The instant all generated timestamps are relative to (except dead-lettered `updated_at`).
pub const EPOCH: OffsetDateTime = datetime!(2026-01-01 00:00:00 UTC);

/// How much COPY data is buffered before it is sent.
pub const CHUNK_BYTES: usize = 256 * 1024;

/// Every `EDGE_CASE_PERIOD`-th user gets the next of [`EDGE_CASE_DISPLAY_NAMES`].
pub const EDGE_CASE_PERIOD: u64 = 97;

/// Display names written verbatim into some users, so that a backup/restore round trip has to
/// get COPY escaping, empty-versus-NULL and non-BMP characters right.
pub const EDGE_CASE_DISPLAY_NAMES: &[&str] = &[
    "back\\slash",
    "tab\there",
    "line\nbreak",
    "carriage\rreturn",
    "\\N",
    "",
    "  padded  ",
    "Robert'); DROP TABLE users;--",
    "crab 🦀 lock 🔐",
    "family 👩\u{200d}👩\u{200d}👧",
];

/// Products a user can be entitled to; `entitlements_per_user` cannot exceed their number
/// because `(user_id, product)` is unique.
pub const PRODUCTS: &[&str] = &[
    "catalyst-auth",
    "catalyst-sso",
    "catalyst-mfa",
    "catalyst-audit",
    "catalyst-scim",
    "catalyst-webhooks",
];

const PLANS: &[&str] = &["free", "starter", "pro", "business", "enterprise"];

const FIRST_NAMES: &[&str] = &[
    "Amara",
    "José",
    "Zoë",
    "Łukasz",
    "Søren",
    "Aoife",
    "Chidi",
    "Mei",
    "Ólafur",
    "Priya",
    "Mateo",
    "Yuki",
    "Fatima",
    "Ngọc",
    "Ingrid",
    "Kwame",
    "Élodie",
    "Dmitri",
    "Ana",
    "Tomás",
    "Leilani",
    "Björn",
    "Aarav",
    "Hana",
    "Sipho",
    "Camille",
    "Оксана",
    "محمد",
    "李娜",
    "Ayşe",
    "Zoltán",
    "Nilufar",
];

const LAST_NAMES: &[&str] = &[
    "Okafor",
    "García",
    "Müller",
    "Kowalski",
    "Sørensen",
    "Ní Bhriain",
    "Tanaka",
    "Haddad",
    "Nakamura",
    "O'Connor",
    "Dubois",
    "Петрова",
    "Nguyễn",
    "Singh",
    "Silva",
    "Andersson",
    "van der Berg",
    "Kim",
    "Mbeki",
    "Rossi",
    "王",
    "Yılmaz",
    "Al-Farsi",
    "Kahananui",
    "Szabó",
    "Ferreira-Lopes",
];

const EMAIL_HANDLES: &[&str] = &[
    "alex", "sam", "jordan", "casey", "morgan", "taylor", "riley", "jamie", "devon", "quinn",
    "avery", "rowan", "sasha", "kai", "noa", "remy", "ops", "billing", "it-admin",
];

const EMAIL_TAGS: &[&str] = &["work", "billing", "test", "sso"];

const EMAIL_DOMAINS: &[&str] = &[
    "example.com",
    "example.org",
    "mail.example.net",
    "corp.example.co.uk",
    "example.io",
    "xn--bcher-kva.example",
];

const SUBSCRIPTION_DESCRIPTIONS: &[&str] = &[
    "Billing sync",
    "CRM contact updates",
    "Provisioning → LDAP bridge",
    "Slack #security alerts",
    "Data warehouse export",
    "Équipe sécurité — journal d'audit",
    "監査ログ転送",
    "Legacy\tintegration (do not delete)",
];

const EVENT_TYPES: &[&str] = &[
    "user.created",
    "user.updated",
    "user.disabled",
    "user.deleted",
    "entitlement.granted",
    "entitlement.revoked",
    "entitlement.expired",
    "session.created",
    "session.revoked",
    "mfa.enrolled",
];

const DELIVERY_ERRORS: &[&str] = &[
    "HTTP 500 Internal Server Error",
    "HTTP 502 Bad Gateway",
    "HTTP 503 Service Unavailable",
    "HTTP 404 Not Found",
    "HTTP 410 Gone",
    "HTTP 429 Too Many Requests (retry-after: 120)",
    "timed out after 15s waiting for response headers",
    "connection refused (os error 111)",
    "dns error: failed to lookup address information: Name or service not known",
    "tls handshake failed: certificate has expired",
    "HTTP 400 Bad Request: {\"error\":\"invalid signature\"}",
    "HTTP 500: upstream said:\n\tTraceback (most recent call last):\n\t  File \"C:\\hooks\\app.py\", line 7",
];

const USER_AGENTS: &[&str] = &[
    "Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) Safari/605.1.15",
    "catalyst-sdk-go/2.4.1",
    "catalyst-sdk-node/5.0.0 node/22.3.0",
    "curl/8.8.0",
];

const REGIONS: &[&str] = &["eu-west-1", "eu-central-1", "us-east-1", "ap-southeast-2"];

const PAYLOAD_TAGS: &[&str] = &[
    "billing",
    "security",
    "provisioning",
    "audit",
    "sso",
    "mfa",
    "trial",
    "migration",
    "gdpr",
    "priority",
];

/// Webhook retry delays by attempt number (Svix's schedule), in seconds.
const BACKOFF_SECONDS: [i64; 8] = [0, 5, 300, 1_800, 7_200, 18_000, 36_000, 36_000];

/// Attempts after which a delivery is dead-lettered.
const MAX_ATTEMPTS: i64 = 8;

/// Upper bound on `users`, `subscriptions` and `deliveries`: ids stay far inside `bigint`, and
/// a typo cannot start a generation that runs for weeks.
pub const MAX_ROWS: u64 = 1_000_000_000_000;

/// Largest dead-letter window accepted, in hours (a year).
pub const MAX_DEAD_LETTER_WINDOW_HOURS: u32 = 24 * 366;

/// Size of a freshly created database with the schema and no rows (PostgreSQL 15), and the
/// measured database growth per delivery at the proportions [`GeneratorSpec::for_target_bytes`]
/// uses (the delivery row with its indexes, plus its share of users, entitlements and
/// subscriptions).
const EMPTY_DATABASE_BYTES: u64 = 7_950_000;
const BYTES_PER_DELIVERY: u64 = 828;

const SECOND_US: i64 = 1_000_000;
const HOUR_US: i64 = 3_600 * SECOND_US;
const DAY_US: i64 = 24 * HOUR_US;

/// What to generate.
#[derive(Debug, Clone, PartialEq)]
pub struct GeneratorSpec {
    /// Same seed (and sizes and `now`), same bytes.
    pub seed: u64,
    pub users: u64,
    /// The most entitlements a user gets; each user gets a random number in `0..=max`.
    pub entitlements_per_user: u32,
    pub subscriptions: u64,
    pub deliveries: u64,
    /// Fraction of deliveries that are `dead_lettered`, in `0..=1` (rounded to whole rows).
    pub dead_letter_share: f64,
    /// Subscription `n` gets `endpoint_url = "{endpoint_base}/{n}"` (a trailing `/` is dropped).
    pub endpoint_base: String,
    /// Dead-lettered deliveries get an `updated_at` spread over this many hours before `now`.
    pub dead_letter_window_hours: u32,
    /// The "now" that dead-lettered `updated_at` values are relative to.
    pub now: OffsetDateTime,
}

impl Default for GeneratorSpec {
    fn default() -> Self {
        Self {
            seed: 1,
            users: 1_000,
            entitlements_per_user: 3,
            subscriptions: 20,
            deliveries: 10_000,
            dead_letter_share: 0.02,
            endpoint_base: "https://hooks.example.com".to_owned(),
            dead_letter_window_hours: 24,
            now: OffsetDateTime::now_utc(),
        }
    }
}

impl GeneratorSpec {
    /// A spec whose database comes out at roughly `bytes` (`pg_database_size`), deliveries
    /// making up most of it, with one user per 8 deliveries and one subscription per 500.
    pub fn for_target_bytes(seed: u64, bytes: u64) -> Self {
        let deliveries =
            (bytes.saturating_sub(EMPTY_DATABASE_BYTES) / BYTES_PER_DELIVERY).min(MAX_ROWS);
        Self {
            seed,
            users: (deliveries / 8).max(1),
            entitlements_per_user: 4,
            subscriptions: (deliveries / 500).clamp(1, 10_000),
            deliveries,
            ..Self::default()
        }
    }

    /// Checks the spec; the error names the offending field.
    pub fn validate(&self) -> Result<(), CatalystDbError> {
        for (field, value) in [
            ("users", self.users),
            ("subscriptions", self.subscriptions),
            ("deliveries", self.deliveries),
        ] {
            if value > MAX_ROWS {
                return Err(CatalystDbError::invalid(
                    field,
                    format!("{value} is above the limit of {MAX_ROWS}"),
                ));
            }
        }
        if !(0.0..=1.0).contains(&self.dead_letter_share) {
            return Err(CatalystDbError::invalid(
                "dead_letter_share",
                format!("{} is not within 0..=1", self.dead_letter_share),
            ));
        }
        if self.entitlements_per_user as usize > PRODUCTS.len() {
            return Err(CatalystDbError::invalid(
                "entitlements_per_user",
                format!(
                    "{} is more than the {} products a user can be entitled to",
                    self.entitlements_per_user,
                    PRODUCTS.len()
                ),
            ));
        }
        if self.users == 0 && self.entitlements_per_user > 0 {
            return Err(CatalystDbError::invalid(
                "users",
                "must be at least 1 when entitlements_per_user > 0 (entitlements belong to users)",
            ));
        }
        if self.subscriptions == 0 && self.deliveries > 0 {
            return Err(CatalystDbError::invalid(
                "subscriptions",
                "must be at least 1 when deliveries > 0 (deliveries belong to subscriptions)",
            ));
        }
        if !(1..=MAX_DEAD_LETTER_WINDOW_HOURS).contains(&self.dead_letter_window_hours) {
            return Err(CatalystDbError::invalid(
                "dead_letter_window_hours",
                format!(
                    "{} is not within 1..={MAX_DEAD_LETTER_WINDOW_HOURS}",
                    self.dead_letter_window_hours
                ),
            ));
        }
        if self
            .now
            .checked_sub(Duration::hours(i64::from(self.dead_letter_window_hours)))
            .is_none()
        {
            return Err(CatalystDbError::invalid(
                "now",
                "is too close to the earliest representable time",
            ));
        }
        validate_endpoint_base(&self.endpoint_base)
    }

    fn dead_lettered_rows(&self) -> u64 {
        // In 0..=1 after validate(), so the product fits and rounds to at most `deliveries`.
        ((self.deliveries as f64 * self.dead_letter_share).round() as u64).min(self.deliveries)
    }
}

fn validate_endpoint_base(base: &str) -> Result<(), CatalystDbError> {
    const FIELD: &str = "endpoint_base";
    let Some(rest) = base
        .strip_prefix("https://")
        .or_else(|| base.strip_prefix("http://"))
    else {
        return Err(CatalystDbError::invalid(
            FIELD,
            "must start with http:// or https://",
        ));
    };
    if rest.trim_end_matches('/').is_empty() {
        return Err(CatalystDbError::invalid(FIELD, "has no host"));
    }
    if base.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(CatalystDbError::invalid(
            FIELD,
            "contains whitespace or control characters",
        ));
    }
    if base.contains(['?', '#']) {
        return Err(CatalystDbError::invalid(
            FIELD,
            "must not have a query or fragment: subscription numbers are appended as a path segment",
        ));
    }
    Ok(())
}

/// Rows written per table, and deliveries per status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct GeneratedCounts {
    pub users: u64,
    pub entitlements: u64,
    pub webhook_subscriptions: u64,
    pub webhook_deliveries: u64,
    pub deliveries_by_status: DeliveryStatusCounts,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct DeliveryStatusCounts {
    pub pending: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub dead_lettered: u64,
}

impl DeliveryStatusCounts {
    pub fn get(&self, status: DeliveryStatus) -> u64 {
        match status {
            DeliveryStatus::Pending => self.pending,
            DeliveryStatus::Succeeded => self.succeeded,
            DeliveryStatus::Failed => self.failed,
            DeliveryStatus::DeadLettered => self.dead_lettered,
        }
    }

    fn add(&mut self, status: DeliveryStatus) {
        match status {
            DeliveryStatus::Pending => self.pending += 1,
            DeliveryStatus::Succeeded => self.succeeded += 1,
            DeliveryStatus::Failed => self.failed += 1,
            DeliveryStatus::DeadLettered => self.dead_lettered += 1,
        }
    }
}

const LOCK_TABLES_SQL: &str =
    "LOCK TABLE users, entitlements, webhook_subscriptions, webhook_deliveries IN EXCLUSIVE MODE";
const TABLES_HAVE_ROWS_SQL: &str = "SELECT EXISTS (SELECT 1 FROM users), EXISTS (SELECT 1 FROM entitlements), \
     EXISTS (SELECT 1 FROM webhook_subscriptions), EXISTS (SELECT 1 FROM webhook_deliveries)";
const COPY_USERS_SQL: &str =
    "COPY users (id, email, display_name, created_at, disabled) FROM STDIN";
const COPY_ENTITLEMENTS_SQL: &str =
    "COPY entitlements (id, user_id, product, plan, granted_at, expires_at) FROM STDIN";
const COPY_SUBSCRIPTIONS_SQL: &str = "COPY webhook_subscriptions (id, endpoint_url, description, secret_hash, active, created_at) FROM STDIN";
const COPY_DELIVERIES_SQL: &str = "COPY webhook_deliveries (id, subscription_id, event_type, payload, status, \
     error_message, attempts, next_attempt_at, created_at, updated_at) FROM STDIN";
// Rows were written with explicit ids, so move each identity sequence past them: the next
// insert by the application (or a test) must not collide.
const SET_SEQUENCES_SQL: &str = "
SELECT setval(pg_get_serial_sequence('users', 'id'), COALESCE(MAX(id), 0) + 1, false) FROM users;
SELECT setval(pg_get_serial_sequence('entitlements', 'id'), COALESCE(MAX(id), 0) + 1, false) FROM entitlements;
SELECT setval(pg_get_serial_sequence('webhook_subscriptions', 'id'), COALESCE(MAX(id), 0) + 1, false)
    FROM webhook_subscriptions;
SELECT setval(pg_get_serial_sequence('webhook_deliveries', 'id'), COALESCE(MAX(id), 0) + 1, false)
    FROM webhook_deliveries;
";
const ANALYZE_SQL: &str = "ANALYZE users, entitlements, webhook_subscriptions, webhook_deliveries";
const DATABASE_SIZE_SQL: &str = "SELECT pg_database_size(current_database())";

/// Fills the (empty) reference schema according to `spec`, in one transaction, then analyzes
/// the tables. The spec is validated before anything is sent. The client must not be used by
/// anyone else meanwhile: the transaction is opened on it with `BEGIN`.
pub async fn generate(
    client: &Client,
    spec: &GeneratorSpec,
) -> Result<GeneratedCounts, CatalystDbError> {
    spec.validate()?;
    client.batch_execute("BEGIN").await?;
    let counts = match fill(client, spec).await {
        Ok(counts) => counts,
        Err(err) => {
            // The fill error is the one worth reporting; a failed rollback means the connection
            // is gone, which ends the transaction anyway.
            let _ = client.batch_execute("ROLLBACK").await;
            return Err(err);
        }
    };
    client.batch_execute("COMMIT").await?;
    client.batch_execute(ANALYZE_SQL).await?;
    Ok(counts)
}

/// `pg_database_size` of the connected database, in bytes.
pub async fn database_size_bytes(client: &Client) -> Result<u64, CatalystDbError> {
    let size: i64 = client.query_one(DATABASE_SIZE_SQL, &[]).await?.get(0);
    Ok(u64::try_from(size).unwrap_or_default())
}

async fn fill(client: &Client, spec: &GeneratorSpec) -> Result<GeneratedCounts, CatalystDbError> {
    // Locked before the emptiness check so that no writer can slip rows in between.
    client.batch_execute(LOCK_TABLES_SQL).await?;
    let row = client.query_one(TABLES_HAVE_ROWS_SQL, &[]).await?;
    for (i, table) in catalyst_dr::catalyst_db::schema::TABLES
        .into_iter()
        .enumerate()
    {
        if row.try_get::<_, bool>(i)? {
            return Err(CatalystDbError::TargetNotEmpty { table });
        }
    }

    let users = copy_rows(client, COPY_USERS_SQL, &mut UserRows::new(spec)).await?;
    let entitlements = copy_rows(
        client,
        COPY_ENTITLEMENTS_SQL,
        &mut EntitlementRows::new(spec),
    )
    .await?;
    let webhook_subscriptions = copy_rows(
        client,
        COPY_SUBSCRIPTIONS_SQL,
        &mut SubscriptionRows::new(spec),
    )
    .await?;
    let mut deliveries = DeliveryRows::new(spec);
    let webhook_deliveries = copy_rows(client, COPY_DELIVERIES_SQL, &mut deliveries).await?;
    client.batch_execute(SET_SEQUENCES_SQL).await?;
    Ok(GeneratedCounts {
        users,
        entitlements,
        webhook_subscriptions,
        webhook_deliveries,
        deliveries_by_status: deliveries.counts,
    })
}

/// A table's rows in COPY text format, produced a few at a time.
trait RowSource {
    /// Appends the next row(s) to `buf`; false when there are none left.
    fn write_next(&mut self, buf: &mut BytesMut) -> bool;
}

/// Streams `source` into `COPY ... FROM STDIN`, a chunk at a time; returns the rows copied.
async fn copy_rows(
    client: &Client,
    statement: &str,
    source: &mut impl RowSource,
) -> Result<u64, CatalystDbError> {
    let sink = client.copy_in::<_, Bytes>(statement).await?;
    let mut sink = std::pin::pin!(sink);
    let mut buf = BytesMut::with_capacity(CHUNK_BYTES + 16 * 1024);
    loop {
        let more = source.write_next(&mut buf);
        if buf.len() >= CHUNK_BYTES || (!more && !buf.is_empty()) {
            sink.send(buf.split().freeze()).await?;
        }
        if !more {
            break;
        }
    }
    Ok(sink.as_mut().finish().await?)
}

// Each table (and the users' creation times, which entitlements need again) has its own stream,
// so one table's contents do not depend on how much randomness another one used.
const STREAM_USERS: u64 = 1;
const STREAM_USER_CREATED_AT: u64 = 2;
const STREAM_ENTITLEMENTS: u64 = 3;
const STREAM_SUBSCRIPTIONS: u64 = 4;
const STREAM_DELIVERIES: u64 = 5;

fn stream_rng(seed: u64, stream: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(stream);
    rng
}

fn pick<'a>(rng: &mut ChaCha8Rng, items: &[&'a str]) -> &'a str {
    items[rng.random_range(0..items.len())]
}

fn micros(us: i64) -> Duration {
    Duration::microseconds(us)
}

/// How long before [`EPOCH`] user `id` was created (0 to 3 years), recomputable from the id
/// alone: the entitlements pass needs it again without keeping every user in memory.
struct UserClock(ChaCha8Rng);

impl UserClock {
    const SPAN_US: u64 = 3 * 365 * DAY_US as u64;

    fn new(seed: u64) -> Self {
        Self(stream_rng(seed, STREAM_USER_CREATED_AT))
    }

    fn age_us(&mut self, id: u64) -> i64 {
        // Two 32-bit words per user; `next_u64` consumes exactly two, so ids never overlap.
        self.0.set_word_pos(u128::from(id) * 2);
        (self.0.next_u64() % Self::SPAN_US) as i64
    }
}

/// One line of COPY text format: fields separated by tabs, `\N` for NULL.
struct CopyLine<'a> {
    buf: &'a mut BytesMut,
    started: bool,
}

impl<'a> CopyLine<'a> {
    fn new(buf: &'a mut BytesMut) -> Self {
        Self {
            buf,
            started: false,
        }
    }

    fn field(&mut self) -> &mut BytesMut {
        if self.started {
            self.buf.put_u8(b'\t');
        }
        self.started = true;
        self.buf
    }

    fn int(mut self, value: i64) -> Self {
        // Writing into a BytesMut cannot fail: it grows as needed.
        let _ = write!(self.field(), "{value}");
        self
    }

    fn id(self, value: u64) -> Self {
        // validate() caps every count at MAX_ROWS, far below i64::MAX.
        self.int(value as i64)
    }

    fn text(mut self, value: &str) -> Self {
        push_copy_text(self.field(), value);
        self
    }

    fn opt_text(mut self, value: Option<&str>) -> Self {
        match value {
            Some(v) => push_copy_text(self.field(), v),
            None => self.field().put_slice(b"\\N"),
        }
        self
    }

    fn boolean(mut self, value: bool) -> Self {
        self.field().put_u8(if value { b't' } else { b'f' });
        self
    }

    fn timestamp(mut self, value: OffsetDateTime) -> Self {
        push_timestamp(self.field(), value);
        self
    }

    fn opt_timestamp(mut self, value: Option<OffsetDateTime>) -> Self {
        match value {
            Some(v) => push_timestamp(self.field(), v),
            None => self.field().put_slice(b"\\N"),
        }
        self
    }

    fn end(self) {
        self.buf.put_u8(b'\n');
    }
}

/// Appends `value` escaped for COPY text format: backslash, tab, newline and carriage return
/// are the bytes that would otherwise be read as syntax (UTF-8 continuation bytes never match).
fn push_copy_text(buf: &mut BytesMut, value: &str) {
    let bytes = value.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escaped: &[u8] = match b {
            b'\\' => b"\\\\",
            b'\t' => b"\\t",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            _ => continue,
        };
        buf.put_slice(&bytes[start..i]);
        buf.put_slice(escaped);
        start = i + 1;
    }
    buf.put_slice(&bytes[start..]);
}

/// `timestamptz` input with an explicit UTC offset, so the session time zone does not matter.
fn push_timestamp(buf: &mut BytesMut, value: OffsetDateTime) {
    let t = value.to_offset(UtcOffset::UTC);
    // Writing into a BytesMut cannot fail: it grows as needed.
    let _ = write!(
        buf,
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}.{:06}+00",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.microsecond()
    );
}

fn rfc3339(value: OffsetDateTime) -> String {
    let t = value.to_offset(UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.microsecond()
    )
}

fn person_name(rng: &mut ChaCha8Rng) -> String {
    let first = pick(rng, FIRST_NAMES);
    let last = pick(rng, LAST_NAMES);
    format!("{first} {last}")
}

struct UserRows {
    rng: ChaCha8Rng,
    clock: UserClock,
    next_id: u64,
    total: u64,
}

impl UserRows {
    fn new(spec: &GeneratorSpec) -> Self {
        Self {
            rng: stream_rng(spec.seed, STREAM_USERS),
            clock: UserClock::new(spec.seed),
            next_id: 1,
            total: spec.users,
        }
    }
}

impl RowSource for UserRows {
    fn write_next(&mut self, buf: &mut BytesMut) -> bool {
        if self.next_id > self.total {
            return false;
        }
        let id = self.next_id;
        self.next_id += 1;
        let rng = &mut self.rng;
        let handle = pick(rng, EMAIL_HANDLES);
        let domain = pick(rng, EMAIL_DOMAINS);
        // The id right before the '@' keeps emails unique.
        let email = if rng.random_bool(0.1) {
            format!("{handle}+{}.{id}@{domain}", pick(rng, EMAIL_TAGS))
        } else {
            format!("{handle}.{id}@{domain}")
        };
        let name = person_name(rng);
        let display_name = if id.is_multiple_of(EDGE_CASE_PERIOD) {
            let edge = (id / EDGE_CASE_PERIOD - 1) % EDGE_CASE_DISPLAY_NAMES.len() as u64;
            Some(EDGE_CASE_DISPLAY_NAMES[edge as usize])
        } else if rng.random_bool(0.08) {
            None
        } else {
            Some(name.as_str())
        };
        let disabled = rng.random_bool(0.03);
        let created_at = EPOCH - micros(self.clock.age_us(id));
        CopyLine::new(buf)
            .id(id)
            .text(&email)
            .opt_text(display_name)
            .timestamp(created_at)
            .boolean(disabled)
            .end();
        true
    }
}

struct EntitlementRows {
    rng: ChaCha8Rng,
    clock: UserClock,
    next_user: u64,
    users: u64,
    max_per_user: u32,
    next_id: u64,
}

impl EntitlementRows {
    fn new(spec: &GeneratorSpec) -> Self {
        Self {
            rng: stream_rng(spec.seed, STREAM_ENTITLEMENTS),
            clock: UserClock::new(spec.seed),
            next_user: 1,
            users: if spec.entitlements_per_user == 0 {
                0
            } else {
                spec.users
            },
            max_per_user: spec.entitlements_per_user,
            next_id: 1,
        }
    }
}

impl RowSource for EntitlementRows {
    /// Writes one user's entitlements (possibly none).
    fn write_next(&mut self, buf: &mut BytesMut) -> bool {
        if self.next_user > self.users {
            return false;
        }
        let user_id = self.next_user;
        self.next_user += 1;
        let rng = &mut self.rng;
        let count = rng
            .random_range(0..=self.max_per_user as usize)
            .min(PRODUCTS.len());
        // Distinct products: the first `count` of a partial Fisher-Yates shuffle.
        let mut products: [usize; PRODUCTS.len()] = std::array::from_fn(|i| i);
        for i in 0..count {
            let j = rng.random_range(i..PRODUCTS.len());
            products.swap(i, j);
        }
        let age_us = self.clock.age_us(user_id);
        let user_created = EPOCH - micros(age_us);
        for &product in &products[..count] {
            let plan = pick(rng, PLANS);
            let granted_at = user_created + micros(rng.random_range(0..=age_us));
            let expires_at = if rng.random_bool(0.4) {
                None
            } else {
                Some(granted_at + micros(rng.random_range(30 * DAY_US..=730 * DAY_US)))
            };
            CopyLine::new(buf)
                .id(self.next_id)
                .id(user_id)
                .text(PRODUCTS[product])
                .text(plan)
                .timestamp(granted_at)
                .opt_timestamp(expires_at)
                .end();
            self.next_id += 1;
        }
        true
    }
}

struct SubscriptionRows {
    rng: ChaCha8Rng,
    endpoint_base: String,
    next_id: u64,
    total: u64,
}

impl SubscriptionRows {
    fn new(spec: &GeneratorSpec) -> Self {
        Self {
            rng: stream_rng(spec.seed, STREAM_SUBSCRIPTIONS),
            endpoint_base: spec.endpoint_base.trim_end_matches('/').to_owned(),
            next_id: 1,
            total: spec.subscriptions,
        }
    }
}

impl RowSource for SubscriptionRows {
    fn write_next(&mut self, buf: &mut BytesMut) -> bool {
        if self.next_id > self.total {
            return false;
        }
        let id = self.next_id;
        self.next_id += 1;
        let rng = &mut self.rng;
        let endpoint_url = format!("{}/{id}", self.endpoint_base);
        let description = if rng.random_bool(0.3) {
            None
        } else {
            Some(pick(rng, SUBSCRIPTION_DESCRIPTIONS))
        };
        let secret_hash = if rng.random_bool(0.1) {
            None
        } else {
            let words: [u64; 4] = std::array::from_fn(|_| rng.random());
            Some(format!(
                "sha256:{:016x}{:016x}{:016x}{:016x}",
                words[0], words[1], words[2], words[3]
            ))
        };
        let active = rng.random_bool(0.92);
        let created_at = EPOCH - micros(rng.random_range(60 * DAY_US..730 * DAY_US));
        CopyLine::new(buf)
            .id(id)
            .text(&endpoint_url)
            .opt_text(description)
            .opt_text(secret_hash.as_deref())
            .boolean(active)
            .timestamp(created_at)
            .end();
        true
    }
}

struct DeliveryRows {
    rng: ChaCha8Rng,
    next_id: u64,
    total: u64,
    subscriptions: u64,
    users: u64,
    dead_left: u64,
    now: OffsetDateTime,
    window_us: i64,
    counts: DeliveryStatusCounts,
}

impl DeliveryRows {
    fn new(spec: &GeneratorSpec) -> Self {
        Self {
            rng: stream_rng(spec.seed, STREAM_DELIVERIES),
            next_id: 1,
            total: spec.deliveries,
            subscriptions: spec.subscriptions,
            users: spec.users,
            dead_left: spec.dead_lettered_rows(),
            now: spec.now,
            window_us: i64::from(spec.dead_letter_window_hours) * HOUR_US,
            counts: DeliveryStatusCounts::default(),
        }
    }

    fn status(&mut self, id: u64) -> DeliveryStatus {
        // Selection sampling: exactly `dead_lettered_rows()` of the rows, spread uniformly.
        let rows_left = self.total - id + 1;
        if self.rng.random_range(0..rows_left) < self.dead_left {
            self.dead_left -= 1;
            return DeliveryStatus::DeadLettered;
        }
        match self.rng.random_range(0..100) {
            0..15 => DeliveryStatus::Pending,
            15..25 => DeliveryStatus::Failed,
            _ => DeliveryStatus::Succeeded,
        }
    }
}

fn backoff(attempts: i64) -> Duration {
    Duration::seconds(BACKOFF_SECONDS[attempts.clamp(0, 7) as usize])
}

/// An event payload of roughly 300 to 500 bytes of JSON.
fn payload(
    rng: &mut ChaCha8Rng,
    delivery_id: u64,
    event_type: &str,
    created: OffsetDateTime,
    users: u64,
) -> String {
    let user_id = rng.random_range(1..=users.max(1));
    let display_name = if rng.random_bool(0.1) {
        None
    } else {
        Some(person_name(rng))
    };
    let entitlement = if event_type.starts_with("entitlement.") {
        json!({ "product": pick(rng, PRODUCTS), "plan": pick(rng, PLANS) })
    } else {
        serde_json::Value::Null
    };
    let tag_count = rng.random_range(0..=3);
    let tags: Vec<&str> = (0..tag_count).map(|_| pick(rng, PAYLOAD_TAGS)).collect();
    let ip = format!("203.0.113.{}", rng.random_range(1..=254));
    let trace_id = format!("{:016x}{:016x}", rng.random::<u64>(), rng.random::<u64>());
    json!({
        "id": format!("evt_{delivery_id:012}_{:08x}", rng.random::<u32>()),
        "type": event_type,
        "api_version": "2025-10-01",
        "created_at": rfc3339(created),
        "data": {
            "user": {
                "id": user_id,
                "email": format!("{}.{user_id}@{}", pick(rng, EMAIL_HANDLES), pick(rng, EMAIL_DOMAINS)),
                "display_name": display_name,
            },
            "entitlement": entitlement,
        },
        "request": { "ip": ip, "user_agent": pick(rng, USER_AGENTS), "trace_id": trace_id },
        "metadata": { "source": "catalyst-auth", "region": pick(rng, REGIONS), "tags": tags },
    })
    .to_string()
}

impl RowSource for DeliveryRows {
    fn write_next(&mut self, buf: &mut BytesMut) -> bool {
        if self.next_id > self.total {
            return false;
        }
        let id = self.next_id;
        self.next_id += 1;
        let status = self.status(id);
        self.counts.add(status);
        let (subscriptions, users, now, window_us) =
            (self.subscriptions, self.users, self.now, self.window_us);
        let rng = &mut self.rng;
        // Squaring skews traffic towards the low-numbered subscriptions, as real traffic is.
        let u: f64 = rng.random();
        let subscription_id =
            ((u * u * subscriptions as f64) as u64).min(subscriptions.saturating_sub(1)) + 1;
        let event_type = pick(rng, EVENT_TYPES);
        let mut created_at = EPOCH - micros(rng.random_range(0..30 * DAY_US));
        let payload = payload(rng, id, event_type, created_at, users);
        let (attempts, error_message, next_attempt_at, updated_at) = match status {
            DeliveryStatus::Pending => {
                let attempts = rng.random_range(0..=2);
                let updated = if attempts == 0 {
                    created_at
                } else {
                    created_at + micros(rng.random_range(SECOND_US..2 * HOUR_US))
                };
                let error = (attempts > 0).then(|| pick(rng, DELIVERY_ERRORS));
                (attempts, error, Some(updated + backoff(attempts)), updated)
            }
            DeliveryStatus::Succeeded => {
                let attempts = rng.random_range(1..=3);
                let updated = created_at
                    + micros(rng.random_range(50_000..(attempts - 1) * HOUR_US + 15 * SECOND_US));
                (attempts, None, None, updated)
            }
            DeliveryStatus::Failed => {
                let attempts = rng.random_range(1..MAX_ATTEMPTS);
                let updated = created_at + micros(rng.random_range(SECOND_US..DAY_US));
                let error = pick(rng, DELIVERY_ERRORS);
                let next = rng.random_bool(0.7).then(|| updated + backoff(attempts));
                (attempts, Some(error), next, updated)
            }
            DeliveryStatus::DeadLettered => {
                // Inside the window with a margin at both ends, so a query run right after
                // generation (the runbook's `NOW() - INTERVAL '24 hours'`) sees every one.
                let margin_us = (window_us / 10).min(5 * 60 * SECOND_US);
                let updated = now - micros(rng.random_range(SECOND_US..=window_us - margin_us));
                created_at = created_at.min(updated);
                (
                    MAX_ATTEMPTS,
                    Some(pick(rng, DELIVERY_ERRORS)),
                    None,
                    updated,
                )
            }
        };
        CopyLine::new(buf)
            .id(id)
            .id(subscription_id)
            .text(event_type)
            .text(&payload)
            .text(status.as_str())
            .opt_text(error_message)
            .int(attempts)
            .opt_timestamp(next_attempt_at)
            .timestamp(created_at)
            .timestamp(updated_at)
            .end();
        true
    }
}

/// One step of live traffic on a Catalyst Auth database, as the drills see it arrive: a new
/// pending delivery, and every fourth step a user's display name changes and the oldest pending
/// delivery succeeds. `n` numbers the step.
pub async fn live_traffic_step(client: &Client, n: i64) -> Result<(), CatalystDbError> {
    client
        .execute(
            "INSERT INTO webhook_deliveries (subscription_id, event_type, payload, status, next_attempt_at)
             SELECT id, 'user.updated', jsonb_build_object('step', $1::bigint), 'pending', now()
             FROM webhook_subscriptions ORDER BY id OFFSET ($1::bigint % greatest((SELECT count(*) FROM webhook_subscriptions), 1)) LIMIT 1",
            &[&n],
        )
        .await?;
    if n % 4 == 0 {
        client
            .execute(
                "UPDATE users SET display_name = 'live ' || $1::bigint WHERE id = (SELECT id FROM users ORDER BY id OFFSET ($1::bigint % greatest((SELECT count(*) FROM users), 1)) LIMIT 1)",
                &[&n],
            )
            .await?;
        client
            .execute(
                "UPDATE webhook_deliveries SET status = 'succeeded', attempts = attempts + 1, updated_at = now()
                 WHERE id = (SELECT id FROM webhook_deliveries WHERE status = 'pending' ORDER BY id LIMIT 1)",
                &[],
            )
            .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> GeneratorSpec {
        GeneratorSpec {
            seed: 7,
            users: 300,
            entitlements_per_user: 4,
            subscriptions: 5,
            deliveries: 2_000,
            dead_letter_share: 0.1,
            now: datetime!(2026-06-01 12:00:00 UTC),
            ..GeneratorSpec::default()
        }
    }

    fn render(source: &mut impl RowSource) -> Vec<u8> {
        let mut buf = BytesMut::new();
        while source.write_next(&mut buf) {}
        buf.to_vec()
    }

    fn field_err(spec: &GeneratorSpec) -> &'static str {
        match spec.validate() {
            Err(CatalystDbError::InvalidSpec { field, .. }) => field,
            other => panic!("expected InvalidSpec, got {other:?}"),
        }
    }

    #[test]
    fn copy_text_escaping() {
        let mut buf = BytesMut::new();
        push_copy_text(&mut buf, "a\\b\tc\nd\re \\N é🦀");
        assert_eq!(&buf[..], "a\\\\b\\tc\\nd\\re \\\\N é🦀".as_bytes());
        let mut buf = BytesMut::new();
        CopyLine::new(&mut buf)
            .id(3)
            .opt_text(None)
            .text("")
            .boolean(true)
            .end();
        assert_eq!(&buf[..], b"3\t\\N\t\tt\n");
    }

    #[test]
    fn timestamps_are_utc_with_microseconds() {
        let mut buf = BytesMut::new();
        let t = datetime!(2026-03-04 05:06:07.123456789 +02:00);
        push_timestamp(&mut buf, t);
        assert_eq!(&buf[..], b"2026-03-04 03:06:07.123456+00");
        assert_eq!(rfc3339(t), "2026-03-04T03:06:07.123456Z");
    }

    #[test]
    fn same_seed_same_bytes_other_seed_other_bytes() {
        let a = spec();
        let mut b = spec();
        b.seed = 8;
        assert_eq!(
            render(&mut DeliveryRows::new(&a)),
            render(&mut DeliveryRows::new(&a))
        );
        assert_eq!(
            render(&mut EntitlementRows::new(&a)),
            render(&mut EntitlementRows::new(&a))
        );
        assert_ne!(
            render(&mut DeliveryRows::new(&a)),
            render(&mut DeliveryRows::new(&b))
        );
        assert_ne!(
            render(&mut UserRows::new(&a)),
            render(&mut UserRows::new(&b))
        );
    }

    #[test]
    fn dead_letter_share_is_exact_and_in_the_window() {
        let spec = spec();
        let mut rows = DeliveryRows::new(&spec);
        let text = render(&mut rows);
        assert_eq!(rows.counts.dead_lettered, 200);
        let c = rows.counts;
        assert_eq!(c.pending + c.succeeded + c.failed + c.dead_lettered, 2_000);
        assert!(c.pending > 0 && c.succeeded > 0 && c.failed > 0);
        assert_eq!(text.iter().filter(|&&b| b == b'\n').count(), 2_000);
    }

    #[test]
    fn payloads_are_300_to_500_bytes() {
        let mut rng = stream_rng(1, 99);
        let sizes: Vec<usize> = (0..2_000)
            .map(|i| {
                let event_type = pick(&mut rng, EVENT_TYPES);
                payload(&mut rng, i, event_type, EPOCH, 1_000).len()
            })
            .collect();
        let mean = sizes.iter().sum::<usize>() / sizes.len();
        let (min, max) = (sizes.iter().min(), sizes.iter().max());
        assert!(
            (300..=500).contains(&mean),
            "mean {mean} min {min:?} max {max:?}"
        );
        assert!(
            sizes.iter().all(|s| (250..=600).contains(s)),
            "min {min:?} max {max:?}"
        );
    }

    #[test]
    fn entitlements_are_unique_per_user_and_bounded() {
        let spec = spec();
        let text = String::from_utf8(render(&mut EntitlementRows::new(&spec))).expect("utf-8");
        let mut seen = std::collections::HashSet::new();
        for line in text.lines() {
            let fields: Vec<&str> = line.split('\t').collect();
            assert!(
                seen.insert((fields[1].to_owned(), fields[2].to_owned())),
                "duplicate {line}"
            );
        }
        assert!(seen.len() <= 300 * 4);
    }

    #[test]
    fn validation_names_the_field() {
        let ok = spec();
        ok.validate().expect("valid");
        assert_eq!(
            field_err(&GeneratorSpec {
                dead_letter_share: 1.5,
                ..ok.clone()
            }),
            "dead_letter_share"
        );
        assert_eq!(
            field_err(&GeneratorSpec {
                dead_letter_share: f64::NAN,
                ..ok.clone()
            }),
            "dead_letter_share"
        );
        assert_eq!(
            field_err(&GeneratorSpec {
                users: 0,
                ..ok.clone()
            }),
            "users"
        );
        assert_eq!(
            field_err(&GeneratorSpec {
                subscriptions: 0,
                ..ok.clone()
            }),
            "subscriptions"
        );
        assert_eq!(
            field_err(&GeneratorSpec {
                entitlements_per_user: 7,
                ..ok.clone()
            }),
            "entitlements_per_user"
        );
        assert_eq!(
            field_err(&GeneratorSpec {
                dead_letter_window_hours: 0,
                ..ok.clone()
            }),
            "dead_letter_window_hours"
        );
        for base in ["ftp://x", "https://", "https://a b", "https://x/?q=1"] {
            assert_eq!(
                field_err(&GeneratorSpec {
                    endpoint_base: base.into(),
                    ..ok.clone()
                }),
                "endpoint_base"
            );
        }
        GeneratorSpec {
            users: 0,
            entitlements_per_user: 0,
            subscriptions: 0,
            deliveries: 0,
            ..ok
        }
        .validate()
        .expect("an empty data set is valid");
    }

    #[test]
    fn target_bytes_scales_deliveries() {
        let small = GeneratorSpec::for_target_bytes(1, 1_000);
        assert_eq!(small.deliveries, 0);
        small.validate().expect("valid");
        let big = GeneratorSpec::for_target_bytes(1, 100_000_000);
        assert!(big.deliveries > 100_000 && big.users > 10_000 && big.subscriptions >= 1);
        big.validate().expect("valid");
    }
}
