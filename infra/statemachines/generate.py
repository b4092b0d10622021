"""Every catalyst-dr state machine, written once.

    python3 infra/statemachines/generate.py           rewrite the five *.asl.json files
    python3 infra/statemachines/generate.py --check   fail if any file differs from what this writes

The nightly backup, the webhook replay, the two restore drills and the weekly restore test are built from the same retriers,
Lambda task and alert (infra/statemachines/asl.py), so a fix to a retry or a catch lands in all of
them. The monthly PITR drill and the quarterly drill also share the restore, credential rotation,
smoke test, teardown and report steps; the quarterly drill adds the baseline, the restorable-window
wait, the staging queue flush, the replay plan and the parity check around them; the restore test
starts from a backup snapshot instead and adds the logical backup's restore into a staging database. The JSON files
stay committed: SAM deploys them and the local interpreter runs them.
"""

import sys

from asl import PITR, REPLAY, SNAPSHOT, VALIDATOR, catch, notify_failure, ordered, task, write_or_check


# ElastiCache refuses to delete a staging cache or a drill's cache snapshot until it has settled:
# the teardown waits for it rather than leave it behind.
TEARDOWN_WAITS = {"ErrorEquals": ["StagingCacheBusy"], "IntervalSeconds": 60, "BackoffRate": 1, "MaxAttempts": 30}


# The new password and the instance take a while to be usable.
CREDENTIAL_WAITS = {
    "ErrorEquals": ["CredentialsNotYetApplied", "StagingNotReady"],
    "IntervalSeconds": 15,
    "BackoffRate": 1.5,
    "MaxAttempts": 12,
    "MaxDelaySeconds": 120,
    "JitterStrategy": "FULL",
}

# The staging secret serves one run at a time: a run whose copy is ready while another run (a
# drill, the restore test, the nightly fan-out's read source) still holds the secret waits for
# that run's teardown, up to 3 hours, before it fails.
STAGING_BUSY_WAITS = {"ErrorEquals": ["StagingBusy"], "IntervalSeconds": 300, "BackoffRate": 1, "MaxAttempts": 36}

# A restore's finish waits for the index builds and foreign key validations it sent until a
# minute before its invocation's deadline, then answers RestoreStillBuilding while the database
# goes on with them; each retry waits again, so 96 of them give the builds about a day.
RESTORE_STILL_BUILDING_WAITS = {"ErrorEquals": ["RestoreStillBuilding"], "IntervalSeconds": 60, "BackoffRate": 1, "MaxAttempts": 96}


def restore_polling(names, check, status, what, ready, on_error):
    """The wait for a staging instance pitr-restore is restoring: `check(next)` (its status task,
    writing `status`, then `next`) every 30 s until the instance is available (then `ready`), failed, or still
    not ready after 240 polls (2 hours); a failure or a timeout goes to `on_error` with $.error
    set. `names`: the states' names (start, wait, check, choice, failed, timed out); `what`: the
    instance, as the timeout's cause names it."""
    start, wait, check_name, choice, failed, timed_out = names
    return {
        start: {"Type": "Pass", "Result": {"poll": 0}, "ResultPath": status, "Next": wait},
        wait: {"Type": "Wait", "Seconds": 30, "Next": check_name},
        check_name: check(choice),
        choice: {
            "Type": "Choice",
            "Choices": [
                {"Variable": f"{status}.state", "StringEquals": "available", "Next": ready},
                {"Variable": f"{status}.state", "StringEquals": "failed", "Next": failed},
                {"Variable": f"{status}.poll", "NumericGreaterThanEquals": 240, "Next": timed_out},
            ],
            "Default": wait,
        },
        failed: {
            "Type": "Pass",
            "Parameters": {"Error": "RestoreFailed", "Cause.$": f"{status}.instance.reason"},
            "ResultPath": "$.error",
            "Next": on_error,
        },
        timed_out: {
            "Type": "Pass",
            "Parameters": {
                "Error": "RestoreTimedOut",
                "Cause.$": f"States.Format('{what} still {{}} after {{}} polls', {status}.instance.status, {status}.poll)",
            },
            "ResultPath": "$.error",
            "Next": on_error,
        },
    }


def shared_states(kind):
    """The states both drills have. `kind` holds what differs: the defaults, where the restore
    starts from and hands over to, the report's kind and the failure texts."""
    report_parameters = {"action": "report", "drill_id.$": "$.drill_id", **kind["report_kind"], "state.$": "$"}
    return {
        "ApplyDefaults": {
            "Type": "Pass",
            "Parameters": {"defaults": {"drill_id.$": "$$.Execution.Name", **kind["defaults"]}, "input.$": "$"},
            "Next": "MergeInput",
        },
        "MergeInput": {
            "Type": "Pass",
            "Parameters": {"merged.$": "States.JsonMerge($.defaults, $.input, false)"},
            "OutputPath": "$.merged",
            "Next": "RecordStart",
        },
        "RecordStart": {
            "Type": "Pass",
            "Parameters": {"at.$": "$$.Execution.StartTime"},
            "ResultPath": "$.started",
            "Next": kind["after_start"],
        },
        "StartRestore": task(
            PITR,
            {"action": "start", "drill_id.$": "$.drill_id", "target_time.$": kind["target_time"]},
            "$.start",
            "StartPolling",
            "TeardownAfterFailure",
        ),
        **restore_polling(
            ("StartPolling", "WaitForRestore", "CheckRestore", "RestoreReady?", "RestoreFailed", "RestoreTimedOut"),
            lambda choice: task(PITR, {"action": "status", "drill_id.$": "$.drill_id", "poll.$": "$.status.poll"}, "$.status", choice, "TeardownAfterFailure"),
            "$.status",
            "staging instance",
            "RotateCredentials",
            "TeardownAfterFailure",
        ),
        "RotateCredentials": task(
            PITR,
            {"action": "rotate-credentials", "drill_id.$": "$.drill_id"},
            "$.credentials",
            kind["after_rotate"],
            "TeardownAfterFailure",
            waits=[CREDENTIAL_WAITS, STAGING_BUSY_WAITS],
        ),
        "SmokeTests": task(
            PITR,
            {"action": "smoke", "drill_id.$": "$.drill_id"},
            "$.smoke",
            kind["after_smoke"],
            "TeardownAfterFailure",
        ),
        "Teardown": task(
            PITR,
            {"action": "teardown", "drill_id.$": "$.drill_id"},
            "$.teardown",
            kind["after_teardown"],
            kind["teardown_failed"],
            waits=[TEARDOWN_WAITS],
        ),
        "Report": task(VALIDATOR, report_parameters, "$.report", "DrillPassed?", "NotifyFailure", error_path="$.report_error"),
        "DrillPassed?": {
            "Type": "Choice",
            "Choices": [{"Variable": "$.report.passed", "BooleanEquals": True, "Next": "DrillSucceeded"}],
            "Default": "DrillFailed",
        },
        "DrillSucceeded": {"Type": "Succeed"},
        # Every failure path tears down; a failing teardown still reports.
        "TeardownAfterFailure": task(
            PITR,
            {"action": "teardown", "drill_id.$": "$.drill_id"},
            "$.teardown",
            "ReportFailure",
            "ReportFailure",
            waits=[TEARDOWN_WAITS],
            error_path="$.teardown_error",
        ),
        "ReportFailure": task(VALIDATOR, report_parameters, "$.report", "DrillFailed", "NotifyFailure", error_path="$.report_error"),
        # Only when no report could be written: the alert must still go out.
        "NotifyFailure": notify_failure(kind["notify_subject"], "DrillFailed"),
        "DrillFailed": {"Type": "Fail", "Error": "DrillFailed", "Cause": kind["failed_cause"]},
    }


def pitr_drill():
    states = shared_states(
        {
            "defaults": {"target_time": None},
            "after_start": "StartRestore",
            "target_time": "$.target_time",
            "after_rotate": "SmokeTests",
            "after_smoke": "Teardown",
            "after_teardown": "DrillResult",
            "teardown_failed": "NotifyFailure",
            "report_kind": {"kind": "monthly"},
            "notify_subject": "catalyst-dr PITR drill failed without a report",
            "failed_cause": "The PITR drill failed; the staging instance was torn down and the SNS notification carries the failing step's error.",
        }
    )
    states["DrillResult"] = {
        "Type": "Pass",
        "Parameters": {
            "drill_id.$": "$.drill_id",
            "source_id.$": "$.start.source_id",
            "target_id.$": "$.start.target_id",
            "requested.$": "$.start.requested",
            "restore_point.$": "$.start.restore_time",
            "timings": {
                "started_at.$": "$.start.started_at",
                "available_at.$": "$.status.checked_at",
                "credentials_verified_at.$": "$.credentials.verified_at",
                "smoke_passed_at.$": "$.smoke.completed_at",
                "torn_down_at.$": "$.teardown.completed_at",
            },
            "smoke.$": "$.smoke.checks",
        },
        "ResultPath": "$.result",
        "Next": "Report",
    }
    return {
        "Comment": "catalyst-dr monthly PITR drill: restore the source to a point in time into a new staging instance, wait until it is available, rotate its credentials and publish the staging DATABASE_URL, run the runbook's smoke tests, tear the staging instance down (on every failure path too) record the restore point and timings, and write the drill report (the report alerts when the drill failed). Input: {\"drill_id\": \"...\" (default: the execution name), \"target_time\": RFC 3339 or null for the latest restorable time}. Every action is idempotent, so a function timeout (Sandbox.Timedout, States.Timeout) or crash (Lambda.Unknown) is retried.",
        "StartAt": "ApplyDefaults",
        "States": ordered(
            states,
            ["ApplyDefaults", "MergeInput", "RecordStart", "StartRestore", "StartPolling", "WaitForRestore",
             "CheckRestore", "RestoreReady?", "RestoreFailed", "RestoreTimedOut", "RotateCredentials", "SmokeTests",
             "Teardown", "DrillResult", "Report", "DrillPassed?", "DrillSucceeded", "TeardownAfterFailure",
             "ReportFailure", "NotifyFailure", "DrillFailed"],
        ),
    }


def quarterly_drill():
    states = shared_states(
        {
            "defaults": {"preserve_queue": False, "parity_concurrency": 8, "baseline_path": None, "baseline_concurrency": 2},
            "after_start": "Baseline",
            "target_time": "$.baseline.instant",
            "after_rotate": "CacheInDrill?",
            "after_smoke": "ReplayPlan",
            "after_teardown": "Report",
            "teardown_failed": "ReportFailure",
            "report_kind": {},
            "notify_subject": "catalyst-dr quarterly drill failed without a report",
            "failed_cause": "The quarterly drill failed; its report (and the alert) say which step and why.",
        }
    )
    states.update(
        {
            # Nothing is restored yet: a failure here needs the report, and the end of the
            # snapshot a fanned-out baseline holds on the source.
            "Baseline": task(
                VALIDATOR,
                {"action": "baseline", "drill_id.$": "$.drill_id", "path.$": "$.baseline_path"},
                "$.baseline",
                "BaselineFannedOut?",
                "ReleaseBaseline",
                waits=[{"ErrorEquals": ["BaselineLockTimeout", "CacheSnapshotBusy"], "IntervalSeconds": 5, "BackoffRate": 2, "MaxAttempts": 5, "JitterStrategy": "FULL"}],
            ),
            "BaselineFannedOut?": {
                "Type": "Choice",
                "Comment": "A source above BASELINE_FANOUT_THRESHOLD_GIB (or input baseline_path: fan-out): the baseline opened with its snapshot held, and its batches are read by a Map.",
                "Choices": [{"Variable": "$.baseline.batches", "IsPresent": True, "Next": "BaselineBatches"}],
                "Default": "StartWindowPolling",
            },
            "BaselineBatches": batch_map(
                "One invocation per batch of the source's block ranges, at most baseline_concurrency (default 2: they read the production database) at once, each on PARITY_PARALLELISM connections in the held snapshot.",
                "$.baseline.batches",
                {"drill_id": "$.drill_id"},
                ("BaselineBatch", {"action": "baseline-batch"}),
                "Reads one batch of the source's block ranges in the baseline's held snapshot and stores their partial fingerprints; a retry answers the stored batch.",
                "a batch of the drill's baseline failed after its retries",
                "CloseBaseline",
                "ReleaseBaseline",
                resource=VALIDATOR,
                concurrency="$.baseline_concurrency",
            ),
            "CloseBaseline": task(
                VALIDATOR,
                {"action": "baseline-close", "drill_id.$": "$.drill_id"},
                "$.baseline",
                "StartWindowPolling",
                "ReleaseBaseline",
            ),
            "ReleaseBaseline": task(
                VALIDATOR,
                {"action": "baseline-release", "drill_id.$": "$.drill_id"},
                "$.baseline_release",
                "ReportFailure",
                "ReportFailure",
                error_path="$.baseline_release_error",
            ),
            "StartWindowPolling": {"Type": "Pass", "Result": {"poll": 0}, "ResultPath": "$.window", "Next": "CheckWindow"},
            "CheckWindow": task(
                PITR,
                {"action": "window", "instant.$": "$.baseline.instant", "poll.$": "$.window.poll"},
                "$.window",
                "BaselineRestorable?",
                "ReportFailure",
            ),
            "BaselineRestorable?": {
                "Type": "Choice",
                "Choices": [
                    {"Variable": "$.window.covers", "BooleanEquals": True, "Next": "StartRestore"},
                    {"Variable": "$.window.poll", "NumericGreaterThanEquals": 30, "Next": "WindowTimedOut"},
                ],
                "Default": "WaitForRestorableTime",
            },
            "WaitForRestorableTime": {"Type": "Wait", "Seconds": 60, "Next": "CheckWindow"},
            "WindowTimedOut": {
                "Type": "Pass",
                "Parameters": {
                    "Error": "BaselineNotRestorable",
                    "Cause.$": "States.Format('the latest restorable time had not reached the baseline instant {} after {} checks', $.baseline.instant, $.window.poll)",
                },
                "ResultPath": "$.error",
                "Next": "ReportFailure",
            },
            # The cache: restored from the baseline's cache snapshot into a staging cache, its
            # queue state compared with the snapshot's before the runbook's flush empties it.
            "CacheInDrill?": {
                "Type": "Choice",
                "Choices": [{"Variable": "$.baseline.cache", "IsNull": True, "Next": "CacheLeftOut"}],
                "Default": "StartCachePolling",
            },
            "CacheLeftOut": {
                "Type": "Pass",
                "Comment": "CACHE_ENGINE is none: nothing to flush, and the report says the cache was left out.",
                "Parameters": {"target": "none", "status": "skipped", "detail": "the drill leaves the cache out (CACHE_ENGINE is none)"},
                "ResultPath": "$.cache_flush",
                "Next": "StagingQueueConfigured",
            },
            "StartCachePolling": {"Type": "Pass", "Result": {"poll": 0}, "ResultPath": "$.cache", "Next": "RestoreCache"},
            "RestoreCache": task(
                PITR,
                {"action": "cache-restore", "drill_id.$": "$.drill_id", "snapshot_id.$": "$.baseline.cache.snapshot_id", "poll.$": "$.cache.poll"},
                "$.cache",
                "CacheReady?",
                "TeardownAfterFailure",
            ),
            "CacheReady?": {
                "Type": "Choice",
                "Choices": [
                    {"Variable": "$.cache.state", "StringEquals": "available", "Next": "CacheParity"},
                    {"Variable": "$.cache.state", "StringEquals": "failed", "Next": "CacheRestoreFailed"},
                    {"Variable": "$.cache.poll", "NumericGreaterThanEquals": 120, "Next": "CacheRestoreTimedOut"},
                ],
                "Default": "WaitForCache",
            },
            "WaitForCache": {"Type": "Wait", "Seconds": 30, "Next": "RestoreCache"},
            "CacheRestoreFailed": {
                "Type": "Pass",
                "Parameters": {"Error": "CacheRestoreFailed", "Cause.$": "$.cache.detail"},
                "ResultPath": "$.error",
                "Next": "TeardownAfterFailure",
            },
            "CacheRestoreTimedOut": {
                "Type": "Pass",
                "Parameters": {
                    "Error": "CacheRestoreTimedOut",
                    "Cause.$": "States.Format('staging cache still {} after {} polls', $.cache.detail, $.cache.poll)",
                },
                "ResultPath": "$.error",
                "Next": "TeardownAfterFailure",
            },
            "CacheParity": task(
                VALIDATOR,
                {"action": "cache-parity", "drill_id.$": "$.drill_id"},
                "$.cache_parity",
                "FlushStagingCache",
                "TeardownAfterFailure",
            ),
            "FlushStagingCache": task(
                REPLAY,
                {"action": "flush", "redis": True, "preserve.$": "$.preserve_queue"},
                "$.cache_flush",
                "StagingQueueConfigured",
                "TeardownAfterFailure",
            ),
            "StagingQueueConfigured": {
                "Type": "Pass",
                "Comment": "StagingQueueUrl is empty when staging has no queue: nothing to flush, and the flush step is skipped (reported as skipped).",
                "Parameters": {"url": "${StagingQueueUrl}"},
                "ResultPath": "$.staging_queue",
                "Next": "StagingQueue?",
            },
            "StagingQueue?": {
                "Type": "Choice",
                "Choices": [{"Variable": "$.staging_queue.url", "StringEquals": "", "Next": "FlushSkipped"}],
                "Default": "FlushStagingQueue",
            },
            "FlushSkipped": {
                "Type": "Pass",
                "Parameters": {"target": "none", "status": "skipped", "detail": "no staging queue configured (StagingQueueUrl is empty)"},
                "ResultPath": "$.flush",
                "Next": "SmokeTests",
            },
            "FlushStagingQueue": task(
                REPLAY,
                {"action": "flush", "queue_url": "${StagingQueueUrl}", "preserve.$": "$.preserve_queue"},
                "$.flush",
                "SmokeTests",
                "TeardownAfterFailure",
            ),
            "ReplayPlan": task(
                REPLAY,
                {"action": "plan", "database_secret_id": "${StagingSecretId}"},
                "$.plan",
                "PlanParity",
                "TeardownAfterFailure",
            ),
            "PlanParity": task(
                VALIDATOR,
                {"action": "parity-plan", "drill_id.$": "$.drill_id"},
                "$.parity_plan",
                "ParityBatches",
                "TeardownAfterFailure",
                comment="The restored copy's tables in block ranges, planned once and stored, and their batches.",
                result_selector={"batches.$": "$.batches"},
            ),
            "ParityBatches": batch_map(
                "One invocation per batch of block ranges, at most parity_concurrency (default 8) at once, each on PARITY_PARALLELISM connections to the restored copy.",
                "$.parity_plan.batches",
                {"drill_id": "$.drill_id"},
                ("ParityBatch", {"action": "parity-batch"}),
                "Reads one batch of the restored copy's block ranges and stores their partial fingerprints; a retry answers the stored batch.",
                "a batch of the drill's parity check failed after its retries",
                "ValidateParity",
                "TeardownAfterFailure",
                resource=VALIDATOR,
                concurrency="$.parity_concurrency",
            ),
            "ValidateParity": task(
                VALIDATOR,
                {
                    "action": "validate",
                    "drill_id.$": "$.drill_id",
                    "restore_point.$": "$.start.restore_time",
                    "drill_started_at.$": "$.started.at",
                    "smoke_passed_at.$": "$.smoke.completed_at",
                    "restorable_lag_seconds.$": "$.window.lag_seconds",
                    "flush_status.$": "$.flush.status",
                    "cache_flush_status.$": "$.cache_flush.status",
                },
                "$.validation",
                "Teardown",
                "TeardownAfterFailure",
            ),
        }
    )
    return {
        "Comment": "catalyst-dr quarterly restore drill: baseline of the source at one exact instant (with the drill's cache snapshot and its queue state; a source above BASELINE_FANOUT_THRESHOLD_GIB, or input baseline_path: fan-out, is read by a Distributed Map of baseline-batch in a snapshot held open for it, closed by baseline-close, released by baseline-release on failure), restore to that instant in staging, rotate credentials, restore the cache snapshot into a staging cache and compare its queue state with the baseline's, flush the staging cache's queues and the staging queue (unless preserve_queue), smoke tests, webhook replay plan (dry run) on staging, baseline parity (the restored copy read in batches by a Distributed Map, the sums added up by validate), teardown (on every failure path too), and the drill report. Input: {\"drill_id\" (default: the execution name), \"preserve_queue\": false, \"parity_concurrency\": 8, \"baseline_path\": null (by size), \"single\" or \"fan-out\", \"baseline_concurrency\": 2}. Every action is idempotent, so a function timeout (Sandbox.Timedout, States.Timeout) or crash (Lambda.Unknown) is retried.",
        "StartAt": "ApplyDefaults",
        "States": ordered(
            states,
            ["ApplyDefaults", "MergeInput", "RecordStart", "Baseline", "BaselineFannedOut?", "BaselineBatches",
             "CloseBaseline", "ReleaseBaseline", "StartWindowPolling", "CheckWindow",
             "BaselineRestorable?", "WaitForRestorableTime", "WindowTimedOut", "StartRestore", "StartPolling",
             "WaitForRestore", "CheckRestore", "RestoreReady?", "RestoreFailed", "RestoreTimedOut",
             "RotateCredentials", "CacheInDrill?", "CacheLeftOut", "StartCachePolling", "RestoreCache", "CacheReady?",
             "WaitForCache", "CacheRestoreFailed", "CacheRestoreTimedOut", "CacheParity", "FlushStagingCache",
             "StagingQueueConfigured", "StagingQueue?", "FlushSkipped", "FlushStagingQueue",
             "SmokeTests", "ReplayPlan", "PlanParity", "ParityBatches", "ValidateParity", "Teardown", "Report", "DrillPassed?", "DrillSucceeded",
             "TeardownAfterFailure", "ReportFailure", "NotifyFailure", "DrillFailed"],
        ),
    }


def restore_test():
    """The weekly restore test: the newest backup snapshot and the newest logical backup, both
    restored into one staging instance (the logical one into a database of its own there)."""
    restore_target = {
        "scheduled_time.$": "$.logical_backup.scheduled_time",
        "target_secret_id": "${StagingSecretId}",
        "database.$": "$.database",
    }
    states = shared_states(
        {
            "defaults": {"snapshot_id": None, "logical_scheduled_time": None, "database": "catalyst_dr_logical", "logical_concurrency": 8},
            "after_start": "LogicalBackupNamed?",
            "target_time": None,
            "after_rotate": "SmokeTests",
            "after_smoke": "StagingDatabase",
            "after_teardown": "Report",
            "teardown_failed": "ReportFailure",
            "report_kind": {"kind": "restore-test"},
            "notify_subject": "catalyst-dr restore test failed without a report",
            "failed_cause": "The weekly restore test failed; its report (and the alert) say which step and why.",
        }
    )
    states.update(
        {
            "LogicalBackupNamed?": {
                "Type": "Choice",
                "Choices": [{"Variable": "$.logical_scheduled_time", "IsNull": True, "Next": "NewestLogicalBackup"}],
                "Default": "NamedLogicalBackup",
            },
            "NamedLogicalBackup": {
                "Type": "Pass",
                "Parameters": {"scheduled_time.$": "$.logical_scheduled_time"},
                "ResultPath": "$.logical_backup",
                "Next": "StartRestore",
            },
            # Nothing is restored yet: a failure here only needs the report.
            "NewestLogicalBackup": task(
                SNAPSHOT,
                {"action": "newest-logical"},
                "$.logical_backup",
                "StartRestore",
                "ReportFailure",
            ),
            "StartRestore": task(
                PITR,
                {"action": "restore-snapshot", "drill_id.$": "$.drill_id", "snapshot_id.$": "$.snapshot_id"},
                "$.start",
                "StartPolling",
                "TeardownAfterFailure",
                comment="The named snapshot, or the newest available catalyst-dr backup snapshot of the source.",
            ),
            "StagingDatabase": task(
                PITR,
                {"action": "staging-database", "drill_id.$": "$.drill_id", "database.$": "$.database"},
                "$.staging_database",
                "PrepareRestore",
                "TeardownAfterFailure",
            ),
            "PrepareRestore": task(
                SNAPSHOT,
                {**restore_target, "action": "restore-logical-prepare"},
                "$.logical_plan",
                "RestoreBatches",
                "TeardownAfterFailure",
                comment="Creates the schema (no keys yet) and the restore's ledger in the empty staging database; answers a restore id and the batches of segments.",
                result_selector={"restore_id.$": "$.restore_id", "batches.$": "$.batches"},
            ),
            "RestoreBatches": batch_map(
                "One invocation per batch of the backup's segments, at most logical_concurrency (default 8) at once, each on LOGICAL_PARALLELISM connections to the staging database.",
                "$.logical_plan.batches",
                {"scheduled_time": "$.logical_backup.scheduled_time", "database": "$.database", "restore_id": "$.logical_plan.restore_id"},
                ("RestoreBatch", {"action": "restore-logical-batch", "target_secret_id": "${StagingSecretId}"}),
                "Loads one batch of segments, each checked as it loads and committed with its ledger row; a retry loads only what is missing.",
                "a batch of the logical restore failed after its retries",
                "PlanReread",
                "TeardownAfterFailure",
            ),
            "PlanReread": task(
                SNAPSHOT,
                {**restore_target, "action": "restore-logical-reread-plan", "restore_id.$": "$.logical_plan.restore_id"},
                "$.reread_plan",
                "RereadBatches",
                "TeardownAfterFailure",
                comment="The restored tables' block ranges, planned on the staging database and stored in the restore's ledger, and their batches.",
                result_selector={"batches.$": "$.batches"},
            ),
            "RereadBatches": batch_map(
                "One invocation per batch of block ranges, at most logical_concurrency at once: each range read back with the backup's own COPY, its rows and content checksum stored in the ledger.",
                "$.reread_plan.batches",
                {"scheduled_time": "$.logical_backup.scheduled_time", "database": "$.database", "restore_id": "$.logical_plan.restore_id"},
                ("RereadBatch", {"action": "restore-logical-reread-batch", "target_secret_id": "${StagingSecretId}"}),
                "Reads one batch of the restored tables' block ranges; a retry reads only what is missing.",
                "a batch of the logical restore's re-read failed after its retries",
                "RestoreLogical",
                "TeardownAfterFailure",
            ),
            "RestoreLogical": task(
                SNAPSHOT,
                {**restore_target, "action": "restore-logical-finish", "restore_id.$": "$.logical_plan.restore_id", "reread": True},
                "$.logical",
                "LogicalConsistent?",
                "TeardownAfterFailure",
                waits=[RESTORE_STILL_BUILDING_WAITS],
                comment="Once every segment is loaded: indexes (each build committed by the database even if this invocation ends first, and waited for by the next), keys, sequences, post-data and the foreign keys' validations, then every table's rows and content checksum against its manifest as loaded and again by reading it back, and the schema; stores the report.",
                result_selector={
                    "run_id.$": "$.run_id",
                    "manifest_key.$": "$.manifest_key",
                    "target_database.$": "$.target_database",
                    "tables.$": "$.tables",
                    "mismatches.$": "$.mismatches",
                    "consistent.$": "$.consistent",
                    "reread.$": "$.reread",
                    "completed_at.$": "$.completed_at",
                },
            ),
            "LogicalConsistent?": {
                "Type": "Choice",
                "Choices": [{"Variable": "$.logical.consistent", "BooleanEquals": True, "Next": "LogicalSmokeTests"}],
                "Default": "LogicalNotConsistent",
            },
            "LogicalNotConsistent": {
                "Type": "Pass",
                "Parameters": {
                    "Error": "LogicalRestoreNotConsistent",
                    "Cause.$": "States.Format('the restored logical backup differs from its manifest: {}', States.JsonToString($.logical.mismatches))",
                },
                "ResultPath": "$.error",
                "Next": "TeardownAfterFailure",
            },
            "LogicalSmokeTests": task(
                PITR,
                {"action": "smoke", "drill_id.$": "$.drill_id", "database.$": "$.database"},
                "$.logical_smoke",
                "Teardown",
                "TeardownAfterFailure",
            ),
        }
    )
    return {
        "Comment": "catalyst-dr weekly restore test: restore the newest catalyst-dr backup snapshot (or snapshot_id) into a new staging instance, wait until it is available, rotate its credentials, smoke tests; create an empty staging database on it and restore the newest logical backup into it (prepare, a Distributed Map of batches of segments, at most logical_concurrency at once, the re-read's plan and a Map of its batches of block ranges, then finish with reread: every table's rows and content checksum against the backup's manifest, and the schema), smoke tests on that copy; tear the staging instance down (on every failure path too), and write the report in the drills' format (the report alerts when the test failed). Input: {\"drill_id\" (default: the execution name), \"snapshot_id\": null (the newest), \"logical_scheduled_time\": null (the newest logical backup, or that night's), \"database\": \"catalyst_dr_logical\", \"logical_concurrency\": 8}. Every action is idempotent, so a function timeout (Sandbox.Timedout, States.Timeout) or crash (Lambda.Unknown) is retried.",
        "StartAt": "ApplyDefaults",
        "States": ordered(
            states,
            ["ApplyDefaults", "MergeInput", "RecordStart", "LogicalBackupNamed?", "NamedLogicalBackup",
             "NewestLogicalBackup", "StartRestore", "StartPolling",
             "WaitForRestore", "CheckRestore", "RestoreReady?", "RestoreFailed", "RestoreTimedOut", "RotateCredentials",
             "SmokeTests", "StagingDatabase", "PrepareRestore", "RestoreBatches", "PlanReread", "RereadBatches", "RestoreLogical", "LogicalConsistent?",
             "LogicalNotConsistent", "LogicalSmokeTests", "Teardown", "Report", "DrillPassed?", "DrillSucceeded",
             "TeardownAfterFailure", "ReportFailure", "NotifyFailure", "DrillFailed"],
        ),
    }


def batch_map(comment, items_path, selector, item, item_comment, failed_cause, next_state, on_error,
              resource=SNAPSHOT, concurrency="$.logical_concurrency"):
    """A Distributed Map over batch numbers: one invocation of `resource` per batch (`item` is
    the item state's name and its action's parameters, given `batch` and the fields `selector`
    copies from the Map's input), at most `concurrency` at once. A batch that still fails
    after its retries fails the Map. The steps answer ready-made batches (ItemBatcher is not
    used), so the local interpreter, which runs a DISTRIBUTED Map as an inline one, runs the same
    items."""
    name, parameters = item
    failed = f"{name}Failed"  # state names are unique across the Maps of a state machine
    parameters = {**parameters, "batch.$": "$.batch", **{f"{k}.$": f"$.{k}" for k in selector}}
    item_task = task(resource, parameters, None, "BatchDone", failed, comment=item_comment)
    item_task.pop("Next")
    # Each child's output is {}: without a ResultWriter the Map gathers every child's output,
    # which must stay under the 256 KiB payload limit at thousands of batches.
    item_task["OutputPath"] = None
    item_task["End"] = True
    item_task["Catch"] = [{"ErrorEquals": ["States.ALL"], "Next": failed}]
    return {
        "Type": "Map",
        "Comment": comment,
        "ItemsPath": items_path,
        "ItemSelector": {**{f"{k}.$": v for k, v in selector.items()}, "batch.$": "$$.Map.Item.Value"},
        "MaxConcurrencyPath": concurrency,
        "ItemProcessor": {
            "ProcessorConfig": {"Mode": "DISTRIBUTED", "ExecutionType": "STANDARD"},
            "StartAt": name,
            "States": {
                name: item_task,
                failed: {"Type": "Fail", "Error": "BatchFailed", "Cause": failed_cause},
            },
        },
        "ResultPath": None,
        "Next": next_state,
        "Catch": catch(on_error),
    }


def fanout_states(scheduled):
    """The nightly's fanned-out logical backup: a read source restored (by pitr-restore, under
    the run's `nightly-<run>` id) to the snapshot's instant, the plan, one Distributed Map item
    per batch, the manifest once every segment is stored; the read source is torn down on every
    path."""
    read_source = {"drill_id.$": "$.logical_choice.read_source_id"}

    def pitr(parameters, result_path, next_state, on_error, **extra):
        return task(PITR, {**parameters, **read_source}, result_path, next_state, on_error, **extra)

    def snapshot(parameters, result_path, next_state, on_error, **extra):
        return task(SNAPSHOT, parameters, result_path, next_state, on_error, **extra)

    return {
        "StartReadSourceWindowPolling": {"Type": "Pass", "Result": {"poll": 0}, "ResultPath": "$.read_source_window", "Next": "CheckReadSourceWindow"},
        "CheckReadSourceWindow": task(
            PITR,
            {"action": "window", "instant.$": "$.snapshot.started_at", "poll.$": "$.read_source_window.poll"},
            "$.read_source_window",
            "ReadSourceRestorable?",
            "SnapshotsStarted?",
        ),
        "ReadSourceRestorable?": {
            "Type": "Choice",
            "Choices": [
                {"Variable": "$.read_source_window.covers", "BooleanEquals": True, "Next": "StartReadSource"},
                {"Variable": "$.read_source_window.poll", "NumericGreaterThanEquals": 30, "Next": "ReadSourceWindowTimedOut"},
            ],
            "Default": "WaitForReadSourceWindow",
        },
        "WaitForReadSourceWindow": {"Type": "Wait", "Seconds": 60, "Next": "CheckReadSourceWindow"},
        "ReadSourceWindowTimedOut": {
            "Type": "Pass",
            "Parameters": {
                "Error": "RestoreTimedOut",
                "Cause.$": "States.Format('the source is not restorable to {} after {} polls', $.snapshot.started_at, $.read_source_window.poll)",
            },
            "ResultPath": "$.error",
            "Next": "SnapshotsStarted?",
        },
        "StartReadSource": pitr(
            {"action": "start", "target_time.$": "$.snapshot.started_at"},
            "$.read_source",
            "StartReadSourcePolling",
            "AbortLogicalFanout",
            comment="The read source: the source restored to the snapshot's instant, a staging instance of its own.",
        ),
        **restore_polling(
            ("StartReadSourcePolling", "WaitForReadSource", "CheckReadSource", "ReadSourceReady?", "ReadSourceFailed", "ReadSourceTimedOut"),
            lambda choice: pitr({"action": "status", "poll.$": "$.read_source_status.poll"}, "$.read_source_status", choice, "AbortLogicalFanout"),
            "$.read_source_status",
            "read source",
            "ReadSourceCredentials",
            "AbortLogicalFanout",
        ),
        "ReadSourceCredentials": pitr(
            {"action": "rotate-credentials"},
            "$.read_source_credentials",
            "PlanLogical",
            "AbortLogicalFanout",
            waits=[CREDENTIAL_WAITS, STAGING_BUSY_WAITS],
            comment="A fresh password only catalyst-dr knows, published in the staging secret: nothing else writes to the copy.",
        ),
        "PlanLogical": snapshot(
            {"action": "logical-fanout-plan", **scheduled, "restored_to.$": "$.read_source.restore_time"},
            "$.logical_plan",
            "BackupBatches",
            "AbortLogicalFanout",
            result_selector={
                "plan_key.$": "$.plan_key",
                "reused.$": "$.reused",
                "tables.$": "$.tables",
                "segments.$": "$.segments",
                "planned_bytes.$": "$.planned_bytes",
                "batches.$": "$.batches",
            },
        ),
        "BackupBatches": batch_map(
            "One invocation per batch, at most logical_concurrency (default 8) at once, each on LOGICAL_PARALLELISM connections to the read source.",
            "$.logical_plan.batches",
            {"scheduled_time": "$.scheduled_time"},
            ("BackupBatch", {"action": "logical-fanout-batch"}),
            "One batch of segments; a retry skips the segments an earlier attempt stored.",
            "a batch of the fanned-out logical backup failed after its retries",
            "FinishLogical",
            "AbortLogicalFanout",
        ),
        "FinishLogical": snapshot(
            {"action": "logical-fanout-finish", **scheduled},
            "$.logical",
            "TeardownReadSource",
            "AbortLogicalFanout",
            comment="The manifest, only when every segment is stored and the read source counted no write.",
        ),
        "TeardownReadSource": pitr(
            {"action": "teardown"},
            "$.read_source_teardown",
            "WriteManifest",
            "SnapshotsStarted?",
            waits=[TEARDOWN_WAITS],
        ),
        "AbortLogicalFanout": snapshot(
            {"action": "logical-fanout-abort", **scheduled},
            "$.logical_abort",
            "TeardownReadSourceAfterFailure",
            "TeardownReadSourceAfterFailure",
            error_path="$.abort_error",
        ),
        "TeardownReadSourceAfterFailure": pitr(
            {"action": "teardown"},
            "$.read_source_teardown",
            "SnapshotsStarted?",
            "SnapshotsStarted?",
            waits=[TEARDOWN_WAITS],
            error_path="$.teardown_error",
        ),
    }


def nightly_backup():
    def snapshot_task(parameters, result_path, next_state, on_error, **extra):
        return task(SNAPSHOT, parameters, result_path, next_state, on_error, **extra)

    scheduled = {"scheduled_time.$": "$.scheduled_time"}
    manifest_parameters = {
        "action": "write-manifest",
        **scheduled,
        "started_at.$": "$.snapshot.started_at",
        "export.$": "$.export",
        "prune.$": "$.prune",
        "logical.$": "$.logical",
    }
    states = {
        # The schedule passes only scheduled_time: what the input leaves out takes its default.
        "ApplyDefaults": {
            "Type": "Pass",
            "Parameters": {"defaults": {"logical_path": None, "logical_concurrency": 8}, "input.$": "$"},
            "Next": "MergeInput",
        },
        "MergeInput": {
            "Type": "Pass",
            "Parameters": {"merged.$": "States.JsonMerge($.defaults, $.input, false)"},
            "OutputPath": "$.merged",
            "Next": "Snapshot",
        },
        "Snapshot": snapshot_task({"action": "snapshot", **scheduled}, "$.snapshot", "StartPolling", "NotifyFailure"),
        "StartPolling": {"Type": "Pass", "Result": {"poll": 0}, "ResultPath": "$.status", "Next": "WaitForSnapshots"},
        "WaitForSnapshots": {"Type": "Wait", "Seconds": 60, "Next": "CheckStatus"},
        "CheckStatus": snapshot_task(
            {"action": "status", **scheduled, "poll.$": "$.status.poll"},
            "$.status",
            "SnapshotsReady?",
            "SnapshotsStarted?",
        ),
        "SnapshotsReady?": {
            "Type": "Choice",
            "Choices": [
                {"Variable": "$.status.state", "StringEquals": "available", "Next": "ExportCache"},
                {"Variable": "$.status.state", "StringEquals": "failed", "Next": "SnapshotFailed"},
                {"Variable": "$.status.poll", "NumericGreaterThanEquals": 90, "Next": "SnapshotTimedOut"},
            ],
            "Default": "WaitForSnapshots",
        },
        "SnapshotFailed": {
            "Type": "Pass",
            "Parameters": {"Error": "SnapshotFailed", "Cause.$": "$.status.reason"},
            "ResultPath": "$.error",
            "Next": "SnapshotsStarted?",
        },
        "SnapshotTimedOut": {
            "Type": "Pass",
            "Parameters": {
                "Error": "SnapshotTimedOut",
                "Cause.$": "States.Format('snapshots of run {} still creating after {} polls', $.status.run_id, $.status.poll)",
            },
            "ResultPath": "$.error",
            "Next": "SnapshotsStarted?",
        },
        "ExportCache": snapshot_task({"action": "export-cache", **scheduled}, "$.export", "Prune", "SnapshotsStarted?"),
        "Prune": snapshot_task({"action": "prune", "dry_run": False}, "$.prune", "LogicalPath", "SnapshotsStarted?"),
        "LogicalPath": snapshot_task(
            {"action": "logical-path", **scheduled, "path.$": "$.logical_path"},
            "$.logical_choice",
            "LogicalFanOut?",
            "SnapshotsStarted?",
            comment="One invocation, or the fan-out for a source larger than LOGICAL_FANOUT_THRESHOLD_GIB (or as the input's logical_path asks).",
        ),
        "LogicalFanOut?": {
            "Type": "Choice",
            "Choices": [{"Variable": "$.logical_choice.path", "StringEquals": "fan-out", "Next": "StartReadSourceWindowPolling"}],
            "Default": "LogicalBackup",
        },
        **fanout_states(scheduled),
        "LogicalBackup": snapshot_task(
            {"action": "logical-backup", **scheduled},
            "$.logical",
            "WriteManifest",
            "SnapshotsStarted?",
            comment="A retry returns the finished backup, or aborts the failed attempt's unfinished uploads and backs up again.",
        ),
        "WriteManifest": snapshot_task(manifest_parameters, "$.manifest", "PlanVerify", "NotifyFailure"),
        "PlanVerify": snapshot_task(
            {"action": "verify-logical-plan", **scheduled},
            "$.verify_plan",
            "VerifyBatches",
            "NotifyFailure",
            comment="Reads tonight's logical backup back, in batches of about LOGICAL_FANOUT_BATCH_MIB: every object, its checksums and the manifest's completeness.",
            result_selector={"verify_id.$": "$.verify_id", "segments.$": "$.segments", "batches.$": "$.batches"},
        ),
        "VerifyBatches": batch_map(
            "One invocation per batch of tonight's segments, at most logical_concurrency (default 8) at once.",
            "$.verify_plan.batches",
            {"scheduled_time": "$.scheduled_time", "verify_id": "$.verify_plan.verify_id"},
            ("VerifyBatch", {"action": "verify-logical-batch"}),
            "Reads one batch of segments and stores what it found; a retry returns the stored record.",
            "a batch of tonight's verify failed after its retries",
            "VerifyLogical",
            "NotifyFailure",
        ),
        "VerifyLogical": snapshot_task(
            {"action": "verify-logical-finish", **scheduled, "verify_id.$": "$.verify_plan.verify_id"},
            "$.verify",
            "LogicalBackupVerified?",
            "NotifyFailure",
            comment="The report from every batch's record; a batch without one is a problem, never a pass.",
            result_selector={
                "ok.$": "$.ok",
                "complete.$": "$.complete",
                "objects_checked.$": "$.objects_checked",
                "problems.$": "$.problems",
            },
        ),
        "LogicalBackupVerified?": {
            "Type": "Choice",
            "Choices": [{"Variable": "$.verify.ok", "BooleanEquals": True, "Next": "CopySnapshotToDr"}],
            "Default": "LogicalBackupNotVerified",
        },
        # ---- copies in the DR region (DR_REGION); without it the first step says so and the
        # night ends here.
        "CopySnapshotToDr": snapshot_task(
            {"action": "dr-copy-snapshots", **scheduled},
            "$.dr_snapshot",
            "DrConfigured?",
            "NotifyFailure",
            comment="Starts (or finds) the copy of tonight's database snapshot in the DR region, encrypted with the DR key.",
        ),
        "DrConfigured?": {
            "Type": "Choice",
            "Choices": [{"Variable": "$.dr_snapshot.status", "StringEquals": "not-configured", "Next": "BackupSucceeded"}],
            "Default": "CopyObjectsToDr",
        },
        "CopyObjectsToDr": snapshot_task(
            {"action": "dr-copy-objects", **scheduled},
            "$.dr_objects",
            "StartDrPolling",
            "NotifyFailure",
            comment="Copies the run's objects (manifests, logical backup, cache export) to the DR bucket, locked until the run's retain-until.",
            result_selector={
                "bucket.$": "$.bucket",
                "region.$": "$.region",
                "copied.$": "$.copied",
                "already_present.$": "$.already_present",
            },
        ),
        "StartDrPolling": {"Type": "Pass", "Result": {"poll": 0}, "ResultPath": "$.dr_status", "Next": "WaitForDrCopy"},
        "WaitForDrCopy": {"Type": "Wait", "Seconds": 60, "Next": "CheckDrCopy"},
        "CheckDrCopy": snapshot_task(
            {"action": "dr-status", **scheduled, "poll.$": "$.dr_status.poll"},
            "$.dr_status",
            "DrCopyReady?",
            "NotifyFailure",
            comment="Polls the snapshot copy; once it is available, shares it with the DR account.",
        ),
        "DrCopyReady?": {
            "Type": "Choice",
            "Choices": [
                {"Variable": "$.dr_status.state", "StringEquals": "available", "Next": "PruneDr"},
                {"Variable": "$.dr_status.state", "StringEquals": "failed", "Next": "DrCopyFailed"},
                {"Variable": "$.dr_status.poll", "NumericGreaterThanEquals": 180, "Next": "DrCopyTimedOut"},
            ],
            "Default": "WaitForDrCopy",
        },
        "DrCopyFailed": {
            "Type": "Pass",
            "Parameters": {"Error": "DrCopyFailed", "Cause.$": "$.dr_status.reason"},
            "ResultPath": "$.error",
            "Next": "NotifyFailure",
        },
        "DrCopyTimedOut": {
            "Type": "Pass",
            "Parameters": {
                "Error": "DrCopyTimedOut",
                "Cause.$": "States.Format('DR snapshot copy of run {} still copying after {} polls', $.scheduled_time, $.dr_status.poll)",
            },
            "ResultPath": "$.error",
            "Next": "NotifyFailure",
        },
        "PruneDr": snapshot_task({"action": "dr-prune", "dry_run": False}, "$.dr_prune", "VerifyDr", "NotifyFailure"),
        "VerifyDr": snapshot_task(
            {"action": "dr-verify", **scheduled},
            "$.dr_verify",
            "BackupSucceeded",
            "NotifyFailure",
            comment="Every object of the run in the DR bucket with its source's SHA-256 and lock, the snapshot copy available; then the run's DR record, written once and copied too.",
        ),
        "LogicalBackupNotVerified": {
            "Type": "Pass",
            "Result": {
                "Error": "LogicalBackupNotVerified",
                "Cause": "verify-logical found problems in tonight's logical backup: see verify.problems",
            },
            "ResultPath": "$.error",
            "Next": "NotifyFailure",
        },
        "BackupSucceeded": {"Type": "Succeed"},
        "SnapshotsStarted?": {
            "Type": "Choice",
            "Comment": "A step after the snapshots failed: catalogue the snapshots that were taken before alerting.",
            "Choices": [{"Variable": "$.snapshot.started_at", "IsPresent": True, "Next": "FailureDefaults"}],
            "Default": "NotifyFailure",
        },
        "FailureDefaults": {
            "Type": "Pass",
            "Parameters": {"defaults": {"export": None, "prune": None, "logical": None}, "run.$": "$"},
            "Next": "MergeFailureDefaults",
        },
        "MergeFailureDefaults": {
            "Type": "Pass",
            "Comment": "Steps that never ran have no result: record them as null.",
            "Parameters": {"merged.$": "States.JsonMerge($.defaults, $.run, false)"},
            "OutputPath": "$.merged",
            "Next": "CataloguePartialRun",
        },
        # Whether or not the partial manifest could be written, the alert goes out.
        "CataloguePartialRun": snapshot_task(
            {**manifest_parameters, "failure.$": "$.error"},
            "$.manifest",
            "NotifyFailure",
            "NotifyFailure",
            error_path="$.catalogue_error",
        ),
        "NotifyFailure": notify_failure("catalyst-dr nightly backup failed", "BackupFailed"),
        "BackupFailed": {
            "Type": "Fail",
            "Error": "BackupFailed",
            "Cause": "The nightly backup failed; the SNS notification carries the failing state's error and the run's input.",
        },
    }
    return {
        "Comment": "catalyst-dr nightly backup: snapshot the database and cache, wait until available (polled every 60 s, at most 90 times), export the cache snapshot, prune expired backups, take the logical backup of the source database (every table at one instant, to locked S3 objects, its own manifest last; a source larger than LOGICAL_FANOUT_THRESHOLD_GIB, or input logical_path: fan-out, is read from a copy restored to the snapshot's instant by pitr-restore, its segments in batches by a Distributed Map, the copy torn down on every path), write the locked run manifest that records it (and where the DR copies go), read the logical backup back; with DR_REGION set, copy the database snapshot to the DR region (polled every 60 s, at most 180 times; shared with the DR account once available) and the run's objects to the DR bucket, prune expired DR copies, and verify every copy before writing the run's DR record. A step that fails after the snapshots started still catalogues them (a manifest with the failure) before the alert. Every step is idempotent, so a function timeout (Sandbox.Timedout, States.Timeout) or crash (Lambda.Unknown) is retried like a transient error. Input: {\"scheduled_time\": \"<RFC 3339>\", \"logical_path\": null (by size), \"single\" or \"fan-out\", \"logical_concurrency\": 8 (the fan-out's invocations at once)} (EventBridge Scheduler passes <aws.scheduler.scheduled-time> only).",
        "StartAt": "ApplyDefaults",
        "States": states,
    }


def webhook_replay():
    states = {
        # As the drills do: what the input leaves out takes the function's defaults, and the
        # replay id defaults to the execution name.
        "ApplyDefaults": {
            "Type": "Pass",
            "Parameters": {
                "defaults": {
                    "replay_id.$": "$$.Execution.Name",
                    "filter": {},
                    "spread_seconds": 0,
                    "dry_run": False,
                    "verify_after_seconds": 300,
                },
                "input.$": "$",
            },
            "Next": "MergeInput",
        },
        "MergeInput": {
            "Type": "Pass",
            "Parameters": {"merged.$": "States.JsonMerge($.defaults, $.input, false)"},
            "OutputPath": "$.merged",
            "Next": "Plan",
        },
        "Plan": task(REPLAY, {"action": "plan", "filter.$": "$.filter"}, "$.plan", "AnythingToReplay?", "NotifyFailure"),
        "AnythingToReplay?": {
            "Type": "Choice",
            "Choices": [{"Variable": "$.plan.deliveries", "NumericEquals": 0, "Next": "NothingToReplay"}],
            "Default": "Replay",
        },
        "NothingToReplay": {"Type": "Succeed", "Comment": "No dead-lettered delivery matches the filter."},
        "Replay": task(
            REPLAY,
            {
                "action": "replay",
                "replay_id.$": "$.replay_id",
                "filter.$": "$.filter",
                "spread_seconds.$": "$.spread_seconds",
                "dry_run.$": "$.dry_run",
            },
            "$.replay",
            "DryRun?",
            "NotifyFailure",
        ),
        "DryRun?": {
            "Type": "Choice",
            "Choices": [{"Variable": "$.dry_run", "BooleanEquals": True, "Next": "DryRunResult"}],
            "Default": "WaitForWorker",
        },
        "DryRunResult": {
            "Type": "Pass",
            "Parameters": {
                "replay_id.$": "$.replay_id",
                "dry_run.$": "$.dry_run",
                "matched.$": "$.plan.deliveries",
                "endpoints.$": "$.plan.endpoints",
                "replay.$": "$.replay",
            },
            "Next": "ReplayDone",
        },
        "WaitForWorker": {"Type": "Wait", "SecondsPath": "$.verify_after_seconds", "Next": "Verify"},
        "Verify": task(REPLAY, {"action": "verify", "replay_id.$": "$.replay_id"}, "$.verify", "Result", "NotifyFailure"),
        "Result": {
            "Type": "Pass",
            "Parameters": {
                "replay_id.$": "$.replay_id",
                "dry_run.$": "$.dry_run",
                "matched.$": "$.plan.deliveries",
                "endpoints.$": "$.plan.endpoints",
                "replay.$": "$.replay",
                "verify.$": "$.verify",
            },
            "Next": "ReplayDone",
        },
        "ReplayDone": {"Type": "Succeed"},
        "NotifyFailure": notify_failure("catalyst-dr webhook replay failed", "ReplayFailed"),
        "ReplayFailed": {
            "Type": "Fail",
            "Error": "ReplayFailed",
            "Cause": "The webhook replay failed; the SNS notification carries the failing state's error and the run's input.",
        },
    }
    return {
        "Comment": "catalyst-dr webhook replay (runbook: Webhook replay), for manual runs: plan (the runbook's dead-letter query, counted), replay (probe each endpoint once, requeue the deliveries of healthy ones, write the audit record for the incident ticket), wait verify_after_seconds for the worker, verify (succeeded / still pending / dead-lettered again per endpoint), result. Input: {\"replay_id\": \"INC-1234\" (default: the execution name), \"filter\": {\"window_hours\": 24} (default: the last 24 hours), \"spread_seconds\": 0, \"dry_run\": false, \"verify_after_seconds\": 300}. Every action is idempotent, so a function timeout (Sandbox.Timedout, States.Timeout) or crash (Lambda.Unknown) is retried.",
        "StartAt": "ApplyDefaults",
        "States": states,
    }


MACHINES = {
    "nightly-backup.asl.json": nightly_backup,
    "pitr-drill.asl.json": pitr_drill,
    "quarterly-drill.asl.json": quarterly_drill,
    "restore-test.asl.json": restore_test,
    "webhook-replay.asl.json": webhook_replay,
}


if __name__ == "__main__":
    sys.exit(write_or_check(MACHINES, sys.argv, "infra/statemachines/generate.py"))
