//! The crate's layers, checked against its own source: every top-level module belongs to one
//! layer and imports only from its own layer or the ones below; no feature imports another; the
//! modules' imports form no cycle. A new module fails this test until it is given a layer.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Layer {
    /// Ids, records, statuses, errors, configuration: no I/O.
    Core,
    /// One module per outside system (S3, RDS, SQS, Secrets Manager, PostgreSQL, the local
    /// engine), each behind a small trait where a feature needs to swap it.
    Adapter,
    /// What a function does: snapshot, logical, pitr, replay, drill. Never import each other.
    Feature,
    /// One function's action set when it serves more than one feature.
    Composition,
}

const LAYERS: &[(&str, Layer)] = &[
    ("aws_time", Layer::Core),
    ("config", Layer::Core),
    ("drill_id", Layer::Core),
    ("error_chain", Layer::Core),
    ("error_kind", Layer::Core),
    ("flush_status", Layer::Core),
    ("input", Layer::Core),
    ("invocation", Layer::Core),
    ("memory", Layer::Core),
    ("metrics", Layer::Core),
    ("output", Layer::Core),
    ("run_id", Layer::Core),
    ("settings", Layer::Core),
    ("tags", Layer::Core),
    ("telemetry", Layer::Core),
    ("work_path", Layer::Core),
    ("tls", Layer::Adapter),
    ("aws_clients", Layer::Adapter),
    ("aws_error", Layer::Adapter),
    ("cache_engine", Layer::Adapter),
    ("cache_state", Layer::Adapter),
    ("catalyst_db", Layer::Adapter),
    ("connection_jobs", Layer::Adapter),
    ("elasticache", Layer::Adapter),
    ("local_pg", Layer::Adapter),
    ("object_store", Layer::Adapter),
    ("postgres", Layer::Adapter),
    ("queues", Layer::Adapter),
    ("rds", Layer::Adapter),
    ("restore_engine", Layer::Adapter),
    ("staging_secret", Layer::Adapter),
    ("dr_copy", Layer::Feature),
    ("drill", Layer::Feature),
    ("logical", Layer::Feature),
    ("pitr", Layer::Feature),
    ("replay", Layer::Feature),
    ("snapshot", Layer::Feature),
    ("snapshot_trigger", Layer::Composition),
];

/// The crate's source with comments and `#[cfg(test)] mod tests` removed: what the shipped code
/// imports.
fn shipped_source(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    let text = match text.find("#[cfg(test)]\nmod tests") {
        Some(i) => &text[..i],
        None => &text[..],
    };
    text.lines()
        .map(|line| line.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

/// `crate::name` paths, and the names inside `use crate::{a, b::c}` groups.
fn imported_modules(source: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let ident = |s: &str| {
        s.chars()
            .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
            .collect::<String>()
    };
    for (i, _) in source.match_indices("crate::") {
        let rest = &source[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let group = &group[..group.find('}').unwrap_or(group.len())];
            for item in group.split(',') {
                let name = ident(item.trim());
                if !name.is_empty() {
                    names.insert(name);
                }
            }
        } else {
            let name = ident(rest);
            if !name.is_empty() {
                names.insert(name);
            }
        }
    }
    names
}

fn module_imports() -> BTreeMap<String, BTreeSet<String>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut imports: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut pending = vec![root.clone()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
                continue;
            }
            let relative = path.strip_prefix(&root).unwrap();
            let top = relative
                .components()
                .next()
                .unwrap()
                .as_os_str()
                .to_string_lossy()
                .trim_end_matches(".rs")
                .to_owned();
            if top == "lib" || top == "layers" || path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let found = imported_modules(&shipped_source(&path));
            let entry = imports.entry(top.clone()).or_default();
            entry.extend(found.into_iter().filter(|name| *name != top));
        }
    }
    imports
}

fn layer(module: &str) -> Option<Layer> {
    LAYERS.iter().find(|(m, _)| *m == module).map(|(_, l)| *l)
}

#[test]
fn every_module_imports_only_its_own_layer_or_below_and_features_never_each_other() {
    let imports = module_imports();
    let mut faults = Vec::new();
    for (module, used) in &imports {
        let Some(own) = layer(module) else {
            faults.push(format!("{module} has no layer in layers.rs"));
            continue;
        };
        for name in used {
            let Some(theirs) = layer(name) else {
                continue; // not a module of this crate (e.g. a macro path)
            };
            if theirs > own {
                faults.push(format!("{module} ({own:?}) imports {name} ({theirs:?})"));
            }
            if own == Layer::Feature && theirs == Layer::Feature {
                faults.push(format!("feature {module} imports feature {name}"));
            }
        }
    }
    assert!(faults.is_empty(), "{faults:#?}");
}

#[test]
fn the_modules_form_no_import_cycle() {
    let imports = module_imports();
    fn visit(
        module: &str,
        imports: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(start) = path.iter().position(|m| m == module) {
            let mut cycle = path[start..].to_vec();
            cycle.push(module.to_owned());
            return Some(cycle);
        }
        if !done.insert(module.to_owned()) {
            return None;
        }
        path.push(module.to_owned());
        for next in imports.get(module).into_iter().flatten() {
            if let Some(cycle) = visit(next, imports, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        None
    }
    let mut done = BTreeSet::new();
    for module in imports.keys() {
        let cycle = visit(module, &imports, &mut Vec::new(), &mut done);
        assert!(
            cycle.is_none(),
            "import cycle: {}",
            cycle.unwrap().join(" -> ")
        );
    }
}

#[test]
fn the_checker_sees_imports_and_layers() {
    let found = imported_modules("use crate::{input::X, tags};\nlet x = crate::run_id::RunId;");
    assert_eq!(
        found,
        BTreeSet::from(["input".into(), "tags".into(), "run_id".into()])
    );
    let imports = module_imports();
    assert!(imports["snapshot_trigger"].contains("snapshot"));
    assert!(imports["snapshot_trigger"].contains("logical"));
    assert!(layer("snapshot") > layer("object_store"));
}
