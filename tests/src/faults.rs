//! Fault injection for the fault-matrix tests: a PostgreSQL cluster of the test's own (so killing,
//! restarting or freezing it disturbs no other test), and an AWS endpoint nobody answers on.

use crate::{stack_var, unique};
use std::path::PathBuf;
use std::process::Command;

/// A PostgreSQL 15 cluster on a free loopback port, with password authentication over TCP as on
/// RDS. Stopped (and thawed first, if frozen) when dropped.
pub struct OwnPostgres {
    root: PathBuf,
    data: PathBuf,
    pub port: u16,
    pub password: String,
    bin: PathBuf,
    run_as: Option<String>,
}

impl OwnPostgres {
    fn tool(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        match &self.run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.arg("-u").arg(user).arg("--").arg(path);
                c
            }
            None => Command::new(path),
        }
    }

    fn run(mut command: Command, what: &str) {
        let out = command.output().unwrap_or_else(|e| panic!("{what}: {e}"));
        assert!(
            out.status.success(),
            "{what} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// initdb and start a new cluster under the stack's state directory.
    pub fn start(label: &str) -> Self {
        let root = PathBuf::from(stack_var("CATALYST_DR_STATE"))
            .join("tests")
            .join(unique(label));
        let run_as = std::env::var("CATALYST_DR_PG_RUN_AS")
            .ok()
            .filter(|u| !u.is_empty());
        std::fs::create_dir_all(root.join("run")).expect("cluster directories");
        let password = "fault-matrix-superuser".to_owned();
        std::fs::write(root.join("pwfile"), format!("{password}\n")).expect("pwfile");
        if let Some(user) = &run_as {
            Self::run(
                {
                    let mut c = Command::new("chown");
                    c.arg("-R").arg(format!("{user}:{user}")).arg(&root);
                    c
                },
                "chown",
            );
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("bind")
            .local_addr()
            .expect("addr")
            .port();
        let this = Self {
            data: root.join("data"),
            root,
            port,
            password,
            bin: stack_var("CATALYST_DR_PG_BIN").into(),
            run_as,
        };
        let mut initdb = this.tool("initdb");
        initdb
            .arg("-D")
            .arg(&this.data)
            .arg("-U")
            .arg("postgres")
            .arg(format!("--pwfile={}", this.root.join("pwfile").display()))
            .args([
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "--encoding=UTF8",
                "--locale=C.UTF-8",
            ]);
        Self::run(initdb, "initdb");
        let conf = format!(
            "listen_addresses = '127.0.0.1'\nport = {}\nunix_socket_directories = '{}'\nfsync = off\nmax_connections = 40\n",
            this.port,
            this.root.join("run").display()
        );
        // Appending keeps the file's owner, so this works as root for a cluster run as postgres.
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(this.data.join("postgresql.conf"))
            .expect("postgresql.conf");
        std::io::Write::write_all(&mut file, conf.as_bytes()).expect("append postgresql.conf");
        this.start_again();
        this
    }

    /// `pg_ctl start`, waiting until it accepts connections.
    pub fn start_again(&self) {
        let mut start = self.tool("pg_ctl");
        start
            .arg("-D")
            .arg(&self.data)
            .arg("-l")
            .arg(self.root.join("server.log"))
            .arg("-w")
            .arg("start");
        Self::run(start, "pg_ctl start");
    }

    /// A crash: `pg_ctl stop -m immediate` kills every backend without a checkpoint; the next start
    /// runs crash recovery. Committed transactions survive, open ones are lost.
    pub fn crash(&self) {
        let mut stop = self.tool("pg_ctl");
        stop.arg("-D")
            .arg(&self.data)
            .args(["-m", "immediate", "-w", "stop"]);
        Self::run(stop, "pg_ctl stop -m immediate");
    }

    fn postmaster_pid(&self) -> i32 {
        let text =
            std::fs::read_to_string(self.data.join("postmaster.pid")).expect("postmaster.pid");
        text.lines()
            .next()
            .and_then(|l| l.trim().parse().ok())
            .expect("pid in postmaster.pid")
    }

    /// The postmaster's child processes (backends and auxiliary processes), from `/proc`.
    fn children(&self) -> Vec<i32> {
        let parent = self.postmaster_pid();
        let mut pids = Vec::new();
        for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            // Field 4 (ppid) follows the parenthesised command name.
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|p| p.parse::<i32>().ok());
            if ppid == Some(parent) {
                pids.push(pid);
            }
        }
        pids
    }

    /// Signals the postmaster (which must exist) and then `children`, one by one: a child may exit
    /// between listing and signalling, which is no failure.
    fn signal(&self, signal: &str, children: &[i32]) {
        Self::run(
            {
                let mut kill = Command::new("kill");
                kill.arg(signal).arg(self.postmaster_pid().to_string());
                kill
            },
            &format!("kill {signal} postmaster"),
        );
        for pid in children {
            let _ = Command::new("kill")
                .arg(signal)
                .arg(pid.to_string())
                .stderr(std::process::Stdio::null())
                .status();
        }
    }

    /// SIGSTOP the postmaster: the kernel still completes TCP handshakes into its backlog, but no
    /// new connection is ever answered (open ones keep working).
    pub fn freeze(&self) {
        self.signal("-STOP", &[]);
    }

    /// SIGSTOP the postmaster and every backend: open connections stay open (the kernel still
    /// acknowledges their packets and keepalives) but no statement is ever answered.
    pub fn freeze_all(&self) {
        self.signal("-STOP", &self.children());
    }

    /// SIGCONT the postmaster and every backend.
    pub fn thaw(&self) {
        self.signal("-CONT", &self.children());
    }

    pub fn config(&self, dbname: &str) -> tokio_postgres::Config {
        let mut config = tokio_postgres::Config::new();
        config
            .host("127.0.0.1")
            .port(self.port)
            .user("postgres")
            .password(&self.password)
            .dbname(dbname);
        config
    }

    /// A superuser connection to `dbname`.
    pub async fn connect(&self, dbname: &str) -> tokio_postgres::Client {
        let (client, connection) = self
            .config(dbname)
            .connect(tokio_postgres::NoTls)
            .await
            .expect("connect to the test's PostgreSQL");
        tokio::spawn(connection);
        client
    }

    /// A Secrets Manager secret with this cluster's superuser credentials for `dbname`.
    pub async fn secret(&self, sdk: &aws_config::SdkConfig, dbname: &str) -> String {
        let name = format!("catalyst-dr/test/{}", unique("own-pg"));
        let document = serde_json::json!({
            "engine": "postgres", "host": "127.0.0.1", "port": self.port,
            "username": "postgres", "password": self.password, "dbname": dbname,
        });
        aws_sdk_secretsmanager::Client::new(sdk)
            .create_secret()
            .name(&name)
            .secret_string(document.to_string())
            .send()
            .await
            .expect("create secret");
        name
    }

    /// A Catalyst Auth database filled by the generator, and a secret for it.
    pub async fn catalyst_database(
        &self,
        sdk: &aws_config::SdkConfig,
        spec: &crate::datagen::GeneratorSpec,
    ) -> (String, tokio_postgres::Client) {
        self.connect("postgres")
            .await
            .batch_execute("CREATE DATABASE catalyst_auth")
            .await
            .expect("create database");
        let client = self.connect("catalyst_auth").await;
        catalyst_dr::catalyst_db::apply(&client)
            .await
            .expect("apply schema");
        crate::datagen::generate(&client, spec)
            .await
            .expect("generate data");
        (self.secret(sdk, "catalyst_auth").await, client)
    }
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        if self.data.join("postmaster.pid").exists() {
            for pid in std::iter::once(self.postmaster_pid()).chain(self.children()) {
                let _ = Command::new("kill")
                    .arg("-CONT")
                    .arg(pid.to_string())
                    .stderr(std::process::Stdio::null())
                    .status();
            }
            let _ = self
                .tool("pg_ctl")
                .arg("-D")
                .arg(&self.data)
                .args(["-m", "immediate", "-w", "stop"])
                .output();
        }
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// SDK configuration whose every call goes to a loopback port nothing listens on: the AWS
/// endpoint is unreachable (connection refused), as during a network partition.
pub async fn unreachable_aws() -> aws_config::SdkConfig {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(format!("http://127.0.0.1:{port}"))
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_s3::config::Credentials::new(
            "test", "test", None, None, "test",
        ))
        .load()
        .await
}
