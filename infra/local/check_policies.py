"""The functions' roles as AWS evaluates them: resources and conditions included.

    check_policies.py --config-env dev --seed STATE/seed.json

The local endpoint enforces each role's actions (and S3/SQS resources) at run time, but matches
other services' resources against "*" and evaluates no condition (see functions.py). This check
evaluates the template's own policy documents, resolved by deployed.py, with IAM's rules for
identity policies (an explicit Deny wins; otherwise an Allow whose action, resource and every
condition match; otherwise denied) against the requests in infra/local/policy-expectations.json:
what each function (or, with `state_machine`, each state machine's role, SAM policy templates
expanded as SAM does) must be able to do, and the guard rails it must never cross (deleting a
database that is not its own staging copy, reading an untagged secret, writing outside its
prefix, starting another state machine). Then every Task of every state machine under the state
machine's role (and a Distributed Map's child executions, which the state machine starts, watches
and stops itself) and every schedule's start under the Scheduler's role: each must be allowed.
Then the key policies' `key_requests`: a KMS key policy is a resource policy, so its statements
match on Principal too (`*`, an account's root, a role ARN, a service). Prints each result;
exits 1 when any request is decided otherwise than expected.
"""

import argparse
import json
import re
import sys
from pathlib import Path

import deployed

EXPECTATIONS = Path(__file__).resolve().parent / "policy-expectations.json"


class PolicyError(Exception):
    """A policy construct this evaluator does not implement: never guessed."""


def as_list(value):
    return value if isinstance(value, list) else [value]


def glob(pattern, value, case_sensitive=True):
    """IAM wildcards: `*` any run of characters, `?` one character."""
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, value, 0 if case_sensitive else re.IGNORECASE) is not None


def condition_holds(operator, key, expected, context):
    """One condition key under one operator, as IAM evaluates it for single-valued keys (and
    the ForAllValues/ForAnyValue set operators for multivalued ones)."""
    if_exists = operator.endswith("IfExists")
    base = operator[: -len("IfExists")] if if_exists else operator
    quantifier = None
    if ":" in base:
        quantifier, base = base.split(":", 1)
    expected = [str(v) for v in as_list(expected)]
    present = key in context
    if base == "Null":
        return (not present) == (expected[0].lower() == "true")
    if not present:
        # A missing key fails every operator but the negated ones, IfExists and ForAllValues.
        return if_exists or base.startswith(("StringNot", "ArnNot")) or quantifier == "ForAllValues"
    values = [str(v) for v in as_list(context[key])]

    def one(value):
        if base == "StringEquals":
            return value in expected
        if base == "StringNotEquals":
            return value not in expected
        if base == "StringEqualsIgnoreCase":
            return value.lower() in [e.lower() for e in expected]
        if base in ("StringLike", "ArnLike", "ArnEquals"):
            return any(glob(e, value) for e in expected)
        if base in ("StringNotLike", "ArnNotLike", "ArnNotEquals"):
            return not any(glob(e, value) for e in expected)
        if base == "Bool":
            return value.lower() in [e.lower() for e in expected]
        numeric = {
            "NumericEquals": lambda a, b: a == b,
            "NumericLessThan": lambda a, b: a < b,
            "NumericLessThanEquals": lambda a, b: a <= b,
            "NumericGreaterThan": lambda a, b: a > b,
            "NumericGreaterThanEquals": lambda a, b: a >= b,
        }
        if base in numeric:
            return any(numeric[base](float(value), float(e)) for e in expected)
        raise PolicyError(f"condition operator {operator} is not implemented")

    if quantifier == "ForAllValues":
        return all(one(v) for v in values)
    if quantifier in (None, "ForAnyValue"):
        return any(one(v) for v in values)
    raise PolicyError(f"condition operator {operator} is not implemented")


def statement_matches(statement, request):
    if "NotAction" in statement:
        if any(glob(a, request["action"], case_sensitive=False) for a in as_list(statement["NotAction"])):
            return False
    elif not any(glob(a, request["action"], case_sensitive=False) for a in as_list(statement.get("Action", []))):
        return False
    if "NotResource" in statement:
        if any(glob(r, request["resource"]) for r in as_list(statement["NotResource"])):
            return False
    elif not any(glob(r, request["resource"]) for r in as_list(statement.get("Resource", []))):
        return False
    for operator, keys in statement.get("Condition", {}).items():
        for key, expected in keys.items():
            if not condition_holds(operator, key, expected, request.get("context", {})):
                return False
    return True


def decide(documents, request):
    """`allow` or `deny` for one request under a role's policy documents."""
    allowed = []
    for name, document in documents.items():
        for statement in as_list(document["Statement"]):
            if statement_matches(statement, request):
                if statement["Effect"] == "Deny":
                    return "deny", f"{name}/{statement.get('Sid', '?')} (explicit deny)"
                allowed.append(f"{name}/{statement.get('Sid', '?')}")
    if allowed:
        return "allow", ", ".join(allowed)
    return "deny", "no statement allows it"


def principal_matches(principal, caller):
    """Whether a resource policy statement's Principal names `caller` (an ARN or a service)."""
    if principal == "*":
        return True
    for kind, names in principal.items():
        for name in as_list(names):
            if name == "*" and kind == "AWS":
                return True
            if kind == "Service" and name == caller:
                return True
            if kind == "AWS" and (name == caller or (name.endswith(":root") and caller.startswith(name[: -len("root")]))):
                return True
    return False


def decide_key_policy(document, caller, action, resource):
    """`allow` or `deny` for `caller` under a key policy. An allow to the account's root only lets
    IAM policies grant the call; the identity side is check_policies' other half."""
    matching = [
        st for st in as_list(document["Statement"])
        if principal_matches(st["Principal"], caller)
        and statement_matches(st, {"action": action, "resource": resource, "context": {"aws:PrincipalArn": caller}})
    ]
    for st in matching:
        if st["Effect"] == "Deny":
            return "deny", f"{st.get('Sid', '?')} (explicit deny)"
    allowed = [st.get("Sid", "?") for st in matching]
    return ("allow", ", ".join(allowed)) if allowed else ("deny", "no statement allows it")


# The SAM policy templates the state machines use, as SAM expands them.
SAM_POLICY_TEMPLATES = {
    "LambdaInvokePolicy": lambda p: {
        "Action": ["lambda:InvokeFunction"],
        "Resource": f"arn:aws:lambda:{deployed.REGION}:{deployed.ACCOUNT}:function:{p['FunctionName']}*",
    },
    "SNSPublishMessagePolicy": lambda p: {
        "Action": ["sns:Publish"],
        "Resource": f"arn:aws:sns:{deployed.REGION}:{deployed.ACCOUNT}:{p['TopicName']}",
    },
}


def state_machine_policies(resolver, logical_id):
    """A SAM state machine's generated role: its `Policies` with the policy templates expanded."""
    documents = {}
    for index, entry in enumerate(resolver.value(resolver.template["Resources"][logical_id]["Properties"].get("Policies", []))):
        if "Statement" in entry:
            documents[f"{logical_id}-{index}"] = entry
            continue
        (template, params), = entry.items()
        if template not in SAM_POLICY_TEMPLATES:
            raise PolicyError(f"{logical_id}: SAM policy template {template} is not implemented")
        documents[f"{logical_id}-{index}-{template}"] = {"Statement": [{"Sid": template, "Effect": "Allow", **SAM_POLICY_TEMPLATES[template](params)}]}
    return documents


def task_requests(states, machine_arn):
    """What each Task state of a definition asks its role for, and what each Distributed Map
    asks it for: starting, describing and stopping child executions of the state machine itself
    (arn:...:execution:NAME/LABEL:ID, the Map Run's label defaulting to the state's name)."""
    for name, state in states.items():
        if state.get("Type") == "Task":
            resource = state["Resource"]
            if resource == "arn:aws:states:::sns:publish":
                yield name, "sns:Publish", state["Parameters"]["TopicArn"]
            elif resource.startswith("arn:aws:states:::lambda:invoke"):
                yield name, "lambda:InvokeFunction", state["Parameters"]["FunctionName"]
            elif ":lambda:" in resource:
                yield name, "lambda:InvokeFunction", resource
            else:
                raise PolicyError(f"state {name}: no rule for task resource {resource}")
        for branch in state.get("Branches", []):
            yield from task_requests(branch["States"], machine_arn)
        processor = state.get("ItemProcessor") or state.get("Iterator")
        if processor:
            if processor.get("ProcessorConfig", {}).get("Mode") == "DISTRIBUTED":
                child = machine_arn.replace(":stateMachine:", ":execution:") + f"/{state.get('Label', name)}:child"
                yield name, "states:StartExecution", machine_arn
                yield name, "states:DescribeExecution", child
                yield name, "states:StopExecution", child
            yield from task_requests(processor["States"], machine_arn)


def orchestration_requests(resolver):
    """Each state machine's tasks under its role, and each schedule's start under its role:
    every one must be allowed, or the deployed run fails where the local one cannot tell."""
    out = []
    for logical_id, machine in resolver.state_machines().items():
        text = (deployed.ROOT / machine["definition"]).read_text()
        for key, value in machine["substitutions"].items():
            text = text.replace("${" + key + "}", value)
        policies = state_machine_policies(resolver, logical_id)
        for state, action, resource in task_requests(json.loads(text)["States"], resolver.resource(logical_id, None)):
            out.append((f"{logical_id} role", policies, action, resource, f"task {state}"))
    for name, resource in resolver.deployed("AWS::Scheduler::Schedule"):
        target = resolver.value(resource["Properties"]["Target"])
        role_id = resource["Properties"]["Target"]["RoleArn"]["Fn::GetAtt"]
        role_id = role_id[0] if isinstance(role_id, list) else role_id.split(".", 1)[0]
        props = resolver.value(resolver.template["Resources"][role_id]["Properties"])
        policies = {p["PolicyName"]: p["PolicyDocument"] for p in props.get("Policies", [])}
        action = "states:StartExecution" if ":states:" in target["Arn"] else "lambda:InvokeFunction"
        out.append((f"{role_id} ({name})", policies, action, target["Arn"], "the schedule's start"))
        if "DeadLetterConfig" in target:
            out.append((f"{role_id} ({name})", policies, "sqs:SendMessage", target["DeadLetterConfig"]["Arn"], "a start that failed"))
    return out


def fill(text, names):
    return re.sub(r"\{([A-Za-z]+)\}", lambda m: str(names[m.group(1)]), text)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-env", default="dev", help="samconfig.toml environment (dev, prod)")
    parser.add_argument("--seed", required=True, help="STATE/seed.json of the local stack")
    parser.add_argument("--expectations", default=str(EXPECTATIONS))
    args = parser.parse_args(argv)

    seed = json.loads(Path(args.seed).read_text())
    stack_name, overrides = deployed.samconfig_parameters(args.config_env)
    parameters = {**overrides, **deployed.site_parameters(args.config_env, seed)}
    try:
        resolver = deployed.Resolver(deployed.load_template(), parameters, stack_name, seed)
        roles = resolver.roles()
        names = {
            **{k: v for k, v in resolver.parameters.items() if isinstance(v, str)},
            "region": deployed.REGION,
            "account": deployed.ACCOUNT,
            "stack": stack_name,
            "bucket": resolver.resource("BackupBucket", None),
            "topic": resolver.resource("AlertTopic", None),
            # The template's own secrets by logical id (their local counterparts' ARNs).
            **{name: resolver.resource(name, None) for name, _ in resolver.deployed("AWS::SecretsManager::Secret")},
            # Its state machines by logical id (their ARNs as deployed.py resolves them).
            **{name: resolver.resource(name, None) for name in resolver.state_machines()},
        }
        expectations = [
            case
            for case in json.loads(Path(args.expectations).read_text())["requests"]
            if case.get("config_env", args.config_env) == args.config_env
        ]
        wrong = 0
        machines = resolver.state_machines()
        for case in expectations:
            if "state_machine" in case:
                if case["state_machine"] not in machines:
                    raise PolicyError(f"no state machine {case['state_machine']!r} in the template")
                who, policies = f"{case['state_machine']} role", state_machine_policies(resolver, case["state_machine"])
            else:
                if case["function"] not in roles:
                    raise PolicyError(f"no function {case['function']!r} in the template")
                who, policies = case["function"], roles[case["function"]]["policies"]
            request = {
                "action": case["action"],
                "resource": fill(case["resource"], names),
                "context": {k: fill(v, names) if isinstance(v, str) else v for k, v in case.get("context", {}).items()},
            }
            outcome, because = decide(policies, request)
            ok = outcome == case["expect"]
            wrong += not ok
            mark = "ok  " if ok else "FAIL"
            print(f"{mark} {who}: {request['action']} {request['resource']} -> {outcome} ({because}); {case['why']}")
        orchestration = orchestration_requests(resolver)
        for who, policies, action, resource, why in orchestration:
            outcome, because = decide(policies, {"action": action, "resource": resource})
            ok = outcome == "allow"
            wrong += not ok
            print(f"{'ok  ' if ok else 'FAIL'} {who}: {action} {resource} -> {outcome} ({because}); {why}")
        key_cases = [
            case
            for case in json.loads(Path(args.expectations).read_text()).get("key_requests", [])
            if case.get("config_env", args.config_env) == args.config_env
        ]
        for case in key_cases:
            policy = resolver.value(resolver.template["Resources"][case["key"]]["Properties"]["KeyPolicy"])
            caller = fill(case["principal"], names)
            resource = resolver.resource(case["key"], "Arn")
            outcome, because = decide_key_policy(policy, caller, case["action"], resource)
            ok = outcome == case["expect"]
            wrong += not ok
            print(f"{'ok  ' if ok else 'FAIL'} {case['key']} key policy: {caller} {case['action']} -> {outcome} ({because}); {case['why']}")
        expectations = expectations + orchestration + key_cases
    except (deployed.TemplateError, PolicyError, KeyError) as err:
        print(f"check_policies.py ({args.config_env}): {err!r}", file=sys.stderr)
        return 2
    print(f"{len(expectations) - wrong} of {len(expectations)} requests decided as expected ({args.config_env})")
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main())
