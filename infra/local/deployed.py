"""What a deploy of infra/template.yaml configures, resolved for the local stack.

The template is resolved with one samconfig.toml environment's parameter_overrides plus the local
site's parameters (infra/local/site-parameters.json: what an operator adds for their account, here
pointing at the resources seed_aws.py creates). `!Ref`, `!Sub`, `!If`, `!Join`, `!GetAtt`,
conditions and the template's Rules are evaluated as CloudFormation would; a reference to a
resource with no local counterpart is an error, never a guess.

    deployed.py env --function snapshot-trigger --config-env dev --seed STATE/seed.json [--state STATE]
        one function's environment (KEY=VALUE lines) for `cargo lambda watch --env-file`
    deployed.py roles --config-env dev --seed STATE/seed.json
        each function's execution role: name, inline policy documents, managed policy ARNs
    deployed.py state-machines --config-env dev --seed STATE/seed.json
        each state machine's definition file and DefinitionSubstitutions, as JSON
    deployed.py network --config-env dev --seed STATE/seed.json
        each function's security group, where its egress rules let it go and who admits it
    deployed.py schedules --config-env dev --seed STATE/seed.json
        each AWS::Scheduler::Schedule: its target state machine and Target.Input, as JSON
    deployed.py runner-args --machine NightlyBackupStateMachine --config-env dev --seed STATE/seed.json
        run-state-machine.mjs's --definition and --sub arguments for one state machine,
        NUL-separated (for `mapfile -d ''`)

Locally the functions differ from AWS only in what LOCAL_OVERRIDES, LOCAL_REPLACEMENTS,
LOCAL_REMOVALS and local_additions list, each with its reason.
"""

import argparse
import json
import re
import shlex
import sys
import tomllib
from pathlib import Path

from cfnlint.decode import decode_str

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "infra" / "template.yaml"
SAMCONFIG = ROOT / "samconfig.toml"
SITE = ROOT / "infra" / "local" / "site-parameters.json"
REGION = "us-east-1"
ACCOUNT = "123456789012"


class NoValue:
    """AWS::NoValue: the property (or list item) disappears."""


NO_VALUE = NoValue()


class TemplateError(Exception):
    pass


# Template values the local stack cannot use as deployed, and why.
LOCAL_OVERRIDES = {
    # moto cannot restore an RDS instance to a point in time into a PostgreSQL one can connect
    # to; the local engine restores the local cluster from its base backup and WAL archive.
    "RESTORE_ENGINE": "local",
    # The local PostgreSQL listens on loopback without TLS.
    "PG_TLS": "disable",
}
# Template values replaced locally where the template sets them (variable: {deployed: local}).
LOCAL_REPLACEMENTS = {
    # moto cannot snapshot an ElastiCache cache nor restore one into a Redis one can connect to.
    # Where the template gives a function the ElastiCache cache engine (pitr-restore and
    # drill-validator, with DrillsRestoreCache), the local cache engine snapshots the local Redis
    # and restores it into a redis-server of its own, under LOCAL_CACHE_DIR; the staging cache's
    # URL still goes through StagingCacheSecret, where dead-letter-replay reads it, as in AWS.
    "CACHE_ENGINE": {"elasticache": "local"},
}
# Template values dropped locally: the RDS CA bundle is a layer file that exists only in Lambda.
LOCAL_REMOVALS = {"PG_CA_BUNDLE"}


def local_additions(seed, state):
    """Variables only the local stack sets: where the local engines and Redis live."""
    extra = {
        "LOCAL_SOURCE_ID": "catalyst-auth-local",
        # The local engine reads the source cluster directly, as RDS does; pitr-restore's role
        # reads no source secret.
        "LOCAL_SOURCE_DATABASE_URL": seed["source_database_url"],
        "DRILL_REDIS_URL": seed["redis_url"],
        # Probed endpoints run on loopback, which the SSRF guard refuses in AWS.
        "PROBE_ALLOW_CIDRS": "127.0.0.0/8,::1/128",
        # moto has no ElastiCache CopySnapshot (the export's request has a request-shape test).
        "ELASTICACHE_EXPORT": "false",
    }
    if state:
        extra.update(
            {
                "LOCAL_PG_BIN": seed["pg_bin"],
                "LOCAL_PG_RUN_AS": seed["pg_run_as"],
                "LOCAL_BASE_BACKUP_DIR": f"{state}/base-backups",
                "LOCAL_WAL_ARCHIVE_DIR": f"{state}/wal-archive",
                "LOCAL_STAGING_DIR": f"{state}/staging",
                "LOCAL_CACHE_DIR": f"{state}/cache",
            }
        )
    return extra


def load_template():
    template, matches = decode_str(TEMPLATE.read_text())
    if template is None:
        raise TemplateError(f"{TEMPLATE}: {matches}")
    return template


def samconfig_parameters(config_env):
    config = tomllib.loads(SAMCONFIG.read_text())
    if config_env not in config:
        raise TemplateError(f"samconfig.toml has no environment {config_env!r}")
    section = config[config_env]
    deploy = section.get("deploy", {}).get("parameters", {})
    stack_name = deploy.get("stack_name") or section.get("global", {}).get("parameters", {}).get("stack_name")
    overrides = {}
    for pair in shlex.split(deploy.get("parameter_overrides", "")):
        key, _, value = pair.partition("=")
        overrides[key] = value
    return stack_name, overrides


def site_parameters(config_env, seed):
    site = json.loads(SITE.read_text())
    values = {**site.get("common", {}), **site.get(config_env, {})}

    def fill(text):
        return re.sub(r"\{seed:([a-z_]+)\}", lambda m: str(seed[m.group(1)]), text)

    return {k: fill(v) for k, v in values.items() if not k.startswith("//")}


class Resolver:
    def __init__(self, template, parameters, stack_name, seed):
        self.template = template
        self.stack_name = stack_name
        self.seed = seed
        self.parameters = self._check_parameters(parameters)
        self.conditions = {}
        self._check_rules()

    # ---- parameters
    def _check_parameters(self, given):
        declared = self.template.get("Parameters", {})
        unknown = sorted(set(given) - set(declared))
        if unknown:
            raise TemplateError(f"parameters the template does not declare: {', '.join(unknown)}")
        values = {}
        for name, spec in declared.items():
            if name in given:
                value = given[name]
            elif "Default" in spec:
                value = str(spec["Default"])
            else:
                raise TemplateError(f"parameter {name} is required (no Default) and not set")
            kind = spec.get("Type", "String")
            if kind.startswith("List<") or kind == "CommaDelimitedList":
                value = [v.strip() for v in value.split(",")]
                items = value
            else:
                items = [value]
            for item in items:
                if "AllowedValues" in spec and item not in [str(v) for v in spec["AllowedValues"]]:
                    raise TemplateError(f"parameter {name}: {item!r} is not one of {spec['AllowedValues']}")
                if "AllowedPattern" in spec and not re.fullmatch(spec["AllowedPattern"], item):
                    raise TemplateError(f"parameter {name}: {item!r} does not match {spec['AllowedPattern']}")
                if kind == "Number":
                    number = float(item)
                    if "MinValue" in spec and number < float(spec["MinValue"]):
                        raise TemplateError(f"parameter {name}: {item} is below {spec['MinValue']}")
                    if "MaxValue" in spec and number > float(spec["MaxValue"]):
                        raise TemplateError(f"parameter {name}: {item} is above {spec['MaxValue']}")
            values[name] = value
        return values

    def _check_rules(self):
        for name, rule in self.template.get("Rules", {}).items():
            if "RuleCondition" in rule and not self.value(rule["RuleCondition"]):
                continue
            for assertion in rule.get("Assertions", []):
                if not self.value(assertion["Assert"]):
                    raise TemplateError(f"rule {name}: {assertion.get('AssertDescription', 'assertion failed')}")

    # ---- conditions and values
    def condition(self, name):
        if name not in self.conditions:
            self.conditions[name] = bool(self.value(self.template["Conditions"][name]))
        return self.conditions[name]

    def ref(self, name):
        pseudo = {
            "AWS::Region": REGION,
            "AWS::AccountId": ACCOUNT,
            "AWS::Partition": "aws",
            "AWS::StackName": self.stack_name,
            "AWS::URLSuffix": "amazonaws.com",
            "AWS::NoValue": NO_VALUE,
        }
        if name in pseudo:
            return pseudo[name]
        if name in self.parameters:
            return self.parameters[name]
        return self.resource(name, None)

    def resource(self, name, attribute):
        """The local counterpart of a resource (Ref when attribute is None)."""
        resources = self.template["Resources"]
        if name not in resources:
            raise TemplateError(f"reference to {name}, which is neither a parameter nor a resource")
        kind = resources[name]["Type"]
        seed = self.seed
        if kind == "AWS::Serverless::Function":
            binary = resources[name]["Metadata"]["BuildProperties"]["Binary"]
            # cargo lambda watch routes by binary name; the runner maps the ARN to it.
            arn = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{binary}"
            return {None: binary, "Arn": arn}[attribute]
        local = {
            ("BackupBucket", None): seed["bucket"],
            ("BackupBucket", "Arn"): f"arn:aws:s3:::{seed['bucket']}",
            ("AlertTopic", None): seed["alert_topic_arn"],
            ("AlertTopic", "TopicName"): seed["alert_topic_arn"].rsplit(":", 1)[1],
            ("StagingDatabaseSecret", None): seed["staging_database_secret_arn"],
            ("StagingCacheSecret", None): seed["staging_cache_secret_arn"],
        }
        if (name, attribute) in local:
            return local[(name, attribute)]
        if kind == "AWS::StepFunctions::StateMachine" or kind == "AWS::Serverless::StateMachine":
            # Its Name when the template gives one (its role's policies name it, as deployed);
            # otherwise a stand-in for the name CloudFormation generates.
            props = resources[name].get("Properties", {})
            key = "Name" if kind == "AWS::Serverless::StateMachine" else "StateMachineName"
            machine = self.value(props[key]) if key in props else f"{self.stack_name}-{name}"
            arn = f"arn:aws:states:{REGION}:{ACCOUNT}:stateMachine:{machine}"
            return {None: arn, "Name": machine}[attribute]
        # Identifiers only: nothing local calls these, the schedules' targets and the roles'
        # policies just name them.
        if kind == "AWS::KMS::Key":
            return {None: f"local-{name}", "Arn": f"arn:aws:kms:{REGION}:{ACCOUNT}:key/local-{name}"}[attribute]
        if kind == "AWS::IAM::Role":
            return {None: f"{self.stack_name}-{name}", "Arn": f"arn:aws:iam::{ACCOUNT}:role/{self.stack_name}-{name}"}[attribute]
        if kind == "AWS::SQS::Queue":
            arn = f"arn:aws:sqs:{REGION}:{ACCOUNT}:{self.stack_name}-{name}"
            return {None: f"https://sqs.{REGION}.amazonaws.com/{ACCOUNT}/{self.stack_name}-{name}", "Arn": arn}[attribute]
        what = f"{name}.{attribute}" if attribute else name
        raise TemplateError(f"{what} ({kind}) has no local counterpart in deployed.py")

    def value(self, node):
        if isinstance(node, dict) and len(node) == 1:
            (key, arg), = node.items()
            if key == "Ref":
                return self.ref(arg)
            if key == "Condition":
                return self.condition(arg)
            if key == "Fn::If":
                name, yes, no = arg
                return self.value(yes if self.condition(name) else no)
            if key == "Fn::Equals":
                a, b = (self.value(x) for x in arg)
                return a == b
            if key == "Fn::Not":
                return not self.value(arg[0])
            if key == "Fn::And":
                return all(self.value(x) for x in arg)
            if key == "Fn::Or":
                return any(self.value(x) for x in arg)
            if key == "Fn::Contains":
                haystack, needle = self.value(arg[0]), self.value(arg[1])
                return needle in haystack
            if key == "Fn::Join":
                sep, items = arg
                items = self.value(items)
                return sep.join(str(i) for i in items if i is not NO_VALUE)
            if key == "Fn::GetAtt":
                name, attribute = arg if isinstance(arg, list) else arg.split(".", 1)
                return self.resource(name, attribute)
            if key == "Fn::Sub":
                text, variables = (arg, {}) if isinstance(arg, str) else (arg[0], arg[1])
                variables = {k: self.value(v) for k, v in variables.items()}

                def sub(m):
                    token = m.group(1)
                    if token.startswith("!"):
                        return "${" + token[1:] + "}"
                    if token in variables:
                        return str(variables[token])
                    if "." in token:
                        return str(self.resource(*token.split(".", 1)))
                    value = self.ref(token)
                    return ",".join(value) if isinstance(value, list) else str(value)

                return re.sub(r"\$\{([^}]+)\}", sub, text)
            if key.startswith("Fn::"):
                raise TemplateError(f"{key} is not supported by deployed.py")
        if isinstance(node, dict):
            out = {k: self.value(v) for k, v in node.items()}
            return {k: v for k, v in out.items() if v is not NO_VALUE}
        if isinstance(node, list):
            return [v for v in (self.value(x) for x in node) if v is not NO_VALUE]
        if isinstance(node, (bool, int, float)):
            return node
        return str(node)

    def deployed(self, kind):
        """(logical id, resource) of each resource of `kind` that the conditions deploy."""
        for name, resource in self.template["Resources"].items():
            if resource["Type"] != kind:
                continue
            if "Condition" in resource and not self.condition(resource["Condition"]):
                continue
            yield name, resource

    # ---- what the commands print
    def functions(self):
        """Each function's binary and its resolved environment (Globals first)."""
        globals_env = self.template.get("Globals", {}).get("Function", {}).get("Environment", {}).get("Variables", {})
        out = {}
        for name, resource in self.deployed("AWS::Serverless::Function"):
            variables = {**globals_env, **resource["Properties"].get("Environment", {}).get("Variables", {})}
            env = {k: v for k, v in self.value(variables).items()}
            out[name] = {"binary": resource["Metadata"]["BuildProperties"]["Binary"], "environment": {k: str(v) for k, v in env.items()}}
        return out

    def roles(self):
        """Each function's execution role: its name as deployed, its inline policy documents
        resolved, its managed policy ARNs."""
        out = {}
        for name, resource in self.deployed("AWS::Serverless::Function"):
            role_ref = resource["Properties"].get("Role")
            if not (isinstance(role_ref, dict) and "Fn::GetAtt" in role_ref):
                raise TemplateError(f"{name} has no Role of its own (!GetAtt <Role>.Arn)")
            target = role_ref["Fn::GetAtt"]
            role = target[0] if isinstance(target, list) else target.split(".", 1)[0]
            props = self.value(self.template["Resources"][role]["Properties"])
            out[resource["Metadata"]["BuildProperties"]["Binary"]] = {
                "role": role,
                "role_name": f"{self.stack_name}-{role}"[:64],
                "policies": {p["PolicyName"]: p["PolicyDocument"] for p in props.get("Policies", [])},
                "managed": props.get("ManagedPolicyArns", []),
            }
        return out

    def network(self):
        """Each function's security group and what its rules let it reach: `to` names a
        resource, a parameter (`DatabaseSecurityGroupId`, `StagingSecurityGroupIds[0]`), a CIDR
        or the S3 prefix list; `admitted_by` the groups whose ingress rules admit it."""

        def group_name(node):
            if isinstance(node, dict) and "Fn::GetAtt" in node:
                target = node["Fn::GetAtt"]
                return target[0] if isinstance(target, list) else target.split(".", 1)[0]
            if isinstance(node, dict) and "Ref" in node:
                return node["Ref"]
            if isinstance(node, dict) and "Fn::Select" in node:
                index, items = node["Fn::Select"]
                return f"{items['Ref']}[{index}]"
            raise TemplateError(f"security group reference {node!r} is not understood")

        out = {}
        for name, resource in self.deployed("AWS::Serverless::Function"):
            groups = resource["Properties"].get("VpcConfig", {}).get("SecurityGroupIds", [])
            out[resource["Metadata"]["BuildProperties"]["Binary"]] = {
                "security_groups": [group_name(g) for g in groups],
                "egress": [],
                "admitted_by": [],
            }
        by_group = {g: entry for entry in out.values() for g in entry["security_groups"]}
        for _, rule in self.deployed("AWS::EC2::SecurityGroupEgress"):
            props = rule["Properties"]
            entry = by_group.get(group_name(props["GroupId"]))
            if entry is None:
                continue
            if "CidrIp" in props:
                to = self.value(props["CidrIp"])
            elif "DestinationPrefixListId" in props:
                to = "s3-prefix-list"
            else:
                to = group_name(props["DestinationSecurityGroupId"])
            entry["egress"].append({"port": int(self.value(props["FromPort"])), "to": to})
        for _, rule in self.deployed("AWS::EC2::SecurityGroupIngress"):
            props = rule["Properties"]
            entry = by_group.get(group_name(props["SourceSecurityGroupId"]))
            if entry is not None:
                entry["admitted_by"].append({"port": int(self.value(props["FromPort"])), "group": group_name(props["GroupId"])})
        for entry in out.values():
            entry["egress"].sort(key=lambda e: (e["to"], e["port"]))
            entry["admitted_by"].sort(key=lambda e: (e["group"], e["port"]))
        return out

    def state_machines(self):
        out = {}
        for name, resource in self.template["Resources"].items():
            if resource["Type"] != "AWS::Serverless::StateMachine":
                continue
            props = resource["Properties"]
            out[name] = {
                "definition": str((TEMPLATE.parent / props["DefinitionUri"]).resolve().relative_to(ROOT)),
                "substitutions": {k: str(v) for k, v in self.value(props.get("DefinitionSubstitutions", {})).items()},
            }
        return out

    def schedules(self):
        machines = self.state_machines()
        arns = {self.resource(name, None): name for name in machines}
        functions = {
            self.resource(name, "Arn"): r["Metadata"]["BuildProperties"]["Binary"]
            for name, r in self.template["Resources"].items()
            if r["Type"] == "AWS::Serverless::Function"
        }
        out = []
        for name, resource in self.deployed("AWS::Scheduler::Schedule"):
            props = self.value(resource["Properties"])
            target = props["Target"]
            entry = {
                "schedule": name,
                "name": props.get("Name"),
                "state": props.get("State", "ENABLED"),
                "input": target.get("Input", "{}"),
                "dead_letter_arn": target.get("DeadLetterConfig", {}).get("Arn"),
            }
            machine = arns.get(target["Arn"])
            if machine is not None:
                entry.update(state_machine=machine, definition=machines[machine]["definition"], substitutions=machines[machine]["substitutions"])
            elif target["Arn"] in functions:
                # A Lambda target: Scheduler invokes the function with the Input as its event.
                entry.update(function=functions[target["Arn"]])
            else:
                raise TemplateError(f"schedule {name} targets {target['Arn']}, neither a state machine nor a function of the template")
            out.append(entry)
        return out


def function_env(resolver, seed, state, binary):
    """One function's environment: the template's without LOCAL_REMOVALS and with
    LOCAL_REPLACEMENTS, then LOCAL_OVERRIDES (whether the template sets them or leaves the
    function's default), then the local additions."""
    functions = {f["binary"]: f for f in resolver.functions().values()}
    if binary not in functions:
        raise TemplateError(f"no function {binary!r} in the template ({', '.join(sorted(functions))})")
    env = {k: v for k, v in functions[binary]["environment"].items() if k not in LOCAL_REMOVALS}
    for key, local in LOCAL_REPLACEMENTS.items():
        if key in env:
            if env[key] not in local:
                raise TemplateError(f"{key}={env[key]} ({binary}) has no local counterpart in deployed.py")
            env[key] = local[env[key]]
    env.update(LOCAL_OVERRIDES)
    for key, value in local_additions(seed, state).items():
        if key in functions[binary]["environment"]:
            raise TemplateError(f"{key} is set by the template ({binary}); it cannot be a local addition")
        env[key] = value
    return env


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["env", "functions", "network", "roles", "state-machines", "schedules", "runner-args"])
    parser.add_argument("--machine", help="runner-args: the state machine's logical id")
    parser.add_argument("--function", help="env: the function's binary name")
    parser.add_argument("--config-env", default="dev", help="samconfig.toml environment (dev, prod)")
    parser.add_argument("--seed", required=True, help="STATE/seed.json of the local stack")
    parser.add_argument("--state", default="", help="the stack's state directory (env: local engine paths)")
    parser.add_argument("--override", action="append", default=[], metavar="KEY=VALUE", help="a parameter over the site's (checks of the rules)")
    args = parser.parse_args(argv)

    seed = json.loads(Path(args.seed).read_text())
    stack_name, overrides = samconfig_parameters(args.config_env)
    parameters = {**overrides, **site_parameters(args.config_env, seed)}
    for pair in args.override:
        key, _, value = pair.partition("=")
        parameters[key] = value
    try:
        resolver = Resolver(load_template(), parameters, stack_name, seed)
        if args.command == "env":
            if not args.function:
                raise TemplateError("env needs --function BINARY")
            for key, value in sorted(function_env(resolver, seed, args.state, args.function).items()):
                if "\n" in value:
                    raise TemplateError(f"{key} holds a newline, which an env file cannot carry")
                print(f"{key}={value}")
        elif args.command == "functions":
            print(json.dumps(resolver.functions(), indent=2))
        elif args.command == "network":
            print(json.dumps(resolver.network(), indent=2))
        elif args.command == "roles":
            print(json.dumps(resolver.roles(), indent=2))
        elif args.command == "runner-args":
            machines = resolver.state_machines()
            if args.machine not in machines:
                raise TemplateError(f"no state machine {args.machine!r} in the template ({', '.join(machines)})")
            machine = machines[args.machine]
            words = ["--definition", str(ROOT / machine["definition"])]
            for key, value in machine["substitutions"].items():
                words += ["--sub", f"{key}={value}"]
            sys.stdout.write("".join(w + "\0" for w in words))
        elif args.command == "state-machines":
            print(json.dumps(resolver.state_machines(), indent=2))
        else:
            print(json.dumps(resolver.schedules(), indent=2))
    except TemplateError as err:
        print(f"deployed.py ({args.config_env}): {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
