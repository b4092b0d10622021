#!/usr/bin/env bash
# The local stack: PostgreSQL (its own cluster, WAL archiving on), Redis (AOF on), a local AWS
# endpoint (moto, enforcing IAM) and the Lambda Invoke API for the workspace's functions (each under
# its role, by infra/local/functions.py),
# all on free loopback ports under one state directory.
#
#   stack.sh install          install what is missing (Debian packages, .local/venv, node_modules)
#   stack.sh build            build the functions as the stack runs them (up does too)
#   stack.sh up [STATE]       start everything, seed the local AWS resources, write STATE/env
#   stack.sh down [STATE]     stop everything started under STATE and remove it
#
# STATE defaults to infra/local/state. `source STATE/env` gives the variables the functions,
# the tests and the scripts use.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
LOCAL_DIR="$ROOT/infra/local"
VENV="$ROOT/.local/venv"
NODE_BIN="$LOCAL_DIR/node_modules/.bin"
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}

log() { printf '[stack] %s\n' "$*" >&2; }

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# PostgreSQL refuses to run as root: run its tools as the postgres user when we are root.
as_pg() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

install() {
  local missing=()
  [ -x "$PG_BIN/initdb" ] || missing+=(postgresql-15 postgresql-client-15)
  command -v redis-server >/dev/null || missing+=(redis-server)
  python3 -c 'import venv, ensurepip' 2>/dev/null || missing+=(python3-venv)
  command -v npm >/dev/null || missing+=(nodejs npm)
  # The drill report's screenshot test renders it in headless Chromium.
  command -v chromium >/dev/null || missing+=(chromium)
  if [ ${#missing[@]} -gt 0 ]; then
    log "installing Debian packages: ${missing[*]}"
    local sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
  if [ ! -x "$VENV/bin/moto_server" ] || ! cmp -s "$LOCAL_DIR/requirements.lock" "$VENV/.installed.lock"; then
    log "installing the Python tools into .local/venv"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q --disable-pip-version-check -r "$LOCAL_DIR/requirements.lock"
    cp "$LOCAL_DIR/requirements.lock" "$VENV/.installed.lock"
  fi
  # checkov has its own venv: its pins conflict with moto's and cfn-lint's.
  local checkov_venv="$ROOT/.local/checkov-venv"
  if [ ! -x "$checkov_venv/bin/checkov" ] || ! cmp -s "$LOCAL_DIR/checkov-requirements.lock" "$checkov_venv/.installed.lock"; then
    log "installing checkov into .local/checkov-venv"
    python3 -m venv "$checkov_venv"
    "$checkov_venv/bin/pip" install -q --disable-pip-version-check -r "$LOCAL_DIR/checkov-requirements.lock"
    cp "$LOCAL_DIR/checkov-requirements.lock" "$checkov_venv/.installed.lock"
  fi
  if [ ! -x "$NODE_BIN/node" ] || ! cmp -s "$LOCAL_DIR/package-lock.json" "$LOCAL_DIR/node_modules/.installed.lock"; then
    log "installing the Node tools into infra/local/node_modules"
    (cd "$LOCAL_DIR" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
    cp "$LOCAL_DIR/package-lock.json" "$LOCAL_DIR/node_modules/.installed.lock"
  fi
}

# The workspace's binaries, and each function as a package of its own (its own features, as it
# is deployed), which is how `cargo lambda watch` builds it at its first invocation: built now,
# so no first invocation outlasts its timeout compiling.
build() {
  (cd "$ROOT" && cargo build -q --bins --features catalyst-dr/local-engine)
  local function
  for function in snapshot-trigger pitr-restore dead-letter-replay drill-validator; do
    (cd "$ROOT" && cargo build -q -p "$function" --features catalyst-dr/local-engine)
  done
}

wait_for() { # wait_for SECONDS DESCRIPTION COMMAND...
  local deadline=$((SECONDS + $1)) what=$2; shift 2
  until "$@" >/dev/null 2>&1; do
    if [ $SECONDS -ge $deadline ]; then log "timed out waiting for $what"; return 1; fi
    sleep 0.2
  done
}

up() {
  local state=${1:-$LOCAL_DIR/state}
  if [ -f "$state/env" ]; then log "a stack is already up under $state (run: $0 down $state)"; return 1; fi
  mkdir -p "$state"
  state=$(cd "$state" && pwd)
  chmod 755 "$state"
  # A half-started stack is stopped again rather than left running.
  trap 'log "start-up failed; stopping what was started"; down "$state"' ERR

  local moto_port pg_port redis_port lambda_port
  moto_port=$(free_port); pg_port=$(free_port); redis_port=$(free_port); lambda_port=$(free_port)

  log "moto on 127.0.0.1:$moto_port"
  # The AWS managed policies exist, as in an account (the roles attach AWSLambdaVPCAccessExecutionRole).
  MOTO_IAM_LOAD_MANAGED_POLICIES=true "$VENV/bin/python" "$LOCAL_DIR/moto_server.py" -H 127.0.0.1 -p "$moto_port" >"$state/moto.log" 2>&1 &
  echo $! >"$state/moto.pid"

  log "PostgreSQL on 127.0.0.1:$pg_port (WAL archive in $state/wal-archive)"
  mkdir -p "$state/pg" "$state/wal-archive" "$state/pg-run" "$state/base-backups" "$state/staging"
  local run_as=""
  if [ "$(id -u)" = 0 ]; then
    run_as=postgres
    chown -R postgres:postgres "$state/pg" "$state/wal-archive" "$state/pg-run" "$state/base-backups" "$state/staging"
  fi
  # Password authentication over TCP, as on RDS: credential rotation is exercised for real.
  local pg_password=catalyst-local-superuser
  printf '%s\n' "$pg_password" >"$state/pg-run/pwfile"
  [ "$(id -u)" = 0 ] && chown postgres:postgres "$state/pg-run/pwfile"
  as_pg "$PG_BIN/initdb" -D "$state/pg/data" -U postgres --pwfile="$state/pg-run/pwfile" \
    --auth-local=trust --auth-host=scram-sha-256 --encoding=UTF8 --locale=C.UTF-8 >"$state/initdb.log"
  rm -f "$state/pg-run/pwfile"
  cat >>"$state/pg/data/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $pg_port
unix_socket_directories = '$state/pg-run'
wal_level = replica
archive_mode = on
archive_command = 'test ! -f $state/wal-archive/%f && cp %p $state/wal-archive/%f'
max_wal_senders = 10
fsync = off
CONF
  as_pg "$PG_BIN/pg_ctl" -D "$state/pg/data" -l "$state/pg/server.log" -w start >/dev/null

  log "Redis on 127.0.0.1:$redis_port"
  mkdir -p "$state/redis"
  redis-server --port "$redis_port" --bind 127.0.0.1 --daemonize yes --pidfile "$state/redis/redis.pid" \
    --dir "$state/redis" --appendonly yes --logfile "$state/redis/redis.log"

  wait_for 30 moto curl -sf "http://127.0.0.1:$moto_port/moto-api/"
  wait_for 30 redis redis-cli -p "$redis_port" ping

  cat >"$state/env" <<ENV
export CATALYST_DR_STATE='$state'
export AWS_ENDPOINT_URL='http://127.0.0.1:$moto_port'
export AWS_REGION=us-east-1
export AWS_DEFAULT_REGION=us-east-1
export AWS_EC2_METADATA_DISABLED=true
export S3_FORCE_PATH_STYLE=true
export CATALYST_DR_PG_URL='host=127.0.0.1 port=$pg_port user=postgres password=$pg_password dbname=postgres'
export CATALYST_DR_PG_HOST=127.0.0.1
export CATALYST_DR_PG_PORT=$pg_port
export CATALYST_DR_PG_PASSWORD=$pg_password
export CATALYST_DR_PG_BIN='$PG_BIN'
export CATALYST_DR_PG_RUN_AS='$run_as'
export CATALYST_DR_PG_DATA='$state/pg/data'
export CATALYST_DR_WAL_ARCHIVE='$state/wal-archive'
export CATALYST_DR_REDIS_URL='redis://127.0.0.1:$redis_port'
export LAMBDA_ENDPOINT_URL='http://127.0.0.1:$lambda_port'
export CATALYST_DR_NODE='$NODE_BIN/node'
export CATALYST_DR_SFN_RUNNER='$LOCAL_DIR/run-state-machine.mjs'
export CATALYST_DR_PYTHON='$VENV/bin/python'
export CATALYST_DR_DEPLOYED='$LOCAL_DIR/deployed.py'
ENV
  # shellcheck disable=SC1091
  source "$state/env"

  # The "production" Catalyst Auth database: its tables (empty; the main job and tests fill what
  # they need) and catalyst-dr's database roles, set up as docs/database-roles.md tells an
  # operator to. The roles log in with a local password; seed_aws.py stores the backup's and the
  # drill's in those functions' own secrets, the replay test the replay's.
  psql "$CATALYST_DR_PG_URL" -q -c "CREATE DATABASE catalyst_auth" >/dev/null
  psql "$CATALYST_DR_PG_URL dbname=catalyst_auth" -q -v ON_ERROR_STOP=1 \
    -f "$ROOT/shared/sql/catalyst-auth-schema.sql" -f "$ROOT/shared/sql/database-roles.sql" >/dev/null
  export CATALYST_DR_LOCAL_ROLE_PASSWORD=catalyst-local-role
  psql "$CATALYST_DR_PG_URL" -q -v ON_ERROR_STOP=1 \
    -c "ALTER ROLE catalyst_dr_backup LOGIN PASSWORD '$CATALYST_DR_LOCAL_ROLE_PASSWORD'" \
    -c "ALTER ROLE catalyst_dr_drill LOGIN PASSWORD '$CATALYST_DR_LOCAL_ROLE_PASSWORD'" \
    -c "ALTER ROLE catalyst_dr_replay LOGIN PASSWORD '$CATALYST_DR_LOCAL_ROLE_PASSWORD'" >/dev/null
  echo "export CATALYST_DR_LOCAL_ROLE_PASSWORD='$CATALYST_DR_LOCAL_ROLE_PASSWORD'" >>"$state/env"

  log "seeding the local AWS resources"
  AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test "$VENV/bin/python" "$LOCAL_DIR/seed_aws.py" >"$state/seed.json"
  # From here on the endpoint enforces IAM: every call needs a known identity whose policies
  # allow it. The scripts and tests act as the account's administrator, the functions under
  # their own roles.
  "$VENV/bin/python" - "$state/seed.json" >>"$state/env" <<'PY'
import json, sys
seed = json.load(open(sys.argv[1]))
print(f"export AWS_ACCESS_KEY_ID='{seed['admin_access_key_id']}'")
print(f"export AWS_SECRET_ACCESS_KEY='{seed['admin_secret_access_key']}'")
PY
  curl -sf -X POST -H "Content-Type: text/plain" --data-binary 0 "$AWS_ENDPOINT_URL/moto-api/reset-auth" >/dev/null
  echo "export CATALYST_DR_CONFIG_ENV='${CATALYST_DR_CONFIG_ENV:-dev}'" >>"$state/env"
  # shellcheck disable=SC1091
  source "$state/env"

  log "building the functions"
  build
  # Each function under its own role with the environment the template gives it (resolved for
  # the samconfig environment CATALYST_DR_CONFIG_ENV, default dev), behind one Invoke API.
  log "Lambda Invoke API (cargo lambda watch per function) on 127.0.0.1:$lambda_port"
  (cd "$LOCAL_DIR" && exec "$VENV/bin/python" functions.py serve --config-env "$CATALYST_DR_CONFIG_ENV" \
      --state "$state" --port "$lambda_port") >"$state/lambda.log" 2>&1 &
  echo $! >"$state/lambda.pid"
  wait_for 180 "the functions" curl -sf -o /dev/null "http://127.0.0.1:$lambda_port/"
  trap - ERR
  log "stack up; source $state/env"
}

stop_pid() { # stop_pid PIDFILE [SIGNAL]
  local file=$1 signal=${2:-TERM}
  [ -f "$file" ] || return 0
  local pid; pid=$(cat "$file")
  if kill -0 "$pid" 2>/dev/null; then
    pkill "-$signal" -P "$pid" 2>/dev/null || true
    kill "-$signal" "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$file"
}

down() {
  local state=${1:-$LOCAL_DIR/state}
  [ -d "$state" ] || return 0
  # Everything at once: the Invoke API and moto; the stack's Redis and the staging caches the
  # local cache engine started, killed, as their files go with the state directory (a graceful
  # stop writes them out first); the stack's PostgreSQL and the clusters the functions and the
  # tests restored under the state directory.
  stop_pid "$state/lambda.pid" &
  stop_pid "$state/moto.pid" &
  find "$state" -name redis.pid 2>/dev/null | {
    while read -r pid_file; do stop_pid "$pid_file" KILL & done
    wait
  }
  find "$state" -name postmaster.pid 2>/dev/null | {
    while read -r pid_file; do
      as_pg "$PG_BIN/pg_ctl" -D "$(dirname "$pid_file")" -m immediate -w stop >/dev/null 2>&1 &
    done
    wait
  }
  wait
  rm -rf "$state"
  log "stack down"
}

case "${1:-}" in
  install) install ;;
  build) build ;;
  up) up "${2:-}" ;;
  down) down "${2:-}" ;;
  *) echo "usage: $0 install | build | up [STATE] | down [STATE]" >&2; exit 2 ;;
esac
