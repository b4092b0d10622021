#!/usr/bin/env bash
# The whole test suite: installs what is missing, brings up the local stack, runs every Rust test
# (unit, request-shape, integration against PostgreSQL/Redis/moto, and the state machines executed
# by the ASL interpreter against `cargo lambda watch`), lints the template and the Rust code, and
# stops the stack.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
STACK="$ROOT/infra/local/stack.sh"
STATE=$(mktemp -d /tmp/catalyst-dr-test.XXXXXX)
CLIPPY_LOG=$(mktemp /tmp/catalyst-dr-clippy.XXXXXX)

# Clippy's check build shares no artifacts with the test build, so it runs while the tools
# install and the stack starts; its result is reported below, in its place in the order.
# (Cargo's lock on the target directory makes the stack's build wait for it.)
(cd "$ROOT" && exec cargo clippy --workspace --all-targets -- -D warnings) >"$CLIPPY_LOG" 2>&1 &
CLIPPY_PID=$!
cleanup() {
  kill "$CLIPPY_PID" 2>/dev/null || true
  rm -f "$CLIPPY_LOG"
  "$STACK" down "$STATE"
}
trap cleanup EXIT
"$STACK" install
"$STACK" up "$STATE"
# shellcheck disable=SC1091
source "$STATE/env"

cd "$ROOT"
echo "== cfn-lint infra/template.yaml (informational checks included)"
"$ROOT/.local/venv/bin/cfn-lint" --include-checks I -- infra/template.yaml
echo "== checkov infra/template.yaml (skips and their reasons: infra/local/checkov-skips.txt)"
skips=$(grep -v '^#' infra/local/checkov-skips.txt | cut -d' ' -f1 | paste -sd, -)
# Offline: no policy or guideline download (BC_SKIP_MAPPING, --skip-download).
BC_SKIP_MAPPING=TRUE "$ROOT/.local/checkov-venv/bin/checkov" -f infra/template.yaml --framework cloudformation \
  --compact --quiet --skip-download --skip-check "$skips"
echo "== cargo fmt --all --check"
cargo fmt --all --check
echo "== cargo clippy --workspace --all-targets -- -D warnings"
clippy_status=0
wait "$CLIPPY_PID" || clippy_status=$?
cat "$CLIPPY_LOG"
[ "$clippy_status" = 0 ] || exit "$clippy_status"
echo "== the state machines are what infra/statemachines/generate.py writes"
"$ROOT/.local/venv/bin/python" infra/statemachines/generate.py --check
echo "== cargo test"
cargo test --workspace --no-fail-fast -- --test-threads=4
