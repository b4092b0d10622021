"""The pieces every catalyst-dr state machine is built from: the retriers, the Lambda task, the
catch, the failure alert, and writing or checking the generated JSON. infra/statemachines/generate.py
builds the four definitions from them, so a Retry or Catch block is written once."""

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

# The template's DefinitionSubstitutions.
SNAPSHOT = "${SnapshotTriggerFunctionArn}"
PITR = "${PitrRestoreFunctionArn}"
VALIDATOR = "${DrillValidatorFunctionArn}"
REPLAY = "${DeadLetterReplayFunctionArn}"
ALERT_TOPIC = "${AlertTopicArn}"


def catch(next_state, result_path="$.error"):
    return [{"ErrorEquals": ["States.ALL"], "ResultPath": result_path, "Next": next_state}]


def task(
    resource,
    parameters,
    result_path,
    next_state,
    on_error,
    *,
    waits=(),
    error_path="$.error",
    comment=None,
    result_selector=None,
):
    """A Lambda task: the standard retries (after `waits`, the retriers of expected waits), and
    any other error caught to `on_error`."""
    state = {"Type": "Task"}
    if comment:
        state["Comment"] = comment
    state["Resource"] = resource
    state["Parameters"] = parameters
    if result_selector:
        state["ResultSelector"] = result_selector
    state.update(
        {
            "ResultPath": result_path,
            "Retry": [*waits, *RETRY],
            "Catch": catch(on_error, error_path),
            "Next": next_state,
        }
    )
    return state


def notify_failure(subject, next_state):
    """The alert of a run that failed. Not caught: if publishing keeps failing, the execution
    itself fails."""
    return {
        "Type": "Task",
        "Resource": "arn:aws:states:::sns:publish",
        "Parameters": {"TopicArn": ALERT_TOPIC, "Subject": subject, "Message.$": "$"},
        "ResultPath": "$.notification",
        "Retry": [{"ErrorEquals": ["States.ALL"], "IntervalSeconds": 2, "BackoffRate": 2, "MaxAttempts": 3, "JitterStrategy": "FULL"}],
        "Next": next_state,
    }


def ordered(states, order):
    missing = set(states) ^ set(order)
    if missing:
        raise SystemExit(f"state order and states disagree: {sorted(missing)}")
    return {name: states[name] for name in order}


def write_or_check(machines, argv, script):
    """Write every definition of `machines` ({file name: build function}), or with `--check`
    fail when a committed file differs from what would be written."""
    check = argv[1:] == ["--check"]
    stale = []
    for name, build in machines.items():
        text = json.dumps(build(), indent=2, ensure_ascii=False) + "\n"
        path = HERE / name
        if check:
            if not path.exists() or path.read_text() != text:
                stale.append(name)
        else:
            path.write_text(text)
    if stale:
        print(f"{', '.join(stale)} differ from {script}: run python3 {script}", file=sys.stderr)
        return 1
    return 0
