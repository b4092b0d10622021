//! The functions' roles as deployed. The local endpoint enforces IAM and each function runs
//! under its own role (infra/local/functions.py): a call outside the role is refused, which these
//! tests show with the very credentials the running functions hold. Resources of services moto
//! cannot match and every condition are evaluated by infra/local/check_policies.py against the
//! template's own policies; that check must pass for dev and prod, and must be able to fail.

use catalyst_dr_tests::{function_env, local_aws, seed, stack_var};

fn credentials_of(binary: &str) -> aws_sdk_s3::config::Credentials {
    let env = function_env(binary);
    aws_sdk_s3::config::Credentials::new(
        &env["AWS_ACCESS_KEY_ID"],
        &env["AWS_SECRET_ACCESS_KEY"],
        Some(env["AWS_SESSION_TOKEN"].clone()),
        None,
        "function role",
    )
}

async fn s3_as(binary: &str) -> aws_sdk_s3::Client {
    let config = aws_sdk_s3::config::Builder::from(&local_aws().await)
        .credentials_provider(credentials_of(binary))
        .force_path_style(true)
        .build();
    aws_sdk_s3::Client::from_conf(config)
}

fn access_denied<E: std::fmt::Debug>(result: Result<impl std::fmt::Debug, E>, what: &str) {
    match result {
        Ok(out) => panic!("{what} was allowed: {out:?}"),
        Err(err) => {
            let text = format!("{err:?}");
            assert!(
                text.contains("AccessDenied"),
                "{what}: expected AccessDenied, got {text}"
            );
        }
    }
}

#[tokio::test]
async fn each_function_is_refused_what_its_role_does_not_allow() {
    let seed = seed();
    let bucket = seed["bucket"].as_str().expect("bucket");
    let sdk = local_aws().await;

    // drill-validator writes drill records under drills/ and nothing else.
    let validator = s3_as("drill-validator").await;
    let key = format!("drills/{}/probe.json", catalyst_dr_tests::unique("roles"));
    validator
        .put_object()
        .bucket(bucket)
        .key(&key)
        .body(b"{}".to_vec().into())
        .send()
        .await
        .expect("drill-validator may write under drills/");
    access_denied(
        validator
            .put_object()
            .bucket(bucket)
            .key("manifests/forged.json")
            .body(b"{}".to_vec().into())
            .send()
            .await,
        "drill-validator writing a backup manifest",
    );

    // dead-letter-replay's audit records live under replays/ only.
    let replay = s3_as("dead-letter-replay").await;
    access_denied(
        replay
            .put_object()
            .bucket(bucket)
            .key("drills/forged/report.json")
            .body(b"{}".to_vec().into())
            .send()
            .await,
        "dead-letter-replay writing a drill report",
    );

    // Actions the role does not name at all.
    let rds = aws_sdk_rds::Client::from_conf(
        aws_sdk_rds::config::Builder::from(&sdk)
            .credentials_provider(credentials_of("dead-letter-replay"))
            .build(),
    );
    access_denied(
        rds.delete_db_instance()
            .db_instance_identifier(seed["rds_instance"].as_str().expect("rds"))
            .skip_final_snapshot(true)
            .send()
            .await,
        "dead-letter-replay deleting the production database",
    );
    let sqs = aws_sdk_sqs::Client::from_conf(
        aws_sdk_sqs::config::Builder::from(&sdk)
            .credentials_provider(credentials_of("snapshot-trigger"))
            .build(),
    );
    access_denied(
        sqs.purge_queue()
            .queue_url(seed["webhook_queue_url"].as_str().expect("queue"))
            .send()
            .await,
        "snapshot-trigger purging the production webhook queue",
    );
    let secrets = aws_sdk_secretsmanager::Client::from_conf(
        aws_sdk_secretsmanager::config::Builder::from(&sdk)
            .credentials_provider(credentials_of("pitr-restore"))
            .build(),
    );
    access_denied(
        secrets
            .delete_secret()
            .secret_id(seed["source_database_secret"].as_str().expect("secret"))
            .send()
            .await,
        "pitr-restore deleting the production database secret",
    );
    // The production database and its secret are untouched.
    aws_sdk_rds::Client::new(&sdk)
        .describe_db_instances()
        .db_instance_identifier(seed["rds_instance"].as_str().expect("rds"))
        .send()
        .await
        .expect("production database still there");
}

fn check_policies(config_env: &str, expectations: Option<&std::path::Path>) -> (bool, String) {
    let deployed = std::path::PathBuf::from(stack_var("CATALYST_DR_DEPLOYED"));
    let mut command = std::process::Command::new(stack_var("CATALYST_DR_PYTHON"));
    command
        .arg(deployed.with_file_name("check_policies.py"))
        .args(["--config-env", config_env])
        .arg("--seed")
        .arg(format!("{}/seed.json", stack_var("CATALYST_DR_STATE")));
    if let Some(path) = expectations {
        command.arg("--expectations").arg(path);
    }
    let output = command.output().expect("run check_policies.py");
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    (output.status.success(), text)
}

#[test]
fn the_template_policies_decide_every_request_as_aws_would_for_dev_and_prod() {
    for config_env in ["dev", "prod"] {
        let (passed, text) = check_policies(config_env, None);
        assert!(passed, "check_policies.py {config_env}:\n{text}");
        assert!(!text.contains("FAIL"), "{text}");
    }

    // Every expectation is decided by the policies, not vacuously: flipped, each one fails.
    let path = std::path::PathBuf::from(stack_var("CATALYST_DR_DEPLOYED"))
        .with_file_name("policy-expectations.json");
    let mut expectations: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("expectations")).expect("JSON");
    let mut cases: Vec<serde_json::Value> = Vec::new();
    for list in ["requests", "key_requests"] {
        for case in expectations[list].as_array_mut().expect(list) {
            let flipped = if case["expect"] == "allow" {
                "deny"
            } else {
                "allow"
            };
            case["expect"] = flipped.into();
            cases.push(case.clone());
        }
    }
    let flipped = std::env::temp_dir().join(catalyst_dr_tests::unique("flipped-expectations"));
    std::fs::write(&flipped, expectations.to_string()).expect("write");
    for config_env in ["dev", "prod"] {
        let count = cases
            .iter()
            .filter(|c| c.get("config_env").is_none_or(|e| e == config_env))
            .count();
        let (passed, text) = check_policies(config_env, Some(&flipped));
        assert!(
            !passed,
            "flipped expectations passed ({config_env}):\n{text}"
        );
        let failures = text.lines().filter(|line| line.starts_with("FAIL")).count();
        assert_eq!(failures, count, "{config_env}: {text}");
    }
    std::fs::remove_file(&flipped).ok();
}

/// Each function has a security group of its own and reaches only what it uses; only
/// dead-letter-replay, which probes webhook endpoints, reaches the internet, and only
/// drill-validator the production cache.
#[test]
fn each_function_reaches_only_what_it_uses_over_the_network() {
    let seed = format!("{}/seed.json", stack_var("CATALYST_DR_STATE"));
    for config_env in ["dev", "prod"] {
        let output = std::process::Command::new(stack_var("CATALYST_DR_PYTHON"))
            .arg(stack_var("CATALYST_DR_DEPLOYED"))
            .args(["network", "--config-env", config_env, "--seed", &seed])
            .output()
            .expect("deployed.py network");
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let network: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");
        let reach = |binary: &str, list: &str, key: &str| -> Vec<String> {
            network[binary][list]
                .as_array()
                .expect(list)
                .iter()
                .map(|rule| format!("{}:{}", rule[key].as_str().expect(key), rule["port"]))
                .collect()
        };
        // Both local environments restore the cache in the quarterly drill (DrillsRestoreCache):
        // the drill's staging cache is reached by the three functions that use it, and only
        // drill-validator reaches the production cache (CacheSecurityGroupId).
        let expected: [(&str, &[&str]); 4] = [
            (
                "snapshot-trigger",
                // The local site copies to a DR region, whose APIs no VPC endpoint serves.
                &[
                    "0.0.0.0/0:443",
                    "DatabaseSecurityGroupId:5432",
                    "EndpointSecurityGroup:443",
                    // restore-logical into staging databases.
                    "StagingSecurityGroupIds[0]:5432",
                    "s3-prefix-list:443",
                ],
            ),
            (
                "pitr-restore",
                &[
                    "EndpointSecurityGroup:443",
                    // the staging cache's marker key.
                    "StagingCacheSecurityGroupId:6379",
                    "StagingSecurityGroupIds[0]:5432",
                ],
            ),
            (
                "dead-letter-replay",
                &[
                    "0.0.0.0/0:443",
                    "DatabaseSecurityGroupId:5432",
                    "EndpointSecurityGroup:443",
                    // the Redis flush, on the drill's staging cache only.
                    "StagingCacheSecurityGroupId:6379",
                    "StagingSecurityGroupIds[0]:5432",
                    "s3-prefix-list:443",
                ],
            ),
            (
                "drill-validator",
                &[
                    // the baseline's queue lengths.
                    "CacheSecurityGroupId:6379",
                    "DatabaseSecurityGroupId:5432",
                    "EndpointSecurityGroup:443",
                    // cache parity.
                    "StagingCacheSecurityGroupId:6379",
                    "StagingSecurityGroupIds[0]:5432",
                    "s3-prefix-list:443",
                ],
            ),
        ];
        let mut groups = std::collections::BTreeSet::new();
        for (binary, egress) in expected {
            let mut egress: Vec<String> = egress.iter().map(|s| s.to_string()).collect();
            egress.sort();
            let own = network[binary]["security_groups"]
                .as_array()
                .expect("groups");
            assert_eq!(own.len(), 1, "{config_env} {binary}: {own:?}");
            assert!(
                groups.insert(own[0].to_string()),
                "{binary} shares a security group"
            );
            let mut found = reach(binary, "egress", "to");
            found.sort();
            assert_eq!(found, egress, "{config_env} {binary}: egress");
            // Every group it may reach admits it (the CIDR and prefix-list rules need no ingress).
            let mut admitted = reach(binary, "admitted_by", "group");
            admitted.sort();
            let mut needed: Vec<String> = egress
                .iter()
                .filter(|to| !to.starts_with("0.0.0.0") && !to.starts_with("s3-prefix-list"))
                .cloned()
                .collect();
            needed.sort();
            assert_eq!(admitted, needed, "{config_env} {binary}: ingress");
        }
    }
}
