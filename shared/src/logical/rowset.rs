//! The content checksum of a set of rows, independent of their order: the sum, modulo 2^256, of
//! the SHA-256 of every row's COPY text line (newline included), each read as a big-endian
//! 256-bit integer. Being a sum, the checksums of disjoint parts of a table add up to the
//! table's: a backup reads a large table in block ranges on several connections, a restore loads
//! those parts in any interleaving and re-reads the table in its own block ranges, and all three
//! meet on one number without ever sorting the table. Duplicate rows count as many times as they
//! occur. It detects corruption and lost or extra rows; the stored objects' own SHA-256 is the
//! cryptographic guard against tampering.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// A rowset checksum: 64 lowercase hex digits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RowsetChecksum {
    /// Little-endian 64-bit limbs of the 256-bit sum.
    limbs: [u64; 4],
}

impl RowsetChecksum {
    /// Adds one row's SHA-256 to the sum.
    fn add_digest(&mut self, digest: &[u8]) {
        let mut other = [0u64; 4];
        for (i, limb) in other.iter_mut().enumerate() {
            let start = 32 - 8 * (i + 1);
            *limb = u64::from_be_bytes(digest[start..start + 8].try_into().expect("8 bytes"));
        }
        self.add(&Self { limbs: other });
    }

    /// The checksum of the union of two disjoint row sets.
    pub fn add(&mut self, other: &Self) {
        let mut carry = false;
        for (mine, theirs) in self.limbs.iter_mut().zip(other.limbs) {
            let (sum, c1) = mine.overflowing_add(theirs);
            let (sum, c2) = sum.overflowing_add(u64::from(carry));
            *mine = sum;
            carry = c1 || c2;
        }
    }

    pub fn to_hex(&self) -> String {
        self.limbs
            .iter()
            .rev()
            .map(|limb| format!("{limb:016x}"))
            .collect()
    }

    pub fn from_hex(hex: &str) -> Option<Self> {
        if hex.len() != 64 || !hex.is_ascii() {
            return None;
        }
        let mut limbs = [0u64; 4];
        for (i, limb) in limbs.iter_mut().enumerate() {
            let start = 64 - 16 * (i + 1);
            *limb = u64::from_str_radix(&hex[start..start + 16], 16).ok()?;
        }
        Some(Self { limbs })
    }
}

impl std::fmt::Display for RowsetChecksum {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl Serialize for RowsetChecksum {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for RowsetChecksum {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let hex = String::deserialize(deserializer)?;
        Self::from_hex(&hex)
            .ok_or_else(|| serde::de::Error::custom("a rowset checksum is 64 hex digits"))
    }
}

/// Accumulates the rowset checksum and row count of COPY text arriving in chunks of any size.
/// Holds at most one row that straddles chunks.
#[derive(Debug, Default)]
pub struct RowsetHasher {
    checksum: RowsetChecksum,
    rows: u64,
    bytes: u64,
    partial: Vec<u8>,
}

impl RowsetHasher {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn update(&mut self, mut chunk: &[u8]) {
        self.bytes += chunk.len() as u64;
        while let Some(end) = memchr::memchr(b'\n', chunk) {
            let (line, rest) = chunk.split_at(end + 1);
            if self.partial.is_empty() {
                self.add_row(line);
            } else {
                let mut row = std::mem::take(&mut self.partial);
                row.extend_from_slice(line);
                self.add_row(&row);
                row.clear();
                self.partial = row;
            }
            chunk = rest;
        }
        self.partial.extend_from_slice(chunk);
    }

    fn add_row(&mut self, line: &[u8]) {
        self.checksum.add_digest(&Sha256::digest(line));
        self.rows += 1;
    }

    /// The checksum, row count and bytes seen. Text after the last newline (COPY never ends
    /// without one) counts as a row of its own, so a truncated stream cannot match.
    pub fn finish(mut self) -> RowsetSummary {
        if !self.partial.is_empty() {
            let row = std::mem::take(&mut self.partial);
            self.add_row(&row);
        }
        RowsetSummary {
            checksum: self.checksum,
            rows: self.rows,
            bytes: self.bytes,
        }
    }
}

/// What a [`RowsetHasher`] saw.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RowsetSummary {
    pub checksum: RowsetChecksum,
    pub rows: u64,
    pub bytes: u64,
}

impl RowsetSummary {
    /// How these rows differ from the manifest's figures, each difference a sentence that ends
    /// with what the manifest has; `what` says what was read (`in <key>`, `in the restored table`).
    pub fn differences(&self, what: &str, rows: u64, checksum: &RowsetChecksum) -> Vec<String> {
        let mut found = Vec::new();
        if self.rows != rows {
            found.push(format!(
                "{} rows {what}, the manifest has {rows}",
                self.rows
            ));
        }
        if self.checksum != *checksum {
            found.push(format!(
                "content checksum {} {what}, the manifest has {checksum}",
                self.checksum
            ));
        }
        found
    }

    /// The summary of the union of two disjoint parts.
    pub fn add(&mut self, other: &Self) {
        self.checksum.add(&other.checksum);
        self.rows += other.rows;
        self.bytes += other.bytes;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(chunks: &[&[u8]]) -> RowsetSummary {
        let mut hasher = RowsetHasher::new();
        for chunk in chunks {
            hasher.update(chunk);
        }
        hasher.finish()
    }

    #[test]
    fn independent_of_order_and_chunking() {
        let a = summary(&[b"1\tx\n2\ty\n3\t\\N\n"]);
        let b = summary(&[b"3\t", b"\\N\n2", b"\ty\n", b"1\tx", b"\n"]);
        assert_eq!(a, b);
        assert_eq!(a.rows, 3);
        assert_eq!(a.bytes, 13);
    }

    #[test]
    fn parts_add_up_to_the_whole() {
        let whole = summary(&[b"a\nb\nc\nd\n"]);
        let mut parts = summary(&[b"c\na\n"]);
        parts.add(&summary(&[b"d\nb\n"]));
        assert_eq!(parts, whole);
    }

    #[test]
    fn detects_changed_missing_duplicated_and_truncated_rows() {
        let good = summary(&[b"a\nb\n"]).checksum;
        for bad in [&b"a\nc\n"[..], b"a\n", b"a\nb\nb\n", b"a\nb", b"a\nb\n\n"] {
            assert_ne!(
                summary(&[bad]).checksum,
                good,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert_eq!(summary(&[]).checksum, RowsetChecksum::default());
    }

    #[test]
    fn the_sum_carries_and_is_the_documented_number() {
        // One row: the checksum is that row's SHA-256 itself.
        let one = summary(&[b"x\n"]).checksum;
        assert_eq!(one.to_hex(), hex::encode(Sha256::digest(b"x\n")));
        let mut max = RowsetChecksum::from_hex(&"f".repeat(64)).unwrap();
        max.add(&RowsetChecksum::from_hex(&format!("{}2", "0".repeat(63))).unwrap());
        assert_eq!(max.to_hex(), format!("{}1", "0".repeat(63)));
        let mut carry =
            RowsetChecksum::from_hex(&format!("{}{}", "0".repeat(48), "f".repeat(16))).unwrap();
        carry.add(&RowsetChecksum::from_hex(&format!("{}1", "0".repeat(63))).unwrap());
        assert_eq!(
            carry.to_hex(),
            format!("{}1{}", "0".repeat(47), "0".repeat(16))
        );
        assert!(RowsetChecksum::from_hex("zz").is_none());
        let json = serde_json::to_string(&one).unwrap();
        assert_eq!(serde_json::from_str::<RowsetChecksum>(&json).unwrap(), one);
    }
}
