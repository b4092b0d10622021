//! `bench-logical fanout`: the fanned-out backup's throughput per worker and its scaling with
//! concurrent workers, beside one invocation reading the source itself and `pg_dump -Fc`, all on
//! the same generated database in one run; then the same for the restore of that backup into an
//! empty staging database, beside one invocation and `pg_restore -j 2`. Each worker is a process
//! of its own with one connection (as an invocation with `LOGICAL_PARALLELISM=1`), taking every
//! n-th batch; the wall time of a fan-out runs from the plan (prepare) to the manifest (finish).

use super::{
    ChildArgs, child, child_figures, drop_database, generated_source, median, pg_bin,
    pg_restore_j2, round, settle, staging_target, timed,
};
use catalyst_dr::logical::fanout::read_source_id;
use catalyst_dr::run_id::RunId;
use catalyst_dr_tests::{
    local_aws, locked_bucket, pg_admin, put_db_secret, put_staging_secret, s3, stack_var,
};
use serde_json::{Value, json};
use std::process::Command;
use std::time::Instant;

/// A figure as table text (a JSON value's Display ignores the width).
fn cell(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Worker processes started together (`command`: the worker's subcommand and its own
/// arguments), each with its share of the batches; returns when all end.
fn workers(command: &[&str], common: &[String], batches: usize, workers: usize) -> Vec<Value> {
    let exe = std::env::current_exe().expect("own path");
    let children: Vec<_> = (0..workers)
        .map(|w| {
            let mine: Vec<String> = (w..batches)
                .step_by(workers)
                .map(|b| b.to_string())
                .collect();
            Command::new(&exe)
                .args(command)
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
        .map(|c| child_figures("worker", &c.wait_with_output().expect("worker")))
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
        let database_bytes = generated_source(&src, mib).await;
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
        let mut restore_single_s = Vec::new();
        let mut pg_restore_s = Vec::new();
        let mut restore_fanout_s: Vec<Vec<f64>> = vec![Vec::new(); worker_counts.len()];
        let mut copy_bytes = 0u64;
        let mut object_bytes = 0u64;
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
            let backed_up = next_run();
            let args = common(&backed_up, None);
            let mut argv = vec!["backup", "--secret", &secret];
            argv.extend(args.iter().map(String::as_str));
            let single = child(&argv);
            eprintln!("[bench] round {r} one invocation, one connection: {single}");
            single_s.push(single["wall_seconds"].as_f64().unwrap_or(f64::NAN));
            copy_bytes = single["copy_bytes"].as_u64().unwrap_or(0);
            object_bytes = single["object_bytes"].as_u64().unwrap_or(0);

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
                workers(&["fanout-worker"], &args, batches, n);
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

            // The restore of the one invocation's backup, into an empty staging database each.
            let dst = format!("bench_fanout_dst_{mib}");
            let target = staging_target(&sdk, &dst).await;
            settle().await;
            let mut argv = vec!["restore", "--target-secret", &target];
            argv.extend(args.iter().map(String::as_str));
            let single_restore = child(&argv);
            assert_eq!(single_restore["consistent"], true, "{single_restore}");
            eprintln!(
                "[bench] round {r} restore, one invocation, one connection: {single_restore}"
            );
            restore_single_s.push(single_restore["wall_seconds"].as_f64().unwrap_or(f64::NAN));
            for (i, &n) in worker_counts.iter().enumerate() {
                let target = staging_target(&sdk, &dst).await;
                settle().await;
                let started = Instant::now();
                let mut argv = vec!["restore-prepare", "--target-secret", &target];
                argv.extend(args.iter().map(String::as_str));
                let plan = child(&argv);
                let restore_id = plan["restore_id"].as_str().expect("restore id").to_owned();
                let batches = plan["batches"].as_u64().unwrap_or(0) as usize;
                let worker = [
                    "restore-worker",
                    "--target-secret",
                    &target,
                    "--restore-id",
                    &restore_id,
                ];
                workers(&worker, &args, batches, n);
                let mut argv = vec![
                    "restore-finish",
                    "--target-secret",
                    &target,
                    "--restore-id",
                    &restore_id,
                ];
                argv.extend(args.iter().map(String::as_str));
                let finish = child(&argv);
                let wall = started.elapsed().as_secs_f64();
                assert_eq!(finish["consistent"], true, "{finish}");
                eprintln!(
                    "[bench] round {r} restore fan-out, {n} worker(s): {wall:.2} s ({batches} batches) {finish}"
                );
                restore_fanout_s[i].push(wall);
            }
            drop_database(&dst).await;
            pg_restore_s
                .push(pg_restore_j2(&bin, &dump, &format!("bench_fanout_pgrestore_{mib}")).await);
        }
        let _ = std::fs::remove_file(&dump);
        drop_database(&copy).await;
        drop_database(&src).await;

        let mib_per_s = |seconds: f64| round(copy_bytes as f64 / 1048576.0 / seconds);
        let line = json!({
            "database_mib": database_bytes >> 20,
            "copy_mib": copy_bytes >> 20,
            "object_ratio": round(object_bytes as f64 / copy_bytes.max(1) as f64),
            "batches": batches,
            "rounds": rounds,
            "backup": comparison(&worker_counts, single_s, dump_s, &fanout_s, mib_per_s),
            "restore": comparison(&worker_counts, restore_single_s, pg_restore_s, &restore_fanout_s, mib_per_s),
        });
        println!("{line}");
        lines.push(line);
    }
    print_comparison(&lines, "backup", "pg_dump", "vs pg_dump");
    print_comparison(&lines, "restore", "pg_rst", "vs pg_restore");
    println!(
        "MiB/s: COPY text of the tables per second of wall time; every fan-out stored the same rows as the one invocation, and every restore is consistent"
    );
    if let Some(line) = lines.last() {
        let one_worker = line["backup"]["fanout"][0]["table_mib_per_s"]
            .as_f64()
            .unwrap_or(f64::NAN);
        let ratio = line["object_ratio"].as_f64().unwrap_or(f64::NAN);
        project(one_worker, ratio, segment_mib, batch_mib);
    }
}

/// The medians of one kind of work (the backup or the restore): one invocation, PostgreSQL's own
/// tool (`pg_dump -Fc` or `pg_restore -j 2`) and the fan-out at each worker count, with ratios.
fn comparison(
    worker_counts: &[usize],
    single_s: Vec<f64>,
    tool_s: Vec<f64>,
    fanout_s: &[Vec<f64>],
    mib_per_s: impl Fn(f64) -> f64,
) -> Value {
    let single = median(single_s.into_iter());
    let tool = median(tool_s.into_iter());
    let one_worker = median(fanout_s[0].iter().copied());
    let by_workers: Vec<Value> = worker_counts
        .iter()
        .zip(fanout_s)
        .map(|(&n, walls)| {
            let wall = median(walls.iter().copied());
            json!({
                "workers": n,
                "seconds": round(wall),
                "table_mib_per_s": mib_per_s(wall),
                "per_worker_mib_per_s": round(mib_per_s(wall) / n as f64),
                "speedup_vs_1_worker": round(one_worker / wall),
                "vs_one_invocation": round(wall / single),
                "vs_tool": round(wall / tool),
            })
        })
        .collect();
    json!({
        "one_invocation_one_connection_seconds": round(single),
        "one_invocation_mib_per_s": mib_per_s(single),
        "tool_seconds": round(tool),
        "fanout": by_workers,
    })
}

/// The table of one kind of work (`what`, a key of each line), a row per database and worker
/// count beside the one invocation and the tool.
fn print_comparison(lines: &[Value], what: &str, tool: &str, vs_tool: &str) {
    let row = |cells: [String; 8]| {
        println!(
            "{:>7} {:>8} {:>9} {:>8} {:>11} {:>8} {:>13} {:>12}",
            cells[0], cells[1], cells[2], cells[3], cells[4], cells[5], cells[6], cells[7]
        )
    };
    println!();
    row([
        what,
        "workers",
        "seconds",
        "MiB/s",
        "MiB/s/wkr",
        "speedup",
        "vs 1 invoc.",
        vs_tool,
    ]
    .map(str::to_owned));
    for line in lines {
        let db = cell(&line["database_mib"]);
        let figures = &line[what];
        let blank = String::new;
        row([
            db.clone(),
            "single".into(),
            cell(&figures["one_invocation_one_connection_seconds"]),
            cell(&figures["one_invocation_mib_per_s"]),
            blank(),
            blank(),
            "1".into(),
            blank(),
        ]);
        row([
            db.clone(),
            tool.into(),
            cell(&figures["tool_seconds"]),
            blank(),
            blank(),
            blank(),
            blank(),
            "1".into(),
        ]);
        for f in figures["fanout"].as_array().expect("fanout") {
            row([
                db.clone(),
                cell(&f["workers"]),
                cell(&f["seconds"]),
                cell(&f["table_mib_per_s"]),
                cell(&f["per_worker_mib_per_s"]),
                cell(&f["speedup_vs_1_worker"]),
                cell(&f["vs_one_invocation"]),
                cell(&f["vs_tool"]),
            ]);
        }
    }
}

// AWS's documented figures the projection uses (us-east-1 list prices).
/// Lambda gives a function one vCPU per 1,769 MB of memory.
const LAMBDA_MB_PER_VCPU: f64 = 1769.0;
/// snapshot-trigger's MemorySize in the template (arm64).
const FUNCTION_MB: f64 = 1024.0;
const LAMBDA_ARM_USD_PER_GB_S: f64 = 0.000_013_333_4;
const S3_PUT_USD_PER_1000: f64 = 0.005;
const S3_GET_USD_PER_1000: f64 = 0.000_4;
const SFN_USD_PER_1000_TRANSITIONS: f64 = 0.025;
/// The nightly's Map runs at most this many batches at once (`logical_concurrency`'s default).
const MAP_CONCURRENCY: f64 = 8.0;
/// The wall time a night's backup may take, for the concurrency column.
const NIGHT_HOURS: f64 = 4.0;
/// The multipart part size (LOGICAL_PART_SIZE_MIB's default).
const PART_MIB: f64 = 8.0;

/// Wall time, Lambda concurrency, S3 requests and cost of a fanned-out night at 100 GiB, 1 TiB and
/// 10 TiB of table data, from the measured throughput of one worker on one connection. An
/// invocation gets `FUNCTION_MB / LAMBDA_MB_PER_VCPU` of a vCPU where the measuring worker had a
/// core, so its throughput is scaled by that share (and, with more than one vCPU, by its
/// connections up to `LOGICAL_PARALLELISM` = 4).
pub fn project(one_worker_mib_s: f64, object_ratio: f64, segment_mib: u64, batch_mib: u64) {
    let vcpu = FUNCTION_MB / LAMBDA_MB_PER_VCPU;
    let invocation_mib_s = one_worker_mib_s * vcpu.min(1.0) * vcpu.clamp(1.0, 4.0);
    println!();
    println!(
        "projection: one invocation ({FUNCTION_MB} MB, {vcpu:.2} vCPU) ~{invocation_mib_s:.1} MiB/s from the measured \
         {one_worker_mib_s:.1} MiB/s of one worker; at most {MAP_CONCURRENCY} invocations at once; segments of \
         {segment_mib} MiB, batches of {batch_mib} MiB; stored bytes {object_ratio:.3} x COPY text"
    );
    println!(
        "{:>8} {:>8} {:>8} {:>8} {:>8} {:>9} {:>9} {:>9} {:>11} {:>9} {:>9} {:>7}",
        "data",
        "wall h",
        "for 4 h",
        "batches",
        "batch s",
        "segments",
        "S3 PUTs",
        "S3 GETs",
        "Lambda GB-s",
        "Lambda $",
        "S3 req $",
        "SFN $"
    );
    for (label, gib) in [("100 GiB", 100.0), ("1 TiB", 1024.0), ("10 TiB", 10240.0)] {
        let mib = gib * 1024.0;
        let segments = (mib / segment_mib as f64).ceil();
        let batches = (mib / batch_mib as f64).ceil();
        let invocation_s = mib / invocation_mib_s;
        let wall_h = invocation_s / MAP_CONCURRENCY.min(batches) / 3600.0;
        let parts = (segment_mib as f64 * object_ratio / PART_MIB)
            .ceil()
            .max(1.0);
        // Per segment: CreateMultipartUpload, the parts, CompleteMultipartUpload, the marker's
        // PUT and the ListMultipartUploads before the segment; the marker's HEAD (batch) and GET
        // (finish), and verify's GET of the object.
        let puts = segments * (4.0 + parts);
        let gets = segments * 3.0;
        let gb_s = invocation_s * FUNCTION_MB / 1024.0;
        // A child execution of two transitions per batch; the parent's few dozen.
        let transitions = batches * 2.0 + 40.0;
        println!(
            "{:>8} {:>8.1} {:>8} {:>8} {:>8.0} {:>9} {:>9} {:>9} {:>11.0} {:>9.2} {:>9.2} {:>7.3}",
            label,
            wall_h,
            (invocation_s / (NIGHT_HOURS * 3600.0)).ceil(),
            batches,
            batch_mib as f64 / invocation_mib_s,
            segments,
            puts,
            gets,
            gb_s,
            gb_s * LAMBDA_ARM_USD_PER_GB_S,
            puts / 1000.0 * S3_PUT_USD_PER_1000 + gets / 1000.0 * S3_GET_USD_PER_1000,
            transitions / 1000.0 * SFN_USD_PER_1000_TRANSITIONS
        );
    }
    println!(
        "wall h at {MAP_CONCURRENCY} invocations at once; for 4 h: the logical_concurrency a {NIGHT_HOURS}-hour window needs (the read source must serve that many times LOGICAL_PARALLELISM connections); \
         wall time leaves out the read source's restore; each object holds one segment (at most {segment_mib} MiB of COPY text, \
         {} parts of {PART_MIB} MiB), far inside S3's 10,000 parts of at most 5 GiB",
        (segment_mib as f64 / PART_MIB).ceil()
    );
}
