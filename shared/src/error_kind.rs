//! Every `errorType` a function can answer with. The names are a public contract: the state
//! machines' `Retry`/`Catch` match on them and README.md documents them, so a variant is never
//! renamed, only added.

// One list gives the enum, `ALL` and the names, so they cannot drift apart; each name is its
// variant's identifier.
macro_rules! error_kinds {
    ($($(#[doc = $doc:literal])* $kind:ident,)*) => {
        /// What kind of failure an invocation ended with; its [`ErrorKind::as_str`] is the
        /// `errorType`.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ErrorKind {
            $($(#[doc = $doc])* $kind,)*
        }

        impl ErrorKind {
            pub const ALL: &[ErrorKind] = &[$(Self::$kind,)*];

            /// The `errorType` the Lambda runtime reports.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Self::$kind => stringify!($kind),)*
                }
            }
        }
    };
}

error_kinds! {
    /// The event, or a spec in it, cannot be honoured; nothing was done.
    InvalidInput,
    /// The handler panicked.
    Panic,
    /// A configuration or secret the function needs is unusable.
    Misconfigured,
    /// A setting the action needs is absent (the message names the variable).
    NotConfigured,
    /// An AWS service asked us to slow down.
    Throttled,
    /// An AWS call failed on the network, timed out or met a 5xx answer.
    AwsTransient,
    /// An AWS service rejected the call.
    AwsRejected,
    /// PostgreSQL answered a statement with an error.
    Postgres,
    /// PostgreSQL could not be reached, or did not answer within its bound.
    DatabaseUnavailable,
    /// PostgreSQL refused the credentials.
    DatabaseAuthFailed,
    /// A destructive action aimed at a database or queue not marked as staging.
    NotStaging,
    /// A snapshot id is taken by a snapshot that is not a catalyst-dr backup of the source.
    SnapshotNotOwned,
    /// The run's snapshot was never started.
    SnapshotNotStarted,
    /// A backup manifest in the bucket cannot be read.
    CorruptManifest,
    /// A logical backup object does not decompress.
    CorruptBackup,
    /// A logical backup manifest of a format this version does not read.
    UnsupportedManifestFormat,
    /// A logical backup without a manifest: it never completed.
    BackupIncomplete,
    /// The restore target holds objects already.
    TargetNotEmpty,
    /// A logical backup left out schema objects it cannot capture.
    SchemaNotCaptured,
    /// The restore source does not exist.
    SourceNotFound,
    /// The local restore engine (PostgreSQL tools on this machine) failed.
    LocalEngineFailed,
    /// A staging restore was refused by a guard.
    RestoreRefused,
    /// No catalyst-dr backup snapshot of the source to restore (or the named one is missing or
    /// not available).
    NoBackupSnapshot,
    /// The drill's staging instance does not exist.
    StagingNotFound,
    /// The drill's staging instance is not available yet.
    StagingNotReady,
    /// The staging instance does not accept the new credentials yet.
    CredentialsNotYetApplied,
    /// At least one smoke test failed on the restored database.
    SmokeFailed,
    /// The baseline's table locks were not granted within their bound.
    BaselineLockTimeout,
    /// The drill's baseline was never taken.
    NoBaseline,
    /// The snapshot a fanned-out baseline held for its batches ended before a batch read it.
    BaselineSnapshotGone,
    /// The staging secret holds no credentials for the drill.
    NoStagingCredentials,
    /// The production Redis could not be read.
    RedisUnavailable,
    /// A drill record in the bucket cannot be read.
    CorruptRecord,
    /// No drill of the kind has passed within the allowed age.
    DrillOverdue,
    /// More dead-lettered deliveries match than the replay may change.
    TooManyDeliveries,
    /// The replay's audit record does not exist.
    AuditNotFound,
    /// The replay's audit record cannot be read.
    CorruptAudit,
    /// A redrive target whose redrive policy does not name the dead-letter queue.
    NotTheSourceQueue,
    /// A staging Redis command failed.
    RedisError,
    /// The run has no manifest (or its logical backup none) to copy from.
    ManifestNotFound,
    /// The run's snapshot is not available yet, so it cannot be copied.
    SnapshotNotAvailable,
    /// The DR bucket holds a different object under a key of the run: never overwritten.
    DrCopyConflict,
    /// A DR copy is missing, differs from its source, is not locked as it should be, or a
    /// snapshot copy failed in the DR region.
    DrCopyNotVerified,
    /// The source cache was saving already, or another save replaced the drill's: try again.
    CacheSnapshotBusy,
    /// The drill's staging cache or cache snapshot is still being created and cannot be deleted
    /// yet: the teardown tries again.
    StagingCacheBusy,
    /// The quiescent copy a fanned-out logical backup read was written to meanwhile.
    ReadSourceChanged,
    /// A logical restore step was given a restore id its staging database is not being
    /// restored with.
    RestoreNotPrepared,
    /// A logical restore was asked to finish with segments not loaded yet.
    RestoreIncomplete,
    /// A logical restore's finish ran out of time while index builds or foreign key validations
    /// it sent were still running in the staging database: finish again to wait for them.
    RestoreStillBuilding,
    /// A drill's validation found batches of its parity plan with no stored result.
    ParityIncomplete,
    /// The staging secret holds another run's credentials and that run's staging copy still
    /// exists: the step waits until it is torn down.
    StagingBusy,
}

impl ErrorKind {
    /// The kind whose `errorType` is `name`.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|kind| kind.as_str() == name)
    }

    /// Whether a caller should retry the same call after a pause: a dependency that failed for
    /// the moment, or a state the step waits for (every action is idempotent, so a retry is safe).
    pub const fn is_retryable(self) -> bool {
        matches!(
            self,
            Self::Throttled
                | Self::AwsTransient
                | Self::Postgres
                | Self::DatabaseUnavailable
                | Self::StagingNotReady
                | Self::CredentialsNotYetApplied
                | Self::BaselineLockTimeout
                | Self::CacheSnapshotBusy
                | Self::StagingCacheBusy
                | Self::StagingBusy
                | Self::RestoreStillBuilding
        )
    }
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod contract;

#[cfg(test)]
mod tests {
    use super::ErrorKind;
    use std::collections::HashSet;

    #[test]
    fn names_are_distinct_and_round_trip() {
        let names: HashSet<&str> = ErrorKind::ALL.iter().map(|k| k.as_str()).collect();
        assert_eq!(names.len(), ErrorKind::ALL.len());
        for kind in ErrorKind::ALL {
            assert_eq!(ErrorKind::from_name(kind.as_str()), Some(*kind));
        }
        assert_eq!(ErrorKind::AwsTransient.as_str(), "AwsTransient");
        assert_eq!(ErrorKind::from_name("States.ALL"), None);
    }
}
