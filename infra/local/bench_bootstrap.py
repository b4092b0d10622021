"""Each function's release bootstrap: its size, and its cold start under a Lambda Runtime API on
loopback, beside the same function built with the default release profile.

    bench_bootstrap.py --state STATE [--rounds 5]

Expects both builds (`infra/local/bench-bootstrap.sh` makes them): target/release/<binary> (the
profile that deploys) and target/release-default/<binary> (cargo's default release profile,
stripped). Each round starts the bootstrap as Lambda would, with the function's environment as the
local stack runs it (STATE/functions/<env>/<binary>.env: the template's variables and its role's
credentials) minus what only the local engine reads, so the configuration is the deployed one, and
hands it one sample event. It measures, from the exec:

- init: until the bootstrap asks for its first event (configuration read, SDK clients built);
- first response: until it answers that event (the calls the event makes, against the local
  endpoint, PostgreSQL and Redis).

Prints the median of each beside the baseline's and their ratio, and exits 1 when a deployed
bootstrap exceeds the targets (12 MB, 30 ms init).
"""

import argparse
import http.server
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# One cheap, side-effect-free sample event per function (events/), each making real calls.
EVENTS = {
    "snapshot-trigger": {"action": "list-backups", "limit": 10},
    "pitr-restore": {"action": "window", "instant": "2026-11-26T03:00:00Z"},
    "dead-letter-replay": {"action": "plan", "filter": {"window_hours": 24}},
    "drill-validator": {"action": "list-drills", "limit": 10},
}
MAX_BYTES = 12 * 1000 * 1000
MAX_INIT_MS = 30.0


class RuntimeApi(http.server.BaseHTTPRequestHandler):
    """The three calls a bootstrap makes: next event, its response, an init error."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_GET(self):
        run = self.server.run
        if run["next_at"] is not None:
            # A second /next: the first invocation is over; hold the bootstrap until it is killed.
            time.sleep(3600)
            return
        run["next_at"] = time.perf_counter()
        body = json.dumps(run["event"]).encode()
        self.send_response(200)
        for name, value in {
            "Content-Type": "application/json",
            "Content-Length": str(len(body)),
            "Lambda-Runtime-Aws-Request-Id": "bench-1",
            "Lambda-Runtime-Deadline-Ms": str(int(time.time() * 1000) + 900_000),
            "Lambda-Runtime-Invoked-Function-Arn": f"arn:aws:lambda:us-east-1:123456789012:function:{run['binary']}",
            "Lambda-Runtime-Trace-Id": "Root=1-00000000-000000000000000000000000",
        }.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        run = self.server.run
        length = int(self.headers.get("Content-Length", 0))
        payload = self.rfile.read(length)
        run["done_at"] = time.perf_counter()
        run["outcome"] = ("error" if self.path.endswith("/error") else "response", payload[:300].decode(errors="replace"))
        self.send_response(202)
        self.send_header("Content-Length", "0")
        self.end_headers()
        run["done"].set()


def function_env(state, binary):
    """The function's environment as the local stack runs it, without the local engine's."""
    env_file = next(Path(state, "functions").glob(f"*/{binary}.env"))
    env = {}
    for line in env_file.read_text().splitlines():
        key, _, value = line.partition("=")
        env[key] = value[1:-1] if value.startswith("'") else value
    env = {k: v for k, v in env.items() if not k.startswith("LOCAL_")}
    if env.get("RESTORE_ENGINE") == "local":
        env["RESTORE_ENGINE"] = "rds"
        # The template's RDS placement; moto answers the calls the sample event makes.
        env.setdefault("STAGING_SUBNET_GROUP", "catalyst-dr-staging-subnets")
        env.setdefault("STAGING_SECURITY_GROUP_IDS", "sg-00000000")
    if env.get("CACHE_ENGINE") == "local":
        # A deployed build has no local cache engine either: the template's ElastiCache placement.
        env["CACHE_ENGINE"] = "elasticache"
        env.setdefault("STAGING_CACHE_SUBNET_GROUP", "catalyst-dr-staging-cache-subnets")
        env.setdefault("STAGING_CACHE_SECURITY_GROUP_IDS", "sg-00000000")
    return env


def cold_start(bootstrap, binary, env):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), RuntimeApi)
    server.daemon_threads = True
    server.run = {"event": EVENTS[binary], "binary": binary, "next_at": None, "done_at": None, "done": threading.Event()}
    threading.Thread(target=server.serve_forever, daemon=True).start()
    lambda_env = {
        "PATH": os.environ["PATH"],
        **env,
        "AWS_LAMBDA_RUNTIME_API": f"127.0.0.1:{server.server_address[1]}",
        "AWS_LAMBDA_FUNCTION_NAME": binary,
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "1024",
        "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{binary}",
        "AWS_LAMBDA_LOG_STREAM_NAME": "bench",
        "RUST_LOG": "warn",
    }
    started = time.perf_counter()
    process = subprocess.Popen([str(bootstrap)], env=lambda_env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        if not server.run["done"].wait(60):
            raise RuntimeError(f"{bootstrap} gave no answer within 60 s")
    finally:
        process.kill()
        stderr = process.communicate()[1].decode(errors="replace")
        server.shutdown()
    run = server.run
    if run["next_at"] is None:
        raise RuntimeError(f"{bootstrap} never asked for an event: {stderr[-500:]}")
    return (run["next_at"] - started) * 1000, (run["done_at"] - started) * 1000, run["outcome"]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--state", required=True, help="the local stack's state directory")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--profiles", default="release-default,release", help="the builds to measure, baseline first")
    args = parser.parse_args(argv)
    failed = False
    print(f"{'function':<20} {'profile':<16} {'bytes':>11} {'init ms':>8} {'first response ms':>18}  answer")
    for binary in EVENTS:
        env = function_env(args.state, binary)
        figures = {}
        profiles = args.profiles.split(",")
        for profile in profiles:
            bootstrap = ROOT / "target" / profile / binary
            size = bootstrap.stat().st_size
            rounds = [cold_start(bootstrap, binary, env) for _ in range(args.rounds)]
            init = statistics.median(r[0] for r in rounds)
            first = statistics.median(r[1] for r in rounds)
            kind, text = rounds[-1][2]
            figures[profile] = (size, init, first)
            print(f"{binary:<20} {profile:<16} {size:>11,} {init:>8.1f} {first:>18.1f}  {kind}: {text[:70]}")
        size, init, first = figures[profiles[-1]]
        if len(profiles) > 1:
            base_size, base_init, base_first = figures[profiles[0]]
            print(f"{'':<20} {'ratio':<16} {size / base_size:>11.2f} {init / base_init:>8.2f} {first / base_first:>18.2f}")
        if size > MAX_BYTES or init > MAX_INIT_MS:
            print(f"{binary}: over the targets ({MAX_BYTES:,} bytes, {MAX_INIT_MS} ms init)")
            failed = True
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
