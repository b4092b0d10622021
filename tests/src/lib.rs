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
