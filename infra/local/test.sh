#!/usr/bin/env bash
# The whole test suite: installs what is missing, brings up the local stack, runs every Rust test
# (unit, request-shape, integration against PostgreSQL/Redis/moto, and the state machines executed
# by the ASL interpreter against `cargo lambda watch`), lints the template and the Rust code, and
# stops the stack.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
STACK="$ROOT/infra/local/stack.sh"
STATE=$(mktemp -d /tmp/catalyst-dr-test.XXXXXX)
BUILD_LOG=$(mktemp /tmp/catalyst-dr-build.XXXXXX)
CLIPPY_LOG=$(mktemp /tmp/catalyst-dr-clippy.XXXXXX)

# A first build (a clean clone, as in CI) would write incremental caches nothing reuses.
[ -d "$ROOT/target/debug" ] || export CARGO_INCREMENTAL=0
# The builds start at once, beside the installs (which leave a core idle most of the time): the
# functions as the stack runs them, then the test binaries, then the doc tests (which need no
# stack, and whose build `--no-run` leaves out), so that `stack.sh up` and `cargo test` below find
# everything built.
setsid bash -c 'cd "$1" && "$2" build && cargo test -q --workspace --no-run && exec cargo test -q --workspace --doc' \
  _ "$ROOT" "$STACK" >"$BUILD_LOG" 2>&1 &
BUILD_PID=$!
# Clippy's check build shares no artifacts with the others. It runs at the lowest priority, in a
# target directory of its own (so its lock never holds up the builds, nor the `cargo run` of a
# function a test starts), on what CPU the builds and then the tests leave idle; its result is
# reported after the tests'. (Its session is a scheduling group of its own where the kernel
# groups by session, so the group's priority is lowered too.)
setsid bash -c 'echo 19 >/proc/self/autogroup 2>/dev/null || true
  cd "$1" && exec nice -n 19 cargo clippy --workspace --all-targets --target-dir target/clippy -- -D warnings' \
  _ "$ROOT" >"$CLIPPY_LOG" 2>&1 &
CLIPPY_PID=$!
cleanup() {
  kill -- "-$BUILD_PID" "-$CLIPPY_PID" 2>/dev/null || true
  rm -f "$BUILD_LOG" "$CLIPPY_LOG"
  "$STACK" down "$STATE"
}
trap cleanup EXIT
"$STACK" install

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
echo "== the state machines are what infra/statemachines/generate.py writes"
"$ROOT/.local/venv/bin/python" infra/statemachines/generate.py --check
echo "== building the functions and the tests"
build_status=0
wait "$BUILD_PID" || build_status=$?
cat "$BUILD_LOG"
[ "$build_status" = 0 ] || exit "$build_status"

"$STACK" up "$STATE"
# shellcheck disable=SC1091
source "$STATE/env"
echo "== cargo test"
test_status=0
cargo test --workspace --no-fail-fast -- --test-threads=4 || test_status=$?
echo "== cargo clippy --workspace --all-targets -- -D warnings"
clippy_status=0
wait "$CLIPPY_PID" || clippy_status=$?
cat "$CLIPPY_LOG"
[ "$test_status" = 0 ] || exit "$test_status"
exit "$clippy_status"
