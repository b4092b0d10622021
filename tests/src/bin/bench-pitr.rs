//! Benchmark: the local engine's restore (start to smoke tests passed) beside the same restore
//! done by hand with the PostgreSQL tools, on the same base backup and WAL, in one run.
//! Run through `infra/local/bench-pitr.sh`, which brings up the stack.

use catalyst_dr::catalyst_db;
use catalyst_dr::local_pg::{LocalPgConfig, base_backup};
use catalyst_dr::pitr::PitrRestore;
use catalyst_dr::pitr::config::{EngineConfig, PitrConfig};
use catalyst_dr::postgres::TlsMode;
use catalyst_dr::restore_engine::StagingState;
use catalyst_dr_tests::datagen::{self, GeneratorSpec};
use catalyst_dr_tests::{local_aws, pg_admin, pg_connect, put_db_secret, stack_var, unique};
use clap::Parser;
use std::time::{Duration, Instant};

#[derive(Parser)]
struct Args {
    /// Approximate size of the generated source database.
    #[arg(long, default_value_t = 200_000_000)]
    bytes: u64,
    /// Rounds of (by hand, catalyst-dr), alternating.
    #[arg(long, default_value_t = 5)]
    rounds: u32,
}

fn sh(config: &LocalPgConfig, script: &str) {
    let mut command = match &config.run_as {
        Some(user) => {
            let mut c = std::process::Command::new("runuser");
            c.args(["-u", user, "--", "sh", "-c", script]);
            c
        }
        None => {
            let mut c = std::process::Command::new("sh");
            c.args(["-c", script]);
            c
        }
    };
    let status = command.status().expect("run shell");
    assert!(status.success(), "failed: {script}");
}

/// The restore as an operator would type it: copy, recovery settings, start, wait for the
/// promotion, then the same queries the smoke tests run.
async fn by_hand(
    config: &LocalPgConfig,
    base: &std::path::Path,
    target: &str,
    dbname: &str,
    password: &str,
) -> Duration {
    let dir = config.staging_dir.join(unique("by-hand"));
    let data = dir.join("data");
    let port = catalyst_dr::local_pg::process::free_port().expect("port");
    let started = Instant::now();
    sh(
        config,
        &format!(
            "mkdir -p {dir} && cp -a {base} {data} && touch {data}/recovery.signal && cat >> {data}/postgresql.auto.conf <<'EOF'\nport = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '/tmp'\narchive_mode = off\nrestore_command = 'cp {archive}/%f %p'\nrecovery_target_time = '{target}'\nrecovery_target_action = 'promote'\nEOF\n{bin}/pg_ctl start -w -D {data} -l {dir}/server.log >/dev/null",
            dir = dir.display(),
            base = base.display(),
            data = data.display(),
            archive = config.wal_archive_dir.display(),
            bin = config.bin_dir.display(),
        ),
    );
    let url =
        format!("host=127.0.0.1 port={port} user=postgres password={password} dbname={dbname}");
    let client = loop {
        if let Ok((client, connection)) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await
        {
            tokio::spawn(connection);
            let recovering: bool = client
                .query_one("SELECT pg_is_in_recovery()", &[])
                .await
                .expect("recovery")
                .get(0);
            if !recovering {
                break client;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    catalyst_db::smoke::users_and_entitlements(&client, 5)
        .await
        .expect("users");
    catalyst_db::smoke::pending_deliveries(&client, 5)
        .await
        .expect("pending");
    let elapsed = started.elapsed();
    drop(client);
    sh(
        config,
        &format!(
            "{}/pg_ctl stop -m immediate -w -D {} >/dev/null && rm -rf {}",
            config.bin_dir.display(),
            data.display(),
            dir.display()
        ),
    );
    elapsed
}

async fn with_tool(restore: &PitrRestore, target: time::OffsetDateTime) -> Duration {
    let drill = unique("bench").to_lowercase();
    let started = Instant::now();
    restore
        .start(&drill, Some(target), None)
        .await
        .expect("start");
    for poll in 0.. {
        match restore
            .status(&drill, None, poll)
            .await
            .expect("status")
            .state
        {
            StagingState::Available => break,
            StagingState::Failed => panic!("restore failed"),
            StagingState::Creating => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    restore
        .rotate_credentials(&drill, None)
        .await
        .expect("rotate");
    restore.smoke(&drill, None).await.expect("smoke");
    let elapsed = started.elapsed();
    restore.teardown(&drill, None).await.expect("teardown");
    elapsed
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let sdk = local_aws().await;
    let dbname = unique("bench_pitr").replace('-', "_");
    pg_admin()
        .await
        .batch_execute(&format!("CREATE DATABASE {dbname}"))
        .await
        .expect("create database");
    let source = pg_connect(&dbname).await;
    catalyst_db::apply(&source).await.expect("schema");
    eprintln!("generating about {} MB ...", args.bytes / 1_000_000);
    datagen::generate(&source, &GeneratorSpec::for_target_bytes(42, args.bytes))
        .await
        .expect("generate");
    let size = datagen::database_size_bytes(&source).await.expect("size");

    let password = stack_var("CATALYST_DR_PG_PASSWORD");
    let secret = put_db_secret(
        &sdk,
        &unique("bench-source"),
        "postgres",
        &password,
        &dbname,
    )
    .await;
    let local = catalyst_dr_tests::local_engine_config("bench").await;
    let credentials = catalyst_dr_tests::secret_credentials(&sdk, &secret).await;
    let staging_secret = unique("bench-staging");
    aws_sdk_secretsmanager::Client::new(&sdk)
        .create_secret()
        .name(&staging_secret)
        .send()
        .await
        .expect("staging secret");
    let restore = PitrRestore::new(
        PitrConfig {
            engine: EngineConfig::Local {
                source_id: "bench-source".into(),
                local: local.clone(),
                source: credentials.clone(),
            },
            staging_prefix: "catalyst-dr-staging-".into(),
            staging_secret_id: staging_secret,
            database_name: credentials.dbname.clone(),
            tls: TlsMode::Disable,
            pg_bounds: Default::default(),
            health_checks: Vec::new(),
            smoke_min_users: 1,
            cache_engine: catalyst_dr::cache_engine::CacheEngineConfig::None,
            staging_cache_secret_id: None,
        },
        &sdk,
    );
    let base = base_backup::take(&local, &credentials, "bench")
        .await
        .expect("base backup");
    // WAL to replay after the base backup: a tenth of the deliveries change.
    source.batch_execute("UPDATE webhook_deliveries SET attempts = attempts + 1, updated_at = now() WHERE id % 10 = 0").await.expect("changes");
    let window = restore.engine.restore_window().await.expect("window");
    let target = window.latest;
    let target_text = target
        .format(time::macros::format_description!(
            "[year]-[month]-[day] [hour]:[minute]:[second].[subsecond digits:6]+00"
        ))
        .expect("format");

    let (mut hand, mut tool) = (Vec::new(), Vec::new());
    for round in 1..=args.rounds {
        let h = by_hand(&local, &base.data_dir, &target_text, &dbname, &password).await;
        let t = with_tool(&restore, target).await;
        eprintln!(
            "round {round}: by hand {:.2} s, catalyst-dr {:.2} s",
            h.as_secs_f64(),
            t.as_secs_f64()
        );
        hand.push(h.as_secs_f64());
        tool.push(t.as_secs_f64());
    }
    // Copying the base backup makes single rounds noisy: the median is the figure, the best
    // round is shown beside it.
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (best_hand, best_tool) = (
        hand.iter().copied().fold(f64::MAX, f64::min),
        tool.iter().copied().fold(f64::MAX, f64::min),
    );
    let (median_hand, median_tool) = (median(&mut hand), median(&mut tool));
    println!(
        "database size:                      {:.0} MB",
        size as f64 / 1e6
    );
    println!(
        "restore by hand (cp, pg_ctl, query): median {median_hand:.2} s, best {best_hand:.2} s   (baseline)"
    );
    println!(
        "catalyst-dr start .. smoke passed:   median {median_tool:.2} s, best {best_tool:.2} s"
    );
    println!(
        "overhead ratio:                      median {:.2}x, best {:.2}x   (target <= 1.20x)",
        median_tool / median_hand,
        best_tool / best_hand
    );
    pg_admin()
        .await
        .batch_execute(&format!("DROP DATABASE {dbname} WITH (FORCE)"))
        .await
        .expect("drop");
}
