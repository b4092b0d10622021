//! The smoke tests the runbook asks of a restored environment before traffic is cut over.

use crate::catalyst_db::{self, smoke};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// A forward-auth health check: `url` must answer `expect_status` within `timeout_ms`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheck {
    pub name: String,
    pub url: String,
    #[serde(default = "default_status")]
    pub expect_status: u16,
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

fn default_status() -> u16 {
    200
}

fn default_timeout_ms() -> u64 {
    2_000
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckResult {
    pub name: String,
    pub passed: bool,
    pub detail: String,
    pub data: Option<serde_json::Value>,
}

impl CheckResult {
    fn pass(name: &str, detail: String, data: Option<serde_json::Value>) -> Self {
        Self {
            name: name.to_owned(),
            passed: true,
            detail,
            data,
        }
    }

    fn fail(name: &str, detail: String) -> Self {
        Self {
            name: name.to_owned(),
            passed: false,
            detail,
            data: None,
        }
    }
}

const SAMPLE: i64 = 5;

/// Runs every database check on `client` and every health check; never stops at the first failure.
pub async fn run_checks(
    client: &tokio_postgres::Client,
    min_users: u64,
    health: &[HealthCheck],
) -> Vec<CheckResult> {
    let mut results = Vec::new();
    results.push(match catalyst_db::staging_marker(client).await {
        Ok(Some(drill)) => CheckResult::pass(
            "staging-marker",
            format!("database marked staging for drill {drill}"),
            None,
        ),
        Ok(None) => CheckResult::fail(
            "staging-marker",
            "the restored database is not marked as catalyst-dr staging".into(),
        ),
        Err(e) => CheckResult::fail("staging-marker", crate::error_chain::error_chain(&e)),
    });
    results.push(match smoke::users_and_entitlements(client, SAMPLE).await {
        Ok(found) if u64::try_from(found.users).unwrap_or(0) >= min_users => CheckResult::pass(
            "users-and-entitlements",
            format!("{} users, {} entitlements", found.users, found.entitlements),
            serde_json::to_value(&found).ok(),
        ),
        Ok(found) => CheckResult::fail(
            "users-and-entitlements",
            format!("{} users, fewer than the {min_users} expected", found.users),
        ),
        Err(e) => CheckResult::fail(
            "users-and-entitlements",
            crate::error_chain::error_chain(&e),
        ),
    });
    results.push(match smoke::pending_deliveries(client, SAMPLE).await {
        Ok(found) => CheckResult::pass(
            "pending-deliveries",
            format!("{} pending webhook deliveries", found.pending),
            serde_json::to_value(&found).ok(),
        ),
        Err(e) => CheckResult::fail("pending-deliveries", crate::error_chain::error_chain(&e)),
    });
    let http = crate::tls::http_client_builder()
        .redirect(reqwest::redirect::Policy::none())
        .build();
    for check in health {
        let name = format!("forward-auth:{}", check.name);
        let result = match &http {
            Err(e) => CheckResult::fail(&name, format!("HTTP client: {e}")),
            Ok(http) => match http
                .get(&check.url)
                .timeout(Duration::from_millis(check.timeout_ms))
                .send()
                .await
            {
                Ok(response) if response.status().as_u16() == check.expect_status => {
                    CheckResult::pass(
                        &name,
                        format!("{} answered {}", check.url, response.status().as_u16()),
                        None,
                    )
                }
                Ok(response) => CheckResult::fail(
                    &name,
                    format!(
                        "{} answered {}, expected {}",
                        check.url,
                        response.status().as_u16(),
                        check.expect_status
                    ),
                ),
                Err(e) if e.is_timeout() => CheckResult::fail(
                    &name,
                    format!(
                        "{} did not answer within {} ms",
                        check.url, check.timeout_ms
                    ),
                ),
                Err(e) => CheckResult::fail(
                    &name,
                    format!("{}: {}", check.url, crate::error_chain::error_chain(&e)),
                ),
            },
        };
        results.push(result);
    }
    results
}
