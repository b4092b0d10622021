//! Every environment variable the functions read, defined once. Each row names the variable, the
//! functions that read it, its type, default, requirement, who sets it and what it means. The
//! configuration modules read through these rows ([`crate::config::Env`]'s setting accessors), so a
//! name, default or range lives only here; tests check that each function reads exactly its rows,
//! that `infra/template.yaml` sets exactly the rows marked [`SetBy::Template`], and that the README's
//! configuration tables are [`markdown_table`]'s output.
//!
//! A variable whose default or requirement differs between functions has one row per difference
//! (`PG_STATEMENT_TIMEOUT_MS`, `SOURCE_DATABASE_SECRET_ID`); within one function a name appears once.

use std::fmt::Write as _;

/// A Lambda function of the stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Function {
    SnapshotTrigger,
    PitrRestore,
    DeadLetterReplay,
    DrillValidator,
}

impl Function {
    pub const ALL: [Function; 4] = [
        Function::SnapshotTrigger,
        Function::PitrRestore,
        Function::DeadLetterReplay,
        Function::DrillValidator,
    ];

    /// The binary's name, as in the README and `functions/`.
    pub const fn name(self) -> &'static str {
        match self {
            Function::SnapshotTrigger => "snapshot-trigger",
            Function::PitrRestore => "pitr-restore",
            Function::DeadLetterReplay => "dead-letter-replay",
            Function::DrillValidator => "drill-validator",
        }
    }

    /// The function's logical id in `infra/template.yaml`.
    pub const fn resource(self) -> &'static str {
        match self {
            Function::SnapshotTrigger => "SnapshotTriggerFunction",
            Function::PitrRestore => "PitrRestoreFunction",
            Function::DeadLetterReplay => "DeadLetterReplayFunction",
            Function::DrillValidator => "DrillValidatorFunction",
        }
    }
}

/// What a value must look like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Text,
    /// `true`/`false` (also `1`/`0`, `yes`/`no`).
    Flag,
    /// A whole number in `min..=max`.
    Number {
        min: u32,
        max: u32,
    },
    /// A whole number, no upper bound.
    Count,
    /// One of these words.
    Choice(&'static [&'static str]),
    /// Items separated by `separator`; blanks are dropped.
    List {
        separator: &'static str,
    },
    /// An RDS or ElastiCache identifier.
    Identifier,
    /// An S3 key prefix; a missing trailing `/` is added.
    Prefix,
    /// An absolute path.
    Path,
    /// A Secrets Manager secret id or ARN.
    SecretId,
    Url,
    Arn,
    Json,
}

/// The value used when the variable is unset or empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fallback {
    None,
    Text(&'static str),
    Number(u32),
    Flag(bool),
    /// The value of another variable.
    Variable(&'static str),
}

/// Whether a function can start without the variable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requirement {
    Required,
    Optional,
    /// Exactly one of this variable and the other must be set.
    ExactlyOneWith(&'static str),
    /// At most one of this variable and the other may be set.
    AtMostOneWith(&'static str),
    /// Required only in the circumstance described (for example "with the `rds` engine").
    RequiredWhen(&'static str),
}

/// Who gives the variable its value in a deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetBy {
    /// `infra/template.yaml` sets it (Globals or the function's `Environment`).
    Template,
    /// Not in the template: the default applies unless an operator adds it.
    Operator,
    /// Only the local stack sets it; a deployment has no use for it.
    LocalStack,
}

#[derive(Debug, PartialEq, Eq)]
pub struct Setting {
    pub name: &'static str,
    pub functions: &'static [Function],
    pub kind: Kind,
    pub default: Fallback,
    pub requirement: Requirement,
    pub set_by: SetBy,
    pub meaning: &'static str,
}

impl Setting {
    /// The default of a number row; used in `const` context, so a row without one fails to compile.
    pub const fn default_number(&self) -> u32 {
        match self.default {
            Fallback::Number(n) => n,
            _ => panic!("this setting has no numeric default"),
        }
    }

    /// The default of a text row (see [`Setting::default_number`]).
    pub const fn default_text(&self) -> &'static str {
        match self.default {
            Fallback::Text(text) => text,
            _ => panic!("this setting has no text default"),
        }
    }

    pub fn read_by(&self, function: Function) -> bool {
        self.functions.contains(&function)
    }

    /// The default as an operator would write it, if there is one.
    pub fn default_value(&self) -> Option<String> {
        match self.default {
            Fallback::None => None,
            Fallback::Text(text) => Some(text.to_owned()),
            Fallback::Number(n) => Some(n.to_string()),
            Fallback::Flag(b) => Some(b.to_string()),
            Fallback::Variable(var) => Some(var.to_owned()),
        }
    }
}

use Function::{
    DeadLetterReplay as R, DrillValidator as D, PitrRestore as P, SnapshotTrigger as S,
};

const ALL_FUNCTIONS: &[Function] = &[S, P, R, D];
const WITH_BUCKET: &[Function] = &[S, R, D];
const WITH_BOUNDS: &[Function] = &[P, R, D];

const fn number(min: u32, max: u32) -> Kind {
    Kind::Number { min, max }
}

const fn row(
    name: &'static str,
    functions: &'static [Function],
    kind: Kind,
    default: Fallback,
    requirement: Requirement,
    set_by: SetBy,
    meaning: &'static str,
) -> Setting {
    Setting {
        name,
        functions,
        kind,
        default,
        requirement,
        set_by,
        meaning,
    }
}

use Fallback as F;
use Requirement::{Optional, Required, RequiredWhen};
use SetBy::{LocalStack, Operator, Template};

// ---- every function

pub const RUST_LOG: Setting = row(
    "RUST_LOG",
    ALL_FUNCTIONS,
    Kind::Text,
    F::Text("info"),
    Optional,
    Template,
    "log filter: a default level and `target=level` directives, e.g. `catalyst_dr=debug,info` (targets match by prefix; one that does not parse falls back to `info`); logs are JSON lines",
);
pub const BACKUP_BUCKET: Setting = row(
    "BACKUP_BUCKET",
    WITH_BUCKET,
    Kind::Text,
    F::None,
    Required,
    Template,
    "the backup bucket (versioned, Object Lock on): manifests, cache exports and logical backups; replay audit records; drill baselines and reports",
);
pub const S3_FORCE_PATH_STYLE: Setting = row(
    "S3_FORCE_PATH_STYLE",
    WITH_BUCKET,
    Kind::Flag,
    F::Flag(false),
    Optional,
    LocalStack,
    "path-style S3 addressing, for S3-compatible local endpoints",
);
pub const PG_TLS: Setting = row(
    "PG_TLS",
    ALL_FUNCTIONS,
    Kind::Choice(&["verify-full", "disable"]),
    F::Text("verify-full"),
    Optional,
    Operator,
    "TLS to PostgreSQL: `verify-full` or `disable`, which is refused (`Misconfigured`) for any host but loopback; snapshot-trigger reads it when a database is configured",
);
pub const PG_CA_BUNDLE: Setting = row(
    "PG_CA_BUNDLE",
    ALL_FUNCTIONS,
    Kind::Path,
    F::None,
    RequiredWhen("with `PG_TLS` `verify-full`"),
    Template,
    "PEM bundle the server certificate is verified against: the Amazon RDS CA bundle (see Deploy)",
);

// ---- PostgreSQL bounds (pitr-restore, dead-letter-replay, drill-validator)

pub const PG_CONNECT_TIMEOUT_MS: Setting = row(
    "PG_CONNECT_TIMEOUT_MS",
    WITH_BOUNDS,
    number(100, 120_000),
    F::Number(10_000),
    Optional,
    Operator,
    "TCP connect to PostgreSQL",
);
pub const PG_HANDSHAKE_TIMEOUT_MS: Setting = row(
    "PG_HANDSHAKE_TIMEOUT_MS",
    WITH_BOUNDS,
    number(100, 120_000),
    F::Number(10_000),
    Optional,
    Operator,
    "TLS, startup and authentication once TCP is up: a server that accepts connections and never answers fails here",
);
/// dead-letter-replay's statements are bounded; its default is not the others'.
pub const PG_STATEMENT_TIMEOUT_MS_REPLAY: Setting = row(
    "PG_STATEMENT_TIMEOUT_MS",
    &[R],
    number(0, 86_400_000),
    F::Number(120_000),
    Optional,
    Operator,
    "the server's `statement_timeout`; the function also stops waiting 2 s after it, for a server that cannot answer at all (0: off)",
);
pub const PG_STATEMENT_TIMEOUT_MS: Setting = row(
    "PG_STATEMENT_TIMEOUT_MS",
    &[P, D],
    number(0, 86_400_000),
    F::Number(0),
    Optional,
    Operator,
    "the server's `statement_timeout`, server side only (0: off)",
);
pub const PG_KEEPALIVE_IDLE_SECONDS: Setting = row(
    "PG_KEEPALIVE_IDLE_SECONDS",
    WITH_BOUNDS,
    number(1, 7_200),
    F::Number(30),
    Optional,
    Operator,
    "TCP keepalive after this much silence (then every 10 s, 3 probes); data unacknowledged for 5 minutes gives up",
);

// ---- the source database

pub const RDS_INSTANCE_ID: Setting = row(
    "RDS_INSTANCE_ID",
    &[S, P],
    Kind::Identifier,
    F::None,
    Requirement::ExactlyOneWith("RDS_CLUSTER_ID"),
    Template,
    "the database as an RDS instance (pitr-restore: with the `rds` engine)",
);
pub const RDS_CLUSTER_ID: Setting = row(
    "RDS_CLUSTER_ID",
    &[S, P],
    Kind::Identifier,
    F::None,
    Requirement::ExactlyOneWith("RDS_INSTANCE_ID"),
    Template,
    "the database as an Aurora cluster (pitr-restore: with the `rds` engine)",
);
pub const SOURCE_DATABASE_SECRET_ID_LOGICAL: Setting = row(
    "SOURCE_DATABASE_SECRET_ID",
    &[S],
    Kind::SecretId,
    F::None,
    RequiredWhen("for the logical actions"),
    Template,
    "Secrets Manager secret of the database to back up; without it `logical-backup` fails with `NotConfigured` naming it (the snapshot actions keep working)",
);
pub const SOURCE_DATABASE_SECRET_ID: Setting = row(
    "SOURCE_DATABASE_SECRET_ID",
    &[D],
    Kind::SecretId,
    F::None,
    Required,
    Template,
    "the source's credentials, for the drill's baseline",
);
pub const SOURCE_DATABASE_NAME: Setting = row(
    "SOURCE_DATABASE_NAME",
    &[P],
    Kind::Text,
    F::Text("catalyst_auth"),
    Optional,
    Template,
    "the database the staging copy serves (its `DATABASE_URL`); pitr-restore reads no source secret",
);
pub const SOURCE_DATABASE_SECRET_ID_REPLAY: Setting = row(
    "SOURCE_DATABASE_SECRET_ID",
    &[R],
    Kind::SecretId,
    F::None,
    RequiredWhen("unless `REPLAY_DATABASE_SECRET_ID` is set"),
    Template,
    "the Catalyst Auth database secret",
);

// ---- snapshot-trigger

pub const ELASTICACHE_REPLICATION_GROUP_ID: Setting = row(
    "ELASTICACHE_REPLICATION_GROUP_ID",
    &[S, P, D],
    Kind::Identifier,
    F::None,
    Requirement::AtMostOneWith("ELASTICACHE_CLUSTER_ID"),
    Template,
    "the Redis cache to snapshot (and, for drills, to restore), as a replication group",
);
pub const ELASTICACHE_CLUSTER_ID: Setting = row(
    "ELASTICACHE_CLUSTER_ID",
    &[S, P, D],
    Kind::Identifier,
    F::None,
    Requirement::AtMostOneWith("ELASTICACHE_REPLICATION_GROUP_ID"),
    Template,
    "the Redis cache to snapshot (and, for drills, to restore), as a single-node cluster",
);
pub const ELASTICACHE_EXPORT: Setting = row(
    "ELASTICACHE_EXPORT",
    &[S],
    Kind::Flag,
    F::Flag(true),
    Optional,
    Operator,
    "export the cache snapshot to `BACKUP_BUCKET`",
);
pub const RETENTION_DAYS: Setting = row(
    "RETENTION_DAYS",
    &[S],
    number(1, 36_500),
    F::Number(35),
    Optional,
    Template,
    "retain-until = scheduled time + this",
);
pub const KEEP_NEWEST: Setting = row(
    "KEEP_NEWEST",
    &[S],
    number(1, 1_000),
    F::Number(7),
    Optional,
    Template,
    "own snapshots per source never pruned",
);
pub const SCHEDULE_NAME: Setting = row(
    "SCHEDULE_NAME",
    &[S],
    Kind::Text,
    F::Text("nightly-backup"),
    Optional,
    Template,
    "recorded in tags and the manifest",
);
pub const MANIFEST_PREFIX: Setting = row(
    "MANIFEST_PREFIX",
    &[S],
    Kind::Prefix,
    F::Text("manifests/"),
    Optional,
    Operator,
    "key prefix of the manifests",
);
pub const LOGICAL_BACKUP_PREFIX: Setting = row(
    "LOGICAL_BACKUP_PREFIX",
    &[S],
    Kind::Prefix,
    F::Text("logical/"),
    Optional,
    Operator,
    "key prefix of the logical backups",
);
pub const LOGICAL_RETENTION_DAYS: Setting = row(
    "LOGICAL_RETENTION_DAYS",
    &[S],
    number(1, 36_500),
    F::Variable("RETENTION_DAYS"),
    Optional,
    Template,
    "Object Lock retain-until = scheduled time + this",
);
pub const LOGICAL_PARALLELISM: Setting = row(
    "LOGICAL_PARALLELISM",
    &[S],
    number(1, 32),
    F::Number(4),
    Optional,
    Operator,
    "segments copied or loaded at once (and connections open)",
);
pub const LOGICAL_SEGMENT_MIB: Setting = row(
    "LOGICAL_SEGMENT_MIB",
    &[S],
    number(1, 65_536),
    F::Number(64),
    Optional,
    Operator,
    "tables larger than this are backed up and restored in block ranges of about this size, on all connections at once",
);
pub const LOGICAL_FANOUT_THRESHOLD_GIB: Setting = row(
    "LOGICAL_FANOUT_THRESHOLD_GIB",
    &[S],
    number(0, 1_048_576),
    F::Number(32),
    Optional,
    Template,
    "a source database larger than this (`pg_database_size`) is backed up by the fan-out (a read source restored to the backup instant, read by a Map of invocations) instead of one invocation; 0 fans out always",
);
pub const LOGICAL_FANOUT_BATCH_MIB: Setting = row(
    "LOGICAL_FANOUT_BATCH_MIB",
    &[S],
    number(1, 1_048_576),
    F::Number(4096),
    Optional,
    Operator,
    "the fan-out's segments are packed into batches of about this much table storage, one invocation each",
);
pub const LOGICAL_PART_SIZE_MIB: Setting = row(
    "LOGICAL_PART_SIZE_MIB",
    &[S],
    number(5, 512),
    F::Number(8),
    Optional,
    Operator,
    "multipart part size; one buffer of this size per segment in flight",
);
pub const LOGICAL_ZSTD_LEVEL: Setting = row(
    "LOGICAL_ZSTD_LEVEL",
    &[S],
    number(1, 19),
    F::Number(3),
    Optional,
    Operator,
    "zstd level",
);
pub const LOGICAL_IGNORE_OBJECTS: Setting = row(
    "LOGICAL_IGNORE_OBJECTS",
    &[S],
    Kind::List { separator: ";" },
    F::None,
    Optional,
    Template,
    "schema objects a logical backup may leave out, `kind:name` or `kind:*` as its `not_captured` names them, separated by `;` or new lines (for example `rule:*`); anything else it cannot capture fails the backup with `SchemaNotCaptured`",
);

// ---- snapshot-trigger: copies in the DR region

pub const DR_REGION: Setting = row(
    "DR_REGION",
    &[S],
    Kind::Text,
    F::None,
    Optional,
    Template,
    "AWS region of the DR copies (snapshot copies and the DR bucket); unset, the `dr-*` actions answer `not-configured` and the nightly run skips them",
);
pub const DR_BUCKET: Setting = row(
    "DR_BUCKET",
    &[S],
    Kind::Text,
    F::None,
    RequiredWhen("with `DR_REGION`"),
    Template,
    "the DR bucket in `DR_REGION` (versioned, Object Lock on; may belong to the DR account): copies of the run's objects",
);
pub const DR_KMS_KEY_ARN: Setting = row(
    "DR_KMS_KEY_ARN",
    &[S],
    Kind::Arn,
    F::None,
    RequiredWhen("with `DR_REGION`"),
    Template,
    "customer KMS key in `DR_REGION` the snapshot copies are encrypted with",
);
pub const DR_ACCOUNT_ID: Setting = row(
    "DR_ACCOUNT_ID",
    &[S],
    Kind::Text,
    F::None,
    Optional,
    Template,
    "12-digit account the DR snapshot copies are shared with (restore permission); unset, they are not shared",
);

// ---- pitr-restore

pub const RESTORE_ENGINE: Setting = row(
    "RESTORE_ENGINE",
    &[P],
    Kind::Choice(&["rds", "local"]),
    F::Text("rds"),
    Optional,
    Operator,
    "`rds`, or `local` for PostgreSQL clusters on this machine (the local stack)",
);
pub const STAGING_SUBNET_GROUP: Setting = row(
    "STAGING_SUBNET_GROUP",
    &[P],
    Kind::Text,
    F::None,
    RequiredWhen("with the `rds` engine"),
    Template,
    "DB subnet group of staging restores",
);
pub const STAGING_SECURITY_GROUP_IDS: Setting = row(
    "STAGING_SECURITY_GROUP_IDS",
    &[P],
    Kind::List { separator: "," },
    F::None,
    RequiredWhen("with the `rds` engine"),
    Template,
    "comma-separated security groups of staging restores",
);
pub const STAGING_PARAMETER_GROUP: Setting = row(
    "STAGING_PARAMETER_GROUP",
    &[P],
    Kind::Text,
    F::None,
    Optional,
    Template,
    "DB (cluster) parameter group of staging restores (`rds` engine)",
);
pub const STAGING_INSTANCE_CLASS: Setting = row(
    "STAGING_INSTANCE_CLASS",
    &[P],
    Kind::Text,
    F::None,
    RequiredWhen("for an Aurora source"),
    Template,
    "instance class of staging restores (`rds` engine)",
);
pub const STAGING_PREFIX: Setting = row(
    "STAGING_PREFIX",
    &[P],
    Kind::Text,
    F::Text("catalyst-dr-staging-"),
    Optional,
    Operator,
    "every staging target starts with it; nothing else is ever restored into or deleted",
);
pub const STAGING_SECRET_ID: Setting = row(
    "STAGING_SECRET_ID",
    &[P, D],
    Kind::SecretId,
    F::None,
    Required,
    Template,
    "the staging copy's credentials and `DATABASE_URL`: pitr-restore publishes them, drill-validator connects with them",
);
pub const STAGING_SECRET_ID_LOGICAL: Setting = row(
    "STAGING_SECRET_ID",
    &[S],
    Kind::SecretId,
    F::None,
    RequiredWhen("for the fanned-out logical backup"),
    Template,
    "the staging secret, where pitr-restore publishes the fan-out's read source (the source restored to the backup instant); without it the fan-out steps fail with `NotConfigured`",
);
pub const SMOKE_HEALTH_CHECKS: Setting = row(
    "SMOKE_HEALTH_CHECKS",
    &[P],
    Kind::Json,
    F::Text("[]"),
    Optional,
    Template,
    "JSON list of `{name, url, expect_status (200), timeout_ms (2000)}`",
);
pub const SMOKE_MIN_USERS: Setting = row(
    "SMOKE_MIN_USERS",
    &[P],
    Kind::Count,
    F::Number(1),
    Optional,
    Operator,
    "fewer users than this fails the smoke tests",
);

// ---- the local engine (pitr-restore's `local` engine, snapshot-trigger's `base-backup`)

pub const LOCAL_SOURCE_ID: Setting = row(
    "LOCAL_SOURCE_ID",
    &[P],
    Kind::Identifier,
    F::Text("catalyst-auth-local"),
    Optional,
    LocalStack,
    "the local source's name in guards and tags (`local` engine)",
);
pub const LOCAL_SOURCE_DATABASE_URL: Setting = row(
    "LOCAL_SOURCE_DATABASE_URL",
    &[P],
    Kind::Url,
    F::None,
    RequiredWhen("with the `local` engine"),
    LocalStack,
    "the local source cluster (`postgresql://user:password@host:port/db`), which the `local` engine reads as RDS reads its own",
);
pub const LOCAL_PG_BIN: Setting = row(
    "LOCAL_PG_BIN",
    &[S, P],
    Kind::Path,
    F::Text("/usr/lib/postgresql/15/bin"),
    Optional,
    LocalStack,
    "PostgreSQL tools (`pg_ctl`, `pg_basebackup`, ...)",
);
pub const LOCAL_PG_RUN_AS: Setting = row(
    "LOCAL_PG_RUN_AS",
    &[S, P],
    Kind::Text,
    F::None,
    Optional,
    LocalStack,
    "OS user that runs the clusters when the function runs as root (PostgreSQL refuses root)",
);
pub const LOCAL_BASE_BACKUP_DIR: Setting = row(
    "LOCAL_BASE_BACKUP_DIR",
    &[S, P],
    Kind::Path,
    F::None,
    RequiredWhen("with the `local` engine"),
    LocalStack,
    "base backups, one directory each; set, it enables snapshot-trigger's `base-backup` action",
);
pub const LOCAL_WAL_ARCHIVE_DIR: Setting = row(
    "LOCAL_WAL_ARCHIVE_DIR",
    &[S, P],
    Kind::Path,
    F::None,
    RequiredWhen("with the `local` engine"),
    LocalStack,
    "the source cluster's WAL archive",
);
pub const LOCAL_STAGING_DIR: Setting = row(
    "LOCAL_STAGING_DIR",
    &[S, P],
    Kind::Path,
    F::None,
    RequiredWhen("with the `local` engine"),
    LocalStack,
    "restored staging clusters, one directory each",
);

// ---- the cache in drills (pitr-restore restores it, drill-validator snapshots and compares it)

pub const CACHE_ENGINE: Setting = row(
    "CACHE_ENGINE",
    &[P, D],
    Kind::Choice(&["none", "elasticache", "local"]),
    F::Text("none"),
    Optional,
    Template,
    "where drills snapshot and restore the cache: `elasticache`, `local` (redis-server on this machine), or `none` (the drill leaves the cache out and its report says so)",
);
pub const STAGING_CACHE_SECRET_ID: Setting = row(
    "STAGING_CACHE_SECRET_ID",
    &[P, D],
    Kind::SecretId,
    F::None,
    RequiredWhen("with a cache engine"),
    Template,
    "the secret that receives the staging cache's URL (`{\"url\", \"drill_id\", \"target_id\"}`); dead-letter-replay's `STAGING_REDIS_SECRET_ID` names the same secret",
);
pub const DRILL_REDIS_SECRET_ID: Setting = row(
    "DRILL_REDIS_SECRET_ID",
    &[D],
    Kind::SecretId,
    F::None,
    RequiredWhen("with the `elasticache` cache engine"),
    Template,
    "Secrets Manager secret holding the production Redis URL with its AUTH token (plain, or JSON `{\"url\": ...}`), instead of `DRILL_REDIS_URL`",
);
pub const STAGING_CACHE_SUBNET_GROUP: Setting = row(
    "STAGING_CACHE_SUBNET_GROUP",
    &[P],
    Kind::Text,
    F::None,
    RequiredWhen("with the `elasticache` cache engine"),
    Template,
    "ElastiCache subnet group of staging caches",
);
pub const STAGING_CACHE_SECURITY_GROUP_IDS: Setting = row(
    "STAGING_CACHE_SECURITY_GROUP_IDS",
    &[P],
    Kind::List { separator: "," },
    F::None,
    RequiredWhen("with the `elasticache` cache engine"),
    Template,
    "security groups of staging caches (reachable by the functions, not by production)",
);
pub const STAGING_CACHE_NODE_TYPE: Setting = row(
    "STAGING_CACHE_NODE_TYPE",
    &[P],
    Kind::Text,
    F::None,
    Optional,
    Template,
    "node type of staging caches (default: the snapshot's)",
);
pub const LOCAL_CACHE_DIR: Setting = row(
    "LOCAL_CACHE_DIR",
    &[P, D],
    Kind::Path,
    F::None,
    RequiredWhen("with the `local` cache engine"),
    LocalStack,
    "the local cache engine's snapshots (RDB files) and staging `redis-server`s, one directory each",
);
pub const LOCAL_REDIS_SERVER: Setting = row(
    "LOCAL_REDIS_SERVER",
    &[P],
    Kind::Path,
    F::Text("/usr/bin/redis-server"),
    Optional,
    LocalStack,
    "the `redis-server` the local cache engine starts staging caches with",
);

// ---- dead-letter-replay

pub const REPLAY_DATABASE_SECRET_ID: Setting = row(
    "REPLAY_DATABASE_SECRET_ID",
    &[R],
    Kind::SecretId,
    F::Variable("SOURCE_DATABASE_SECRET_ID"),
    Optional,
    Template,
    "the database replay writes to: the `catalyst_dr_replay` role's secret (`ReplayDatabaseSecretArn`, docs/database-roles.md)",
);
pub const PROBE_METHOD: Setting = row(
    "PROBE_METHOD",
    &[R],
    Kind::Choice(&["HEAD", "GET", "OPTIONS"]),
    F::Text("HEAD"),
    Optional,
    Operator,
    "HTTP method of the endpoint probe, any case",
);
pub const PROBE_PATH: Setting = row(
    "PROBE_PATH",
    &[R],
    Kind::Text,
    F::None,
    Optional,
    Operator,
    "replaces the endpoint URL's path (and query) for the probe; starts with `/`",
);
pub const PROBE_TIMEOUT_MS: Setting = row(
    "PROBE_TIMEOUT_MS",
    &[R],
    number(50, 60_000),
    F::Number(5_000),
    Optional,
    Template,
    "per probe",
);
pub const PROBE_CONCURRENCY: Setting = row(
    "PROBE_CONCURRENCY",
    &[R],
    number(1, 512),
    F::Number(32),
    Optional,
    Operator,
    "probes at once",
);
pub const PROBE_ALLOW_CIDRS: Setting = row(
    "PROBE_ALLOW_CIDRS",
    &[R],
    Kind::List { separator: "," },
    F::None,
    Optional,
    Operator,
    "comma-separated ranges probed although not public (the local stack allows loopback)",
);
pub const REPLAY_BATCH_SIZE: Setting = row(
    "REPLAY_BATCH_SIZE",
    &[R],
    number(1, 10_000),
    F::Number(5_000),
    Optional,
    Operator,
    "rows per requeue statement",
);
pub const REPLAY_MAX_DELIVERIES: Setting = row(
    "REPLAY_MAX_DELIVERIES",
    &[R],
    number(1, 10_000_000),
    F::Number(500_000),
    Optional,
    Operator,
    "default `max_deliveries`",
);
pub const AUDIT_RETENTION_DAYS: Setting = row(
    "AUDIT_RETENTION_DAYS",
    &[R],
    number(1, 36_500),
    F::Number(365),
    Optional,
    Operator,
    "COMPLIANCE retention of the audit record",
);
pub const REDRIVE_RATE_PER_SECOND: Setting = row(
    "REDRIVE_RATE_PER_SECOND",
    &[R],
    number(1, 500),
    F::Number(100),
    Optional,
    Operator,
    "native move task rate (`MaxNumberOfMessagesPerSecond`)",
);
pub const REDRIVE_VISIBILITY_TIMEOUT_SECONDS: Setting = row(
    "REDRIVE_VISIBILITY_TIMEOUT_SECONDS",
    &[R],
    number(10, 43_200),
    F::Number(300),
    Optional,
    Operator,
    "how long filtered redrive holds a received message while it decides on it",
);
pub const REDRIVE_MAX_MESSAGES: Setting = row(
    "REDRIVE_MAX_MESSAGES",
    &[R],
    number(1, 1_000_000),
    F::Number(10_000),
    Optional,
    Operator,
    "default `max_messages` per filtered run",
);
pub const REDRIVE_WAIT_SECONDS: Setting = row(
    "REDRIVE_WAIT_SECONDS",
    &[R],
    number(0, 20),
    F::Number(1),
    Optional,
    Operator,
    "long-poll wait per receive",
);
pub const STAGING_REDIS_URL: Setting = row(
    "STAGING_REDIS_URL",
    &[R],
    Kind::Url,
    F::None,
    RequiredWhen("for Redis flush, locally"),
    LocalStack,
    "the staging Redis that `flush` may empty (no password in it: the local stack's)",
);
pub const STAGING_REDIS_SECRET_ID: Setting = row(
    "STAGING_REDIS_SECRET_ID",
    &[R],
    Kind::SecretId,
    F::None,
    RequiredWhen("for Redis flush in AWS"),
    Template,
    "Secrets Manager secret holding the staging Redis URL with its AUTH token (plain, or JSON `{\"url\": ...}`), instead of `STAGING_REDIS_URL`",
);
pub const REDIS_QUEUE_PATTERNS: Setting = row(
    "REDIS_QUEUE_PATTERNS",
    &[R, D],
    Kind::List { separator: "," },
    F::None,
    Optional,
    Template,
    "comma-separated SCAN patterns of the queue keys: their lengths go into drill baselines, and dead-letter-replay's Redis flush needs them (`*` alone is refused there)",
);

// ---- drill-validator

pub const DRILL_REPORT_PREFIX: Setting = row(
    "DRILL_REPORT_PREFIX",
    &[D],
    Kind::Prefix,
    F::Text("drills/"),
    Optional,
    Operator,
    "key prefix of baselines, validations and reports",
);
pub const DRILL_REPORT_RETENTION_DAYS: Setting = row(
    "DRILL_REPORT_RETENTION_DAYS",
    &[D],
    number(1, 36_500),
    F::Number(400),
    Optional,
    Operator,
    "Object Lock retention of the drill records",
);
pub const WEBHOOK_QUEUE_URL: Setting = row(
    "WEBHOOK_QUEUE_URL",
    &[D],
    Kind::Url,
    F::None,
    Optional,
    Template,
    "the production webhook queue: its depths go into the baseline",
);
pub const WEBHOOK_DLQ_URL: Setting = row(
    "WEBHOOK_DLQ_URL",
    &[D],
    Kind::Url,
    F::None,
    Optional,
    Template,
    "the webhook queue's dead-letter queue: its depths go into the baseline",
);
pub const STAGING_QUEUE_URL: Setting = row(
    "STAGING_QUEUE_URL",
    &[D],
    Kind::Url,
    F::None,
    Optional,
    Template,
    "the staging queue whose depth is checked after the flush",
);
pub const DRILL_REDIS_URL: Setting = row(
    "DRILL_REDIS_URL",
    &[D],
    Kind::Url,
    F::None,
    Optional,
    LocalStack,
    "the production Redis (cache and queue adapter): its size and queue lengths go into the baseline",
);
pub const RPO_OBJECTIVE_SECONDS: Setting = row(
    "RPO_OBJECTIVE_SECONDS",
    &[D],
    number(0, 86_400),
    F::Number(300),
    Optional,
    Template,
    "recovery point objective the drills are judged against",
);
pub const RTO_OBJECTIVE_SECONDS: Setting = row(
    "RTO_OBJECTIVE_SECONDS",
    &[D],
    number(1, 604_800),
    F::Number(3_600),
    Optional,
    Template,
    "recovery time objective (drill start to smoke tests passed)",
);
pub const BASELINE_LOCK_TIMEOUT_MS: Setting = row(
    "BASELINE_LOCK_TIMEOUT_MS",
    &[D],
    number(100, 60_000),
    F::Number(2_000),
    Optional,
    Operator,
    "longest wait for the baseline locks",
);
pub const PARITY_PARALLELISM: Setting = row(
    "PARITY_PARALLELISM",
    &[D],
    number(1, 32),
    F::Number(4),
    Optional,
    Operator,
    "connections that fingerprint the tables at once, each a block range at a time, on the source (the baseline, in its one snapshot) and on the restored copy",
);
pub const BASELINE_FANOUT_THRESHOLD_GIB: Setting = row(
    "BASELINE_FANOUT_THRESHOLD_GIB",
    &[D],
    number(0, 1_048_576),
    F::Number(32),
    Optional,
    Operator,
    "a source database larger than this (`pg_database_size`) has its drill baseline read by a Map of `baseline-batch` invocations in a snapshot held open for them, instead of in the one invocation that takes the instant; 0 fans out always",
);
pub const BASELINE_HOLD_MINUTES: Setting = row(
    "BASELINE_HOLD_MINUTES",
    &[D],
    number(10, 1440),
    F::Number(360),
    Optional,
    Operator,
    "longest a fanned-out baseline holds its snapshot open on the source (it keeps VACUUM from the rows it sees); `baseline-close` ends it sooner",
);
pub const ALERT_TOPIC_ARN: Setting = row(
    "ALERT_TOPIC_ARN",
    &[D],
    Kind::Arn,
    F::None,
    Optional,
    Template,
    "SNS topic failed drills are announced on",
);
pub const DRILL_KIND: Setting = row(
    "DRILL_KIND",
    &[D],
    Kind::Text,
    F::Text("quarterly"),
    Optional,
    Operator,
    "names the drill kind in the metrics",
);

/// Every row, in the order the README lists them.
pub const ALL: &[&Setting] = &[
    &BACKUP_BUCKET,
    &RDS_INSTANCE_ID,
    &RDS_CLUSTER_ID,
    &ELASTICACHE_REPLICATION_GROUP_ID,
    &ELASTICACHE_CLUSTER_ID,
    &ELASTICACHE_EXPORT,
    &RETENTION_DAYS,
    &KEEP_NEWEST,
    &SCHEDULE_NAME,
    &MANIFEST_PREFIX,
    &RESTORE_ENGINE,
    &STAGING_SUBNET_GROUP,
    &STAGING_SECURITY_GROUP_IDS,
    &STAGING_PARAMETER_GROUP,
    &STAGING_INSTANCE_CLASS,
    &LOCAL_SOURCE_ID,
    &LOCAL_SOURCE_DATABASE_URL,
    &LOCAL_PG_BIN,
    &LOCAL_PG_RUN_AS,
    &LOCAL_BASE_BACKUP_DIR,
    &LOCAL_WAL_ARCHIVE_DIR,
    &LOCAL_STAGING_DIR,
    &CACHE_ENGINE,
    &STAGING_CACHE_SECRET_ID,
    &DRILL_REDIS_SECRET_ID,
    &STAGING_CACHE_SUBNET_GROUP,
    &STAGING_CACHE_SECURITY_GROUP_IDS,
    &STAGING_CACHE_NODE_TYPE,
    &LOCAL_CACHE_DIR,
    &LOCAL_REDIS_SERVER,
    &STAGING_PREFIX,
    &STAGING_SECRET_ID,
    &STAGING_SECRET_ID_LOGICAL,
    &SOURCE_DATABASE_SECRET_ID_LOGICAL,
    &SOURCE_DATABASE_SECRET_ID,
    &SOURCE_DATABASE_NAME,
    &SOURCE_DATABASE_SECRET_ID_REPLAY,
    &REPLAY_DATABASE_SECRET_ID,
    &PG_TLS,
    &PG_CA_BUNDLE,
    &PG_CONNECT_TIMEOUT_MS,
    &PG_HANDSHAKE_TIMEOUT_MS,
    &PG_STATEMENT_TIMEOUT_MS_REPLAY,
    &PG_STATEMENT_TIMEOUT_MS,
    &PG_KEEPALIVE_IDLE_SECONDS,
    &LOGICAL_BACKUP_PREFIX,
    &LOGICAL_RETENTION_DAYS,
    &LOGICAL_PARALLELISM,
    &LOGICAL_SEGMENT_MIB,
    &LOGICAL_FANOUT_THRESHOLD_GIB,
    &LOGICAL_FANOUT_BATCH_MIB,
    &LOGICAL_PART_SIZE_MIB,
    &LOGICAL_ZSTD_LEVEL,
    &LOGICAL_IGNORE_OBJECTS,
    &DR_REGION,
    &DR_BUCKET,
    &DR_KMS_KEY_ARN,
    &DR_ACCOUNT_ID,
    &SMOKE_HEALTH_CHECKS,
    &SMOKE_MIN_USERS,
    &DRILL_REPORT_PREFIX,
    &DRILL_REPORT_RETENTION_DAYS,
    &WEBHOOK_QUEUE_URL,
    &WEBHOOK_DLQ_URL,
    &STAGING_QUEUE_URL,
    &DRILL_REDIS_URL,
    &RPO_OBJECTIVE_SECONDS,
    &RTO_OBJECTIVE_SECONDS,
    &BASELINE_LOCK_TIMEOUT_MS,
    &PARITY_PARALLELISM,
    &BASELINE_FANOUT_THRESHOLD_GIB,
    &BASELINE_HOLD_MINUTES,
    &ALERT_TOPIC_ARN,
    &DRILL_KIND,
    &PROBE_METHOD,
    &PROBE_PATH,
    &PROBE_TIMEOUT_MS,
    &PROBE_CONCURRENCY,
    &PROBE_ALLOW_CIDRS,
    &REPLAY_BATCH_SIZE,
    &REPLAY_MAX_DELIVERIES,
    &AUDIT_RETENTION_DAYS,
    &REDRIVE_RATE_PER_SECOND,
    &REDRIVE_VISIBILITY_TIMEOUT_SECONDS,
    &REDRIVE_MAX_MESSAGES,
    &REDRIVE_WAIT_SECONDS,
    &STAGING_REDIS_URL,
    &STAGING_REDIS_SECRET_ID,
    &REDIS_QUEUE_PATTERNS,
    &S3_FORCE_PATH_STYLE,
    &RUST_LOG,
];

/// The rows `function` reads, in table order.
pub fn for_function(function: Function) -> impl Iterator<Item = &'static Setting> {
    ALL.iter().copied().filter(move |s| s.read_by(function))
}

fn type_text(kind: Kind) -> String {
    match kind {
        Kind::Text => "text".into(),
        Kind::Flag => "flag".into(),
        Kind::Number { min, max } => format!("number {min}..={max}"),
        Kind::Count => "number".into(),
        Kind::Choice(words) => words
            .iter()
            .map(|w| format!("`{w}`"))
            .collect::<Vec<_>>()
            .join(" / "),
        Kind::List { separator } => format!("list (`{separator}`)"),
        Kind::Identifier => "identifier".into(),
        Kind::Prefix => "key prefix".into(),
        Kind::Path => "absolute path".into(),
        Kind::SecretId => "secret id".into(),
        Kind::Url => "URL".into(),
        Kind::Arn => "ARN".into(),
        Kind::Json => "JSON".into(),
    }
}

fn requirement_text(requirement: Requirement) -> String {
    match requirement {
        Requirement::Required => "yes".into(),
        Requirement::Optional => "no".into(),
        Requirement::ExactlyOneWith(other) => format!("exactly one of this and `{other}`"),
        Requirement::AtMostOneWith(other) => format!("no; not with `{other}`"),
        Requirement::RequiredWhen(when) => when.into(),
    }
}

fn set_by_text(set_by: SetBy) -> &'static str {
    match set_by {
        SetBy::Template => "template",
        SetBy::Operator => "operator",
        SetBy::LocalStack => "local stack",
    }
}

/// `function`'s configuration as a Markdown table: the README's, between its `settings:` markers.
pub fn markdown_table(function: Function) -> String {
    let mut out = String::from(
        "| variable | type | required | default | set by | meaning |\n|---|---|---|---|---|---|\n",
    );
    for s in for_function(function) {
        let default = s.default_value().map_or(" ".into(), |d| format!(" `{d}` "));
        let _ = writeln!(
            out,
            "| `{}` | {} | {} |{}| {} | {} |",
            s.name,
            type_text(s.kind),
            requirement_text(s.requirement),
            default,
            set_by_text(s.set_by),
            s.meaning.replace('|', "\\|"),
        );
    }
    out
}

/// The README markers around `function`'s table.
pub fn markers(function: Function) -> (String, &'static str) {
    (
        format!("<!-- settings:{} -->", function.name()),
        "<!-- /settings -->",
    )
}

/// `readme` with every function's table replaced by [`markdown_table`]'s; an error names a
/// function whose markers are missing.
pub fn render_readme(readme: &str) -> Result<String, String> {
    let mut out = readme.to_owned();
    for function in Function::ALL {
        let (open, close) = markers(function);
        let start = out
            .find(&open)
            .ok_or_else(|| format!("README has no {open} marker"))?
            + open.len();
        let end = out[start..]
            .find(close)
            .ok_or_else(|| format!("README has no {close} after {open}"))?
            + start;
        out.replace_range(start..end, &format!("\n{}", markdown_table(function)));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ConfigError, Env, EnvSource};
    use std::cell::RefCell;
    use std::collections::{BTreeSet, HashMap};

    /// Answers from a map and remembers every name asked for.
    struct Recording<'a> {
        values: &'a HashMap<&'a str, String>,
        asked: RefCell<BTreeSet<String>>,
    }

    impl EnvSource for Recording<'_> {
        fn get(&self, var: &str) -> Option<String> {
            self.asked.borrow_mut().insert(var.to_owned());
            self.values.get(var).cloned()
        }
    }

    /// Files the parsing checks for: a CA bundle and a directory with `pg_ctl`.
    struct Fixture {
        dir: std::path::PathBuf,
    }

    impl Fixture {
        fn new() -> Self {
            let dir = std::env::temp_dir().join(format!(
                "catalyst-dr-settings-{}-{:?}",
                std::process::id(),
                std::thread::current().id()
            ));
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("pg_ctl"), "").unwrap();
            std::fs::write(dir.join("bundle.pem"), "").unwrap();
            Self { dir }
        }

        fn path(&self, name: &str) -> String {
            self.dir.join(name).display().to_string()
        }
    }

    impl Drop for Fixture {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    /// Everything the function reads at cold start, as its `main` does.
    fn read(function: Function, source: &dyn EnvSource) -> Result<String, ConfigError> {
        let _ = crate::telemetry::filter(&Env(source));
        Ok(match function {
            Function::SnapshotTrigger => {
                let config =
                    crate::snapshot_trigger::config::SnapshotTriggerConfig::from_env(source)?;
                let local =
                    crate::snapshot_trigger::config::SnapshotTriggerConfig::local_base_backups(
                        source,
                    )?;
                format!("{config:?} {local:?}")
            }
            Function::PitrRestore => {
                format!("{:?}", crate::pitr::config::PitrConfig::from_env(source)?)
            }
            Function::DeadLetterReplay => {
                format!(
                    "{:?}",
                    crate::replay::config::ReplayConfig::from_env(source)?
                )
            }
            Function::DrillValidator => {
                format!("{:?}", crate::drill::config::DrillConfig::from_env(source)?)
            }
        })
    }

    /// Valid environments that, together, take every branch that reads a variable.
    fn environments(function: Function, fx: &Fixture) -> Vec<HashMap<&'static str, String>> {
        let tls = [
            ("PG_TLS", "verify-full".to_owned()),
            ("PG_CA_BUNDLE", fx.path("bundle.pem")),
        ];
        let local = [
            ("LOCAL_PG_BIN", fx.dir.display().to_string()),
            ("LOCAL_BASE_BACKUP_DIR", fx.path("base")),
            ("LOCAL_WAL_ARCHIVE_DIR", fx.path("wal")),
            ("LOCAL_STAGING_DIR", fx.path("staging")),
        ];
        let cache = [("LOCAL_CACHE_DIR", fx.path("cache"))];
        let map = |pairs: &[(&'static str, &str)], extra: &[&[(&'static str, String)]]| {
            let mut env: HashMap<&'static str, String> =
                pairs.iter().map(|(k, v)| (*k, (*v).to_owned())).collect();
            for more in extra {
                env.extend(more.iter().cloned());
            }
            env
        };
        match function {
            Function::SnapshotTrigger => vec![map(
                &[
                    ("BACKUP_BUCKET", "b"),
                    ("RDS_INSTANCE_ID", "db"),
                    ("ELASTICACHE_CLUSTER_ID", "cache"),
                    ("SOURCE_DATABASE_SECRET_ID", "src"),
                    ("DR_REGION", "us-west-2"),
                    ("DR_BUCKET", "dr"),
                    (
                        "DR_KMS_KEY_ARN",
                        "arn:aws:kms:us-west-2:123456789012:key/dr",
                    ),
                    ("DR_ACCOUNT_ID", "210987654321"),
                ],
                &[&tls, &local],
            )],
            Function::PitrRestore => vec![
                map(
                    &[
                        ("RESTORE_ENGINE", "rds"),
                        ("RDS_CLUSTER_ID", "aurora"),
                        ("STAGING_SUBNET_GROUP", "subnets"),
                        ("STAGING_SECURITY_GROUP_IDS", "sg-1,sg-2"),
                        ("STAGING_INSTANCE_CLASS", "db.r6g.large"),
                        ("STAGING_SECRET_ID", "staging"),
                        ("SOURCE_DATABASE_NAME", "catalyst_auth"),
                    ],
                    &[&tls],
                ),
                map(
                    &[
                        ("RESTORE_ENGINE", "rds"),
                        ("RDS_INSTANCE_ID", "db"),
                        ("STAGING_SUBNET_GROUP", "subnets"),
                        ("STAGING_SECURITY_GROUP_IDS", "sg-1"),
                        ("STAGING_SECRET_ID", "staging"),
                        ("CACHE_ENGINE", "elasticache"),
                        ("ELASTICACHE_REPLICATION_GROUP_ID", "cache"),
                        ("STAGING_CACHE_SECRET_ID", "staging-cache"),
                        ("STAGING_CACHE_SUBNET_GROUP", "cache-subnets"),
                        ("STAGING_CACHE_SECURITY_GROUP_IDS", "sg-3"),
                        ("STAGING_CACHE_NODE_TYPE", "cache.t4g.small"),
                    ],
                    &[&tls],
                ),
                map(
                    &[
                        ("RESTORE_ENGINE", "local"),
                        ("STAGING_SECRET_ID", "staging"),
                        ("SOURCE_DATABASE_NAME", "catalyst_auth"),
                        (
                            "LOCAL_SOURCE_DATABASE_URL",
                            "postgresql://postgres:pw@127.0.0.1:5432/catalyst_auth",
                        ),
                        ("CACHE_ENGINE", "local"),
                        ("STAGING_CACHE_SECRET_ID", "staging-cache"),
                    ],
                    &[&tls, &local, &cache],
                ),
            ],
            Function::DeadLetterReplay => vec![
                map(
                    &[("BACKUP_BUCKET", "b"), ("SOURCE_DATABASE_SECRET_ID", "src")],
                    &[&tls],
                ),
                map(
                    &[
                        ("BACKUP_BUCKET", "b"),
                        ("REPLAY_DATABASE_SECRET_ID", "replay"),
                    ],
                    &[&tls],
                ),
            ],
            Function::DrillValidator => vec![
                map(
                    &[
                        ("BACKUP_BUCKET", "b"),
                        ("SOURCE_DATABASE_SECRET_ID", "src"),
                        ("STAGING_SECRET_ID", "staging"),
                    ],
                    &[&tls],
                ),
                map(
                    &[
                        ("BACKUP_BUCKET", "b"),
                        ("SOURCE_DATABASE_SECRET_ID", "src"),
                        ("STAGING_SECRET_ID", "staging"),
                        ("CACHE_ENGINE", "elasticache"),
                        ("ELASTICACHE_CLUSTER_ID", "cache"),
                        ("STAGING_CACHE_SECRET_ID", "staging-cache"),
                        ("DRILL_REDIS_SECRET_ID", "prod-cache"),
                    ],
                    &[&tls],
                ),
                map(
                    &[
                        ("BACKUP_BUCKET", "b"),
                        ("SOURCE_DATABASE_SECRET_ID", "src"),
                        ("STAGING_SECRET_ID", "staging"),
                        ("CACHE_ENGINE", "local"),
                        ("STAGING_CACHE_SECRET_ID", "staging-cache"),
                        ("DRILL_REDIS_URL", "redis://127.0.0.1:6379"),
                    ],
                    &[&tls, &cache],
                ),
            ],
        }
    }

    fn asked(function: Function, env: &HashMap<&str, String>) -> BTreeSet<String> {
        let recording = Recording {
            values: env,
            asked: RefCell::default(),
        };
        let outcome = read(function, &recording);
        assert!(outcome.is_ok(), "{}: {outcome:?}", function.name());
        recording.asked.into_inner()
    }

    fn with(
        env: &HashMap<&'static str, String>,
        var: &'static str,
        value: &str,
    ) -> HashMap<&'static str, String> {
        let mut env = env.clone();
        env.insert(var, value.to_owned());
        env
    }

    fn without(env: &HashMap<&'static str, String>, var: &str) -> HashMap<&'static str, String> {
        let mut env = env.clone();
        env.remove(var);
        env
    }

    fn named(err: ConfigError) -> &'static str {
        match err {
            ConfigError::Missing { var } | ConfigError::Invalid { var, .. } => var,
        }
    }

    #[test]
    fn each_function_reads_exactly_its_rows() {
        let fx = Fixture::new();
        for function in Function::ALL {
            let read: BTreeSet<String> = environments(function, &fx)
                .iter()
                .flat_map(|env| asked(function, env))
                .collect();
            let table: BTreeSet<String> =
                for_function(function).map(|s| s.name.to_owned()).collect();
            let unlisted: Vec<_> = read.difference(&table).collect();
            let unread: Vec<_> = table.difference(&read).collect();
            assert!(
                unlisted.is_empty() && unread.is_empty(),
                "{}: read but not in settings.rs for it: {unlisted:?}; in settings.rs for it but never read: {unread:?}",
                function.name()
            );
        }
    }

    #[test]
    fn requirements_defaults_and_ranges_are_what_the_parsing_does() {
        let fx = Fixture::new();
        for function in Function::ALL {
            let envs = environments(function, &fx);
            for setting in for_function(function) {
                // The first environment in which the function reads this row.
                let env = envs
                    .iter()
                    .find(|env| asked(function, env).contains(setting.name))
                    .unwrap_or_else(|| panic!("{} never read", setting.name));
                let at = format!("{} {}", function.name(), setting.name);
                let outcome = |env: &HashMap<&'static str, String>| {
                    read(
                        function,
                        &Recording {
                            values: env,
                            asked: RefCell::default(),
                        },
                    )
                };
                match setting.requirement {
                    Requirement::Required => assert_eq!(
                        outcome(&without(env, setting.name)).map_err(named),
                        Err(setting.name),
                        "{at}: required, yet the function starts without it"
                    ),
                    Requirement::ExactlyOneWith(other) => {
                        let neither = without(&without(env, setting.name), other);
                        let both = with(&with(env, setting.name, "a"), other, "b");
                        assert!(outcome(&neither).is_err(), "{at}: starts with neither");
                        assert!(outcome(&both).is_err(), "{at}: starts with both");
                    }
                    Requirement::AtMostOneWith(other) => {
                        let both = with(&with(env, setting.name, "a"), other, "b");
                        assert!(outcome(&both).is_err(), "{at}: starts with both");
                    }
                    // With a default, unset must equal the default (checked below).
                    Requirement::Optional if setting.default == Fallback::None => assert!(
                        outcome(&without(env, setting.name)).is_ok(),
                        "{at}: optional, yet the function does not start without it"
                    ),
                    Requirement::Optional => {}
                    Requirement::RequiredWhen(_) => {}
                }
                if let (Requirement::Optional, Some(default)) =
                    (setting.requirement, setting.default_value())
                    && !matches!(setting.default, Fallback::Variable(_))
                {
                    assert_eq!(
                        outcome(&with(env, setting.name, &default)),
                        outcome(&without(env, setting.name)),
                        "{at}: setting the default is not the same as leaving it unset"
                    );
                }
                let invalid = |value: &str| {
                    assert_eq!(
                        outcome(&with(env, setting.name, value)).map_err(named),
                        Err(setting.name),
                        "{at}={value} is accepted"
                    )
                };
                match setting.kind {
                    Kind::Number { min, max } => {
                        for value in [min, max] {
                            assert!(
                                outcome(&with(env, setting.name, &value.to_string())).is_ok(),
                                "{at}={value} refused"
                            );
                        }
                        if min > 0 {
                            invalid(&(min - 1).to_string());
                        }
                        invalid(&(u64::from(max) + 1).to_string());
                    }
                    Kind::Count | Kind::Flag | Kind::Choice(_) => invalid("not-a-value"),
                    _ => {}
                }
            }
        }
    }

    #[test]
    fn the_table_is_consistent() {
        for function in Function::ALL {
            let mut names = BTreeSet::new();
            for setting in for_function(function) {
                let at = format!("{} {}", function.name(), setting.name);
                assert!(names.insert(setting.name), "{at}: two rows");
                let row = |name: &str| {
                    for_function(function)
                        .find(|s| s.name == name)
                        .unwrap_or_else(|| panic!("{at} names {name}, not read by the function"))
                };
                match setting.requirement {
                    Requirement::ExactlyOneWith(other) => assert_eq!(
                        row(other).requirement,
                        Requirement::ExactlyOneWith(setting.name),
                        "{at}"
                    ),
                    Requirement::AtMostOneWith(other) => assert_eq!(
                        row(other).requirement,
                        Requirement::AtMostOneWith(setting.name),
                        "{at}"
                    ),
                    _ => {}
                }
                match (setting.kind, setting.default) {
                    (_, Fallback::Variable(other)) => {
                        row(other);
                    }
                    (Kind::Number { min, max }, Fallback::Number(n)) => {
                        assert!((min..=max).contains(&n), "{at}: default outside its range")
                    }
                    (Kind::Choice(words), Fallback::Text(text)) => {
                        assert!(words.contains(&text), "{at}: default is not a choice")
                    }
                    (Kind::Number { .. } | Kind::Count, default) => assert!(
                        matches!(default, Fallback::Number(_)),
                        "{at}: a number's default must be a number"
                    ),
                    (Kind::Flag, default) => assert!(
                        matches!(default, Fallback::Flag(_)),
                        "{at}: a flag's default must be a flag"
                    ),
                    (_, default) => assert!(
                        matches!(default, Fallback::None | Fallback::Text(_)),
                        "{at}: a text default must be text"
                    ),
                }
                assert!(!setting.meaning.is_empty(), "{at}: no meaning");
            }
        }
        for setting in ALL {
            assert!(
                !setting.functions.is_empty(),
                "{}: read by nobody",
                setting.name
            );
        }
    }

    #[test]
    fn the_readme_tables_are_generated_from_the_table() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md");
        let readme = std::fs::read_to_string(&path).expect("read README.md");
        let rendered = render_readme(&readme).unwrap_or_else(|e| panic!("{e}"));
        if rendered == readme {
            return;
        }
        if std::env::var_os("CATALYST_DR_BLESS").is_some() {
            std::fs::write(&path, rendered).expect("write README.md");
            return;
        }
        let (line, (have, want)) = readme
            .lines()
            .zip(rendered.lines())
            .enumerate()
            .find(|(_, (a, b))| a != b)
            .map(|(i, pair)| (i + 1, pair))
            .unwrap_or((0, ("(end of file)", "(more lines)")));
        panic!(
            "README.md's configuration tables differ from shared/src/settings.rs (line {line}):\n  README:    {have}\n  generated: {want}\nRegenerate them with `CATALYST_DR_BLESS=1 cargo test -p catalyst-dr --lib settings`."
        );
    }
}
