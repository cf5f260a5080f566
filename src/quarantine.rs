//! Quarantined input: what could not be read, where it came from and why. Errors are data here:
//! every rejected row or message becomes a [`Quarantined`] record that is counted and written to
//! a dead-letter file or topic (`<topic>.quarantine`), never a panic and never silently dropped.

use serde::{Deserialize, Serialize};

/// One rejected input, with its original payload and the reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quarantined {
    /// Where it came from: `file.csv:17`, `file.csv@byte 4096`, `topic/3@1234`.
    pub source: String,
    /// Why it was rejected, in words a user can act on.
    pub reason: String,
    /// The original payload, lossily decoded as UTF-8.
    pub payload: String,
}

impl Quarantined {
    /// Builds a quarantine record from raw bytes.
    pub fn new(source: impl Into<String>, reason: impl Into<String>, payload: &[u8]) -> Self {
        Quarantined {
            source: source.into(),
            reason: reason.into(),
            payload: String::from_utf8_lossy(payload).into_owned(),
        }
    }

    /// The JSON line written to dead-letter files and topics.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("plain struct serialises")
    }
}
