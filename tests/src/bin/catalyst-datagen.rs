//! catalyst-datagen: applies the Catalyst Auth reference schema to a database and fills it with
//! deterministic generated data (see `docs/schema.md`). Prints what it wrote as JSON.

use catalyst_dr::catalyst_db;
use catalyst_dr::catalyst_db::CatalystDbError;
use catalyst_dr_tests::datagen::{self, GeneratorSpec};
use clap::Parser;
use std::process::ExitCode;
use std::time::Instant;
use tokio_postgres::NoTls;

#[derive(Debug, Parser)]
#[command(about = "Apply the Catalyst Auth reference schema and generate deterministic data")]
struct Args {
    /// libpq connection string or URL of the (empty) target database.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: String,
    /// Same seed and sizes, same data (dead-lettered updated_at aside, which follows the clock).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Size the data so the database is roughly this many bytes; the flags below override parts.
    #[arg(long)]
    target_bytes: Option<u64>,
    /// Users to create (default 1000).
    #[arg(long)]
    users: Option<u64>,
    /// Most entitlements per user (each user gets 0..=N).
    #[arg(long)]
    entitlements_per_user: Option<u32>,
    /// Webhook subscriptions to create (default 20).
    #[arg(long)]
    subscriptions: Option<u64>,
    /// Webhook deliveries to create (default 10000).
    #[arg(long)]
    deliveries: Option<u64>,
    /// Fraction of deliveries that are dead-lettered, 0..=1.
    #[arg(long)]
    dead_letter_share: Option<f64>,
    /// Dead-lettered deliveries' updated_at is spread over this many hours before now.
    #[arg(long)]
    dead_letter_window_hours: Option<u32>,
    /// Subscription n gets endpoint_url "{endpoint-base}/n".
    #[arg(long)]
    endpoint_base: Option<String>,
}

impl Args {
    fn spec(&self) -> GeneratorSpec {
        let mut spec = match self.target_bytes {
            Some(bytes) => GeneratorSpec::for_target_bytes(self.seed, bytes),
            None => GeneratorSpec {
                seed: self.seed,
                ..GeneratorSpec::default()
            },
        };
        spec.users = self.users.unwrap_or(spec.users);
        spec.entitlements_per_user = self
            .entitlements_per_user
            .unwrap_or(spec.entitlements_per_user);
        spec.subscriptions = self.subscriptions.unwrap_or(spec.subscriptions);
        spec.deliveries = self.deliveries.unwrap_or(spec.deliveries);
        spec.dead_letter_share = self.dead_letter_share.unwrap_or(spec.dead_letter_share);
        spec.dead_letter_window_hours = self
            .dead_letter_window_hours
            .unwrap_or(spec.dead_letter_window_hours);
        if let Some(base) = &self.endpoint_base {
            spec.endpoint_base.clone_from(base);
        }
        spec
    }
}

#[derive(Debug)]
enum Failure {
    Connect(tokio_postgres::Error),
    Db(CatalystDbError),
}

impl From<CatalystDbError> for Failure {
    fn from(err: CatalystDbError) -> Self {
        Self::Db(err)
    }
}

async fn run(args: &Args) -> Result<serde_json::Value, Failure> {
    let spec = args.spec();
    // Before connecting, so a bad flag changes nothing in the database.
    spec.validate()?;
    let (client, connection) = tokio_postgres::connect(&args.database_url, NoTls)
        .await
        .map_err(Failure::Connect)?;
    let connection = tokio::spawn(connection);
    let started = Instant::now();
    catalyst_db::apply(&client).await?;
    let counts = datagen::generate(&client, &spec).await?;
    let elapsed = started.elapsed().as_secs_f64();
    let database_bytes = datagen::database_size_bytes(&client).await?;
    drop(client);
    let _ = connection.await;
    Ok(serde_json::json!({
        "seed": spec.seed,
        "counts": counts,
        "database_bytes": database_bytes,
        "elapsed_seconds": (elapsed * 1000.0).round() / 1000.0,
    }))
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args).await {
        Ok(report) => {
            println!("{report:#}");
            ExitCode::SUCCESS
        }
        // The connection string is never printed: it may carry a password.
        Err(Failure::Connect(err)) => {
            eprintln!("catalyst-datagen: cannot connect to the database: {err}");
            ExitCode::FAILURE
        }
        Err(Failure::Db(err)) => {
            eprintln!("catalyst-datagen: {} error: {err}", err.error_type());
            ExitCode::FAILURE
        }
    }
}
