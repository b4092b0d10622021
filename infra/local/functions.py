"""The functions as deployed, on the local stack: each under its own role, with its own environment.

    functions.py serve --config-env dev --state STATE --port PORT

For each function of infra/template.yaml (resolved by deployed.py for the samconfig environment):
its execution role is created on the local AWS endpoint from the template's policy documents and
assumed, and the function runs under `cargo lambda watch` with the role's credentials and the
environment the template gives it (deployed.py env), nothing else. One Lambda Invoke API on PORT
routes `/2015-03-31/functions/<name>/invocations` to the function's own watch process, as Lambda
routes by function name. SIGTERM stops everything.

What the local AWS endpoint (moto) enforces, and what it does not:
- every call is authenticated, and its action must be allowed by the caller's policies;
- resources are matched for S3 (bucket and object ARNs) and SQS (queue ARNs) only: moto checks
  every other service against "*", so for those the local policy keeps the template's actions
  with `Resource: "*"` (check_policies.py evaluates the template's resources and conditions);
- conditions (`aws:ResourceTag`, `aws:RequestTag`, `rds:db-tag`, ...) are not evaluated, which
  makes the local check more permissive there, never less: an Allow's conditions count as met
  and a conditional Deny is left out (check_policies.py covers them);
- the trust policy names the local administrator instead of lambda.amazonaws.com, which moto's
  AssumeRole check cannot evaluate.
"""

import argparse
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote

import boto3

import deployed

ROOT = deployed.ROOT
# The services whose resources moto matches against the policy's Resource.
RESOURCE_CHECKED = {"s3", "sqs"}
SESSION_SECONDS = 43200


def aws_client(service):
    return boto3.client(service, endpoint_url=os.environ["AWS_ENDPOINT_URL"], region_name=deployed.REGION)


def local_policy(document):
    """The policy moto can enforce: resources kept where moto matches them, `*` elsewhere."""
    statements = document["Statement"]
    statements = statements if isinstance(statements, list) else [statements]
    out = []
    for statement in statements:
        # moto would apply a conditional Deny unconditionally (it evaluates no condition).
        if statement["Effect"] == "Deny" and "Condition" in statement:
            continue
        statement = dict(statement)
        actions = statement.get("Action", [])
        actions = actions if isinstance(actions, list) else [actions]
        if not actions or not all(a.split(":", 1)[0] in RESOURCE_CHECKED for a in actions):
            statement["Resource"] = "*"
        out.append(statement)
    return {"Version": document.get("Version", "2012-10-17"), "Statement": out}


def role_credentials(iam, sts, role):
    """Creates (or updates) the role on the local endpoint and returns its session credentials."""
    admin = sts.get_caller_identity()["Arn"]
    trust = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": {"AWS": admin}, "Action": "sts:AssumeRole"}],
    }
    try:
        iam.create_role(
            RoleName=role["role_name"],
            AssumeRolePolicyDocument=json.dumps(trust),
            MaxSessionDuration=SESSION_SECONDS,
        )
    except iam.exceptions.EntityAlreadyExistsException:
        pass
    existing = set(iam.list_role_policies(RoleName=role["role_name"])["PolicyNames"])
    for name in existing - set(role["policies"]):
        iam.delete_role_policy(RoleName=role["role_name"], PolicyName=name)
    for name, document in role["policies"].items():
        iam.put_role_policy(
            RoleName=role["role_name"], PolicyName=name, PolicyDocument=json.dumps(local_policy(document))
        )
    for arn in role["managed"]:
        iam.attach_role_policy(RoleName=role["role_name"], PolicyArn=arn)
    arn = iam.get_role(RoleName=role["role_name"])["Role"]["Arn"]
    credentials = sts.assume_role(
        RoleArn=arn, RoleSessionName=role["role_name"][:64], DurationSeconds=SESSION_SECONDS
    )["Credentials"]
    return {
        "AWS_ACCESS_KEY_ID": credentials["AccessKeyId"],
        "AWS_SECRET_ACCESS_KEY": credentials["SecretAccessKey"],
        "AWS_SESSION_TOKEN": credentials["SessionToken"],
    }


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_env_file(path, variables):
    lines = []
    for key, value in sorted(variables.items()):
        # Single quotes keep the value literal (cargo lambda's parser refuses some unquoted
        # values, such as session tokens).
        if "\n" in value or "'" in value:
            raise deployed.TemplateError(f"{key} holds a newline or a single quote, which the env file cannot carry")
        lines.append(f"{key}='{value}'\n")
    path.write_text("".join(lines))


def watch_environment():
    """The environment of `cargo lambda watch`: without cargo's build variables (a `cargo test`
    parent would make the watch's `cargo run` rebuild) and without the caller's AWS identity.
    CARGO_INCREMENTAL stays: the functions were built with it as it is (test.sh turns it off for
    a first build), and a different setting builds them again."""
    env = {}
    for key, value in os.environ.items():
        if (key.startswith("CARGO") and key not in {"CARGO_HOME", "CARGO_INCREMENTAL"}) or key.startswith("RUSTC"):
            continue
        if key in {"OUT_DIR", "LD_LIBRARY_PATH"} or key.startswith("AWS_"):
            continue
        env[key] = value
    return env


class Router(BaseHTTPRequestHandler):
    """The Lambda Invoke API: forwards each invocation to its function's watch process."""

    routes = {}
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):
        pass

    def forward(self):
        parts = self.path.split("?", 1)[0].split("/")
        # /2015-03-31/functions/<name or ARN>/invocations
        if len(parts) < 5 or parts[2] != "functions":
            return self.answer(404, {"Type": "User", "message": f"no such API: {self.path}"}, "ResourceNotFoundException")
        name = unquote(parts[3]).rsplit(":function:", 1)[-1].split(":", 1)[0]
        port = self.routes.get(name)
        if port is None:
            return self.answer(404, {"Type": "User", "message": f"Function not found: {name}"}, "ResourceNotFoundException")
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=None)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in {"host", "connection"}}
        connection.request(self.command, self.path, body=body, headers=headers)
        response = connection.getresponse()
        payload = response.read()
        self.send_response(response.status)
        for key, value in response.getheaders():
            if key.lower() not in {"transfer-encoding", "connection", "content-length"}:
                self.send_header(key, value)
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)
        connection.close()

    def answer(self, status, document, error_type):
        payload = json.dumps(document).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("x-amzn-errortype", error_type)
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def do_GET(self):
        if self.path == "/":
            return self.answer(200, {"functions": sorted(self.routes)}, "")
        self.forward()

    do_POST = forward


def serve(args):
    seed = json.loads((Path(args.state) / "seed.json").read_text())
    stack_name, overrides = deployed.samconfig_parameters(args.config_env)
    parameters = {**overrides, **deployed.site_parameters(args.config_env, seed)}
    resolver = deployed.Resolver(deployed.load_template(), parameters, stack_name, seed)
    iam, sts = aws_client("iam"), aws_client("sts")

    directory = Path(args.state) / "functions" / args.config_env
    directory.mkdir(parents=True, exist_ok=True)
    common = {
        "AWS_ENDPOINT_URL": os.environ["AWS_ENDPOINT_URL"],
        "AWS_REGION": deployed.REGION,
        "AWS_EC2_METADATA_DISABLED": "true",
        "S3_FORCE_PATH_STYLE": "true",
    }
    cargo_lambda = Path(sys.executable).with_name("cargo-lambda")
    children, routes = [], {}

    def signal_group(child, number):
        try:
            os.killpg(child.pid, number)
        except ProcessLookupError:
            pass

    def stop(*_):
        for child in children:
            signal_group(child, signal.SIGTERM)
        for child in children:
            try:
                child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                signal_group(child, signal.SIGKILL)
        os._exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for binary, role in resolver.roles().items():
        variables = {**common, **role_credentials(iam, sts, role)}
        variables.update(deployed.function_env(resolver, seed, args.state, binary))
        env_file = directory / f"{binary}.env"
        write_env_file(env_file, variables)
        port = free_port()
        log = open(directory / f"{binary}.log", "w")
        children.append(
            subprocess.Popen(
                [str(cargo_lambda), "lambda", "watch", "--quiet", "-A", "127.0.0.1", "-P", str(port),
                 "--env-file", str(env_file), "--ignore-changes", "-p", binary,
                 # The local engine stands in for RDS here; deployed builds leave it out.
                 "--features", "catalyst-dr/local-engine"],
                cwd=ROOT, env=watch_environment(), stdout=log, stderr=log, start_new_session=True,
            )
        )
        routes[binary] = port
    deadline = time.monotonic() + 120
    for binary, port in routes.items():
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or any(c.poll() is not None for c in children):
                    print(f"cargo lambda watch for {binary} did not start (see {directory}/{binary}.log)", file=sys.stderr)
                    stop()
                time.sleep(0.2)
    Router.routes = routes
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Router)
    server.daemon_threads = True
    print(json.dumps({"port": args.port, "functions": routes}), flush=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    while all(child.poll() is None for child in children):
        time.sleep(1)
    print("a function's watch process exited; stopping", file=sys.stderr)
    stop()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["serve"])
    parser.add_argument("--config-env", default="dev", help="samconfig.toml environment (dev, prod)")
    parser.add_argument("--state", required=True, help="the stack's state directory")
    parser.add_argument("--port", type=int, required=True, help="the Lambda Invoke API's port")
    args = parser.parse_args(argv)
    try:
        serve(args)
    except deployed.TemplateError as err:
        print(f"functions.py ({args.config_env}): {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
