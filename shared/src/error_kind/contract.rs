//! The `errorType` contract as the state machines and README.md use it: every error name they
//! match is a kind, every retryable kind is retried where it can occur and no other kind is, and
//! every kind is documented.

use super::ErrorKind;
use serde_json::Value;
use std::path::{Path, PathBuf};

/// Retryable kinds that only one step can produce: the states it waits for. Every other
/// retryable kind is a dependency's momentary failure that any function step can meet.
const STEP_KINDS: &[(&str, &str, ErrorKind)] = &[
    (
        "PitrRestoreFunctionArn",
        "rotate-credentials",
        ErrorKind::StagingNotReady,
    ),
    (
        "PitrRestoreFunctionArn",
        "rotate-credentials",
        ErrorKind::CredentialsNotYetApplied,
    ),
    (
        "DrillValidatorFunctionArn",
        "baseline",
        ErrorKind::BaselineLockTimeout,
    ),
    (
        "DrillValidatorFunctionArn",
        "baseline",
        ErrorKind::CacheSnapshotBusy,
    ),
    (
        "PitrRestoreFunctionArn",
        "teardown",
        ErrorKind::StagingCacheBusy,
    ),
    (
        "PitrRestoreFunctionArn",
        "rotate-credentials",
        ErrorKind::StagingBusy,
    ),
    (
        "SnapshotTriggerFunctionArn",
        "restore-logical-finish",
        ErrorKind::RestoreStillBuilding,
    ),
];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Every state machine definition, by file name.
fn definitions() -> Vec<(String, Value)> {
    let dir = root().join("infra/statemachines");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| path.to_string_lossy().ends_with(".asl.json"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no definitions in {}", dir.display());
    files
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path).expect("definition");
            let definition =
                serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let name = path.file_name().expect("file name").to_string_lossy();
            (name.into_owned(), definition)
        })
        .collect()
}

/// One state, wherever it is nested.
struct State<'a> {
    /// `file: Outer/Inner`, for messages.
    path: String,
    state: &'a Value,
}

/// Every state of `states`, and of every Parallel branch and Map iterator below them.
fn collect<'a>(path: &str, states: &'a Value, out: &mut Vec<State<'a>>) {
    for (name, state) in states.as_object().expect("States is an object") {
        let path = format!("{path}/{name}");
        for branch in state["Branches"].as_array().into_iter().flatten() {
            collect(&path, &branch["States"], out);
        }
        for key in ["Iterator", "ItemProcessor"] {
            if state[key].is_object() {
                collect(&path, &state[key]["States"], out);
            }
        }
        out.push(State { path, state });
    }
}

fn all_states(definitions: &[(String, Value)]) -> Vec<State<'_>> {
    let mut states = Vec::new();
    for (file, definition) in definitions {
        collect(file, &definition["States"], &mut states);
    }
    states
}

/// The names in the `ErrorEquals` of a state's `Retry` or `Catch`.
fn error_names<'a>(state: &'a Value, field: &str) -> Vec<&'a str> {
    state[field]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|rule| rule["ErrorEquals"].as_array().expect("ErrorEquals"))
        .map(|name| name.as_str().expect("an error name is a string"))
        .collect()
}

/// Names Step Functions itself raises rather than a function's `errorType`.
fn is_service_error(name: &str) -> bool {
    ["States.", "Lambda.", "Sandbox."]
        .iter()
        .any(|prefix| name.starts_with(prefix))
}

/// The function a Lambda Task invokes (the template's substitution name) and its action.
fn lambda_task(state: &Value) -> Option<(&str, &str)> {
    if state["Type"] != "Task" {
        return None;
    }
    let resource = state["Resource"].as_str()?;
    let function = match resource {
        "arn:aws:states:::lambda:invoke" => state["Parameters"]["FunctionName"].as_str()?,
        other => other,
    };
    let function = function.strip_prefix("${")?.strip_suffix('}')?;
    let parameters = match resource {
        "arn:aws:states:::lambda:invoke" => &state["Parameters"]["Payload"],
        _ => &state["Parameters"],
    };
    let action = parameters["action"]
        .as_str()
        .unwrap_or_else(|| panic!("{function} task without a literal action: {state}"));
    Some((function, action))
}

#[test]
fn every_error_the_state_machines_match_is_a_kind() {
    let definitions = definitions();
    let mut unknown = Vec::new();
    for State { path, state } in all_states(&definitions) {
        for field in ["Retry", "Catch"] {
            for name in error_names(state, field) {
                if !is_service_error(name) && ErrorKind::from_name(name).is_none() {
                    unknown.push(format!("{path} {field}: {name}"));
                }
            }
        }
    }
    assert!(
        unknown.is_empty(),
        "error names no function produces:\n{}",
        unknown.join("\n")
    );
}

#[test]
fn retryable_kinds_are_retried_wherever_they_can_occur() {
    for kind in ErrorKind::ALL.iter().filter(|k| !k.is_retryable()) {
        assert!(
            !STEP_KINDS.iter().any(|(_, _, k)| k == kind),
            "{kind} is listed as a step's retryable kind but is not retryable"
        );
    }
    let definitions = definitions();
    let mut problems = Vec::new();
    let mut lambda_tasks = 0;
    for State { path, state } in all_states(&definitions) {
        let retried: Vec<ErrorKind> = error_names(state, "Retry")
            .into_iter()
            .filter_map(ErrorKind::from_name)
            .collect();
        for kind in &retried {
            if !kind.is_retryable() {
                problems.push(format!("{path} retries {kind}, which is not retryable"));
            }
        }
        let Some((function, action)) = lambda_task(state) else {
            continue;
        };
        lambda_tasks += 1;
        // A step that retries none of the functions' own errors has opted out of retries.
        if retried.is_empty() {
            continue;
        }
        for kind in ErrorKind::ALL.iter().filter(|k| k.is_retryable()) {
            let steps: Vec<(&str, &str)> = STEP_KINDS
                .iter()
                .filter(|(_, _, k)| k == kind)
                .map(|(f, a, _)| (*f, *a))
                .collect();
            let can_occur = steps.is_empty() || steps.contains(&(function, action));
            match (can_occur, retried.contains(kind)) {
                (true, false) => problems.push(format!("{path} does not retry {kind}")),
                (false, true) => problems.push(format!(
                    "{path} retries {kind}, which {function} {action} never answers"
                )),
                _ => {}
            }
        }
    }
    assert!(lambda_tasks > 0, "no Lambda tasks found");
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn readme_names_every_kind() {
    let path = root().join("README.md");
    let readme = std::fs::read_to_string(&path).expect("README.md");
    let missing: Vec<&str> = ErrorKind::ALL
        .iter()
        .map(|kind| kind.as_str())
        .filter(|name| !readme.contains(&format!("`{name}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "{} does not name these error types: {missing:?}",
        path.display()
    );
}

#[test]
fn nested_states_are_found() {
    let states = serde_json::json!({
        "Fan": {"Type": "Parallel", "Branches": [{"States": {"Inner": {"Type": "Pass"}}}]},
        "Each": {"Type": "Map", "ItemProcessor": {"States": {"Item": {"Type": "Pass"}}}},
        "Old": {"Type": "Map", "Iterator": {"States": {"Legacy": {"Type": "Pass"}}}},
    });
    let mut found = Vec::new();
    collect("f", &states, &mut found);
    let mut paths: Vec<&str> = found.iter().map(|s| s.path.as_str()).collect();
    paths.sort();
    assert_eq!(
        paths,
        [
            "f/Each",
            "f/Each/Item",
            "f/Fan",
            "f/Fan/Inner",
            "f/Old",
            "f/Old/Legacy"
        ]
    );
}
