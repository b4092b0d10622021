//! catalyst-writer: live traffic on a Catalyst Auth database (new deliveries, changed users,
//! deliveries succeeding) at a steady rate until stopped, so that drills run against a database
//! that keeps changing; with `--redis-url`, its Redis queues keep moving too (deliveries enqueued
//! and consumed, delayed retries scheduled, sessions with a time to live). Prints the number of
//! steps written when it stops.

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
    /// The Catalyst Auth Redis (queue adapter and sessions).
    #[arg(long)]
    redis_url: Option<String>,
}

/// One step of queue traffic: a delivery enqueued on one of eight queues, every third step one
/// consumed, a delayed retry scheduled and, now and then, the due ones taken; a session set.
async fn queue_step(
    conn: &mut redis::aio::MultiplexedConnection,
    n: i64,
) -> Result<(), redis::RedisError> {
    let queue = format!("catalyst:webhooks:queue:{}", n % 8);
    let _: () = redis::cmd("RPUSH")
        .arg(&queue)
        .arg(n)
        .query_async(conn)
        .await?;
    if n % 3 == 0 {
        let _: Option<String> = redis::cmd("LPOP").arg(&queue).query_async(conn).await?;
    }
    let _: () = redis::cmd("ZADD")
        .arg("catalyst:webhooks:delayed")
        .arg(n + 60)
        .arg(format!("delivery:{n}"))
        .query_async(conn)
        .await?;
    if n % 10 == 0 {
        let _: () = redis::cmd("ZREMRANGEBYSCORE")
            .arg("catalyst:webhooks:delayed")
            .arg("-inf")
            .arg(n)
            .query_async(conn)
            .await?;
    }
    redis::cmd("SET")
        .arg(format!("catalyst:session:{n}"))
        .arg("active")
        .arg("EX")
        .arg(3600)
        .query_async(conn)
        .await
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let (client, connection) =
        tokio_postgres::connect(&args.database_url, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    let mut redis = match &args.redis_url {
        Some(url) => Some(
            redis::Client::open(url.as_str())?
                .get_multiplexed_async_connection()
                .await?,
        ),
        None => None,
    };
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
                if let Some(conn) = redis.as_mut() {
                    queue_step(conn, n).await?;
                }
            }
        }
    }
    println!("{{\"steps\": {n}}}");
    Ok(())
}
