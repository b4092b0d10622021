#!/usr/bin/env bash
# The quarterly restore drill, end to end on the local stack — the README's main job.
#
# Installs what is missing and brings the stack up; creates the "production" Catalyst Auth
# database with generated data and takes a base backup of it; keeps live traffic writing to it;
# runs infra/statemachines/quarterly-drill.asl.json through the ASL interpreter against the
# functions served by `cargo lambda watch`, the local engine and the local AWS endpoint, all
# configured from infra/template.yaml for CATALYST_DR_CONFIG_ENV (default dev); prints a
# summary (RPO, RTO, database and cache parity, replay plan) and copies the report files to drill-reports/<drill id>/.
#
# DRILL_USERS / DRILL_DELIVERIES size the database (default 20000 / 100000).
# DRILL_BASELINE_PATH=fan-out (or single) chooses the baseline's path instead of the source's size.
# KEEP_STACK=1 leaves the stack running (then: infra/local/stack.sh down STATE).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
STACK="$ROOT/infra/local/stack.sh"
STATE=${STATE:-$(mktemp -d /tmp/catalyst-dr-drill.XXXXXX)}
step() { printf '\n== %s\n' "$*" >&2; }

step "installing what is missing"
"$STACK" install
WRITER_PID=""
cleanup() {
  [ -n "$WRITER_PID" ] && kill "$WRITER_PID" 2>/dev/null && wait "$WRITER_PID" 2>/dev/null || true
  if [ "${KEEP_STACK:-0}" != 1 ]; then "$STACK" down "$STATE"; fi
}
trap cleanup EXIT
step "building and starting the local stack"
(cd "$ROOT" && cargo build -q --bins --features catalyst-dr/local-engine)
"$STACK" up "$STATE"
# shellcheck disable=SC1091
source "$STATE/env"
seed() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$STATE/seed.json" "$1"; }
bin="$ROOT/target/debug"
prod="$CATALYST_DR_PG_URL dbname=catalyst_auth"

step "creating the production database (${DRILL_USERS:-20000} users, ${DRILL_DELIVERIES:-100000} webhook deliveries)"
"$bin/catalyst-datagen" --database-url "$prod" --seed 2026 --users "${DRILL_USERS:-20000}" \
  --deliveries "${DRILL_DELIVERIES:-100000}" --subscriptions 200 --dead-letter-share 0.02 >"$STATE/datagen.json"
step "taking the base backup (the local engine's automated backup)"
curl -sf -X POST "$LAMBDA_ENDPOINT_URL/2015-03-31/functions/snapshot-trigger/invocations" \
  -d "{\"action\": \"base-backup\", \"scheduled_time\": \"$(date -u +%Y-%m-%dT%H:%M:%SZ)\"}" >/dev/null
step "live traffic keeps writing to production (database and Redis queues) during the drill"
"$bin/catalyst-writer" --database-url "$prod" --redis-url "$CATALYST_DR_REDIS_URL" --rate 40 >"$STATE/writer.json" &
WRITER_PID=$!
sleep 2

drill_id="local-$(date -u +%Y%m%d-%H%M%S)"
step "running the quarterly drill $drill_id"
set +e
# The definition with the template's DefinitionSubstitutions, as deployed.
mapfile -d '' machine < <("$CATALYST_DR_PYTHON" "$CATALYST_DR_DEPLOYED" runner-args --machine QuarterlyDrillStateMachine \
  --config-env "$CATALYST_DR_CONFIG_ENV" --seed "$STATE/seed.json")
[ ${#machine[@]} -gt 0 ] || { echo "infra/local/deployed.py could not resolve the template" >&2; exit 1; }
"$CATALYST_DR_NODE" "$CATALYST_DR_SFN_RUNNER" "${machine[@]}" \
  --fast --name "$drill_id" --input "{\"drill_id\": \"$drill_id\"${DRILL_BASELINE_PATH:+, \"baseline_path\": \"$DRILL_BASELINE_PATH\"}}" >"$STATE/execution.json"
status=$?
set -e

out="$ROOT/drill-reports/$drill_id"
mkdir -p "$out"
"$ROOT/.local/venv/bin/python" - "$STATE/seed.json" "$drill_id" "$out" <<'PY'
import json, os, sys, boto3
seed, drill, out = json.load(open(sys.argv[1])), sys.argv[2], sys.argv[3]
s3 = boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"])
for name in ("report.json", "report.md", "report.html"):
    try:
        s3.download_file(seed["bucket"], f"drills/{drill}/{name}", os.path.join(out, name))
    except Exception as err:
        print(f"{name}: not written ({err})", file=sys.stderr)
PY
if [ -f "$out/report.json" ]; then
  python3 - "$out/report.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
s, v, plan = r["summary"], r.get("validation") or {}, r.get("replay_plan") or {}
print(f"\ndrill {s['drill_id']}: {'PASSED' if s['passed'] else 'FAILED'}" + (f" — {s['failure']}" if s.get("failure") else ""))
rpo, rto = v.get("rpo") or {}, v.get("rto") or {}
if rpo: print(f"  RPO: {rpo['seconds']:.1f} s (objective {rpo['objective_seconds']} s); restore point {v.get('restore_point')} for baseline {v.get('baseline_instant')}")
if rto: print(f"  RTO: {rto['seconds']:.1f} s from drill start to smoke tests passed (objective {rto['objective_seconds']} s)")
for t in v.get("tables", []):
    print(f"  parity {t['table']:<22} {t['baseline_rows']:>8} baseline rows, {t['restored_rows']:>8} restored, checksum {'match' if t['checksum_matches'] else 'DIFFERS'}")
if v.get("queue"): print(f"  staging queue: {v['queue']['detail']}")
c = v.get("cache")
if c:
    p = c["parity"]
    print(f"  cache snapshot {c['snapshot_id']} restored as {c['staging_target_id']}: {p['restored_persistent_keys']} of {p['baseline_persistent_keys']} persistent keys ({'state read at the snapshot instant' if c['exact_baseline'] else 'state read before the snapshot'})")
    for q in p["patterns"]:
        print(f"  cache parity {q['pattern']:<32} {q['baseline_keys']:>4} keys, length {q['baseline_length']:>6} baseline, {q['restored_length']:>6} restored: {'match' if q['passed'] else 'DIFFERS ' + '; '.join(q['differences'])}")
    print(f"  staging cache: {c['flush_status']}, {c['queue_keys_after_flush']} queue keys left")
elif v:
    print("  cache: left out (CACHE_ENGINE is none)")
if plan: print(f"  replay plan on staging (dry run): {plan.get('deliveries')} dead-lettered deliveries, {plan.get('endpoints')} endpoints")
PY
  echo "  report: $out/report.html (also report.md, report.json)"
else
  echo "the drill wrote no report:" >&2
  cat "$STATE/execution.json" >&2
fi
exit $status
