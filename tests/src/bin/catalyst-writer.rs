//! catalyst-writer: live traffic on a Catalyst Auth database (new deliveries, changed users,
//! deliveries succeeding) at a steady rate until stopped, so that drills run against a database
//! that keeps changing. Prints the number of steps written when it stops.

use clap::Parser;
use std::time::Duration;

#[derive(Debug, Parser)]
#[command(about = "Write live traffic to a Catalyst Auth database until stopped")]
struct Args {
    /// libpq connection string or URL of the database.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: String,
    /// Steps per second.
    #[arg(long, default_value_t = 50)]
    rate: u32,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let (client, connection) =
        tokio_postgres::connect(&args.database_url, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    let mut ticks = tokio::time::interval(Duration::from_secs(1) / args.rate.max(1));
    let mut stop = Box::pin(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("signal handler");
        tokio::select! { _ = term.recv() => {}, _ = tokio::signal::ctrl_c() => {} }
    });
    let mut n: i64 = 0;
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = ticks.tick() => {
                n += 1;
                catalyst_dr_tests::datagen::live_traffic_step(&client, n).await?;
            }
        }
    }
    println!("{{\"steps\": {n}}}");
    Ok(())
}
