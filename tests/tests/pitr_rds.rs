//! pitr-restore's RDS engine against the local AWS endpoint: the restore call with the staging
//! placement and tags, idempotent reruns, guards, credential rotation and guarded teardown.

use aws_sdk_rds::types::Tag;
use catalyst_dr::error_kind::ErrorKind;
use catalyst_dr::pitr::PitrRestore;
use catalyst_dr::pitr::config::{EngineConfig, PitrConfig};
use catalyst_dr::pitr::rds::StagingPlacement;
use catalyst_dr::postgres::TlsMode;
use catalyst_dr::rds::DbSource;
use catalyst_dr::tags;
use catalyst_dr_tests::{local_aws, unique};
use std::collections::BTreeMap;

/// The staging network the stack seeds.
fn placement() -> StagingPlacement {
    let seed = catalyst_dr_tests::seed();
    StagingPlacement {
        subnet_group: seed["staging_subnet_group"]
            .as_str()
            .expect("subnet group")
            .into(),
        security_group_ids: vec![
            seed["staging_security_group"]
                .as_str()
                .expect("security group")
                .into(),
        ],
        parameter_group: None,
        instance_class: Some("db.t4g.medium".into()),
    }
}

async fn source_instance(rds: &aws_sdk_rds::Client, id: &str) {
    rds.create_db_instance()
        .db_instance_identifier(id)
        .db_instance_class("db.t4g.medium")
        .engine("postgres")
        .master_username("catalyst")
        .master_user_password("local-only-password")
        .allocated_storage(20)
        .backup_retention_period(7)
        .send()
        .await
        .expect("source instance");
}

async fn restore_for(sdk: &aws_config::SdkConfig, source: DbSource) -> PitrRestore {
    let staging_secret = unique("rds-staging");
    aws_sdk_secretsmanager::Client::new(sdk)
        .create_secret()
        .name(&staging_secret)
        .send()
        .await
        .expect("staging secret");
    let config = PitrConfig {
        engine: EngineConfig::Rds {
            source,
            placement: placement(),
        },
        staging_prefix: "catalyst-dr-staging-".into(),
        staging_secret_id: staging_secret,
        database_name: "catalyst_auth".into(),
        tls: TlsMode::Disable,
        pg_bounds: Default::default(),
        health_checks: Vec::new(),
        smoke_min_users: 1,
        cache_engine: catalyst_dr::cache_engine::CacheEngineConfig::None,
        staging_cache_secret_id: None,
    };
    PitrRestore::new(config, sdk)
}

fn tag_map(tags: &[Tag]) -> BTreeMap<String, String> {
    tags.iter()
        .map(|t| {
            (
                t.key().unwrap_or("").to_owned(),
                t.value().unwrap_or("").to_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn start_restores_into_the_staging_placement_with_tags_and_a_rerun_reuses_it() {
    let sdk = local_aws().await;
    let rds = aws_sdk_rds::Client::new(&sdk);
    let source = unique("src");
    source_instance(&rds, &source).await;
    let restore = restore_for(&sdk, DbSource::Instance(source.clone())).await;
    let drill = unique("m").to_lowercase();

    let first = restore.start(&drill, None, None).await.expect("start");
    assert_eq!(first.target_id, format!("catalyst-dr-staging-{drill}"));
    assert!(!first.reused);
    assert_eq!(first.requested, "latest");
    let second = restore.start(&drill, None, None).await.expect("rerun");
    assert!(
        second.reused,
        "a retried start finds the restore already under way"
    );

    let described = rds
        .describe_db_instances()
        .db_instance_identifier(&first.target_id)
        .send()
        .await
        .expect("describe");
    let instance = &described.db_instances()[0];
    let tags = tag_map(instance.tag_list());
    assert_eq!(tags[tags::CREATED_BY], "catalyst-dr");
    assert_eq!(tags[tags::ROLE], "staging");
    assert_eq!(tags[tags::DRILL_ID], drill);
    assert_eq!(tags[tags::SOURCE], source);
    assert_eq!(instance.deletion_protection(), Some(false));
    let placement = placement();
    assert_eq!(
        instance
            .db_subnet_group()
            .and_then(|g| g.db_subnet_group_name()),
        Some(placement.subnet_group.as_str())
    );
    let groups: Vec<&str> = instance
        .vpc_security_groups()
        .iter()
        .filter_map(|g| g.vpc_security_group_id())
        .collect();
    assert_eq!(
        groups,
        [placement.security_group_ids[0].as_str()],
        "the staging security group, not the default"
    );
    let status = restore.status(&drill, None, 0).await.expect("status");
    assert_eq!(status.poll, 1);
    assert!(status.instance.host.is_some());

    let torn = restore.teardown(&drill, None).await.expect("teardown");
    assert!(torn.deleted);
}

#[tokio::test]
async fn a_target_time_outside_the_window_is_refused_without_a_restore() {
    let sdk = local_aws().await;
    let rds = aws_sdk_rds::Client::new(&sdk);
    let source = unique("src");
    source_instance(&rds, &source).await;
    let restore = restore_for(&sdk, DbSource::Instance(source)).await;
    let drill = unique("w").to_lowercase();
    for t in [
        time::OffsetDateTime::now_utc() + time::Duration::hours(2),
        time::OffsetDateTime::now_utc() - time::Duration::days(30),
    ] {
        let err = restore
            .start(&drill, Some(t), None)
            .await
            .expect_err("outside the window");
        assert_eq!(err.error_type(), ErrorKind::InvalidInput, "{err}");
        assert!(err.to_string().contains("target_time"), "{err}");
    }
    let absent = rds
        .describe_db_instances()
        .db_instance_identifier(format!("catalyst-dr-staging-{drill}"))
        .send()
        .await;
    assert!(absent.is_err(), "no staging instance was created");
}

/// Guards on identifiers run before any AWS call: the SDK points at a listener that counts
/// connections, and none arrives.
#[tokio::test]
async fn identifier_guards_make_no_aws_call() {
    let (sdk, connections) = catalyst_dr_tests::counting_aws_endpoint().await;
    let config = PitrConfig {
        engine: EngineConfig::Rds {
            source: DbSource::Instance("catalyst-auth-prod".into()),
            placement: placement(),
        },
        staging_prefix: "catalyst-dr-staging-".into(),
        staging_secret_id: "staging".into(),
        database_name: "catalyst_auth".into(),
        tls: TlsMode::Disable,
        pg_bounds: Default::default(),
        health_checks: Vec::new(),
        smoke_min_users: 1,
        cache_engine: catalyst_dr::cache_engine::CacheEngineConfig::None,
        staging_cache_secret_id: None,
    };
    let restore = PitrRestore::new(config, &sdk);
    let cases = [
        serde_json::json!({"action": "start", "drill_id": "q4", "target_id": "catalyst-auth-prod"}),
        serde_json::json!({"action": "start", "drill_id": "q4", "target_id": "catalyst-auth-prod-copy"}),
        serde_json::json!({"action": "teardown", "drill_id": "q4", "target_id": "catalyst-auth-prod"}),
        serde_json::json!({"action": "start", "drill_id": ""}),
        serde_json::json!({"action": "start", "drill_id": "q".repeat(81)}),
        serde_json::json!({"action": "start", "drill_id": "q4", "target_time": "yesterday"}),
        serde_json::json!({"action": "rotate-credentials", "drill_id": "q4", "target_id": "db"}),
        serde_json::json!({"action": "restore", "drill_id": "q4"}),
    ];
    for event in cases {
        let err = restore.handle(event.clone()).await.expect_err("refused");
        assert!(
            matches!(
                err.error_type(),
                ErrorKind::RestoreRefused | ErrorKind::InvalidInput
            ),
            "{event}: {err}"
        );
    }
    tokio::task::yield_now().await;
    assert_eq!(
        connections.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "no request may leave for AWS"
    );
}

#[tokio::test]
async fn teardown_refuses_untagged_instances_and_the_source() {
    let sdk = local_aws().await;
    let rds = aws_sdk_rds::Client::new(&sdk);
    let source = unique("src");
    source_instance(&rds, &source).await;
    let restore = restore_for(&sdk, DbSource::Instance(source.clone())).await;
    let drill = unique("t").to_lowercase();
    // Someone else's instance that happens to carry the staging prefix.
    let squatter = format!("catalyst-dr-staging-{drill}");
    source_instance(&rds, &squatter).await;

    let err = restore.teardown(&drill, None).await.expect_err("untagged");
    assert_eq!(err.error_type(), ErrorKind::RestoreRefused, "{err}");
    let err = restore
        .teardown(&drill, Some(source.clone()))
        .await
        .expect_err("source");
    assert_eq!(err.error_type(), ErrorKind::RestoreRefused, "{err}");
    let err = restore
        .start(&drill, None, None)
        .await
        .expect_err("not ours to reuse");
    assert_eq!(err.error_type(), ErrorKind::RestoreRefused, "{err}");
    for id in [&squatter, &source] {
        assert!(
            rds.describe_db_instances()
                .db_instance_identifier(id)
                .send()
                .await
                .is_ok(),
            "{id} still exists"
        );
    }
}

#[tokio::test]
async fn rotation_stores_the_password_before_changing_the_instance() {
    let sdk = local_aws().await;
    let rds = aws_sdk_rds::Client::new(&sdk);
    let source = unique("src");
    source_instance(&rds, &source).await;
    let restore = restore_for(&sdk, DbSource::Instance(source)).await;
    let drill = unique("r").to_lowercase();
    restore.start(&drill, None, None).await.expect("start");

    // The local endpoint's instances have no database behind them, so the login check cannot
    // pass; the step fails as retryable and the stored password survives the retry.
    let err = restore
        .rotate_credentials(&drill, None)
        .await
        .expect_err("no database behind the endpoint");
    assert_eq!(
        err.error_type(),
        ErrorKind::CredentialsNotYetApplied,
        "{err}"
    );
    assert!(
        !catalyst_dr::error_chain::error_chain(&err).contains("password="),
        "{err}"
    );
    let secrets = aws_sdk_secretsmanager::Client::new(&sdk);
    let read = || async {
        let value = secrets
            .get_secret_value()
            .secret_id(&restore.config.staging_secret_id)
            .send()
            .await
            .expect("secret");
        serde_json::from_str::<serde_json::Value>(value.secret_string().expect("string"))
            .expect("json")
    };
    let first = read().await;
    assert_eq!(first["drill_id"], drill.as_str());
    assert_eq!(first["username"], "catalyst");
    assert!(
        first["database_url"]
            .as_str()
            .unwrap()
            .starts_with("postgres://catalyst:")
    );
    restore
        .rotate_credentials(&drill, None)
        .await
        .expect_err("still no database");
    assert_eq!(
        read().await["password"],
        first["password"],
        "a retry reuses the stored password"
    );
    restore.teardown(&drill, None).await.expect("teardown");
}

#[tokio::test]
async fn aurora_restores_a_cluster_and_its_instance() {
    let sdk = local_aws().await;
    let rds = aws_sdk_rds::Client::new(&sdk);
    let source = unique("aurora");
    rds.create_db_cluster()
        .db_cluster_identifier(&source)
        .engine("aurora-postgresql")
        .master_username("catalyst")
        .master_user_password("local-only-password")
        .backup_retention_period(7)
        .send()
        .await
        .expect("source cluster");
    let restore = restore_for(&sdk, DbSource::Cluster(source.clone())).await;
    let drill = unique("a").to_lowercase();
    let started = restore.start(&drill, None, None).await.expect("start");

    let cluster = rds
        .describe_db_clusters()
        .db_cluster_identifier(&started.target_id)
        .send()
        .await
        .expect("cluster");
    let tags = tag_map(cluster.db_clusters()[0].tag_list());
    assert_eq!(tags[tags::DRILL_ID], drill);
    let instance_id = catalyst_dr::pitr::rds::cluster_instance_id(&started.target_id);
    let instance = rds
        .describe_db_instances()
        .db_instance_identifier(&instance_id)
        .send()
        .await
        .expect("instance in the cluster");
    assert_eq!(
        instance.db_instances()[0].db_cluster_identifier(),
        Some(started.target_id.as_str())
    );
    assert!(
        restore
            .teardown(&drill, None)
            .await
            .expect("teardown")
            .deleted
    );
}

fn backup_snapshot_tags() -> Vec<Tag> {
    vec![
        Tag::builder()
            .key(tags::CREATED_BY)
            .value(tags::CREATED_BY_VALUE)
            .build(),
        Tag::builder()
            .key(tags::ROLE)
            .value(tags::ROLE_BACKUP)
            .build(),
    ]
}

#[tokio::test]
async fn restore_snapshot_takes_only_catalyst_dr_backups_into_tagged_staging() {
    let sdk = local_aws().await;
    let rds = aws_sdk_rds::Client::new(&sdk);
    let source = unique("snapsrc");
    source_instance(&rds, &source).await;
    let ours = format!("catalyst-dr-{source}-20261126t030000z");
    rds.create_db_snapshot()
        .db_instance_identifier(&source)
        .db_snapshot_identifier(&ours)
        .set_tags(Some(backup_snapshot_tags()))
        .send()
        .await
        .expect("our backup snapshot");
    // Newer, but not ours: never chosen, and refused by name.
    let foreign = format!("manual-{source}");
    rds.create_db_snapshot()
        .db_instance_identifier(&source)
        .db_snapshot_identifier(&foreign)
        .send()
        .await
        .expect("someone else's snapshot");
    let restore = restore_for(&sdk, DbSource::Instance(source.clone())).await;

    let drill = unique("w").to_lowercase();
    let first = restore
        .restore_snapshot(&drill, None, None)
        .await
        .expect("restore the newest backup snapshot");
    assert_eq!(first.snapshot.snapshot_id, ours);
    assert_eq!(first.requested, "newest");
    assert!(!first.reused);
    assert!(first.restore_time.is_some());
    let rerun = restore
        .restore_snapshot(&drill, None, None)
        .await
        .expect("rerun");
    assert!(rerun.reused, "a retry finds the restore under way");

    let described = rds
        .describe_db_instances()
        .db_instance_identifier(&first.target_id)
        .send()
        .await
        .expect("describe");
    let instance = &described.db_instances()[0];
    let staging = tag_map(instance.tag_list());
    assert_eq!(staging[tags::ROLE], "staging");
    assert_eq!(staging[tags::DRILL_ID], drill);
    assert_eq!(instance.multi_az(), Some(false));
    assert_eq!(instance.db_instance_class(), Some("db.t4g.medium"));
    assert_eq!(
        instance
            .db_subnet_group()
            .and_then(|g| g.db_subnet_group_name()),
        Some(placement().subnet_group.as_str())
    );
    assert!(
        restore
            .teardown(&drill, None)
            .await
            .expect("teardown")
            .deleted
    );

    let other = unique("w").to_lowercase();
    let err = restore
        .restore_snapshot(&other, Some(foreign.clone()), None)
        .await
        .expect_err("not ours");
    assert_eq!(err.error_type(), ErrorKind::RestoreRefused, "{err}");
    let err = restore
        .restore_snapshot(&other, Some("catalyst-dr-missing".into()), None)
        .await
        .expect_err("missing");
    assert_eq!(err.error_type(), ErrorKind::NoBackupSnapshot, "{err}");
    let err = restore
        .restore_snapshot(&other, None, Some(source.clone()))
        .await
        .expect_err("the source");
    assert_eq!(err.error_type(), ErrorKind::RestoreRefused, "{err}");
    let absent = rds
        .describe_db_instances()
        .db_instance_identifier(format!("catalyst-dr-staging-{other}"))
        .send()
        .await;
    assert!(absent.is_err(), "no refused restore created anything");

    let bare = unique("bare");
    source_instance(&rds, &bare).await;
    let err = restore_for(&sdk, DbSource::Instance(bare))
        .await
        .restore_snapshot(&other, None, None)
        .await
        .expect_err("no backup snapshot");
    assert_eq!(err.error_type(), ErrorKind::NoBackupSnapshot, "{err}");
}

#[tokio::test]
async fn aurora_restores_a_backup_cluster_snapshot_and_its_instance() {
    let sdk = local_aws().await;
    let rds = aws_sdk_rds::Client::new(&sdk);
    let source = unique("aurorasnap");
    rds.create_db_cluster()
        .db_cluster_identifier(&source)
        .engine("aurora-postgresql")
        .master_username("catalyst")
        .master_user_password("local-only-password")
        .backup_retention_period(7)
        .send()
        .await
        .expect("source cluster");
    let ours = format!("catalyst-dr-{source}-20261126t030000z");
    rds.create_db_cluster_snapshot()
        .db_cluster_identifier(&source)
        .db_cluster_snapshot_identifier(&ours)
        .set_tags(Some(backup_snapshot_tags()))
        .send()
        .await
        .expect("our cluster snapshot");
    let restore = restore_for(&sdk, DbSource::Cluster(source.clone())).await;
    let drill = unique("wa").to_lowercase();
    let started = restore
        .restore_snapshot(&drill, Some(ours.clone()), None)
        .await
        .expect("restore");
    assert_eq!(started.requested, ours);
    let cluster = rds
        .describe_db_clusters()
        .db_cluster_identifier(&started.target_id)
        .send()
        .await
        .expect("cluster");
    assert_eq!(
        tag_map(cluster.db_clusters()[0].tag_list())[tags::DRILL_ID],
        drill
    );
    let instance_id = catalyst_dr::pitr::rds::cluster_instance_id(&started.target_id);
    let instance = rds
        .describe_db_instances()
        .db_instance_identifier(&instance_id)
        .send()
        .await
        .expect("instance in the cluster");
    assert_eq!(
        instance.db_instances()[0].db_cluster_identifier(),
        Some(started.target_id.as_str())
    );
    assert!(
        restore
            .teardown(&drill, None)
            .await
            .expect("teardown")
            .deleted
    );
}
