#!/usr/bin/env bash
# The weekly restore test, end to end on the local stack: installs what is missing, brings the
# stack up, creates the "production" database with generated data, takes the night's backups
# (snapshot-trigger's base backup, the local engine's snapshot, and the nightly-backup state
# machine with its logical backup), runs infra/statemachines/restore-test.asl.json through the ASL
# interpreter against the functions served by `cargo lambda watch`, prints the parity of every
# table against the logical backup's manifest and copies the report to drill-reports/<id>/.
#
# RESTORE_TEST_USERS / RESTORE_TEST_DELIVERIES size the database (default 2000 / 10000).
# KEEP_STACK=1 leaves the stack running (then: infra/local/stack.sh down STATE).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
STACK="$ROOT/infra/local/stack.sh"
STATE=${STATE:-$(mktemp -d /tmp/catalyst-dr-restore-test.XXXXXX)}
step() { printf '\n== %s\n' "$*" >&2; }

step "installing what is missing"
"$STACK" install
if [ "${KEEP_STACK:-0}" != 1 ]; then trap '"$STACK" down "$STATE"' EXIT; fi
step "building and starting the local stack"
(cd "$ROOT" && cargo build -q --bins --features catalyst-dr/local-engine)
"$STACK" up "$STATE"
# shellcheck disable=SC1091
source "$STATE/env"
bin="$ROOT/target/debug"
prod="$CATALYST_DR_PG_URL dbname=catalyst_auth"
runner_args() {
  "$CATALYST_DR_PYTHON" "$CATALYST_DR_DEPLOYED" runner-args --machine "$1" \
    --config-env "$CATALYST_DR_CONFIG_ENV" --seed "$STATE/seed.json"
}

step "creating the production database (${RESTORE_TEST_USERS:-2000} users, ${RESTORE_TEST_DELIVERIES:-10000} webhook deliveries)"
"$bin/catalyst-datagen" --database-url "$prod" --seed 2026 --users "${RESTORE_TEST_USERS:-2000}" \
  --deliveries "${RESTORE_TEST_DELIVERIES:-10000}" --subscriptions 50 --dead-letter-share 0.02 >"$STATE/datagen.json"

scheduled_time=$(date -u +%Y-%m-%dT%H:%M:%SZ)
step "the night's backups: base backup and the nightly-backup state machine ($scheduled_time)"
curl -sf -X POST "$LAMBDA_ENDPOINT_URL/2015-03-31/functions/snapshot-trigger/invocations" \
  -d "{\"action\": \"base-backup\", \"scheduled_time\": \"$scheduled_time\"}" >/dev/null
mapfile -d '' machine < <(runner_args NightlyBackupStateMachine)
[ ${#machine[@]} -gt 0 ] || { echo "infra/local/deployed.py could not resolve the template" >&2; exit 1; }
"$CATALYST_DR_NODE" "$CATALYST_DR_SFN_RUNNER" "${machine[@]}" --fast \
  --input "{\"scheduled_time\": \"$scheduled_time\"}" >"$STATE/nightly.json" || {
  echo "the nightly backup failed:" >&2
  cat "$STATE/nightly.json" >&2
  exit 1
}

test_id="restore-test-$(date -u +%Y%m%d-%H%M%S)"
step "running the restore test $test_id"
mapfile -d '' machine < <(runner_args RestoreTestStateMachine)
[ ${#machine[@]} -gt 0 ] || { echo "infra/local/deployed.py could not resolve the template" >&2; exit 1; }
set +e
"$CATALYST_DR_NODE" "$CATALYST_DR_SFN_RUNNER" "${machine[@]}" \
  --fast --name "$test_id" --input "{\"drill_id\": \"$test_id\", \"logical_scheduled_time\": \"$scheduled_time\"}" >"$STATE/execution.json"
status=$?
set -e

out="$ROOT/drill-reports/$test_id"
mkdir -p "$out"
"$ROOT/.local/venv/bin/python" - "$STATE/seed.json" "$test_id" "$out" <<'PY'
import json, os, sys, boto3
seed, test_id, out = json.load(open(sys.argv[1])), sys.argv[2], sys.argv[3]
s3 = boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"])
for name in ("report.json", "report.md", "report.html"):
    try:
        s3.download_file(seed["bucket"], f"drills/{test_id}/{name}", os.path.join(out, name))
    except Exception as err:
        print(f"{name}: not written ({err})", file=sys.stderr)
PY
if [ -f "$out/report.json" ]; then
  python3 - "$out/report.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
s, v = r["summary"], r.get("validation") or {}
print(f"\nrestore test {s['drill_id']}: {'PASSED' if s['passed'] else 'FAILED'}" + (f" — {s['failure']}" if s.get("failure") else ""))
print(f"  snapshot {v.get('snapshot_id')} restored (taken {v.get('restore_point')}); logical backup {v.get('manifest_key')}")
if s.get("rto_seconds") is not None: print(f"  {s['rto_seconds']:.1f} s from start to the snapshot's smoke tests passed")
for t in v.get("tables", []):
    print(f"  parity {t['table']:<34} {t['baseline_rows']:>8} rows in the manifest, {t['restored_rows']:>8} restored, checksum {'match' if t['checksum_matches'] else 'DIFFERS'}")
PY
  echo "  report: $out/report.html (also report.md, report.json)"
else
  echo "the restore test wrote no report:" >&2
  cat "$STATE/execution.json" >&2
fi
exit $status
