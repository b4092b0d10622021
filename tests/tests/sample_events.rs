//! Every sample event under `events/` is one the functions accept.

use catalyst_dr::input::decode;
use catalyst_dr::snapshot::SnapshotTriggerEvent;

#[test]
fn snapshot_trigger_samples_decode() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../events/snapshot-trigger");
    let mut seen = 0;
    for entry in std::fs::read_dir(dir).expect("events/snapshot-trigger") {
        let path = entry.expect("entry").path();
        let text = std::fs::read_to_string(&path).expect("read sample");
        let event: serde_json::Value = serde_json::from_str(&text).expect("sample is JSON");
        if let Err(err) = decode::<SnapshotTriggerEvent>(event) {
            panic!("{}: {err}", path.display());
        }
        seen += 1;
    }
    assert!(seen >= 9, "one sample per action");
}
