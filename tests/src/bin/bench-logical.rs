//! bench-logical: the logical backup benchmark on the local stack (`infra/local/bench-logical.sh`).
//!
//! For each size: generates a database of about that size, then measures in separate processes
//! the logical backup to the local S3 endpoint (wall time, peak RSS) and the restore into an empty
//! staging database (wall time), and beside them `pg_dump -Fc` to a file and `pg_restore -j 2` of
//! that file into an empty database, in alternating rounds, each step on a settled server (a
//! checkpoint, no autovacuum running). Prints the medians and the ratios, and each round's ratios,
//! as JSON lines and a table.

use catalyst_dr::catalyst_db;
use catalyst_dr::logical::LogicalBackups;
use catalyst_dr::logical::config::LogicalConfig;
use catalyst_dr::logical::restore::RestoreTarget;
use catalyst_dr::object_store::S3Objects;
use catalyst_dr::postgres::TlsMode;
use catalyst_dr::run_id::RunId;
use catalyst_dr_tests::datagen::{self, GeneratorSpec};
use catalyst_dr_tests::{local_aws, locked_bucket, pg_admin, put_db_secret, s3, stack_var};
use clap::{Parser, Subcommand};
use serde_json::{Value, json};
use std::process::{Command, ExitCode};
use std::sync::Arc;
use std::time::Instant;

#[path = "bench-logical/fanout.rs"]
mod fanout;

#[derive(Debug, Parser)]
#[command(about = "Benchmark the logical backup against pg_dump/pg_restore on the local stack")]
struct Args {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// The whole benchmark, one line of figures per size.
    Run {
        /// Database sizes in MiB (generated with GeneratorSpec::for_target_bytes).
        #[arg(long, value_delimiter = ',', default_values_t = [256u64, 1024])]
        sizes_mib: Vec<u64>,
        /// Rounds per size, each ours then pg_dump/pg_restore; the figures are the medians.
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// Segments copied at once (LOGICAL_PARALLELISM); 2 by default, as `pg_restore -j 2`.
        #[arg(long, default_value_t = 2)]
        parallelism: u32,
        /// Segment size (LOGICAL_SEGMENT_MIB).
        #[arg(long, default_value_t = 64)]
        segment_mib: u64,
        /// Directory of pg_dump and pg_restore.
        #[arg(long, env = "PG_BIN")]
        pg_bin: Option<String>,
    },
    /// The fan-out beside one invocation and pg_dump -Fc: a source of each size and its
    /// quiescent copy (the read source), the fanned-out backup with 1, 2, 4 ... concurrent
    /// worker processes (each an invocation of one connection taking its share of the batches).
    Fanout {
        #[arg(long, value_delimiter = ',', default_values_t = [1024u64])]
        sizes_mib: Vec<u64>,
        #[arg(long, value_delimiter = ',', default_values_t = [1usize, 2, 4])]
        workers: Vec<usize>,
        #[arg(long, default_value_t = 1)]
        rounds: usize,
        #[arg(long, default_value_t = 64)]
        segment_mib: u64,
        #[arg(long, default_value_t = 256)]
        batch_mib: u64,
        #[arg(long, env = "PG_BIN")]
        pg_bin: Option<String>,
    },
    /// The projection `fanout` prints, from a measured throughput of one worker (MiB/s of COPY
    /// text on one connection) and the stored-to-COPY-text ratio: to project another machine's
    /// or another database's measurement.
    FanoutProjection {
        #[arg(long)]
        one_worker_mib_s: f64,
        #[arg(long)]
        object_ratio: f64,
        #[arg(long, default_value_t = 64)]
        segment_mib: u64,
        #[arg(long, default_value_t = 4096)]
        batch_mib: u64,
    },
    /// The fan-out's plan step in this process (needs --staging-secret).
    FanoutPlan {
        #[arg(long)]
        restored_to: String,
        #[command(flatten)]
        common: ChildArgs,
    },
    /// One fan-out worker: backs up the listed batches in turn, as that many invocations would.
    FanoutWorker {
        #[arg(long, value_delimiter = ',')]
        batches: Vec<usize>,
        #[command(flatten)]
        common: ChildArgs,
    },
    /// The fan-out's finish step in this process.
    FanoutFinish {
        #[command(flatten)]
        common: ChildArgs,
    },
    /// The restore's prepare step in this process: answers the restore id and the batches.
    RestorePrepare {
        #[arg(long)]
        target_secret: String,
        #[command(flatten)]
        common: ChildArgs,
    },
    /// One restore worker: loads the listed batches in turn, as that many invocations would.
    RestoreWorker {
        #[arg(long)]
        target_secret: String,
        #[arg(long)]
        restore_id: String,
        #[arg(long, value_delimiter = ',')]
        batches: Vec<usize>,
        #[command(flatten)]
        common: ChildArgs,
    },
    /// The restore's finish step in this process.
    RestoreFinish {
        #[arg(long)]
        target_secret: String,
        #[arg(long)]
        restore_id: String,
        #[command(flatten)]
        common: ChildArgs,
    },
    /// One logical backup in this process; prints wall time and peak RSS.
    Backup {
        #[arg(long)]
        secret: String,
        #[command(flatten)]
        common: ChildArgs,
    },
    /// One logical restore in this process; prints wall time and peak RSS.
    Restore {
        #[arg(long)]
        target_secret: String,
        #[command(flatten)]
        common: ChildArgs,
        /// Also read every restored table back (`reread`).
        #[arg(long)]
        reread: bool,
    },
}

/// What a backup or restore child is told besides its database.
#[derive(Debug, clap::Args)]
struct ChildArgs {
    #[arg(long)]
    bucket: String,
    #[arg(long)]
    scheduled_time: String,
    #[arg(long)]
    parallelism: u32,
    #[arg(long)]
    segment_mib: u64,
    /// The fan-out's read source (a staging secret), for the fan-out steps.
    #[arg(long)]
    staging_secret: Option<String>,
    /// LOGICAL_FANOUT_BATCH_MIB, for the fan-out steps.
    #[arg(long, default_value_t = 256)]
    batch_mib: u64,
}

impl ChildArgs {
    /// The same options as command-line arguments.
    fn to_args(&self) -> Vec<String> {
        [
            "--bucket",
            &self.bucket,
            "--scheduled-time",
            &self.scheduled_time,
            "--parallelism",
            &self.parallelism.to_string(),
            "--segment-mib",
            &self.segment_mib.to_string(),
            "--batch-mib",
            &self.batch_mib.to_string(),
        ]
        .map(str::to_owned)
        .into_iter()
        .chain(
            self.staging_secret
                .iter()
                .flat_map(|s| ["--staging-secret".to_owned(), s.clone()]),
        )
        .collect()
    }

    /// What a restore step's child works with: the backups, the run and its restore target.
    async fn restore_step(&self, target_secret: &str) -> (LogicalBackups, RunId, RestoreTarget) {
        let (logical, run) = self.logical(None).await;
        let target = RestoreTarget::new(target_secret, None).expect("target");
        (logical, run, target)
    }

    async fn logical(&self, source_secret: Option<&str>) -> (LogicalBackups, RunId) {
        let sdk = local_aws().await;
        let config = LogicalConfig {
            parallelism: self.parallelism,
            segment_bytes: self.segment_mib << 20,
            source_secret_id: source_secret.map(str::to_owned),
            read_source_secret_id: self.staging_secret.clone(),
            fanout_batch_bytes: self.batch_mib << 20,
            tls: Some(TlsMode::Disable),
            ..LogicalConfig::new(1)
        };
        let logical = LogicalBackups::new(
            config,
            Arc::new(S3Objects::new(s3(&sdk), &self.bucket)),
            Arc::new(aws_sdk_secretsmanager::Client::new(&sdk)),
        );
        (
            logical,
            RunId::from_scheduled_time("scheduled_time", &self.scheduled_time)
                .expect("scheduled time"),
        )
    }
}

/// Prints a child's figures as one JSON line (wall time and peak RSS added), or its error.
/// Runs `step` on each batch in turn, as that many invocations would; stops at the first error.
async fn in_turn<T, Fut>(
    batches: Vec<usize>,
    step: impl Fn(usize) -> Fut,
) -> Result<Vec<T>, catalyst_dr::logical::LogicalError>
where
    Fut: std::future::Future<Output = Result<T, catalyst_dr::logical::LogicalError>>,
{
    let mut done = Vec::with_capacity(batches.len());
    for batch in batches {
        done.push(step(batch).await?);
    }
    Ok(done)
}

fn report<T>(
    what: &str,
    started: Instant,
    outcome: Result<T, catalyst_dr::logical::LogicalError>,
    figures: impl FnOnce(T) -> Value,
) -> ExitCode {
    match outcome {
        Ok(result) => {
            let wall = started.elapsed().as_secs_f64();
            let mut line = figures(result);
            line["wall_seconds"] = json!(round(wall));
            line["peak_rss_bytes"] = json!(peak_rss_bytes());
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!(
                "bench-logical {what}: {}",
                catalyst_dr::error_chain::error_chain(&e)
            );
            ExitCode::FAILURE
        }
    }
}

/// VmHWM of this process (peak resident set), in bytes.
fn peak_rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kib| kib * 1024)
}

fn pg_bin(explicit: Option<String>) -> String {
    if let Some(dir) = explicit {
        return dir;
    }
    let mut found: Vec<String> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| format!("{}/bin", e.path().display()))
                .collect()
        })
        .unwrap_or_default();
    found.sort_by_key(|p| {
        p.trim_start_matches("/usr/lib/postgresql/")
            .trim_end_matches("/bin")
            .parse::<u32>()
            .unwrap_or(0)
    });
    found.pop().unwrap_or_else(|| "/usr/bin".to_owned())
}

fn timed(command: &mut Command) -> f64 {
    let started = Instant::now();
    let status = command
        .status()
        .unwrap_or_else(|e| panic!("{command:?}: {e}"));
    assert!(status.success(), "{command:?} failed: {status}");
    started.elapsed().as_secs_f64()
}

fn child(args: &[&str]) -> Value {
    let exe = std::env::current_exe().expect("own path");
    let out = Command::new(exe)
        .args(args)
        .output()
        .expect("run the child");
    child_figures(&format!("child {args:?}"), &out)
}

/// A child's figures: the last line it printed (a backup also prints its CloudWatch metrics line
/// to stdout before it), after checking that it succeeded.
fn child_figures(what: &str, out: &std::process::Output) -> Value {
    assert!(
        out.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or_default();
    serde_json::from_str(last).unwrap_or_else(|e| panic!("{what} printed no JSON ({e}): {stdout}"))
}

/// Creates database `name` afresh with the Catalyst Auth schema and about `mib` MiB of generated
/// data, vacuumed and analysed; answers its size in bytes.
async fn generated_source(name: &str, mib: u64) -> u64 {
    let client = create_database(name).await;
    let started = Instant::now();
    catalyst_db::apply(&client).await.expect("schema");
    datagen::generate(&client, &GeneratorSpec::for_target_bytes(1, mib << 20))
        .await
        .expect("generate");
    client
        .batch_execute("VACUUM ANALYZE")
        .await
        .expect("vacuum");
    let database_bytes = datagen::database_size_bytes(&client).await.expect("size");
    eprintln!(
        "[bench] {name}: {} MiB generated in {:.1} s",
        database_bytes >> 20,
        started.elapsed().as_secs_f64()
    );
    database_bytes
}

async fn create_database(name: &str) -> tokio_postgres::Client {
    let admin = pg_admin().await;
    drop_database(name).await;
    admin
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .expect("create database");
    let mut config: tokio_postgres::Config = stack_var("CATALYST_DR_PG_URL")
        .parse()
        .expect("CATALYST_DR_PG_URL");
    config.dbname(name);
    let (client, connection) = config
        .connect(tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(connection);
    client
}

/// Lets the server settle before a measured step: a checkpoint, and no autovacuum worker busy,
/// so the work an earlier step left behind (dirty pages, a vacuum of freshly loaded tables) does
/// not land on the next one.
async fn settle() {
    let admin = pg_admin().await;
    admin.batch_execute("CHECKPOINT").await.expect("checkpoint");
    for _ in 0..600 {
        let busy: i64 = admin
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'autovacuum worker'",
                &[],
            )
            .await
            .expect("pg_stat_activity")
            .get(0);
        if busy == 0 {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// Seconds `pg_restore -j 2` takes to restore `dump` into database `name`, created afresh on a
/// settled server and dropped after.
async fn pg_restore_j2(bin: &str, dump: &std::path::Path, name: &str) -> f64 {
    drop(create_database(name).await);
    settle().await;
    let seconds = timed(
        Command::new(format!("{bin}/pg_restore"))
            .env("PGPASSWORD", stack_var("CATALYST_DR_PG_PASSWORD"))
            .args([
                "-h",
                &stack_var("CATALYST_DR_PG_HOST"),
                "-p",
                &stack_var("CATALYST_DR_PG_PORT"),
            ])
            .args(["-U", "postgres", "-j", "2", "-d", name])
            .arg(dump),
    );
    drop_database(name).await;
    seconds
}

/// Database `name` created afresh and marked as staging, with a secret for it: an empty restore
/// target. Answers the secret id.
async fn staging_target(sdk: &aws_config::SdkConfig, name: &str) -> String {
    let target = create_database(name).await;
    catalyst_db::mark_staging(&target, "bench")
        .await
        .expect("mark staging");
    drop(target);
    put_db_secret(
        sdk,
        &format!("catalyst-dr/bench/{name}"),
        "postgres",
        &stack_var("CATALYST_DR_PG_PASSWORD"),
        name,
    )
    .await
}

async fn drop_database(name: &str) {
    pg_admin()
        .await
        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .await
        .expect("drop database");
}

/// The figures of one round: our backup and restore, then pg_dump and pg_restore.
struct Round {
    backup: Value,
    restore: Value,
    /// The restore with `reread`.
    reread: Value,
    pg_dump_s: f64,
    pg_restore_s: f64,
}

fn median(values: impl Iterator<Item = f64>) -> f64 {
    let mut values: Vec<f64> = values.collect();
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

fn round(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

async fn run(
    sizes_mib: Vec<u64>,
    rounds: usize,
    parallelism: u32,
    segment_mib: u64,
    pg_bin_dir: Option<String>,
) -> Vec<Value> {
    let sdk = local_aws().await;
    let bin = pg_bin(pg_bin_dir);
    let bucket = format!("bench-logical-{}", std::process::id());
    locked_bucket(&s3(&sdk), &bucket).await;
    let host = stack_var("CATALYST_DR_PG_HOST");
    let port = stack_var("CATALYST_DR_PG_PORT");
    let password = stack_var("CATALYST_DR_PG_PASSWORD");
    let dump_dir = std::env::temp_dir().join(format!("bench-logical-{}", std::process::id()));
    std::fs::create_dir_all(&dump_dir).expect("dump dir");
    let mut results = Vec::new();
    for (i, mib) in sizes_mib.into_iter().enumerate() {
        let src = format!("bench_src_{mib}");
        let database_bytes = generated_source(&src, mib).await;
        let secret = put_db_secret(
            &sdk,
            &format!("catalyst-dr/bench/{src}"),
            "postgres",
            &password,
            &src,
        )
        .await;
        let dst = format!("bench_dst_{mib}");
        let plain = format!("bench_pgrestore_{mib}");
        let file = dump_dir.join(format!("{src}.dump"));
        let mut rounds_out: Vec<Round> = Vec::new();
        for r in 0..rounds {
            // Each round its own run id, so each backup is a new one.
            let offset = time::Duration::minutes((i * rounds + r) as i64);
            let scheduled_time =
                catalyst_dr::input::format_time(time::OffsetDateTime::now_utc() + offset);
            let common = ChildArgs {
                bucket: bucket.clone(),
                scheduled_time,
                parallelism,
                segment_mib,
                staging_secret: None,
                batch_mib: 256,
            }
            .to_args();
            let common: Vec<&str> = common.iter().map(String::as_str).collect();

            settle().await;
            let backup = child(&[&["backup", "--secret", &secret][..], &common].concat());
            eprintln!("[bench] round {r} logical backup: {backup}");
            let mut restores = Vec::new();
            for extra in [&[][..], &["--reread"][..]] {
                let target_secret = staging_target(&sdk, &dst).await;
                settle().await;
                let restore = child(
                    &[
                        &["restore", "--target-secret", &target_secret][..],
                        &common,
                        extra,
                    ]
                    .concat(),
                );
                eprintln!("[bench] round {r} logical restore {extra:?}: {restore}");
                assert_eq!(
                    restore["consistent"], true,
                    "the restore is not consistent: {restore}"
                );
                drop_database(&dst).await;
                restores.push(restore);
            }
            let (restore, reread) = (restores.remove(0), restores.remove(0));

            settle().await;
            let pg_dump_s = timed(
                Command::new(format!("{bin}/pg_dump"))
                    .env("PGPASSWORD", &password)
                    .args(["-h", &host, "-p", &port, "-U", "postgres", "-Fc", "-f"])
                    .arg(&file)
                    .arg(&src),
            );
            let pg_restore_s = pg_restore_j2(&bin, &file, &plain).await;
            eprintln!(
                "[bench] round {r} pg_dump -Fc {pg_dump_s:.2} s, pg_restore -j 2 {pg_restore_s:.2} s"
            );
            rounds_out.push(Round {
                backup,
                restore,
                reread,
                pg_dump_s,
                pg_restore_s,
            });
        }
        let dump_bytes = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
        let _ = std::fs::remove_file(&file);
        drop_database(&src).await;

        let last = rounds_out.last().expect("at least one round");
        let backup_s = median(
            rounds_out
                .iter()
                .map(|r| r.backup["wall_seconds"].as_f64().unwrap_or(f64::NAN)),
        );
        let restore_s = median(
            rounds_out
                .iter()
                .map(|r| r.restore["wall_seconds"].as_f64().unwrap_or(f64::NAN)),
        );
        let reread_s = median(
            rounds_out
                .iter()
                .map(|r| r.reread["wall_seconds"].as_f64().unwrap_or(f64::NAN)),
        );
        let pg_dump_s = median(rounds_out.iter().map(|r| r.pg_dump_s));
        let pg_restore_s = median(rounds_out.iter().map(|r| r.pg_restore_s));
        let peak = |child: fn(&Round) -> &Value| {
            rounds_out
                .iter()
                .map(|r| child(r)["peak_rss_bytes"].as_f64().unwrap_or(0.0))
                .fold(0.0, f64::max)
        };
        let result = json!({
            "database_mib": database_bytes >> 20,
            "rows": last.backup["rows"],
            "rounds": rounds,
            "logical_backup_seconds": round(backup_s),
            "logical_backup_peak_rss_mib": round(peak(|r| &r.backup) / 1048576.0),
            "logical_backup_object_mib": round(last.backup["object_bytes"].as_f64().unwrap_or(0.0) / 1048576.0),
            "logical_backup_segments": last.backup["segments"],
            "logical_restore_seconds": round(restore_s),
            "logical_restore_peak_rss_mib": round(peak(|r| &r.restore) / 1048576.0),
            "restore_consistent": true,
            "logical_restore_phase_seconds": last.restore["phases"],
            "logical_restore_reread_seconds": round(reread_s),
            "logical_restore_reread_phase_seconds": last.reread["phases"],
            "pg_dump_fc_seconds": round(pg_dump_s),
            "pg_dump_fc_mib": round(dump_bytes as f64 / 1048576.0),
            "pg_restore_j2_seconds": round(pg_restore_s),
            "backup_vs_pg_dump": round(backup_s / pg_dump_s),
            "restore_vs_pg_restore": round(restore_s / pg_restore_s),
            "restore_reread_vs_pg_restore": round(reread_s / pg_restore_s),
            "backup_vs_pg_dump_by_round": rounds_out.iter().map(|r| round(r.backup["wall_seconds"].as_f64().unwrap_or(f64::NAN) / r.pg_dump_s)).collect::<Vec<_>>(),
            "restore_vs_pg_restore_by_round": rounds_out.iter().map(|r| round(r.restore["wall_seconds"].as_f64().unwrap_or(f64::NAN) / r.pg_restore_s)).collect::<Vec<_>>(),
        });
        println!("{result}");
        results.push(result);
    }
    let _ = std::fs::remove_dir_all(&dump_dir);
    results
}

#[tokio::main]
async fn main() -> ExitCode {
    // As the deployed functions do (catalyst_dr_edge::serve).
    catalyst_dr::memory::bound_large_allocations();
    let args = Args::parse();
    match args.command {
        Cmd::Run {
            sizes_mib,
            rounds,
            parallelism,
            segment_mib,
            pg_bin,
        } => {
            let results = run(sizes_mib, rounds, parallelism, segment_mib, pg_bin).await;
            println!();
            println!(
                "{:>7} {:>9} {:>8} {:>7} {:>6} {:>10} {:>12} {:>6} {:>10} {:>6}",
                "db MiB",
                "backup s",
                "RSS MiB",
                "dump s",
                "ratio",
                "restore s",
                "pg_restore s",
                "ratio",
                "+reread s",
                "ratio"
            );
            for r in &results {
                println!(
                    "{:>7} {:>9} {:>8} {:>7} {:>6} {:>10} {:>12} {:>6} {:>10} {:>6}",
                    r["database_mib"],
                    r["logical_backup_seconds"],
                    r["logical_backup_peak_rss_mib"],
                    r["pg_dump_fc_seconds"],
                    r["backup_vs_pg_dump"],
                    r["logical_restore_seconds"],
                    r["pg_restore_j2_seconds"],
                    r["restore_vs_pg_restore"],
                    r["logical_restore_reread_seconds"],
                    r["restore_reread_vs_pg_restore"]
                );
            }
            println!(
                "medians of {} rounds; every restore consistent",
                results
                    .first()
                    .map_or(0, |r| r["rounds"].as_u64().unwrap_or(0))
            );
            println!(
                "targets: backup <= 0.5 x pg_dump -Fc, restore <= 0.9 x pg_restore -j 2, peak RSS <= 64 MiB and flat across sizes"
            );
            ExitCode::SUCCESS
        }
        Cmd::Fanout {
            sizes_mib,
            workers,
            rounds,
            segment_mib,
            batch_mib,
            pg_bin,
        } => {
            fanout::run(sizes_mib, workers, rounds, segment_mib, batch_mib, pg_bin).await;
            ExitCode::SUCCESS
        }
        Cmd::FanoutProjection {
            one_worker_mib_s,
            object_ratio,
            segment_mib,
            batch_mib,
        } => {
            fanout::project(one_worker_mib_s, object_ratio, segment_mib, batch_mib);
            ExitCode::SUCCESS
        }
        Cmd::FanoutPlan {
            restored_to,
            common,
        } => {
            let (logical, run) = common.logical(None).await;
            let restored_to =
                catalyst_dr::input::parse_time("restored_to", &restored_to).expect("restored_to");
            let started = Instant::now();
            report(
                "fanout-plan",
                started,
                logical.plan_fanout(&run, restored_to).await,
                |plan| json!({"segments": plan.segments, "batches": plan.batches.len(), "planned_bytes": plan.planned_bytes}),
            )
        }
        Cmd::FanoutWorker { batches, common } => {
            let (logical, run) = common.logical(None).await;
            let started = Instant::now();
            report(
                "fanout-worker",
                started,
                in_turn(batches, |batch| logical.backup_batch(&run, batch)).await,
                |done| {
                    json!({
                        "segments": done.iter().map(|d| d.copied).sum::<usize>(),
                        "object_bytes": done.iter().map(|d| d.object_bytes).sum::<u64>(),
                    })
                },
            )
        }
        Cmd::FanoutFinish { common } => {
            let (logical, run) = common.logical(None).await;
            let started = Instant::now();
            report(
                "fanout-finish",
                started,
                logical.finish_fanout(&run).await,
                |result| json!({"rows": result.rows, "segments": result.segments, "copy_bytes": result.copy_bytes, "object_bytes": result.object_bytes}),
            )
        }
        Cmd::RestorePrepare {
            target_secret,
            common,
        } => {
            let (logical, run, target) = common.restore_step(&target_secret).await;
            let started = Instant::now();
            report(
                "restore-prepare",
                started,
                logical.prepare_restore(&run, &target, false).await,
                |plan| json!({"restore_id": plan.restore_id, "batches": plan.batches.len(), "segments": plan.segments}),
            )
        }
        Cmd::RestoreWorker {
            target_secret,
            restore_id,
            batches,
            common,
        } => {
            let (logical, run, target) = common.restore_step(&target_secret).await;
            let started = Instant::now();
            report(
                "restore-worker",
                started,
                in_turn(batches, |batch| {
                    logical.restore_batch(&run, &target, &restore_id, batch)
                })
                .await,
                |done| {
                    json!({
                        "segments": done.iter().map(|d| d.loaded).sum::<usize>(),
                        "rows": done.iter().map(|d| d.rows).sum::<u64>(),
                    })
                },
            )
        }
        Cmd::RestoreFinish {
            target_secret,
            restore_id,
            common,
        } => {
            let (logical, run, target) = common.restore_step(&target_secret).await;
            let started = Instant::now();
            report(
                "restore-finish",
                started,
                logical
                    .finish_restore(&run, &target, &restore_id, false)
                    .await,
                |result| json!({"consistent": result.consistent, "mismatches": result.mismatches, "phases": result.seconds}),
            )
        }
        Cmd::Backup { secret, common } => {
            let (logical, run) = common.logical(Some(&secret)).await;
            let started = Instant::now();
            report(
                "backup",
                started,
                logical.backup(&run).await,
                |result| json!({"rows": result.rows, "segments": result.segments, "object_bytes": result.object_bytes, "copy_bytes": result.copy_bytes}),
            )
        }
        Cmd::Restore {
            target_secret,
            common,
            reread,
        } => {
            let (logical, run) = common.logical(None).await;
            let started = Instant::now();
            report(
                "restore",
                started,
                logical
                    .restore(
                        &run,
                        &target_secret,
                        catalyst_dr::logical::restore::RestoreOptions {
                            database: None,
                            reread,
                            reset: false,
                        },
                    )
                    .await,
                |result| json!({"consistent": result.consistent, "mismatches": result.mismatches, "phases": result.seconds}),
            )
        }
    }
}
