//! Shared pieces of the integration tests: access to the local stack that `infra/local/test.sh`
//! brings up. A test that needs the stack and cannot find it fails loudly; it never skips.

pub mod datagen;
pub mod faults;

use std::sync::atomic::{AtomicU32, Ordering};

/// A variable the local stack exports; panics with how to get it when it is missing.
pub fn stack_var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: these tests need the local stack. Run them with infra/local/test.sh (see README), or `source STATE/env` after infra/local/stack.sh up STATE")
    })
}

/// The SDK configuration for the local AWS endpoint.
pub async fn local_aws() -> aws_config::SdkConfig {
    stack_var("AWS_ENDPOINT_URL");
    catalyst_dr::aws_clients::load_sdk_config().await
}

pub fn s3(sdk: &aws_config::SdkConfig) -> aws_sdk_s3::Client {
    catalyst_dr::aws_clients::s3_client(sdk, true)
}

/// A name no other test (or earlier run against the same stack) uses.
pub fn unique(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{prefix}-{}-{n}-{}", std::process::id(), nanos % 100_000)
}

/// A versioned bucket with Object Lock on, as the template creates it.
pub async fn locked_bucket(s3: &aws_sdk_s3::Client, name: &str) {
    use aws_sdk_s3::types::{
        DefaultRetention, ObjectLockConfiguration, ObjectLockEnabled, ObjectLockRetentionMode,
        ObjectLockRule,
    };
    s3.create_bucket()
        .bucket(name)
        .object_lock_enabled_for_bucket(true)
        .send()
        .await
        .expect("create bucket");
    let rule = ObjectLockRule::builder()
        .default_retention(
            DefaultRetention::builder()
                .mode(ObjectLockRetentionMode::Compliance)
                .days(1)
                .build(),
        )
        .build();
    s3.put_object_lock_configuration()
        .bucket(name)
        .object_lock_configuration(
            ObjectLockConfiguration::builder()
                .object_lock_enabled(ObjectLockEnabled::Enabled)
                .rule(rule)
                .build(),
        )
        .send()
        .await
        .expect("object lock configuration");
}

/// The seed output of the running stack (`STATE/seed.json`).
pub fn seed() -> serde_json::Value {
    let state = stack_var("CATALYST_DR_STATE");
    let text = std::fs::read_to_string(format!("{state}/seed.json"))
        .expect("STATE/seed.json of the running stack");
    serde_json::from_str(&text).expect("seed.json is JSON")
}

/// Result of one local state machine execution.
pub struct Execution {
    pub succeeded: bool,
    pub outcome: serde_json::Value,
}

impl Execution {
    /// The states the execution entered, in order (a Map's item states included).
    pub fn states(&self) -> Vec<&str> {
        self.outcome["timeline"]
            .as_array()
            .expect("timeline")
            .iter()
            .map(|s| s["state"].as_str().expect("state"))
            .collect()
    }
}

/// Runs a state machine definition through the ASL interpreter against the functions served by
/// `cargo lambda watch`, with waits and retry pauses shortened.
pub fn run_state_machine<K: AsRef<str>>(
    definition: &str,
    substitutions: &[(K, String)],
    input: &serde_json::Value,
) -> Execution {
    run_state_machine_at(
        definition,
        substitutions,
        input,
        &stack_var("LAMBDA_ENDPOINT_URL"),
    )
}

/// `run_state_machine` against the functions served at `lambda_endpoint`. The execution is named
/// as Step Functions names an unnamed execution (a UUID) unless the input says otherwise.
pub fn run_state_machine_at<K: AsRef<str>>(
    definition: &str,
    substitutions: &[(K, String)],
    input: &serde_json::Value,
    lambda_endpoint: &str,
) -> Execution {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let mut command = std::process::Command::new(stack_var("CATALYST_DR_NODE"));
    command
        .arg(stack_var("CATALYST_DR_SFN_RUNNER"))
        .arg("--definition")
        .arg(format!("{root}/{definition}"))
        .arg("--lambda-endpoint")
        .arg(lambda_endpoint)
        .arg("--aws-endpoint")
        .arg(stack_var("AWS_ENDPOINT_URL"))
        .arg("--fast")
        .arg("--input")
        .arg(input.to_string());
    for (key, value) in substitutions {
        command
            .arg("--sub")
            .arg(format!("{}={value}", key.as_ref()));
    }
    let output = command.output().expect("run the state machine runner");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let outcome: serde_json::Value = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "runner printed no outcome ({e}); stderr:\n{}",
            String::from_utf8_lossy(&output.stderr)
        )
    });
    Execution {
        succeeded: output.status.success(),
        outcome,
    }
}

/// A superuser connection to the local stack's PostgreSQL.
pub async fn pg_admin() -> tokio_postgres::Client {
    let url = stack_var("CATALYST_DR_PG_URL");
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .expect("connect to the local PostgreSQL");
    tokio::spawn(connection);
    client
}

/// Stores a database credential secret for `user` on the local PostgreSQL in Secrets Manager.
pub async fn put_db_secret(
    sdk: &aws_config::SdkConfig,
    name: &str,
    user: &str,
    password: &str,
    dbname: &str,
) -> String {
    let document = serde_json::json!({
        "engine": "postgres",
        "host": stack_var("CATALYST_DR_PG_HOST"),
        "port": stack_var("CATALYST_DR_PG_PORT").parse::<u16>().expect("port"),
        "username": user,
        "password": password,
        "dbname": dbname,
    });
    let client = aws_sdk_secretsmanager::Client::new(sdk);
    match client.describe_secret().secret_id(name).send().await {
        Ok(_) => {
            client
                .put_secret_value()
                .secret_id(name)
                .secret_string(document.to_string())
                .send()
                .await
                .expect("put secret value");
        }
        Err(_) => {
            client
                .create_secret()
                .name(name)
                .secret_string(document.to_string())
                .send()
                .await
                .expect("create secret");
        }
    }
    name.to_owned()
}

/// An empty database of its own on the local PostgreSQL, named after `label`, and a Secrets
/// Manager secret for it. Returns (database name, secret id, client).
pub async fn empty_database(
    sdk: &aws_config::SdkConfig,
    label: &str,
) -> (String, String, tokio_postgres::Client) {
    let name = unique(label).replace('-', "_");
    pg_admin()
        .await
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .expect("create database");
    let secret = put_db_secret(
        sdk,
        &format!("catalyst-dr/test/{name}"),
        "postgres",
        &stack_var("CATALYST_DR_PG_PASSWORD"),
        &name,
    )
    .await;
    let client = pg_connect(&name).await;
    (name, secret, client)
}

/// A database of its own on the local PostgreSQL, with the reference schema applied and filled by
/// the generator, and a Secrets Manager secret for it. Returns (database name, secret id, client).
pub async fn generated_database(
    sdk: &aws_config::SdkConfig,
    label: &str,
    spec: &crate::datagen::GeneratorSpec,
) -> (String, String, tokio_postgres::Client) {
    let (name, secret, client) = empty_database(sdk, &format!("cdr_{label}")).await;
    catalyst_dr::catalyst_db::apply(&client)
        .await
        .expect("apply schema");
    crate::datagen::generate(&client, spec)
        .await
        .expect("generate data");
    (name, secret, client)
}

/// The JSON object stored under `key` in `bucket`; panics naming the key when it is missing or
/// not JSON.
pub async fn stored_json(
    sdk: &aws_config::SdkConfig,
    bucket: &str,
    key: &str,
) -> serde_json::Value {
    let object = s3(sdk)
        .get_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{key}: {e:?}"));
    let body = object.body.collect().await.expect("body").into_bytes();
    serde_json::from_slice(&body).unwrap_or_else(|e| panic!("{key} is not JSON: {e}"))
}

/// A new bucket with Object Lock on the local endpoint, named after `label`.
pub async fn new_locked_bucket(sdk: &aws_config::SdkConfig, label: &str) -> String {
    let bucket = unique(label);
    locked_bucket(&s3(sdk), &bucket).await;
    bucket
}

/// The run scheduled `offset_s` seconds from now (each test its own offsets, so runs differ).
pub fn run_in(offset_s: i64) -> catalyst_dr::run_id::RunId {
    let t = time::OffsetDateTime::now_utc() + time::Duration::seconds(offset_s);
    catalyst_dr::run_id::RunId::from_scheduled_time(
        "scheduled_time",
        &catalyst_dr::input::format_time(t),
    )
    .expect("time")
}

/// The staging secret as pitr-restore writes it, naming `database` on the local PostgreSQL as
/// the staging copy of `drill_id` (a fanned-out backup's read source). Returns the secret id.
pub async fn put_staging_secret(
    sdk: &aws_config::SdkConfig,
    database: &str,
    drill_id: &str,
) -> String {
    let credentials = catalyst_dr::postgres::DbCredentials {
        host: stack_var("CATALYST_DR_PG_HOST"),
        port: stack_var("CATALYST_DR_PG_PORT").parse().expect("port"),
        username: "postgres".into(),
        password: stack_var("CATALYST_DR_PG_PASSWORD"),
        dbname: database.into(),
    };
    let secret = catalyst_dr::staging_secret::StagingSecret::new(
        &credentials,
        drill_id,
        &format!("catalyst-dr-staging-{drill_id}"),
        false,
    );
    let name = unique("catalyst-dr/test/staging");
    aws_sdk_secretsmanager::Client::new(sdk)
        .create_secret()
        .name(&name)
        .secret_string(serde_json::to_string(&secret).expect("secret JSON"))
        .send()
        .await
        .expect("create the staging secret");
    name
}

/// A superuser connection to one database of the local PostgreSQL.
pub async fn pg_connect(dbname: &str) -> tokio_postgres::Client {
    let mut config: tokio_postgres::Config = stack_var("CATALYST_DR_PG_URL")
        .parse()
        .expect("CATALYST_DR_PG_URL");
    config.dbname(dbname);
    let (client, connection) = config
        .connect(tokio_postgres::NoTls)
        .await
        .expect("connect to the local PostgreSQL");
    tokio::spawn(connection);
    client
}

/// A new Catalyst Auth database with `users` generated users (deterministic) and a secret for it.
/// Returns (name, secret id).
/// The credentials a database secret holds (the local engine reads its source this way).
pub async fn secret_credentials(
    sdk: &aws_config::SdkConfig,
    secret_id: &str,
) -> catalyst_dr::postgres::DbCredentials {
    let text = aws_sdk_secretsmanager::Client::new(sdk)
        .get_secret_value()
        .secret_id(secret_id)
        .send()
        .await
        .expect("read the database secret")
        .secret_string
        .expect("a secret string");
    serde_json::from_str(&text).expect("database secret JSON")
}

pub async fn catalyst_database(
    sdk: &aws_config::SdkConfig,
    prefix: &str,
    users: u64,
) -> (String, String) {
    let spec = crate::datagen::GeneratorSpec {
        seed: 7,
        users,
        subscriptions: 5,
        deliveries: users * 4,
        ..Default::default()
    };
    let (name, secret, _) = generated_database(sdk, prefix, &spec).await;
    (name, secret)
}

/// Local engine settings with base backups and staging clusters in a directory of this test's own.
pub async fn local_engine_config(name: &str) -> catalyst_dr::local_pg::LocalPgConfig {
    let root = std::path::PathBuf::from(stack_var("CATALYST_DR_STATE"))
        .join("tests")
        .join(unique(name));
    let run_as = std::env::var("CATALYST_DR_PG_RUN_AS")
        .ok()
        .filter(|u| !u.is_empty());
    for dir in ["base-backups", "staging"] {
        std::fs::create_dir_all(root.join(dir)).expect("test directories");
    }
    if let Some(user) = &run_as {
        let status = std::process::Command::new("chown")
            .arg("-R")
            .arg(format!("{user}:{user}"))
            .arg(&root)
            .status()
            .expect("chown");
        assert!(status.success(), "chown {}", root.display());
    }
    catalyst_dr::local_pg::LocalPgConfig {
        bin_dir: stack_var("CATALYST_DR_PG_BIN").into(),
        run_as,
        base_backup_dir: root.join("base-backups"),
        wal_archive_dir: stack_var("CATALYST_DR_WAL_ARCHIVE").into(),
        staging_dir: root.join("staging"),
    }
}

/// A loopback HTTP server whose every answer is `status` after `delay`; returns its base URL.
pub async fn http_endpoint(status: u16, delay: std::time::Duration) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = socket.read(&mut buf).await;
                tokio::time::sleep(delay).await;
                let response = format!(
                    "HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                );
                let _ = socket.write_all(response.as_bytes()).await;
            });
        }
    });
    url
}

/// Invokes a function served by `cargo lambda watch`; `Err` carries the function's error document.
pub async fn invoke_lambda(
    function: &str,
    payload: &serde_json::Value,
) -> Result<serde_json::Value, serde_json::Value> {
    let url = format!(
        "{}/2015-03-31/functions/{function}/invocations",
        stack_var("LAMBDA_ENDPOINT_URL")
    );
    let response = catalyst_dr::tls::http_client_builder()
        .build()
        .expect("HTTP client")
        .post(url)
        .json(payload)
        .send()
        .await
        .expect("invoke");
    let ok = response.status().is_success();
    let body: serde_json::Value = response.json().await.expect("JSON answer");
    if ok && body.get("errorType").is_none() {
        Ok(body)
    } else {
        Err(body)
    }
}

/// SDK configuration pointed at a loopback listener that only counts connections: proof that a
/// code path made no AWS call at all.
pub async fn counting_aws_endpoint() -> (
    aws_config::SdkConfig,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let endpoint = format!("http://{}", listener.local_addr().expect("addr"));
    let connections = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = connections.clone();
    tokio::spawn(async move {
        while listener.accept().await.is_ok() {
            counter.fetch_add(1, Ordering::SeqCst);
        }
    });
    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(&endpoint)
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_s3::config::Credentials::new(
            "test", "test", None, None, "test",
        ))
        .load()
        .await;
    (sdk, connections)
}

/// HTTP endpoints on loopback for the replay tests and benchmark: one server, a behaviour per
/// path (default 200), and a count of the requests each path got.
pub mod endpoints {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Behaviour {
        Status(u16),
        /// Accepts the request and never answers.
        Hang,
    }

    #[derive(Clone)]
    pub struct Endpoints {
        pub base: String,
        behaviour: Arc<Mutex<HashMap<String, Behaviour>>>,
        hits: Arc<Mutex<HashMap<(String, String), u64>>>,
    }

    impl Endpoints {
        pub async fn start() -> Self {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind loopback");
            let base = format!("http://{}", listener.local_addr().expect("local addr"));
            let this = Self {
                base,
                behaviour: Arc::default(),
                hits: Arc::default(),
            };
            let server = this.clone();
            tokio::spawn(async move {
                while let Ok((stream, _)) = listener.accept().await {
                    let server = server.clone();
                    tokio::spawn(async move { server.serve(stream).await });
                }
            });
            this
        }

        pub fn set(&self, path: &str, behaviour: Behaviour) {
            self.behaviour
                .lock()
                .expect("lock")
                .insert(path.to_owned(), behaviour);
        }

        pub fn hits(&self, method: &str, path: &str) -> u64 {
            self.hits
                .lock()
                .expect("lock")
                .get(&(method.to_owned(), path.to_owned()))
                .copied()
                .unwrap_or(0)
        }

        /// (requests, distinct paths) with this method.
        pub fn totals(&self, method: &str) -> (u64, usize) {
            let hits = self.hits.lock().expect("lock");
            let mine: Vec<u64> = hits
                .iter()
                .filter(|((m, _), _)| m == method)
                .map(|(_, n)| *n)
                .collect();
            (mine.iter().sum(), mine.len())
        }

        async fn serve(&self, mut stream: tokio::net::TcpStream) {
            let mut buf = Vec::with_capacity(1024);
            let mut chunk = [0u8; 4096];
            let head_end = loop {
                if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    break pos + 4;
                }
                match stream.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
                if buf.len() > 65_536 {
                    return;
                }
            };
            let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
            let mut first = head.lines().next().unwrap_or("").split_whitespace();
            let method = first.next().unwrap_or("").to_owned();
            let path = first
                .next()
                .unwrap_or("/")
                .split('?')
                .next()
                .unwrap_or("/")
                .to_owned();
            let length: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap_or(0))
                })
                .unwrap_or(0);
            let mut body = buf.len() - head_end;
            while body < length {
                match stream.read(&mut chunk).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => body += n,
                }
            }
            *self
                .hits
                .lock()
                .expect("lock")
                .entry((method, path.clone()))
                .or_default() += 1;
            let behaviour = self
                .behaviour
                .lock()
                .expect("lock")
                .get(&path)
                .copied()
                .unwrap_or(Behaviour::Status(200));
            match behaviour {
                Behaviour::Hang => {
                    tokio::time::sleep(std::time::Duration::from_secs(3_600)).await;
                }
                Behaviour::Status(code) => {
                    let response = format!(
                        "HTTP/1.1 {code} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                    );
                    let _ = stream.write_all(response.as_bytes()).await;
                    let _ = stream.shutdown().await;
                }
            }
        }
    }

    /// A loopback port nothing listens on: connecting to it is refused.
    pub fn closed_port() -> u16 {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr").port()
    }
}

/// The stack's "production" database `catalyst_auth`, which the deployed functions are
/// configured with, emptied to the reference schema. Only the state machine tests use it.
pub async fn empty_production_database() -> tokio_postgres::Client {
    let client = pg_connect("catalyst_auth").await;
    catalyst_dr::catalyst_db::apply(&client)
        .await
        .expect("schema");
    client
        .batch_execute("TRUNCATE users, entitlements, webhook_subscriptions, webhook_deliveries RESTART IDENTITY CASCADE")
        .await
        .expect("empty the production database");
    client
}

/// A base backup of the stack's PostgreSQL, taken by snapshot-trigger as the nightly run would.
pub async fn take_base_backup() {
    let now = catalyst_dr::input::format_time(time::OffsetDateTime::now_utc());
    invoke_lambda(
        "snapshot-trigger",
        &serde_json::json!({"action": "base-backup", "scheduled_time": now}),
    )
    .await
    .expect("base backup");
}

/// A webhook queue whose redrive policy sends messages to its own dead-letter queue after
/// `max_receive_count` receives, as Catalyst Auth's queue adapter sets it up. Returns (source
/// queue URL, dead-letter queue URL).
pub async fn queue_with_dead_letters(
    sqs: &aws_sdk_sqs::Client,
    name: &str,
    max_receive_count: u32,
) -> (String, String) {
    use aws_sdk_sqs::types::QueueAttributeName;
    let dlq_url = sqs
        .create_queue()
        .queue_name(format!("{name}-dlq"))
        .send()
        .await
        .expect("dlq")
        .queue_url
        .expect("url");
    let dlq_arn = sqs
        .get_queue_attributes()
        .queue_url(&dlq_url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .expect("arn")
        .attributes
        .and_then(|a| a.get(&QueueAttributeName::QueueArn).cloned())
        .expect("QueueArn");
    let policy = serde_json::json!({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": max_receive_count.to_string()}).to_string();
    let source_url = sqs
        .create_queue()
        .queue_name(name)
        .attributes(QueueAttributeName::RedrivePolicy, policy)
        .send()
        .await
        .expect("source")
        .queue_url
        .expect("url");
    (source_url, dlq_url)
}

/// What `infra/local/deployed.py COMMAND` resolves from infra/template.yaml for the samconfig
/// environment `config_env` and this stack's resources.
pub fn deployed(command: &str, config_env: &str) -> serde_json::Value {
    let output = deployed_command(command, config_env)
        .output()
        .expect("run deployed.py");
    assert!(
        output.status.success(),
        "deployed.py {command} --config-env {config_env}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("deployed.py prints JSON")
}

/// `deployed.py functions` with parameters over the site's: `Err` carries its error message (a
/// parameter or Rule the template refuses).
pub fn deployed_with(config_env: &str, overrides: &[&str]) -> Result<serde_json::Value, String> {
    let mut command = deployed_command("functions", config_env);
    for pair in overrides {
        command.arg("--override").arg(pair);
    }
    let output = command.output().expect("run deployed.py");
    if output.status.success() {
        Ok(serde_json::from_slice(&output.stdout).expect("deployed.py prints JSON"))
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}

fn deployed_command(command: &str, config_env: &str) -> std::process::Command {
    let state = stack_var("CATALYST_DR_STATE");
    let mut cmd = std::process::Command::new(stack_var("CATALYST_DR_PYTHON"));
    cmd.arg(stack_var("CATALYST_DR_DEPLOYED"))
        .arg(command)
        .arg("--config-env")
        .arg(config_env)
        .arg("--seed")
        .arg(format!("{state}/seed.json"))
        .arg("--state")
        .arg(&state);
    cmd
}

/// The template's DefinitionSubstitutions of `state_machine` (its logical id), resolved for the
/// stack's samconfig environment: the state machine runs as deployed.
pub fn deployed_substitutions(state_machine: &str) -> Vec<(String, String)> {
    let machines = deployed("state-machines", &stack_var("CATALYST_DR_CONFIG_ENV"));
    let subs = machines[state_machine]["substitutions"]
        .as_object()
        .unwrap_or_else(|| panic!("no state machine {state_machine} in the template"));
    subs.iter()
        .map(|(k, v)| (k.clone(), v.as_str().expect("string").to_owned()))
        .collect()
}

/// The environment the running stack gives `binary` (infra/local/functions.py writes it from the
/// template for the stack's samconfig environment), role credentials included.
pub fn function_env(binary: &str) -> std::collections::HashMap<String, String> {
    let path = format!(
        "{}/functions/{}/{binary}.env",
        stack_var("CATALYST_DR_STATE"),
        stack_var("CATALYST_DR_CONFIG_ENV")
    );
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{path}: {e}"))
        .lines()
        .filter_map(|line| line.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.trim_matches('\'').to_owned()))
        .collect()
}

/// A second Lambda Invoke API serving the functions as deployed under the samconfig environment
/// `config_env`: each under its own role, with the environment the template gives it
/// (infra/local/functions.py). Stopped on drop.
pub struct LambdaWatch {
    child: std::process::Child,
    pub endpoint: String,
}

impl LambdaWatch {
    pub fn start(config_env: &str) -> Self {
        let state = stack_var("CATALYST_DR_STATE");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("free port")
            .local_addr()
            .expect("addr")
            .port();
        let log =
            std::fs::File::create(format!("{state}/lambda-{config_env}.log")).expect("log file");
        let deployed_py = std::path::PathBuf::from(stack_var("CATALYST_DR_DEPLOYED"));
        let child = std::process::Command::new(stack_var("CATALYST_DR_PYTHON"))
            .arg(deployed_py.with_file_name("functions.py"))
            .args(["serve", "--config-env", config_env, "--state", &state])
            .args(["--port", &port.to_string()])
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start infra/local/functions.py");
        let endpoint = format!("http://127.0.0.1:{port}");
        let mut watch = Self { child, endpoint };
        // The Invoke API answers once every function's watch process listens.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(180);
        loop {
            if let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) {
                use std::io::{Read, Write};
                let _ = stream.write_all(b"GET / HTTP/1.0\r\n\r\n");
                let mut answer = String::new();
                let _ = stream.read_to_string(&mut answer);
                if answer.starts_with("HTTP/1.0 200") || answer.starts_with("HTTP/1.1 200") {
                    return watch;
                }
            }
            if let Ok(Some(status)) = watch.child.try_wait() {
                panic!(
                    "functions.py for {config_env} exited ({status}); see {state}/lambda-{config_env}.log"
                );
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the functions for {config_env} did not start (see {state}/lambda-{config_env}.log)"
            );
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    }
}

impl Drop for LambdaWatch {
    fn drop(&mut self) {
        // SIGTERM lets cargo lambda watch stop the function processes it started.
        let _ = std::process::Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// drill-validator's configuration for a test: reports under `drills/` in `bucket` (path-style,
/// kept a day), no queues, Redis or alerts, plain TCP to the local PostgreSQL. Tests change
/// what they need with struct update syntax.
pub fn drill_config(
    bucket: &str,
    source_secret_id: &str,
    staging_secret_id: &str,
) -> catalyst_dr::drill::config::DrillConfig {
    catalyst_dr::drill::config::DrillConfig {
        source_secret_id: source_secret_id.to_owned(),
        staging_secret_id: staging_secret_id.to_owned(),
        tls: catalyst_dr::postgres::TlsMode::Disable,
        pg_bounds: Default::default(),
        bucket: bucket.to_owned(),
        report_prefix: "drills/".into(),
        report_retention_days: 1,
        s3_force_path_style: true,
        webhook_queue_url: None,
        webhook_dlq_url: None,
        staging_queue_url: None,
        cache_engine: catalyst_dr::cache_engine::CacheEngineConfig::None,
        redis_url: None,
        redis_secret_id: None,
        staging_cache_secret_id: None,
        redis_queue_patterns: Vec::new(),
        rpo_objective_seconds: 0,
        rto_objective_seconds: 3_600,
        lock_timeout_ms: 2_000,
        parity_parallelism: 2,
        parity_range_blocks: catalyst_dr::catalyst_db::parity::RANGE_BLOCKS,
        parity_batch_ranges: 64,
        baseline_fanout_threshold_bytes: 32 << 30,
        baseline_hold: std::time::Duration::from_secs(600),
        alert_topic_arn: None,
        drill_kind: "test".into(),
    }
}

/// dead-letter-replay for a test, configured as the Lambda environment would be: `vars` (later
/// ones win) over the seeded backup bucket, plain TCP to the local PostgreSQL, probes allowed to
/// loopback and path-style S3.
pub fn dead_letter_replay(
    sdk: &aws_config::SdkConfig,
    vars: &[(&str, &str)],
) -> catalyst_dr::replay::DeadLetterReplay {
    let bucket = seed()["bucket"].as_str().expect("seed bucket").to_owned();
    let mut env: std::collections::HashMap<&str, &str> = std::collections::HashMap::from([
        ("BACKUP_BUCKET", bucket.as_str()),
        ("PG_TLS", "disable"),
        ("PROBE_ALLOW_CIDRS", "127.0.0.0/8"),
        ("S3_FORCE_PATH_STYLE", "true"),
    ]);
    env.extend(vars.iter().copied());
    let config = catalyst_dr::replay::config::ReplayConfig::from_env(&env).expect("config");
    catalyst_dr::replay::DeadLetterReplay::new(config, sdk).expect("wiring")
}

/// The rows of each user relation `relations` selects (a condition on `pg_class c`), read through
/// `ONLY` so that each partition and child counts once, with an order-independent digest of them:
/// what a restore must reproduce.
pub async fn relation_contents(
    client: &tokio_postgres::Client,
    relations: &str,
) -> Vec<(String, i64, String)> {
    let tables: Vec<String> = client
        .query(
            &format!("SELECT c.oid::regclass::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE {relations} AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_' ORDER BY 1"),
            &[],
        )
        .await
        .expect("relations")
        .into_iter()
        .map(|r| r.get(0))
        .collect();
    let mut out = Vec::new();
    for table in tables {
        let row = client
            .query_one(&format!("SELECT count(*), coalesce(md5(string_agg(t::text, '|' ORDER BY t::text COLLATE \"C\")), '') FROM ONLY {table} t"), &[])
            .await
            .expect("contents");
        out.push((table, row.get(0), row.get(1)));
    }
    out
}

/// A backup or restore observer that signals once the second segment's `COPY` has started,
/// then holds that segment forever: the invocation is "killed" there by dropping its future.
#[derive(Default)]
pub struct KillAtSecondSegment {
    started: std::sync::atomic::AtomicUsize,
    pub reached: tokio::sync::Notify,
}

#[async_trait::async_trait]
impl catalyst_dr::logical::BackupObserver for KillAtSecondSegment {
    async fn segment_copy_started(&self, _schema: &str, _table: &str, _segment: u32) {
        if self
            .started
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
            == 1
        {
            self.reached.notify_one();
            std::future::pending::<()>().await;
        }
    }
}

/// A restore of `run` into `target` prepared, and every batch of it loaded: what finish needs.
pub async fn loaded_restore(
    logical: &catalyst_dr::logical::LogicalBackups,
    run: &catalyst_dr::run_id::RunId,
    target: &catalyst_dr::logical::restore::RestoreTarget,
) -> catalyst_dr::logical::restore::RestorePlan {
    let plan = logical
        .prepare_restore(run, target, false)
        .await
        .expect("prepare");
    for &batch in &plan.batches {
        logical
            .restore_batch(run, target, &plan.restore_id, batch)
            .await
            .expect("batch");
    }
    plan
}
