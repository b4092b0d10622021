//! The quarterly restore drill end to end on the local stack, with live traffic writing to the
//! source all along: baseline, restore to the baseline instant, rotate, flush the staging queue,
//! smoke tests, replay plan on staging, parity (the restored copy read in batches), teardown, report.

use catalyst_dr_tests::datagen::{self, GeneratorSpec};
use catalyst_dr_tests::{
    deployed_substitutions, empty_production_database, local_aws, pg_connect, run_state_machine,
    s3, seed, stack_var, take_base_backup, unique,
};
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

const DEFINITION: &str = "infra/statemachines/quarterly-drill.asl.json";

/// The template's DefinitionSubstitutions for the stack's samconfig environment.
fn substitutions() -> Vec<(String, String)> {
    deployed_substitutions("QuarterlyDrillStateMachine")
}

async fn count(client: &tokio_postgres::Client, table: &str) -> i64 {
    client
        .query_one(&format!("SELECT count(*) FROM {table}"), &[])
        .await
        .expect("count")
        .get(0)
}

// Multi-threaded: the writer keeps running while the runner blocks on the interpreter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quarterly_drill_passes_under_live_traffic_and_its_report_matches_the_database() {
    let seed = seed();
    let source = empty_production_database().await;
    let spec = GeneratorSpec {
        seed: 5,
        users: 300,
        subscriptions: 12,
        deliveries: 3_000,
        dead_letter_share: 0.05,
        ..GeneratorSpec::default()
    };
    datagen::generate(&source, &spec).await.expect("generate");
    take_base_backup().await;

    let writing = Arc::new(AtomicBool::new(true));
    let writer = {
        let writing = writing.clone();
        let client = pg_connect("catalyst_auth").await;
        tokio::spawn(async move {
            let mut n = 0;
            while writing.load(Ordering::Relaxed) {
                n += 1;
                datagen::live_traffic_step(&client, n)
                    .await
                    .expect("live traffic");
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
            n
        })
    };
    let drill = unique("q").to_lowercase();
    // The baseline as a source above BASELINE_FANOUT_THRESHOLD_GIB takes it: read by the Map
    // in a snapshot held open for it while the traffic writes (the drill's other paths take
    // the one-invocation baseline).
    let run = run_state_machine(
        DEFINITION,
        &substitutions(),
        &json!({"drill_id": drill, "baseline_path": "fan-out"}),
    );
    writing.store(false, Ordering::Relaxed);
    let steps = writer.await.expect("writer");
    assert!(run.succeeded, "drill failed: {:#}", run.outcome);
    assert!(steps > 20, "live traffic kept writing ({steps} steps)");

    let output = &run.outcome["output"];
    assert_eq!(output["report"]["passed"], true, "{:#}", output["report"]);
    assert_eq!(
        output["baseline"]["path"], "fan-out",
        "{:#}",
        output["baseline"]
    );
    let holders: i64 = source
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE starts_with(application_name, 'catalyst-dr baseline ')",
            &[],
        )
        .await
        .expect("holders")
        .get(0);
    assert_eq!(holders, 0, "the baseline's snapshot was released");
    let validation = &output["validation"];
    assert_eq!(
        validation["rpo"]["seconds"], 0.0,
        "restored exactly to the baseline instant"
    );
    assert_eq!(validation["queue"]["passed"], true);
    assert_eq!(
        validation["queue"]["depth"]["visible"], 0,
        "the staging queue was flushed"
    );
    // The cache, as deployed locally (the local cache engine): restored from the drill's
    // snapshot, equal to the baseline's queue state, then flushed and torn down.
    let cache = &validation["cache"];
    assert_eq!(cache["passed"], true, "{cache:#}");
    assert_eq!(cache["exact_baseline"], true);
    assert_eq!(cache["parity"]["passed"], true);
    assert_eq!(cache["flush_status"], "flushed");
    assert_eq!(cache["queue_keys_after_flush"], 0);
    assert_eq!(
        output["teardown"]["cache"]["deleted"], true,
        "{:#}",
        output["teardown"]
    );
    assert_eq!(
        output["teardown"]["cache"]["snapshots_deleted"]
            .as_array()
            .map(Vec::len),
        Some(1)
    );
    let tables: Vec<&Value> = validation["tables"]
        .as_array()
        .expect("tables")
        .iter()
        .collect();
    assert_eq!(tables.len(), 4);
    assert!(tables.iter().all(|t| t["passed"] == true), "{tables:#?}");
    // Live traffic adds deliveries and changes users; it never adds users or entitlements.
    for (table, expected) in [
        ("users", count(&source, "users").await),
        ("entitlements", count(&source, "entitlements").await),
    ] {
        let row = tables.iter().find(|t| t["table"] == table).expect("table");
        assert_eq!(row["baseline_rows"], expected, "{table}");
    }
    let deliveries = tables
        .iter()
        .find(|t| t["table"] == "webhook_deliveries")
        .expect("deliveries");
    assert!(
        deliveries["baseline_rows"].as_i64().unwrap() < count(&source, "webhook_deliveries").await
    );
    let dead: i64 = source
        .query_one(
            "SELECT count(*) FROM webhook_deliveries WHERE status = 'dead_lettered'",
            &[],
        )
        .await
        .expect("dead")
        .get(0);
    assert_eq!(
        output["plan"]["deliveries"], dead,
        "the dry-run plan on staging found the dead letters"
    );
    assert_eq!(output["teardown"]["deleted"], true);
    assert!(
        !std::path::Path::new(&stack_var("CATALYST_DR_STATE"))
            .join("staging")
            .join(format!("catalyst-dr-staging-{drill}"))
            .exists()
    );

    let sdk = local_aws().await;
    let bucket = seed["bucket"].as_str().expect("bucket");
    // The restored copy's parity was read by the Map's batches, which validate added up, and
    // so was the source's baseline.
    assert_eq!(output["parity_plan"]["batches"], json!([0]));
    for name in [
        "report.json",
        "report.md",
        "report.html",
        "parity/plan.json",
        "parity/batch-0.json",
        "baseline-open.json",
        "baseline/plan.json",
        "baseline/batch-0.json",
        "baseline.json",
    ] {
        s3(&sdk)
            .head_object()
            .bucket(bucket)
            .key(format!("drills/{drill}/{name}"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    let markdown = s3(&sdk)
        .get_object()
        .bucket(bucket)
        .key(format!("drills/{drill}/report.md"))
        .send()
        .await
        .expect("report.md")
        .body
        .collect()
        .await
        .expect("body")
        .into_bytes();
    let markdown = String::from_utf8_lossy(&markdown);
    assert!(
        markdown.contains("(the source read by a Map in a snapshot held open for it)"),
        "{markdown}"
    );
}
