//! `infra/template.yaml` agrees with the settings table (`shared/src/settings.rs`): each function's
//! `Environment` (Globals and its own) names exactly the rows marked as set by the template, a
//! value the template writes out is never the table's default (it would be written twice), and a
//! template parameter feeding a variable deploys the table's default. The template is read as
//! text: its `Environment` blocks and parameters are plain `KEY: value` mappings. The last test
//! needs the local stack: every variable `deployed.py env` gives the local functions is in the
//! table, and each function starts with that environment.

use catalyst_dr::settings::{self, Fallback, Function, SetBy, Setting};
use std::collections::{BTreeMap, BTreeSet, HashMap};

const TEMPLATE: &str = include_str!("../../infra/template.yaml");

fn indent(line: &str) -> usize {
    line.len() - line.trim_start().len()
}

fn is_content(line: &str) -> bool {
    let trimmed = line.trim_start();
    !trimmed.is_empty() && !trimmed.starts_with('#')
}

/// The `key: value` entries of the mapping at `path` (keys from the document root), values as
/// written (tags such as `!Ref` kept, multi-line values reduced to their first line). `None`
/// when the path does not exist.
fn mapping(path: &[&str]) -> Option<BTreeMap<String, String>> {
    let lines: Vec<&str> = TEMPLATE.lines().collect();
    let (mut start, mut end, mut parent) = (0, lines.len(), None::<usize>);
    for key in path {
        let level = lines[start..end]
            .iter()
            .find(|l| is_content(l))
            .map(|l| indent(l))?;
        if parent.is_some_and(|p| level <= p) {
            return None;
        }
        let at = (start..end).find(|&i| {
            indent(lines[i]) == level
                && lines[i]
                    .trim_start()
                    .strip_prefix(key)
                    .is_some_and(|rest| rest.starts_with(':'))
        })?;
        start = at + 1;
        end = (start..end)
            .find(|&i| is_content(lines[i]) && indent(lines[i]) <= level)
            .unwrap_or(end);
        parent = Some(level);
    }
    let level = lines[start..end]
        .iter()
        .find(|l| is_content(l))
        .map(|l| indent(l))?;
    Some(
        lines[start..end]
            .iter()
            .filter(|l| is_content(l) && indent(l) == level && !l.trim_start().starts_with("- "))
            .filter_map(|l| l.trim().split_once(':'))
            .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
            .collect(),
    )
}

/// A YAML scalar as written, without its quotes.
fn unquoted(value: &str) -> &str {
    value
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .or_else(|| value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
        .unwrap_or(value)
}

/// The function's `Environment.Variables`, Globals first.
fn environment(function: Function) -> BTreeMap<String, String> {
    let globals = mapping(&["Globals", "Function", "Environment", "Variables"])
        .expect("Globals.Function.Environment.Variables in the template");
    let own = mapping(&[
        "Resources",
        function.resource(),
        "Properties",
        "Environment",
        "Variables",
    ])
    .unwrap_or_else(|| panic!("{} has no Environment.Variables", function.resource()));
    globals.into_iter().chain(own).collect()
}

fn row(function: Function, name: &str) -> Option<&'static Setting> {
    settings::for_function(function).find(|s| s.name == name)
}

/// The value the function uses when the variable is unset, as the template would write it.
fn effective_default(function: Function, setting: &Setting) -> Option<String> {
    match setting.default {
        Fallback::Variable(other) => row(function, other).and_then(|o| o.default_value()),
        _ => setting.default_value(),
    }
}

#[test]
fn the_template_sets_exactly_the_template_rows() {
    let mut problems = Vec::new();
    for function in Function::ALL {
        let template: BTreeSet<String> = environment(function).into_keys().collect();
        let table: BTreeSet<String> = settings::for_function(function)
            .filter(|s| s.set_by == SetBy::Template)
            .map(|s| s.name.to_owned())
            .collect();
        for name in template.difference(&table) {
            problems.push(match row(function, name) {
                Some(s) => format!(
                    "{}: the template sets {name}, which settings.rs marks as set by {:?}",
                    function.resource(),
                    s.set_by
                ),
                None => format!(
                    "{}: the template sets {name}, which settings.rs does not list for {}",
                    function.resource(),
                    function.name()
                ),
            });
        }
        for name in table.difference(&template) {
            problems.push(format!(
                "{}: settings.rs marks {name} as set by the template, which does not set it",
                function.resource()
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_template_does_not_repeat_the_defaults() {
    let parameters = mapping(&["Parameters"]).expect("Parameters");
    let mut problems = Vec::new();
    for function in Function::ALL {
        for (name, value) in environment(function) {
            let Some(setting) = row(function, &name) else {
                continue;
            };
            let default = effective_default(function, setting).unwrap_or_default();
            if !value.starts_with('!') {
                // A literal: the default written a second time, or a deliberate other value.
                if unquoted(&value).eq_ignore_ascii_case(&default) {
                    problems.push(format!(
                        "{}: {name}: {value} is settings.rs's default, written twice; drop it from the template",
                        function.resource()
                    ));
                }
                continue;
            }
            // `!Ref Parameter`: the default a deploy gets is the parameter's.
            let Some(parameter) = value
                .strip_prefix("!Ref ")
                .filter(|p| parameters.contains_key(*p))
            else {
                continue;
            };
            let deployed = mapping(&["Parameters", parameter])
                .and_then(|p| p.get("Default").map(|d| unquoted(d).to_owned()));
            if let Some(deployed) = deployed.filter(|d| *d != default) {
                problems.push(format!(
                    "{}: {name} comes from parameter {parameter}, whose Default {deployed:?} is not settings.rs's default {default:?}",
                    function.resource()
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The environment the local stack runs `binary` with, without the AWS SDK's own variables.
fn local_environment(binary: &str) -> HashMap<String, String> {
    catalyst_dr_tests::function_env(binary)
        .into_iter()
        .filter(|(k, _)| !k.starts_with("AWS_"))
        .collect()
}

#[test]
fn the_local_stack_sets_only_table_rows_and_every_function_starts() {
    use catalyst_dr::{drill, pitr, replay, snapshot_trigger};
    let known: BTreeSet<&str> = settings::ALL.iter().map(|s| s.name).collect();
    for binary in [
        "snapshot-trigger",
        "pitr-restore",
        "dead-letter-replay",
        "drill-validator",
    ] {
        let env = local_environment(binary);
        let unknown: Vec<&String> = env.keys().filter(|k| !known.contains(k.as_str())).collect();
        assert!(
            unknown.is_empty(),
            "{binary}: the local stack sets variables settings.rs does not list: {unknown:?}"
        );
        let source: HashMap<&str, &str> =
            env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        match binary {
            "snapshot-trigger" => {
                snapshot_trigger::config::SnapshotTriggerConfig::from_env(&source).expect(binary);
                snapshot_trigger::config::SnapshotTriggerConfig::local_base_backups(&source)
                    .expect("snapshot-trigger local engine")
                    .expect("the local stack sets LOCAL_BASE_BACKUP_DIR");
            }
            "pitr-restore" => {
                pitr::config::PitrConfig::from_env(&source).expect(binary);
            }
            "dead-letter-replay" => {
                replay::config::ReplayConfig::from_env(&source).expect(binary);
            }
            _ => {
                drill::config::DrillConfig::from_env(&source).expect(binary);
            }
        }
    }
}
