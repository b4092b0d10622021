//! Connections to PostgreSQL with credentials from Secrets Manager: fetched at first use in each
//! invocation (a warm process follows a changed secret, host or database name included), shared by
//! the connections of that invocation, and fetched again once when the server rejects them. TLS verifies the
//! server against a configured CA bundle (the Amazon RDS bundle is not in the usual root stores).
//! Passwords and connection strings never reach logs, results or error messages.
//! Every wait is bounded ([`PgBounds`]): a server that accepts TCP connections but never answers
//! fails the step with an error naming the bound, instead of hanging it until the Lambda timeout.

use crate::aws_error::{AwsCallError, classify};
use crate::config::{ConfigError, Env};
use crate::error_kind::ErrorKind;
use crate::settings::{self, Setting};
use serde::Deserialize;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::Mutex;
use tokio_postgres::Client;
use tokio_postgres::error::SqlState;

/// How the connection is protected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsMode {
    /// Plain TCP: only for a database on loopback, such as the local stack's.
    Disable,
    /// TLS, verifying the server certificate and host name against the bundle.
    VerifyFull { ca_bundle: PathBuf },
}

impl TlsMode {
    /// `PG_TLS` (`verify-full`, the default, or `disable`) and `PG_CA_BUNDLE` (a PEM file).
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        match env.text_or_default(&settings::PG_TLS)?.as_str() {
            "disable" => Ok(Self::Disable),
            "verify-full" => {
                let ca_bundle = PathBuf::from(env.require(&settings::PG_CA_BUNDLE)?);
                if !ca_bundle.is_file() {
                    return Err(ConfigError::Invalid {
                        var: settings::PG_CA_BUNDLE.name,
                        reason: format!("{} is not a readable file", ca_bundle.display()),
                    });
                }
                Ok(Self::VerifyFull { ca_bundle })
            }
            other => Err(ConfigError::Invalid {
                var: settings::PG_TLS.name,
                reason: format!("{other:?} is not verify-full or disable"),
            }),
        }
    }
}

/// How long catalyst-dr waits for PostgreSQL, at each stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PgBounds {
    /// `PG_CONNECT_TIMEOUT_MS`: the TCP connection.
    pub connect_ms: u32,
    /// `PG_HANDSHAKE_TIMEOUT_MS`: TLS negotiation and handshake, startup and authentication, once
    /// TCP is connected (the kernel completes TCP for a frozen server; this is what catches it).
    pub handshake_ms: u32,
    /// `PG_STATEMENT_TIMEOUT_MS`: the server's `statement_timeout`; callers that bound their
    /// statements client-side too wait [`STATEMENT_GRACE_MS`] longer, for a server that cannot
    /// answer at all. 0: no statement bound (long `COPY` and index builds).
    pub statement_ms: u32,
    /// `PG_KEEPALIVE_IDLE_SECONDS`: TCP keepalive after this much silence (then every 10 s, 3
    /// probes); data left unacknowledged for [`TCP_USER_TIMEOUT_SECONDS`] also gives up. A vanished
    /// host or a network partition breaks the connection instead of leaving it open forever.
    pub keepalive_idle_s: u32,
}

/// How long sent data may stay unacknowledged (`TCP_USER_TIMEOUT`): generous, because a server
/// that is busy but alive can stall a large `COPY FROM` for a while.
pub const TCP_USER_TIMEOUT_SECONDS: u64 = 300;

/// How much longer than the server's `statement_timeout` a client-side statement bound waits.
pub const STATEMENT_GRACE_MS: u32 = 2_000;

impl Default for PgBounds {
    fn default() -> Self {
        Self {
            connect_ms: const { settings::PG_CONNECT_TIMEOUT_MS.default_number() },
            handshake_ms: const { settings::PG_HANDSHAKE_TIMEOUT_MS.default_number() },
            statement_ms: const { settings::PG_STATEMENT_TIMEOUT_MS.default_number() },
            keepalive_idle_s: const { settings::PG_KEEPALIVE_IDLE_SECONDS.default_number() },
        }
    }
}

impl PgBounds {
    /// The bounds from the environment; `statement` is the function's own
    /// `PG_STATEMENT_TIMEOUT_MS` row (the default differs between functions).
    pub fn from_env(env: &Env, statement: &'static Setting) -> Result<Self, ConfigError> {
        Ok(Self {
            connect_ms: env.number(&settings::PG_CONNECT_TIMEOUT_MS)?,
            handshake_ms: env.number(&settings::PG_HANDSHAKE_TIMEOUT_MS)?,
            statement_ms: env.number(statement)?,
            keepalive_idle_s: env.number(&settings::PG_KEEPALIVE_IDLE_SECONDS)?,
        })
    }

    /// The client-side wait for one statement's answer, when statements are bounded.
    pub fn statement_wait(&self) -> Option<std::time::Duration> {
        (self.statement_ms > 0).then(|| {
            std::time::Duration::from_millis(
                u64::from(self.statement_ms) + u64::from(STATEMENT_GRACE_MS),
            )
        })
    }

    fn apply(&self, config: &mut tokio_postgres::Config) {
        use std::time::Duration;
        config
            .connect_timeout(Duration::from_millis(self.connect_ms.into()))
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(self.keepalive_idle_s.into()))
            .keepalives_interval(Duration::from_secs(10))
            .keepalives_retries(3)
            .tcp_user_timeout(Duration::from_secs(TCP_USER_TIMEOUT_SECONDS));
        if self.statement_ms > 0 {
            config.options(format!("-c statement_timeout={}", self.statement_ms));
        }
    }
}

/// PostgreSQL did not answer within one of the [`PgBounds`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{operation}: PostgreSQL ({target}) did not answer within the {bound} bound ({var} = {ms} ms)"
)]
pub struct PgTimeout {
    pub operation: String,
    pub target: String,
    /// `connect`, `handshake` or `statement`.
    pub bound: &'static str,
    pub var: &'static str,
    pub ms: u32,
}

impl PgTimeout {
    pub fn statement(
        operation: impl Into<String>,
        target: impl Into<String>,
        bounds: &PgBounds,
    ) -> Self {
        Self {
            operation: operation.into(),
            target: target.into(),
            bound: "statement",
            var: settings::PG_STATEMENT_TIMEOUT_MS.name,
            ms: bounds.statement_ms,
        }
    }
}

/// Whether the server cancelled a statement because it ran past `statement_timeout`.
pub fn is_statement_timeout(err: &tokio_postgres::Error) -> bool {
    err.as_db_error().is_some_and(|db| {
        *db.code() == SqlState::QUERY_CANCELED && db.message().contains("statement timeout")
    })
}

/// The secret's JSON, in the shape RDS and Secrets Manager rotation use.
#[derive(Clone, PartialEq, Eq, Deserialize)]
pub struct DbCredentials {
    pub host: String,
    #[serde(
        default = "default_port",
        deserialize_with = "port_from_number_or_text"
    )]
    pub port: u16,
    pub username: String,
    pub password: String,
    #[serde(default = "default_dbname", alias = "dbName", alias = "database")]
    pub dbname: String,
}

fn default_port() -> u16 {
    5432
}

fn default_dbname() -> String {
    "postgres".to_owned()
}

fn port_from_number_or_text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u16, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Port {
        Number(u16),
        Text(String),
    }
    match Port::deserialize(d)? {
        Port::Number(n) => Ok(n),
        Port::Text(t) => t.parse().map_err(serde::de::Error::custom),
    }
}

impl std::fmt::Debug for DbCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DbCredentials")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("dbname", &self.dbname)
            .finish()
    }
}

impl DbCredentials {
    /// Credentials from a `postgresql://user:password@host:port/db` URL held in `var`; a URL
    /// without a host, user or password is refused by name (the password is never quoted).
    pub fn from_url(var: &'static str, url: &str) -> Result<Self, crate::config::ConfigError> {
        let invalid = |reason: &str| crate::config::ConfigError::Invalid {
            var,
            reason: reason.to_owned(),
        };
        let config: tokio_postgres::Config = url
            .parse()
            .map_err(|_| invalid("not a postgresql:// URL"))?;
        let host = match config.get_hosts() {
            [tokio_postgres::config::Host::Tcp(host)] => host.clone(),
            _ => return Err(invalid("needs exactly one TCP host")),
        };
        let password = config
            .get_password()
            .ok_or_else(|| invalid("has no password"))?;
        Ok(Self {
            host,
            port: config.get_ports().first().copied().unwrap_or(5432),
            username: config
                .get_user()
                .filter(|user| !user.is_empty())
                .ok_or_else(|| invalid("has no user"))?
                .to_owned(),
            password: String::from_utf8(password.to_vec())
                .map_err(|_| invalid("the password is not UTF-8"))?,
            dbname: config.get_dbname().unwrap_or("postgres").to_owned(),
        })
    }

    pub fn config(&self) -> tokio_postgres::Config {
        let mut config = tokio_postgres::Config::new();
        config
            .host(&self.host)
            .port(self.port)
            .user(&self.username)
            .password(&self.password)
            .dbname(&self.dbname)
            .application_name("catalyst-dr");
        PgBounds::default().apply(&mut config);
        config
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PgConnectError {
    #[error(transparent)]
    Secret(#[from] AwsCallError),
    #[error("secret {secret_id} is not a database credential document: {reason}")]
    BadSecret { secret_id: String, reason: String },
    #[error("CA bundle {path}: {reason}")]
    CaBundle { path: String, reason: String },
    #[error(
        "PG_TLS=disable is only for a database on loopback; {host} is not (credentials never cross a network in clear text)"
    )]
    PlainTextToRemoteHost { host: String },
    #[error("connecting to {host}:{port}/{dbname} as {username}")]
    Connect {
        host: String,
        port: u16,
        dbname: String,
        username: String,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error(transparent)]
    Timeout(#[from] PgTimeout),
}

impl PgConnectError {
    pub fn error_type(&self) -> ErrorKind {
        match self {
            Self::Secret(e) => e.error_type(),
            Self::BadSecret { .. } | Self::CaBundle { .. } | Self::PlainTextToRemoteHost { .. } => {
                ErrorKind::Misconfigured
            }
            Self::Connect { source, .. } if is_auth_failure(source) => {
                ErrorKind::DatabaseAuthFailed
            }
            Self::Connect { .. } | Self::Timeout(_) => ErrorKind::DatabaseUnavailable,
        }
    }
}

fn is_auth_failure(err: &tokio_postgres::Error) -> bool {
    matches!(err.code(), Some(c) if *c == SqlState::INVALID_PASSWORD || *c == SqlState::INVALID_AUTHORIZATION_SPECIFICATION)
}

/// Where credentials come from.
#[async_trait::async_trait]
pub trait SecretSource: Send + Sync {
    async fn secret_string(&self, secret_id: &str) -> Result<String, AwsCallError>;
}

#[async_trait::async_trait]
impl SecretSource for aws_sdk_secretsmanager::Client {
    async fn secret_string(&self, secret_id: &str) -> Result<String, AwsCallError> {
        let out = self
            .get_secret_value()
            .secret_id(secret_id)
            .send()
            .await
            .map_err(|e| classify("secretsmanager:GetSecretValue", e))?;
        Ok(out.secret_string().unwrap_or_default().to_owned())
    }
}

/// Counts invocations; cached credentials belong to one of them.
static INVOCATION: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Marks the start of an invocation (the Lambda edge calls it): credentials cached by earlier
/// invocations are read from Secrets Manager again at their next use.
pub fn new_invocation() {
    INVOCATION.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
}

fn invocation() -> u64 {
    INVOCATION.load(std::sync::atomic::Ordering::SeqCst)
}

/// Connects to one database whose credentials live in one secret.
pub struct PgConnector {
    secrets: Arc<dyn SecretSource>,
    secret_id: String,
    tls: TlsMode,
    bounds: PgBounds,
    /// Another database on the secret's server, in place of the secret's `dbname`.
    database: Option<String>,
    /// The credentials and the invocation that read them.
    cached: Mutex<Option<(DbCredentials, u64)>>,
}

impl PgConnector {
    pub fn new(secrets: Arc<dyn SecretSource>, secret_id: impl Into<String>, tls: TlsMode) -> Self {
        Self {
            secrets,
            secret_id: secret_id.into(),
            tls,
            bounds: PgBounds::default(),
            database: None,
            cached: Mutex::new(None),
        }
    }

    /// The same connector with other bounds.
    pub fn with_bounds(mut self, bounds: PgBounds) -> Self {
        self.bounds = bounds;
        self
    }

    /// The same connector, connecting to `database` on the secret's server.
    pub fn with_database(mut self, database: Option<String>) -> Self {
        self.database = database;
        self
    }

    pub fn bounds(&self) -> &PgBounds {
        &self.bounds
    }

    pub fn secret_id(&self) -> &str {
        &self.secret_id
    }

    async fn fetch(&self) -> Result<DbCredentials, PgConnectError> {
        let text = self.secrets.secret_string(&self.secret_id).await?;
        let mut credentials: DbCredentials =
            serde_json::from_str(&text).map_err(|e| PgConnectError::BadSecret {
                secret_id: self.secret_id.clone(),
                // serde's message can quote the offending value; keep only its position.
                reason: format!(
                    "invalid JSON or missing field at line {} column {}",
                    e.line(),
                    e.column()
                ),
            })?;
        if let Some(database) = &self.database {
            credentials.dbname.clone_from(database);
        }
        Ok(credentials)
    }

    /// The credentials in use, fetching them on first use in this invocation.
    pub async fn credentials(&self) -> Result<DbCredentials, PgConnectError> {
        let mut cached = self.cached.lock().await;
        let now = invocation();
        if let Some((credentials, _)) = cached.as_ref().filter(|(_, read_in)| *read_in == now) {
            return Ok(credentials.clone());
        }
        let credentials = self.fetch().await?;
        *cached = Some((credentials.clone(), now));
        Ok(credentials)
    }

    /// A connection; if the cached credentials are refused, the secret is read again once.
    pub async fn connect(&self) -> Result<Client, PgConnectError> {
        let credentials = self.credentials().await?;
        match connect_bounded(&credentials, &self.tls, &self.bounds).await {
            Err(PgConnectError::Connect { source, .. }) if is_auth_failure(&source) => {
                tracing::info!(secret_id = %self.secret_id, "credentials refused; reading the secret again");
                let fresh = self.fetch().await?;
                *self.cached.lock().await = Some((fresh.clone(), invocation()));
                connect_bounded(&fresh, &self.tls, &self.bounds).await
            }
            other => other,
        }
    }
}

/// Opens one connection with explicit credentials and the default bounds; the connection task
/// runs in the background.
pub async fn connect_with(
    credentials: &DbCredentials,
    tls: &TlsMode,
) -> Result<Client, PgConnectError> {
    connect_bounded(credentials, tls, &PgBounds::default()).await
}

/// Opens one connection with explicit credentials and bounds.
pub async fn connect_bounded(
    credentials: &DbCredentials,
    tls: &TlsMode,
    bounds: &PgBounds,
) -> Result<Client, PgConnectError> {
    let mut config = credentials.config();
    bounds.apply(&mut config);
    let target = format!(
        "{}:{}/{}",
        credentials.host, credentials.port, credentials.dbname
    );
    let timeout = |bound, var, ms| {
        PgConnectError::Timeout(PgTimeout {
            operation: "connect".to_owned(),
            target: target.clone(),
            bound,
            var,
            ms,
        })
    };
    let failed = |source: tokio_postgres::Error| {
        // tokio-postgres reports its own TCP connect timeout as an I/O `TimedOut`.
        let tcp_timed_out = std::error::Error::source(&source)
            .and_then(|s| s.downcast_ref::<std::io::Error>())
            .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut);
        if tcp_timed_out {
            return timeout(
                "connect",
                settings::PG_CONNECT_TIMEOUT_MS.name,
                bounds.connect_ms,
            );
        }
        PgConnectError::Connect {
            host: credentials.host.clone(),
            port: credentials.port,
            dbname: credentials.dbname.clone(),
            username: credentials.username.clone(),
            source,
        }
    };
    // TCP connect is bounded inside; the handshake after it is bounded by what is left of both.
    let whole = std::time::Duration::from_millis(
        u64::from(bounds.connect_ms) + u64::from(bounds.handshake_ms),
    );
    let handshake_timed_out = || {
        timeout(
            "handshake",
            settings::PG_HANDSHAKE_TIMEOUT_MS.name,
            bounds.handshake_ms,
        )
    };
    match tls {
        TlsMode::Disable => {
            if !is_loopback(&credentials.host) {
                return Err(PgConnectError::PlainTextToRemoteHost {
                    host: credentials.host.clone(),
                });
            }
            let (client, connection) =
                tokio::time::timeout(whole, config.connect(tokio_postgres::NoTls))
                    .await
                    .map_err(|_| handshake_timed_out())?
                    .map_err(failed)?;
            tokio::spawn(async move {
                if let Err(e) = connection.await {
                    tracing::warn!(error = %e, "database connection closed with an error");
                }
            });
            Ok(client)
        }
        TlsMode::VerifyFull { ca_bundle } => {
            config.ssl_mode(tokio_postgres::config::SslMode::Require);
            let connector = tls_connector(ca_bundle)?;
            let (client, connection) = tokio::time::timeout(whole, config.connect(connector))
                .await
                .map_err(|_| handshake_timed_out())?
                .map_err(failed)?;
            tokio::spawn(async move {
                if let Err(e) = connection.await {
                    tracing::warn!(error = %e, "database connection closed with an error");
                }
            });
            Ok(client)
        }
    }
}

/// `localhost`, a loopback address or a Unix socket directory: nothing that crosses a network.
fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host.starts_with('/')
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn tls_connector(
    ca_bundle: &std::path::Path,
) -> Result<tokio_postgres_rustls::MakeRustlsConnect, PgConnectError> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let bundle_error = |reason: String| PgConnectError::CaBundle {
        path: ca_bundle.display().to_string(),
        reason,
    };
    let mut roots = rustls::RootCertStore::empty();
    let certs =
        CertificateDer::pem_file_iter(ca_bundle).map_err(|e| bundle_error(e.to_string()))?;
    for cert in certs {
        let cert = cert.map_err(|e| bundle_error(e.to_string()))?;
        roots.add(cert).map_err(|e| bundle_error(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(bundle_error("no certificates in the bundle".to_owned()));
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| bundle_error(e.to_string()))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

/// Secrets that catalyst-dr writes: the staging database's credentials.
#[async_trait::async_trait]
pub trait SecretStore: SecretSource {
    /// `None` when the secret has no value yet.
    async fn current(&self, secret_id: &str) -> Result<Option<String>, AwsCallError>;
    async fn put(&self, secret_id: &str, value: &str) -> Result<(), AwsCallError>;
}

#[async_trait::async_trait]
impl SecretStore for aws_sdk_secretsmanager::Client {
    async fn current(&self, secret_id: &str) -> Result<Option<String>, AwsCallError> {
        match self.get_secret_value().secret_id(secret_id).send().await {
            Ok(out) => Ok(out.secret_string().map(str::to_owned)),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_resource_not_found_exception()) =>
            {
                Ok(None)
            }
            Err(e) => Err(classify("secretsmanager:GetSecretValue", e)),
        }
    }

    async fn put(&self, secret_id: &str, value: &str) -> Result<(), AwsCallError> {
        self.put_secret_value()
            .secret_id(secret_id)
            .secret_string(value)
            .send()
            .await
            .map(drop)
            .map_err(|e| classify("secretsmanager:PutSecretValue", e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_from_a_url_name_the_variable_and_never_the_password() {
        let c = DbCredentials::from_url("V", "postgresql://u:s3cret@127.0.0.1:6543/app").unwrap();
        assert_eq!(
            (
                c.host.as_str(),
                c.port,
                c.username.as_str(),
                c.dbname.as_str()
            ),
            ("127.0.0.1", 6543, "u", "app")
        );
        assert_eq!(c.password, "s3cret");
        for bad in [
            "postgresql://u@127.0.0.1/app",
            "postgresql://:pw@127.0.0.1/app",
            "not a url at all=",
            "postgresql://u:pw@/app",
        ] {
            let err = DbCredentials::from_url("V", bad).unwrap_err().to_string();
            assert!(err.contains('V') && !err.contains("pw"), "{bad}: {err}");
        }
    }

    #[tokio::test]
    async fn plain_text_is_refused_to_anything_but_loopback_before_connecting() {
        let credentials = |host: &str| DbCredentials {
            host: host.to_owned(),
            // Nothing listens here: a refusal that tried to connect would be a different error.
            port: 1,
            username: "u".into(),
            password: "p".into(),
            dbname: "d".into(),
        };
        for host in [
            "catalyst-auth.abc.eu-west-1.rds.amazonaws.com",
            "10.0.0.5",
            "::2",
        ] {
            match connect_with(&credentials(host), &TlsMode::Disable).await {
                Err(err @ PgConnectError::PlainTextToRemoteHost { .. }) => {
                    assert_eq!(err.error_type(), ErrorKind::Misconfigured);
                    assert!(err.to_string().contains(host), "{err}");
                }
                other => panic!("{host}: {other:?}"),
            }
        }
        for host in [
            "127.0.0.1",
            "localhost",
            "::1",
            "[::1]",
            "/var/run/postgresql",
        ] {
            assert!(is_loopback(host), "{host}");
        }
    }

    #[test]
    fn secret_documents_parse_and_never_print_the_password() {
        let rds: DbCredentials =
            serde_json::from_str(r#"{"engine":"postgres","host":"db.example","port":"5433","username":"app","password":"s3cret!","dbname":"auth"}"#).unwrap();
        assert_eq!((rds.port, rds.dbname.as_str()), (5433, "auth"));
        assert!(!format!("{rds:?}").contains("s3cret"));
        let minimal: DbCredentials =
            serde_json::from_str(r#"{"host":"h","username":"u","password":"p"}"#).unwrap();
        assert_eq!((minimal.port, minimal.dbname.as_str()), (5432, "postgres"));
    }

    #[test]
    fn bounds_come_from_the_environment_and_reach_the_connection() {
        use std::collections::HashMap;
        let env: HashMap<&str, &str> = HashMap::new();
        let bounds =
            PgBounds::from_env(&Env(&env), &settings::PG_STATEMENT_TIMEOUT_MS_REPLAY).unwrap();
        assert_eq!(
            bounds,
            PgBounds {
                statement_ms: 120_000,
                ..PgBounds::default()
            }
        );
        assert_eq!(
            bounds.statement_wait(),
            Some(std::time::Duration::from_millis(122_000))
        );
        let env = HashMap::from([
            ("PG_STATEMENT_TIMEOUT_MS", "0"),
            ("PG_HANDSHAKE_TIMEOUT_MS", "500"),
        ]);
        let bounds =
            PgBounds::from_env(&Env(&env), &settings::PG_STATEMENT_TIMEOUT_MS_REPLAY).unwrap();
        assert_eq!((bounds.statement_wait(), bounds.handshake_ms), (None, 500));
        let env = HashMap::from([("PG_CONNECT_TIMEOUT_MS", "0")]);
        assert!(matches!(
            PgBounds::from_env(&Env(&env), &settings::PG_STATEMENT_TIMEOUT_MS),
            Err(ConfigError::Invalid {
                var: "PG_CONNECT_TIMEOUT_MS",
                ..
            })
        ));
        let mut config = tokio_postgres::Config::new();
        PgBounds {
            statement_ms: 1_500,
            ..PgBounds::default()
        }
        .apply(&mut config);
        assert_eq!(config.get_options(), Some("-c statement_timeout=1500"));
        assert_eq!(
            config.get_connect_timeout(),
            Some(&std::time::Duration::from_secs(10))
        );
        assert!(config.get_keepalives());
        assert_eq!(
            config.get_tcp_user_timeout(),
            Some(&std::time::Duration::from_secs(300))
        );
    }

    #[test]
    fn tls_mode_requires_a_readable_bundle() {
        use std::collections::HashMap;
        let env: HashMap<&str, &str> = HashMap::new();
        assert_eq!(
            TlsMode::from_env(&Env(&env)),
            Err(ConfigError::Missing {
                var: "PG_CA_BUNDLE"
            })
        );
        let env = HashMap::from([
            ("PG_TLS", "verify-full"),
            ("PG_CA_BUNDLE", "/nonexistent.pem"),
        ]);
        assert!(matches!(
            TlsMode::from_env(&Env(&env)),
            Err(ConfigError::Invalid {
                var: "PG_CA_BUNDLE",
                ..
            })
        ));
        let env = HashMap::from([("PG_TLS", "disable")]);
        assert_eq!(TlsMode::from_env(&Env(&env)), Ok(TlsMode::Disable));
    }
}
