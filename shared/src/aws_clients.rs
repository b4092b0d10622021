//! SDK configuration shared by every function: built once at cold start.

use aws_config::retry::RetryConfig;
use aws_config::{BehaviorVersion, SdkConfig};
use std::time::Duration;

/// Region, credentials and endpoint from the standard chain (`AWS_ENDPOINT_URL` points every
/// client at a local endpoint); adaptive retries absorb throttling before Step Functions has to.
pub async fn load_sdk_config() -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .retry_config(
            RetryConfig::adaptive()
                .with_max_attempts(5)
                .with_initial_backoff(Duration::from_millis(200)),
        )
        .load()
        .await
}

pub fn s3_client(sdk: &SdkConfig, force_path_style: bool) -> aws_sdk_s3::Client {
    let config = aws_sdk_s3::config::Builder::from(sdk)
        .force_path_style(force_path_style)
        .build();
    aws_sdk_s3::Client::from_conf(config)
}
