//! Connections with credentials from Secrets Manager, against the local PostgreSQL (password
//! authentication) and the local Secrets Manager: a rotated password is picked up by reading the
//! secret again, and no password appears in errors.

use catalyst_dr::error_kind::ErrorKind;
use catalyst_dr::postgres::{PgConnector, TlsMode};
use catalyst_dr_tests::{local_aws, pg_admin, put_db_secret, unique};
use std::sync::Arc;

#[tokio::test]
async fn connects_and_follows_a_rotated_secret() {
    let sdk = local_aws().await;
    let admin = pg_admin().await;
    let user = unique("rotating").replace('-', "_");
    admin
        .batch_execute(&format!(
            "CREATE ROLE {user} LOGIN PASSWORD 'first-password'"
        ))
        .await
        .expect("create role");
    let secret = put_db_secret(
        &sdk,
        &unique("db-secret"),
        &user,
        "first-password",
        "postgres",
    )
    .await;

    let connector = PgConnector::new(
        Arc::new(aws_sdk_secretsmanager::Client::new(&sdk)),
        &secret,
        TlsMode::Disable,
    );
    let client = connector.connect().await.expect("first connection");
    let who: String = client
        .query_one("SELECT current_user::text", &[])
        .await
        .expect("query")
        .get(0);
    assert_eq!(who, user);

    // Rotation: the database and the secret change; the connector still holds the old password.
    admin
        .batch_execute(&format!("ALTER ROLE {user} PASSWORD 'second-password'"))
        .await
        .expect("rotate");
    put_db_secret(&sdk, &secret, &user, "second-password", "postgres").await;
    let client = connector
        .connect()
        .await
        .expect("connection after rotation");
    let who: String = client
        .query_one("SELECT current_user::text", &[])
        .await
        .expect("query")
        .get(0);
    assert_eq!(who, user);
}

#[tokio::test]
async fn a_wrong_password_fails_typed_and_without_the_password() {
    let sdk = local_aws().await;
    let admin = pg_admin().await;
    let user = unique("locked_out").replace('-', "_");
    admin
        .batch_execute(&format!("CREATE ROLE {user} LOGIN PASSWORD 'the-real-one'"))
        .await
        .expect("create role");
    let secret = put_db_secret(
        &sdk,
        &unique("db-secret"),
        &user,
        "not-the-password",
        "postgres",
    )
    .await;

    let connector = PgConnector::new(
        Arc::new(aws_sdk_secretsmanager::Client::new(&sdk)),
        &secret,
        TlsMode::Disable,
    );
    let err = connector.connect().await.expect_err("wrong password");
    assert_eq!(err.error_type(), ErrorKind::DatabaseAuthFailed);
    let text = catalyst_dr::error_chain::error_chain(&err);
    assert!(!text.contains("not-the-password"), "{text}");
    assert!(text.contains(&user), "{text}");
}

#[tokio::test]
async fn a_secret_that_is_not_a_credential_document_is_misconfiguration() {
    let sdk = local_aws().await;
    let name = unique("db-secret");
    aws_sdk_secretsmanager::Client::new(&sdk)
        .create_secret()
        .name(&name)
        .secret_string(r#"{"password": "hunter2"}"#)
        .send()
        .await
        .expect("create secret");
    let connector = PgConnector::new(
        Arc::new(aws_sdk_secretsmanager::Client::new(&sdk)),
        &name,
        TlsMode::Disable,
    );
    let err = connector.connect().await.expect_err("bad secret");
    assert_eq!(err.error_type(), ErrorKind::Misconfigured);
    assert!(!err.to_string().contains("hunter2"), "{err}");
}
