#!/usr/bin/env bash
# The nightly backup, end to end on the local stack: installs what is missing, brings the stack
# up, runs infra/statemachines/nightly-backup.asl.json through the ASL interpreter against the
# functions served by `cargo lambda watch` and moto, prints the run's manifest, and stops the
# stack. Set KEEP_STACK=1 to leave the stack running (then: infra/local/stack.sh down STATE).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
STACK="$ROOT/infra/local/stack.sh"
STATE=${STATE:-$(mktemp -d /tmp/catalyst-dr-backup.XXXXXX)}

"$STACK" install
if [ "${KEEP_STACK:-0}" != 1 ]; then trap '"$STACK" down "$STATE"' EXIT; fi
"$STACK" up "$STATE"
# shellcheck disable=SC1091
source "$STATE/env"

scheduled_time=$(date -u +%Y-%m-%dT%H:%M:00Z)
mapfile -d '' machine < <("$CATALYST_DR_PYTHON" "$CATALYST_DR_DEPLOYED" runner-args --machine NightlyBackupStateMachine \
  --config-env "$CATALYST_DR_CONFIG_ENV" --seed "$STATE/seed.json")
[ ${#machine[@]} -gt 0 ] || { echo "infra/local/deployed.py could not resolve the template" >&2; exit 1; }
echo "== nightly-backup state machine, scheduled_time $scheduled_time" >&2
"$CATALYST_DR_NODE" "$CATALYST_DR_SFN_RUNNER" "${machine[@]}" \
  --fast \
  --input "{\"scheduled_time\": \"$scheduled_time\"}" >"$STATE/execution.json" || {
  echo "the nightly backup failed:" >&2
  cat "$STATE/execution.json" >&2
  exit 1
}
echo "== backup manifest (s3://$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["bucket"])' "$STATE/seed.json")/manifests/)" >&2
"$ROOT/.local/venv/bin/python" - "$STATE/seed.json" <<'PY'
import json, sys, boto3, os
seed = json.load(open(sys.argv[1]))
s3 = boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"])
keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=seed["bucket"], Prefix="manifests/").get("Contents", []))
head = s3.head_object(Bucket=seed["bucket"], Key=keys[-1])
print(s3.get_object(Bucket=seed["bucket"], Key=keys[-1])["Body"].read().decode())
print(f"object lock: {head.get('ObjectLockMode')} until {head.get('ObjectLockRetainUntilDate')}", file=sys.stderr)
PY
