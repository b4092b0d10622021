//! Shared pieces of the integration tests: access to the local stack that `infra/local/test.sh`
//! brings up. A test that needs the stack and cannot find it fails loudly; it never skips.

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
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    format!("{prefix}-{}-{n}-{}", std::process::id(), nanos % 100_000)
}

/// A versioned bucket with Object Lock on, as the template creates it.
pub async fn locked_bucket(s3: &aws_sdk_s3::Client, name: &str) {
    use aws_sdk_s3::types::{DefaultRetention, ObjectLockConfiguration, ObjectLockEnabled, ObjectLockRetentionMode, ObjectLockRule};
    s3.create_bucket().bucket(name).object_lock_enabled_for_bucket(true).send().await.expect("create bucket");
    let rule = ObjectLockRule::builder()
        .default_retention(DefaultRetention::builder().mode(ObjectLockRetentionMode::Compliance).days(1).build())
        .build();
    s3.put_object_lock_configuration()
        .bucket(name)
        .object_lock_configuration(ObjectLockConfiguration::builder().object_lock_enabled(ObjectLockEnabled::Enabled).rule(rule).build())
        .send()
        .await
        .expect("object lock configuration");
}

/// The seed output of the running stack (`STATE/seed.json`).
pub fn seed() -> serde_json::Value {
    let state = stack_var("CATALYST_DR_STATE");
    let text = std::fs::read_to_string(format!("{state}/seed.json")).expect("STATE/seed.json of the running stack");
    serde_json::from_str(&text).expect("seed.json is JSON")
}

/// Result of one local state machine execution.
pub struct Execution {
    pub succeeded: bool,
    pub outcome: serde_json::Value,
}

/// Runs a state machine definition through the ASL interpreter against the functions served by
/// `cargo lambda watch`, with waits and retry pauses shortened.
pub fn run_state_machine(definition: &str, substitutions: &[(&str, String)], input: &serde_json::Value) -> Execution {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let mut command = std::process::Command::new(stack_var("CATALYST_DR_NODE"));
    command
        .arg(stack_var("CATALYST_DR_SFN_RUNNER"))
        .arg("--definition")
        .arg(format!("{root}/{definition}"))
        .arg("--lambda-endpoint")
        .arg(stack_var("LAMBDA_ENDPOINT_URL"))
        .arg("--aws-endpoint")
        .arg(stack_var("AWS_ENDPOINT_URL"))
        .arg("--fast")
        .arg("--input")
        .arg(input.to_string());
    for (key, value) in substitutions {
        command.arg("--sub").arg(format!("{key}={value}"));
    }
    let output = command.output().expect("run the state machine runner");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let outcome: serde_json::Value = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!("runner printed no outcome ({e}); stderr:\n{}", String::from_utf8_lossy(&output.stderr))
    });
    Execution { succeeded: output.status.success(), outcome }
}

/// A superuser connection to the local stack's PostgreSQL.
pub async fn pg_admin() -> tokio_postgres::Client {
    let url = stack_var("CATALYST_DR_PG_URL");
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.expect("connect to the local PostgreSQL");
    tokio::spawn(connection);
    client
}

/// Stores a database credential secret for `user` on the local PostgreSQL in Secrets Manager.
pub async fn put_db_secret(sdk: &aws_config::SdkConfig, name: &str, user: &str, password: &str, dbname: &str) -> String {
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
            client.put_secret_value().secret_id(name).secret_string(document.to_string()).send().await.expect("put secret value");
        }
        Err(_) => {
            client.create_secret().name(name).secret_string(document.to_string()).send().await.expect("create secret");
        }
    }
    name.to_owned()
}

/// A connection to database `dbname` on the local PostgreSQL, as the superuser.
pub async fn pg_connect(dbname: &str) -> tokio_postgres::Client {
    let url = format!("{} dbname={dbname}", stack_var("CATALYST_DR_PG_URL"));
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.expect("connect to the local PostgreSQL");
    tokio::spawn(connection);
    client
}

/// A new Catalyst Auth database on the local PostgreSQL with the reference schema and `users`
/// generated users (deterministic), and a Secrets Manager secret for it. Returns (name, secret id).
pub async fn catalyst_database(sdk: &aws_config::SdkConfig, prefix: &str, users: u64) -> (String, String) {
    use catalyst_dr::catalyst_db::{self, GeneratorSpec};
    let name = unique(prefix).replace('-', "_");
    pg_admin().await.batch_execute(&format!("CREATE DATABASE {name}")).await.expect("create database");
    let client = pg_connect(&name).await;
    catalyst_db::apply(&client).await.expect("schema");
    if users > 0 {
        let spec = GeneratorSpec { seed: 7, users, subscriptions: 5, deliveries: users * 4, ..GeneratorSpec::default() };
        catalyst_db::generate(&client, &spec).await.expect("generate");
    }
    let secret = put_db_secret(sdk, &unique(&format!("{prefix}-secret")), "postgres", &stack_var("CATALYST_DR_PG_PASSWORD"), &name).await;
    (name, secret)
}

/// Local engine settings with base backups and staging clusters in a directory of this test's own.
pub async fn local_engine_config(name: &str) -> catalyst_dr::local_pg::LocalPgConfig {
    let root = std::path::PathBuf::from(stack_var("CATALYST_DR_STATE")).join("tests").join(unique(name));
    let run_as = std::env::var("CATALYST_DR_PG_RUN_AS").ok().filter(|u| !u.is_empty());
    for dir in ["base-backups", "staging"] {
        std::fs::create_dir_all(root.join(dir)).expect("test directories");
    }
    if let Some(user) = &run_as {
        let status = std::process::Command::new("chown").arg("-R").arg(format!("{user}:{user}")).arg(&root).status().expect("chown");
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
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = socket.read(&mut buf).await;
                tokio::time::sleep(delay).await;
                let response = format!("HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
                let _ = socket.write_all(response.as_bytes()).await;
            });
        }
    });
    url
}

/// Invokes a function served by `cargo lambda watch`; `Err` carries the function's error document.
pub async fn invoke_lambda(function: &str, payload: &serde_json::Value) -> Result<serde_json::Value, serde_json::Value> {
    let url = format!("{}/2015-03-31/functions/{function}/invocations", stack_var("LAMBDA_ENDPOINT_URL"));
    let response = reqwest::Client::new().post(url).json(payload).send().await.expect("invoke");
    let ok = response.status().is_success();
    let body: serde_json::Value = response.json().await.expect("JSON answer");
    if ok && body.get("errorType").is_none() { Ok(body) } else { Err(body) }
}

/// SDK configuration pointed at a loopback listener that only counts connections: proof that a
/// code path made no AWS call at all.
pub async fn counting_aws_endpoint() -> (aws_config::SdkConfig, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
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
        .credentials_provider(aws_sdk_s3::config::Credentials::new("test", "test", None, None, "test"))
        .load()
        .await;
    (sdk, connections)
}
