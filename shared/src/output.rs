//! What the handlers answer: their results, plain data, as the JSON a state machine reads.

use serde::Serialize;

pub fn to_json<T: Serialize>(value: T) -> serde_json::Value {
    serde_json::to_value(value).expect("results are plain data and always serialise")
}
