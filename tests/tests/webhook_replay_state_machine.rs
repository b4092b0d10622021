//! The webhook-replay state machine (plan → replay → wait → verify → result), executed by the ASL
//! interpreter with dead-letter-replay served by `cargo lambda watch`. The function's database is
//! the stack's replay database secret (`REPLAY_DATABASE_SECRET_ID`), which this test, its only
//! user, points at a generated database before the first invocation, as the least-privileged
//! `catalyst_dr_replay` database role.

use catalyst_dr_tests::datagen::GeneratorSpec;
use catalyst_dr_tests::endpoints::{Behaviour, Endpoints};
use catalyst_dr_tests::{
    deployed_substitutions, generated_database, local_aws, put_db_secret, run_state_machine, s3,
    seed, stack_var, unique,
};
use serde_json::json;

const DEFINITION: &str = "infra/statemachines/webhook-replay.asl.json";
const REPLAY_DB_SECRET: &str = "catalyst-dr/local/replay-database";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_replay_plans_replays_waits_and_verifies() {
    let seed = seed();
    let sdk = local_aws().await;
    let endpoints = Endpoints::start().await;
    endpoints.set("/3", Behaviour::Status(500));
    let spec = GeneratorSpec {
        seed: 3,
        users: 20,
        entitlements_per_user: 1,
        subscriptions: 4,
        deliveries: 400,
        dead_letter_share: 0.25,
        endpoint_base: endpoints.base.clone(),
        dead_letter_window_hours: 12,
        now: time::OffsetDateTime::now_utc(),
    };
    let (db, _secret, client) = generated_database(&sdk, "statemachine", &spec).await;
    // The function writes as the catalyst_dr_replay role, set up on this database as
    // docs/database-roles.md tells an operator to (the stack gave the role its password).
    catalyst_dr::catalyst_db::roles::apply(&client, &Default::default())
        .await
        .expect("database roles");
    put_db_secret(
        &sdk,
        REPLAY_DB_SECRET,
        "catalyst_dr_replay",
        &stack_var("CATALYST_DR_LOCAL_ROLE_PASSWORD"),
        &db,
    )
    .await;
    let dead: i64 = client
        .query_one(
            "SELECT count(*) FROM webhook_deliveries WHERE status = 'dead_lettered'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let on_500: i64 =
        client.query_one("SELECT count(*) FROM webhook_deliveries WHERE status = 'dead_lettered' AND subscription_id = 3", &[]).await.unwrap().get(0);
    assert!(on_500 > 0 && dead > on_500);

    let replay_id = unique("sm");
    // spread_seconds and dry_run left out: the state machine's defaults (0, false) apply.
    let input = json!({"replay_id": replay_id, "filter": {"window_hours": 24}, "verify_after_seconds": 300});
    // The template's DefinitionSubstitutions, as deployed.
    let substitutions = deployed_substitutions("WebhookReplayStateMachine");
    let run =
        tokio::task::spawn_blocking(move || run_state_machine(DEFINITION, &substitutions, &input))
            .await
            .expect("runner");
    assert!(run.succeeded, "execution failed: {:#}", run.outcome);
    let output = &run.outcome["output"];
    assert_eq!(output["matched"], dead);
    assert_eq!(output["replay"]["counts"]["replayed"], dead - on_500);
    assert_eq!(output["replay"]["counts"]["skipped_unhealthy"], on_500);
    assert_eq!(output["verify"]["replayed"], dead - on_500);
    // No worker runs here: the replayed deliveries are pending and due.
    assert_eq!(output["verify"]["total"]["pending"], dead - on_500);
    let states = run.states();
    assert_eq!(
        states,
        [
            "ApplyDefaults",
            "MergeInput",
            "Plan",
            "AnythingToReplay?",
            "Replay",
            "DryRun?",
            "WaitForWorker",
            "Verify",
            "Result",
            "ReplayDone"
        ]
    );
    let bucket = seed["bucket"].as_str().expect("bucket");
    let audit = s3(&sdk)
        .get_object()
        .bucket(bucket)
        .key(format!("replays/{replay_id}/audit.md"))
        .send()
        .await
        .expect("audit.md");
    assert_eq!(
        audit.object_lock_mode().map(|m| m.as_str()),
        Some("COMPLIANCE")
    );
}
