//! `bench-logical fanout`: the fanned-out backup's throughput per worker and its scaling with
//! concurrent workers, beside one invocation reading the source itself and `pg_dump -Fc`, all on
//! the same generated database in one run. Each worker is a process of its own with one
//! connection (as an invocation with `LOGICAL_PARALLELISM=1`), taking every n-th batch; the wall
//! time of a fan-out runs from the plan to the manifest.

use super::{
    ChildArgs, child, create_database, drop_database, median, pg_bin, round, settle, timed,
};
use catalyst_dr::logical::fanout::read_source_id;
use catalyst_dr::run_id::RunId;
use catalyst_dr_tests::datagen::{self, GeneratorSpec};
use catalyst_dr_tests::{
    local_aws, locked_bucket, pg_admin, put_db_secret, put_staging_secret, s3, stack_var,
};
use serde_json::{Value, json};
use std::process::Command;
use std::time::Instant;

/// Worker processes started together, each with its share of the batches; returns when all end.
fn workers(common: &[String], batches: usize, workers: usize) -> Vec<Value> {
    let exe = std::env::current_exe().expect("own path");
    let children: Vec<_> = (0..workers)
        .map(|w| {
            let mine: Vec<String> = (w..batches)
                .step_by(workers)
                .map(|b| b.to_string())
                .collect();
            Command::new(&exe)
                .arg("fanout-worker")
                .arg("--batches")
                .arg(mine.join(","))
                .args(common)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("start a worker")
        })
        .collect();
    children
        .into_iter()
        .map(|c| {
            let out = c.wait_with_output().expect("worker");
            assert!(
                out.status.success(),
                "worker failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let stdout = String::from_utf8_lossy(&out.stdout);
            let last = stdout
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or_default();
            serde_json::from_str(last)
                .unwrap_or_else(|e| panic!("worker printed no JSON ({e}): {stdout}"))
        })
        .collect()
}

pub async fn run(
    sizes_mib: Vec<u64>,
    worker_counts: Vec<usize>,
    rounds: usize,
    segment_mib: u64,
    batch_mib: u64,
    pg_bin_dir: Option<String>,
) {
    let sdk = local_aws().await;
    let bin = pg_bin(pg_bin_dir);
    let bucket = format!("bench-fanout-{}", std::process::id());
    locked_bucket(&s3(&sdk), &bucket).await;
    let (host, port, password) = (
        stack_var("CATALYST_DR_PG_HOST"),
        stack_var("CATALYST_DR_PG_PORT"),
        stack_var("CATALYST_DR_PG_PASSWORD"),
    );
    let dump = std::env::temp_dir().join(format!("bench-fanout-{}.dump", std::process::id()));
    let mut offset = 0i64;
    let mut next_run = || {
        offset += 1;
        let t = time::OffsetDateTime::now_utc() + time::Duration::minutes(offset);
        RunId::from_scheduled_time("scheduled_time", &catalyst_dr::input::format_time(t))
            .expect("time")
    };
    let mut lines = Vec::new();
    for mib in sizes_mib {
        let src = format!("bench_fanout_src_{mib}");
        let client = create_database(&src).await;
        catalyst_dr::catalyst_db::apply(&client)
            .await
            .expect("schema");
        datagen::generate(&client, &GeneratorSpec::for_target_bytes(1, mib << 20))
            .await
            .expect("generate");
        client
            .batch_execute("VACUUM ANALYZE")
            .await
            .expect("vacuum");
        let database_bytes = datagen::database_size_bytes(&client).await.expect("size");
        drop(client);
        let copy = format!("{src}_copy");
        drop_database(&copy).await;
        pg_admin()
            .await
            .batch_execute(&format!("CREATE DATABASE {copy} TEMPLATE {src}"))
            .await
            .expect("the read source");
        let secret = put_db_secret(
            &sdk,
            &format!("catalyst-dr/bench/{src}"),
            "postgres",
            &password,
            &src,
        )
        .await;
        eprintln!("[bench] {src}: {} MiB and its copy", database_bytes >> 20);

        let mut single_s = Vec::new();
        let mut dump_s = Vec::new();
        let mut fanout_s: Vec<Vec<f64>> = vec![Vec::new(); worker_counts.len()];
        let mut copy_bytes = 0u64;
        let mut batches = 0usize;
        for r in 0..rounds {
            let common = |run: &RunId, staging: Option<String>| {
                ChildArgs {
                    bucket: bucket.clone(),
                    scheduled_time: catalyst_dr::input::format_time(run.scheduled_time),
                    parallelism: 1,
                    segment_mib,
                    staging_secret: staging,
                    batch_mib,
                }
                .to_args()
            };
            settle().await;
            let run = next_run();
            let args = common(&run, None);
            let mut argv = vec!["backup", "--secret", &secret];
            argv.extend(args.iter().map(String::as_str));
            let single = child(&argv);
            eprintln!("[bench] round {r} one invocation, one connection: {single}");
            single_s.push(single["wall_seconds"].as_f64().unwrap_or(f64::NAN));
            copy_bytes = single["copy_bytes"].as_u64().unwrap_or(0);

            for (i, &n) in worker_counts.iter().enumerate() {
                let run = next_run();
                let staging = put_staging_secret(&sdk, &copy, &read_source_id(&run)).await;
                let args = common(&run, Some(staging));
                settle().await;
                let started = Instant::now();
                let restored_to = catalyst_dr::input::format_time(time::OffsetDateTime::now_utc());
                let mut argv = vec!["fanout-plan", "--restored-to", &restored_to];
                argv.extend(args.iter().map(String::as_str));
                let plan = child(&argv);
                batches = plan["batches"].as_u64().unwrap_or(0) as usize;
                workers(&args, batches, n);
                let mut argv = vec!["fanout-finish"];
                argv.extend(args.iter().map(String::as_str));
                let finish = child(&argv);
                let wall = started.elapsed().as_secs_f64();
                assert_eq!(
                    finish["rows"], single["rows"],
                    "the fan-out stored other rows"
                );
                eprintln!(
                    "[bench] round {r} fan-out, {n} worker(s): {wall:.2} s ({batches} batches) {finish}"
                );
                fanout_s[i].push(wall);
            }

            settle().await;
            dump_s.push(timed(
                Command::new(format!("{bin}/pg_dump"))
                    .env("PGPASSWORD", &password)
                    .args(["-h", &host, "-p", &port, "-U", "postgres", "-Fc", "-f"])
                    .arg(&dump)
                    .arg(&src),
            ));
        }
        let _ = std::fs::remove_file(&dump);
        drop_database(&copy).await;
        drop_database(&src).await;

        let mib_s = |seconds: f64| round(copy_bytes as f64 / 1048576.0 / seconds);
        let single = median(single_s.into_iter());
        let pg_dump = median(dump_s.into_iter());
        let one_worker = median(fanout_s[0].iter().copied());
        let by_workers: Vec<Value> = worker_counts
            .iter()
            .zip(&fanout_s)
            .map(|(&n, walls)| {
                let wall = median(walls.iter().copied());
                json!({
                    "workers": n,
                    "seconds": round(wall),
                    "table_mib_per_s": mib_s(wall),
                    "per_worker_mib_per_s": round(mib_s(wall) / n as f64),
                    "speedup_vs_1_worker": round(one_worker / wall),
                    "vs_one_invocation": round(wall / single),
                    "vs_pg_dump_fc": round(wall / pg_dump),
                })
            })
            .collect();
        let line = json!({
            "database_mib": database_bytes >> 20,
            "copy_mib": copy_bytes >> 20,
            "batches": batches,
            "rounds": rounds,
            "one_invocation_one_connection_seconds": round(single),
            "one_invocation_mib_per_s": mib_s(single),
            "pg_dump_fc_seconds": round(pg_dump),
            "fanout": by_workers,
        });
        println!("{line}");
        lines.push(line);
    }
    println!();
    println!(
        "{:>7} {:>8} {:>9} {:>8} {:>11} {:>8} {:>13} {:>9}",
        "db MiB",
        "workers",
        "seconds",
        "MiB/s",
        "MiB/s/wkr",
        "speedup",
        "vs 1 invoc.",
        "vs pg_dump"
    );
    for line in &lines {
        println!(
            "{:>7} {:>8} {:>9} {:>8} {:>11} {:>8} {:>13} {:>9}",
            line["database_mib"],
            "single",
            line["one_invocation_one_connection_seconds"],
            line["one_invocation_mib_per_s"],
            "",
            "",
            "1",
            ""
        );
        println!(
            "{:>7} {:>8} {:>9} {:>8} {:>11} {:>8} {:>13} {:>9}",
            line["database_mib"], "pg_dump", line["pg_dump_fc_seconds"], "", "", "", "", "1"
        );
        for f in line["fanout"].as_array().expect("fanout") {
            println!(
                "{:>7} {:>8} {:>9} {:>8} {:>11} {:>8} {:>13} {:>9}",
                line["database_mib"],
                f["workers"],
                f["seconds"],
                f["table_mib_per_s"],
                f["per_worker_mib_per_s"],
                f["speedup_vs_1_worker"],
                f["vs_one_invocation"],
                f["vs_pg_dump_fc"]
            );
        }
    }
    println!(
        "MiB/s: COPY text of the tables per second of wall time; every fan-out stored the same rows as the one invocation"
    );
}
