//! Every sample event under `events/` is one the functions accept.

use catalyst_dr::input::decode;
use catalyst_dr::pitr::PitrEvent;
use catalyst_dr::snapshot::SnapshotTriggerEvent;
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
    assert!(decode_samples::<SnapshotTriggerEvent>("snapshot-trigger") >= 7, "one sample per action");
}

#[test]
fn pitr_restore_samples_decode() {
    assert_eq!(decode_samples::<PitrEvent>("pitr-restore"), 6, "one sample per action");
}
