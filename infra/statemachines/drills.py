"""The two restore drills' state machines, written once.

    python3 infra/statemachines/drills.py           rewrite pitr-drill.asl.json and quarterly-drill.asl.json
    python3 infra/statemachines/drills.py --check   fail if either file differs from what this writes

The monthly PITR drill and the quarterly drill share the restore, credential rotation, smoke test,
teardown and report steps; the quarterly drill adds the baseline, the restorable-window wait, the
staging queue flush, the replay plan and the parity check around them. Both definitions are
generated from the states below, so a fix to a shared step (a retry, a catch, a poll limit) lands
in both. The JSON files stay committed: SAM deploys them and the local interpreter runs them.
"""

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

# The function retries every state machine task gives its own errors: AWS throttling and
# transient failures, the database briefly unavailable, Lambda's own hiccups...
TRANSIENT = {
    "ErrorEquals": [
        "Throttled",
        "AwsTransient",
        "DatabaseUnavailable",
        "Postgres",
        "Lambda.ServiceException",
        "Lambda.AWSLambdaException",
        "Lambda.SdkClientException",
        "Lambda.TooManyRequestsException",
    ],
    "IntervalSeconds": 2,
    "BackoffRate": 2,
    "MaxAttempts": 6,
    "MaxDelaySeconds": 60,
    "JitterStrategy": "FULL",
}
# ...and a timeout or crash, safe to retry because every action is idempotent.
TIMEOUTS = {
    "ErrorEquals": ["Sandbox.Timedout", "States.Timeout", "Lambda.Unknown"],
    "IntervalSeconds": 10,
    "BackoffRate": 2,
    "MaxAttempts": 2,
    "JitterStrategy": "FULL",
}
RETRY = [TRANSIENT, TIMEOUTS]

PITR = "${PitrRestoreFunctionArn}"
VALIDATOR = "${DrillValidatorFunctionArn}"
REPLAY = "${DeadLetterReplayFunctionArn}"


def catch(next_state, result_path="$.error"):
    return [{"ErrorEquals": ["States.ALL"], "ResultPath": result_path, "Next": next_state}]


def task(resource, parameters, result_path, next_state, on_error, *, waits=None, error_path="$.error"):
    """A Lambda task: the standard retries (after `waits`, a retrier for an expected wait),
    and any other error caught to `on_error`."""
    return {
        "Type": "Task",
        "Resource": resource,
        "Parameters": parameters,
        "ResultPath": result_path,
        "Retry": ([waits] if waits else []) + RETRY,
        "Catch": catch(on_error, error_path),
        "Next": next_state,
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
        "StartPolling": {"Type": "Pass", "Result": {"poll": 0}, "ResultPath": "$.status", "Next": "WaitForRestore"},
        "WaitForRestore": {"Type": "Wait", "Seconds": 30, "Next": "CheckRestore"},
        "CheckRestore": task(
            PITR,
            {"action": "status", "drill_id.$": "$.drill_id", "poll.$": "$.status.poll"},
            "$.status",
            "RestoreReady?",
            "TeardownAfterFailure",
        ),
        "RestoreReady?": {
            "Type": "Choice",
            "Choices": [
                {"Variable": "$.status.state", "StringEquals": "available", "Next": "RotateCredentials"},
                {"Variable": "$.status.state", "StringEquals": "failed", "Next": "RestoreFailed"},
                {"Variable": "$.status.poll", "NumericGreaterThanEquals": 240, "Next": "RestoreTimedOut"},
            ],
            "Default": "WaitForRestore",
        },
        "RestoreFailed": {
            "Type": "Pass",
            "Parameters": {"Error": "RestoreFailed", "Cause.$": "$.status.instance.reason"},
            "ResultPath": "$.error",
            "Next": "TeardownAfterFailure",
        },
        "RestoreTimedOut": {
            "Type": "Pass",
            "Parameters": {
                "Error": "RestoreTimedOut",
                "Cause.$": "States.Format('staging instance still {} after {} polls', $.status.instance.status, $.status.poll)",
            },
            "ResultPath": "$.error",
            "Next": "TeardownAfterFailure",
        },
        "RotateCredentials": task(
            PITR,
            {"action": "rotate-credentials", "drill_id.$": "$.drill_id"},
            "$.credentials",
            kind["after_rotate"],
            "TeardownAfterFailure",
            # The new password and the instance take a while to be usable.
            waits={
                "ErrorEquals": ["CredentialsNotYetApplied", "StagingNotReady"],
                "IntervalSeconds": 15,
                "BackoffRate": 1.5,
                "MaxAttempts": 12,
                "MaxDelaySeconds": 120,
                "JitterStrategy": "FULL",
            },
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
            error_path="$.teardown_error",
        ),
        "ReportFailure": task(VALIDATOR, report_parameters, "$.report", "DrillFailed", "NotifyFailure", error_path="$.report_error"),
        # Only when no report could be written: the alert must still go out.
        "NotifyFailure": {
            "Type": "Task",
            "Resource": "arn:aws:states:::sns:publish",
            "Parameters": {"TopicArn": "${AlertTopicArn}", "Subject": kind["notify_subject"], "Message.$": "$"},
            "ResultPath": "$.notification",
            "Retry": [{"ErrorEquals": ["States.ALL"], "IntervalSeconds": 2, "BackoffRate": 2, "MaxAttempts": 3, "JitterStrategy": "FULL"}],
            "Next": "DrillFailed",
        },
        "DrillFailed": {"Type": "Fail", "Error": "DrillFailed", "Cause": kind["failed_cause"]},
    }


def ordered(states, order):
    missing = set(states) ^ set(order)
    if missing:
        raise SystemExit(f"state order and states disagree: {sorted(missing)}")
    return {name: states[name] for name in order}


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
            "defaults": {"preserve_queue": False},
            "after_start": "Baseline",
            "target_time": "$.baseline.instant",
            "after_rotate": "StagingQueueConfigured",
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
            # Nothing is restored yet: a failure here only needs the report.
            "Baseline": task(
                VALIDATOR,
                {"action": "baseline", "drill_id.$": "$.drill_id"},
                "$.baseline",
                "StartWindowPolling",
                "ReportFailure",
                waits={"ErrorEquals": ["BaselineLockTimeout"], "IntervalSeconds": 5, "BackoffRate": 2, "MaxAttempts": 5, "JitterStrategy": "FULL"},
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
                "ValidateParity",
                "TeardownAfterFailure",
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
                },
                "$.validation",
                "Teardown",
                "TeardownAfterFailure",
            ),
        }
    )
    return {
        "Comment": "catalyst-dr quarterly restore drill: baseline of the source at one exact instant, restore to that instant in staging, rotate credentials, flush the staging queue, smoke tests, webhook replay plan (dry run) on staging, baseline parity, teardown (on every failure path too), and the drill report. Input: {\"drill_id\" (default: the execution name), \"preserve_queue\": false}. Every action is idempotent, so a function timeout (Sandbox.Timedout, States.Timeout) or crash (Lambda.Unknown) is retried.",
        "StartAt": "ApplyDefaults",
        "States": ordered(
            states,
            ["ApplyDefaults", "MergeInput", "RecordStart", "Baseline", "StartWindowPolling", "CheckWindow",
             "BaselineRestorable?", "WaitForRestorableTime", "WindowTimedOut", "StartRestore", "StartPolling",
             "WaitForRestore", "CheckRestore", "RestoreReady?", "RestoreFailed", "RestoreTimedOut",
             "RotateCredentials", "StagingQueueConfigured", "StagingQueue?", "FlushSkipped", "FlushStagingQueue",
             "SmokeTests", "ReplayPlan", "ValidateParity", "Teardown", "Report", "DrillPassed?", "DrillSucceeded",
             "TeardownAfterFailure", "ReportFailure", "NotifyFailure", "DrillFailed"],
        ),
    }


DRILLS = {"pitr-drill.asl.json": pitr_drill, "quarterly-drill.asl.json": quarterly_drill}


def main(argv):
    check = argv[1:] == ["--check"]
    stale = []
    for name, build in DRILLS.items():
        text = json.dumps(build(), indent=2, ensure_ascii=False) + "\n"
        path = HERE / name
        if check:
            if path.read_text() != text:
                stale.append(name)
        else:
            path.write_text(text)
    if stale:
        print(f"{', '.join(stale)} differ from infra/statemachines/drills.py: run python3 infra/statemachines/drills.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
