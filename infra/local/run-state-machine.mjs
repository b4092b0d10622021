// Executes a state machine definition locally with aws-local-stepfunctions.
//
// Lambda tasks are sent to a local Lambda Invoke API (`cargo lambda watch`), which routes by
// plain function name, so each task's function ARN is mapped to its name here. SNS publish tasks
// go to the local AWS endpoint. Prints the execution's outcome as JSON on stdout and its
// progress on stderr; exits 0 when the execution succeeded, 1 when it failed.
//
// usage: node run-state-machine.mjs --definition FILE --input JSON
//          [--sub Key=Value ...] [--lambda-endpoint URL] [--aws-endpoint URL] [--fast] [--name NAME]
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { createHash, createHmac, randomUUID } from 'node:crypto';
import { StateMachine } from 'aws-local-stepfunctions';

const { values: args } = parseArgs({
  options: {
    definition: { type: 'string' },
    input: { type: 'string', default: '{}' },
    sub: { type: 'string', multiple: true, default: [] },
    'lambda-endpoint': { type: 'string', default: process.env.LAMBDA_ENDPOINT_URL ?? 'http://127.0.0.1:9000' },
    'aws-endpoint': { type: 'string', default: process.env.AWS_ENDPOINT_URL ?? '' },
    // Polling waits shrink to a quarter of a second and retry pauses to none: the local
    // services answer at once or within seconds.
    fast: { type: 'boolean', default: false },
    // The execution's name, as Step Functions gives it ($$.Execution.Name).
    name: { type: 'string', default: '' },
  },
});
if (!args.definition) {
  console.error('--definition is required');
  process.exit(2);
}

let text = readFileSync(args.definition, 'utf8');
for (const pair of args.sub) {
  const at = pair.indexOf('=');
  if (at < 1) {
    console.error(`--sub expects Key=Value, got ${pair}`);
    process.exit(2);
  }
  text = text.replaceAll('${' + pair.slice(0, at) + '}', pair.slice(at + 1));
}
const unresolved = text.match(/\$\{[A-Za-z0-9]+\}/g);
if (unresolved) {
  console.error(`definition still has placeholders: ${[...new Set(unresolved)].join(', ')}`);
  process.exit(2);
}
const definition = JSON.parse(text);

class TaskFailure extends Error {
  constructor(name, cause) {
    super(cause);
    this.name = name;
  }
}

async function invokeLambda(functionName, payload) {
  const url = `${args['lambda-endpoint']}/2015-03-31/functions/${encodeURIComponent(functionName)}/invocations`;
  let response;
  try {
    response = await fetch(url, { method: 'POST', body: JSON.stringify(payload), headers: { 'content-type': 'application/json' } });
  } catch (err) {
    throw new TaskFailure('Lambda.SdkClientException', `invoking ${functionName}: ${err.cause?.message ?? err.message}`);
  }
  const body = await response.text();
  let parsed = null;
  try {
    parsed = body === '' ? null : JSON.parse(body);
  } catch {
    throw new TaskFailure('Lambda.ServiceException', `${functionName} answered ${response.status} with non-JSON: ${body.slice(0, 500)}`);
  }
  const functionError = response.headers.get('x-amz-function-error');
  if (functionError || response.status >= 400 || (parsed && typeof parsed === 'object' && 'errorType' in parsed && 'errorMessage' in parsed)) {
    const errorType = parsed?.errorType ?? (response.status >= 500 ? 'Lambda.ServiceException' : 'Lambda.Unknown');
    // Step Functions puts the Lambda error document in the Cause, as a JSON string.
    throw new TaskFailure(errorType, JSON.stringify({ errorType, errorMessage: parsed?.errorMessage ?? body }));
  }
  return parsed;
}

// Signature Version 4 over a POST to the local endpoint, with the credentials in the environment
// (the local endpoint enforces IAM, so an unsigned or unknown caller is refused).
function signedHeaders(service, endpoint, body, contentType) {
  const accessKey = process.env.AWS_ACCESS_KEY_ID;
  const secret = process.env.AWS_SECRET_ACCESS_KEY;
  if (!accessKey || !secret) throw new TaskFailure('States.TaskFailed', 'no AWS credentials in the environment for the SNS publish task');
  const region = process.env.AWS_REGION ?? 'us-east-1';
  const amzDate = new Date().toISOString().replace(/[-:]/g, '').replace(/\.\d{3}/, '');
  const day = amzDate.slice(0, 8);
  const headers = { 'content-type': contentType, host: new URL(endpoint).host, 'x-amz-date': amzDate };
  if (process.env.AWS_SESSION_TOKEN) headers['x-amz-security-token'] = process.env.AWS_SESSION_TOKEN;
  const names = Object.keys(headers).sort();
  const sha256 = (text) => createHash('sha256').update(text).digest('hex');
  const canonical = ['POST', '/', '', ...names.map((n) => `${n}:${headers[n]}`), '', names.join(';'), sha256(body)].join('\n');
  const scope = `${day}/${region}/${service}/aws4_request`;
  const toSign = ['AWS4-HMAC-SHA256', amzDate, scope, sha256(canonical)].join('\n');
  const hmac = (key, text) => createHmac('sha256', key).update(text).digest();
  let key = hmac(`AWS4${secret}`, day);
  for (const part of [region, service, 'aws4_request']) key = hmac(key, part);
  const signature = createHmac('sha256', key).update(toSign).digest('hex');
  headers.authorization = `AWS4-HMAC-SHA256 Credential=${accessKey}/${scope}, SignedHeaders=${names.join(';')}, Signature=${signature}`;
  delete headers.host;
  return headers;
}

async function publishSns(parameters) {
  if (!args['aws-endpoint']) throw new TaskFailure('States.TaskFailed', 'no --aws-endpoint for the SNS publish task');
  // Like the Step Functions SNS integration, a JSON Message is sent as its JSON text.
  const message = typeof parameters.Message === 'string' ? parameters.Message : JSON.stringify(parameters.Message);
  const form = new URLSearchParams({ Action: 'Publish', Version: '2010-03-31', TopicArn: parameters.TopicArn, Message: message });
  if (parameters.Subject) form.set('Subject', parameters.Subject);
  const body = form.toString();
  const response = await fetch(args['aws-endpoint'], {
    method: 'POST',
    body,
    headers: signedHeaders('sns', args['aws-endpoint'], body, 'application/x-www-form-urlencoded'),
  });
  const answer = await response.text();
  if (!response.ok) throw new TaskFailure('SNS.SdkClientException', `SNS Publish answered ${response.status}: ${answer.slice(0, 500)}`);
  const messageId = answer.match(/<MessageId>([^<]+)<\/MessageId>/)?.[1];
  return { MessageId: messageId };
}

const handlers = {};
const waits = {};
const retries = {};
function visit(states) {
  for (const [name, state] of Object.entries(states)) {
    if (state.Type === 'Task') {
      const lambda = /^arn:aws[a-z-]*:lambda:[^:]+:[^:]+:function:([^:]+)(:.+)?$/.exec(state.Resource);
      if (lambda) handlers[name] = (input) => invokeLambda(lambda[1], input);
      else if (state.Resource === 'arn:aws:states:::sns:publish') handlers[name] = publishSns;
      else throw new Error(`state ${name}: no local handler for resource ${state.Resource}`);
    }
    if (args.fast && state.Type === 'Wait') waits[name] = 250;
    if (args.fast && state.Retry) retries[name] = 0;
    if (state.Type === 'Parallel') state.Branches.forEach((b) => visit(b.States));
    if (state.Type === 'Map') visit((state.ItemProcessor ?? state.Iterator).States);
  }
}
visit(definition.States);

const machine = new StateMachine(definition, { validationOptions: { checkArn: false } });
const started = Date.now();
const input = JSON.parse(args.input);
const execution = machine.run(input, {
  overrides: { taskResourceLocalHandlers: handlers, waitTimeOverrides: waits, retryIntervalOverrides: retries },
  context: { Execution: { Input: input, StartTime: new Date(started).toISOString(), Name: args.name || randomUUID() } },
});

const timeline = [];
const logging = (async () => {
  for await (const event of execution.eventLogs) {
    const at = ((Date.now() - started) / 1000).toFixed(1);
    if (event.type === 'StateEntered') {
      timeline.push({ state: event.state.name, entered_at_s: Number(at) });
      console.error(`[${at}s] ${event.state.name}`);
    } else if (event.type === 'StateRetried') {
      console.error(`[${at}s] ${event.state.name}: retrying after ${event.Error ?? event.error?.name ?? 'error'}`);
    } else if (event.type === 'StateFailed' || event.type === 'StateCaught') {
      console.error(`[${at}s] ${event.state?.name ?? ''}: ${event.type} ${event.Error ?? event.error?.name ?? ''}`);
    }
  }
})();

let outcome;
try {
  const output = await execution.result;
  outcome = { status: 'SUCCEEDED', output };
} catch (err) {
  // The interpreter wraps the failing state's error; report that one, as Step Functions does.
  const failure = err.name === 'ExecutionError' && err.cause ? err.cause : err;
  outcome = { status: 'FAILED', error: failure.name, cause: failure.message };
}
await logging.catch(() => {});
outcome.duration_s = (Date.now() - started) / 1000;
outcome.timeline = timeline;
process.stdout.write(JSON.stringify(outcome, null, 2) + '\n');
process.exit(outcome.status === 'SUCCEEDED' ? 0 : 1);
