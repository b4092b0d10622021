//! Every sample event under `events/` is one the functions accept.

use catalyst_dr::input::decode;
use catalyst_dr::pitr::PitrEvent;
use catalyst_dr::snapshot_trigger::SnapshotTriggerEvent;
use serde::de::DeserializeOwned;

/// Decodes every sample in `events/<function>`; returns how many there were.
fn decode_samples<T: DeserializeOwned>(function: &str) -> usize {
    let dir = format!("{}/../events/{function}", env!("CARGO_MANIFEST_DIR"));
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).expect("sample folder") {
        let path = entry.expect("entry").path();
        let text = std::fs::read_to_string(&path).expect("read sample");
        let event: serde_json::Value = serde_json::from_str(&text).expect("sample is JSON");
        if let Err(err) = decode::<T>(event) {
            panic!("{}: {err}", path.display());
        }
        seen += 1;
    }
    seen
}

#[test]
fn snapshot_trigger_samples_decode() {
    assert!(
        decode_samples::<SnapshotTriggerEvent>("snapshot-trigger") >= 16,
        "one sample per action"
    );
}

#[test]
fn pitr_restore_samples_decode() {
    assert_eq!(
        decode_samples::<PitrEvent>("pitr-restore"),
        8,
        "one sample per action"
    );
}

#[test]
fn dead_letter_replay_samples_decode() {
    use catalyst_dr::replay::ReplayEvent;
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../events/dead-letter-replay");
    let mut actions = std::collections::BTreeSet::new();
    for entry in std::fs::read_dir(dir).expect("events/dead-letter-replay") {
        let path = entry.expect("entry").path();
        let text = std::fs::read_to_string(&path).expect("read sample");
        let event: serde_json::Value = serde_json::from_str(&text).expect("sample is JSON");
        actions.insert(event["action"].as_str().expect("action").to_owned());
        if let Err(err) = decode::<ReplayEvent>(event) {
            panic!("{}: {err}", path.display());
        }
    }
    let expected = [
        "cancel-redrive-task",
        "flush",
        "list-redrive-tasks",
        "plan",
        "redrive",
        "replay",
        "verify",
    ];
    assert_eq!(
        actions.iter().map(String::as_str).collect::<Vec<_>>(),
        expected,
        "one sample per action"
    );
}

#[test]
fn webhook_replay_execution_input_has_every_field_the_state_machine_reads() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../events/webhook-replay/execution-input.json"
    ))
    .expect("sample");
    let input: serde_json::Value = serde_json::from_str(&text).expect("JSON");
    for field in [
        "replay_id",
        "filter",
        "spread_seconds",
        "dry_run",
        "verify_after_seconds",
    ] {
        assert!(input.get(field).is_some(), "{field}");
    }
    let event = serde_json::json!({"action": "replay", "replay_id": input["replay_id"], "filter": input["filter"], "spread_seconds": input["spread_seconds"], "dry_run": input["dry_run"]});
    decode::<catalyst_dr::replay::ReplayEvent>(event).expect("the replay task's event decodes");
}
