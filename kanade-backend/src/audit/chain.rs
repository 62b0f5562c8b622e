//! The hash chain, as pure functions: canonical JSON, an entry's hash, the
//! parameters' digest, and [`verify`], which walks a chain and names the
//! first entry that was changed, removed or reordered.
//!
//! An entry's `hash` is `hex(sha256(canonical JSON of the entry without its
//! "hash" field))`. Canonical JSON is the compact serde_json text with every
//! object's keys sorted (byte order), whatever features serde_json is built
//! with. The first entry has `seq` 1 and `prev_hash` `""`; each later entry
//! has the next `seq` and the previous entry's `hash` as `prev_hash`.

use kanade_core::wire::AuditEvent;
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// The canonical JSON text of `value`: compact, object keys sorted.
pub fn canonical_json(value: &Value) -> String {
    let mut out = String::new();
    write_canonical(value, &mut out);
    out
}

fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                if let Some(inner) = map.get(key) {
                    write_canonical(inner, out);
                }
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

/// `value` as it reads back from its canonical text.
///
/// serde_json's default float parsing is best-effort, so a float may come
/// back one ulp off; the chain hashes and stores values in this settled
/// form, so an entry read back from storage or an export hashes the same.
pub fn settle(value: Value) -> Value {
    let mut current = value;
    for _ in 0..4 {
        match serde_json::from_str::<Value>(&canonical_json(&current)) {
            Ok(next) if next == current => return current,
            Ok(next) => current = next,
            Err(_) => return current,
        }
    }
    current
}

/// Lower-case hex sha256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    let mut hex = String::with_capacity(64);
    for byte in digest {
        hex.push_str(&format!("{byte:02x}"));
    }
    hex
}

/// `params_sha256`: hex sha256 of the canonical JSON of a request's parameters.
pub fn params_sha256(params: &Value) -> String {
    sha256_hex(canonical_json(params).as_bytes())
}

/// Any serialisable value as a JSON [`Value`] (`Null` if it cannot be one).
fn to_value(value: &impl Serialize) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}

/// The hash `entry` should carry: over its canonical JSON without `hash`
/// (its own `hash` field is ignored).
pub fn entry_hash(entry: &AuditEvent) -> String {
    let mut value = to_value(entry);
    if let Value::Object(map) = &mut value {
        map.remove("hash");
    }
    sha256_hex(canonical_json(&value).as_bytes())
}

/// A chain that verified.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct VerifyReport {
    /// How many entries it holds.
    pub entries: u64,
    /// The last entry's hash (`""` for an empty chain): pin it somewhere
    /// safe to detect a later truncation or rewrite of the whole tail.
    pub last_hash: String,
}

/// What kind of break [`verify`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum BreakKind {
    /// The entry's content no longer matches its hash: it was changed.
    Changed,
    /// The entry is missing: the chain jumps over its seq.
    Missing,
    /// The entry's seq is not above the one before: entries were reordered
    /// (or duplicated).
    OutOfOrder,
    /// The entry's `prev_hash` is not the previous entry's hash: an entry
    /// before it was removed, replaced or moved.
    Unlinked,
    /// The entry has no seq, or its stored columns cannot be read back.
    Unreadable,
}

/// Where and why a chain is broken.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, thiserror::Error)]
#[error("audit chain broken at seq {seq}: {reason}")]
pub struct ChainBreak {
    /// The first bad seq. For a [`BreakKind::Missing`] entry this is the seq
    /// that is missing (the first one removed), not the entry after the gap.
    pub seq: u64,
    /// What kind of break.
    pub kind: BreakKind,
    /// A sentence for people.
    pub reason: String,
}

/// Checks entries one at a time, in the order given; [`verify`] wraps it.
#[derive(Debug, Clone, Default)]
pub struct Verifier {
    entries: u64,
    last_seq: u64,
    last_hash: String,
}

impl Verifier {
    /// A verifier expecting the first entry (seq 1, empty `prev_hash`).
    pub fn new() -> Self {
        Self::default()
    }

    /// Checks the next entry.
    pub fn push(&mut self, entry: &AuditEvent) -> Result<(), ChainBreak> {
        let expected = self.last_seq + 1;
        let Some(seq) = entry.seq else {
            return Err(ChainBreak {
                seq: expected,
                kind: BreakKind::Unreadable,
                reason: format!("entry {:?} has no seq", entry.id),
            });
        };
        if seq <= self.last_seq {
            return Err(ChainBreak {
                seq,
                kind: BreakKind::OutOfOrder,
                reason: format!("seq {seq} comes after seq {}", self.last_seq),
            });
        }
        if seq > expected {
            return Err(ChainBreak {
                seq: expected,
                kind: BreakKind::Missing,
                reason: if seq == expected + 1 {
                    format!("entry {expected} is missing (the next entry is {seq})")
                } else {
                    format!(
                        "entries {expected} to {} are missing (the next entry is {seq})",
                        seq - 1
                    )
                },
            });
        }
        if entry_hash(entry) != entry.hash {
            return Err(ChainBreak {
                seq,
                kind: BreakKind::Changed,
                reason: format!("entry {seq} does not match its hash: it was changed"),
            });
        }
        if entry.prev_hash != self.last_hash {
            return Err(ChainBreak {
                seq,
                kind: BreakKind::Unlinked,
                reason: if self.last_seq == 0 {
                    format!("entry {seq} is first but names a previous entry")
                } else {
                    format!(
                        "entry {seq}'s prev_hash is not the hash of entry {}",
                        self.last_seq
                    )
                },
            });
        }
        self.entries += 1;
        self.last_seq = seq;
        self.last_hash = entry.hash.clone();
        Ok(())
    }

    /// The report for everything pushed so far.
    pub fn finish(self) -> VerifyReport {
        VerifyReport {
            entries: self.entries,
            last_hash: self.last_hash,
        }
    }
}

/// Walks a whole chain from its first entry (seq 1) and names the first
/// entry that was changed, removed or reordered.
///
/// Checks per entry, in this order: seq present; seq above the previous
/// one ([`BreakKind::OutOfOrder`]); no seq skipped ([`BreakKind::Missing`],
/// naming the first missing seq); content matches `hash`
/// ([`BreakKind::Changed`]); `prev_hash` is the previous entry's `hash`
/// ([`BreakKind::Unlinked`]).
pub fn verify(entries: impl IntoIterator<Item = AuditEvent>) -> Result<VerifyReport, ChainBreak> {
    let mut verifier = Verifier::new();
    for entry in entries {
        verifier.push(&entry)?;
    }
    Ok(verifier.finish())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use chrono::{TimeZone, Utc};
    use kanade_core::wire::AuditSource;
    use serde_json::json;

    use super::*;

    fn chain(n: u64) -> Vec<AuditEvent> {
        let mut prev = String::new();
        (1..=n)
            .map(|seq| {
                let mut entry = AuditEvent {
                    id: format!("id-{seq}"),
                    seq: Some(seq),
                    at: Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, seq as u32).unwrap(),
                    actor: "alice".into(),
                    source: Some(AuditSource {
                        ip: Some("10.0.0.1".into()),
                        kind: "api".into(),
                    }),
                    action: "exec".into(),
                    target: Some(format!("job-{seq}")),
                    outcome: Some("ok".into()),
                    params_sha256: Some(params_sha256(&json!({"n": seq}))),
                    details: json!({"b": 1, "a": [seq, "x"]}),
                    prev_hash: prev.clone(),
                    hash: String::new(),
                };
                entry.hash = entry_hash(&entry);
                prev = entry.hash.clone();
                entry
            })
            .collect()
    }

    #[test]
    fn canonical_json_sorts_keys_and_matches_serde_json_here() {
        let value = json!({"b": {"z": 1, "a": [true, null, 1.5]}, "a": "é\"", "c": -3});
        assert_eq!(
            canonical_json(&value),
            r#"{"a":"é\"","b":{"a":[true,null,1.5],"z":1},"c":-3}"#
        );
        // serde_json is built without `preserve_order` in this workspace,
        // so its own text is already canonical.
        assert_eq!(canonical_json(&value), value.to_string());
    }

    #[test]
    fn params_digest_ignores_key_order() {
        let a: Value = serde_json::from_str(r#"{"x":1,"y":[2,3]}"#).unwrap();
        let b: Value = serde_json::from_str(r#"{"y":[2,3],"x":1}"#).unwrap();
        assert_eq!(params_sha256(&a), params_sha256(&b));
        assert_eq!(params_sha256(&a).len(), 64);
        assert_ne!(
            params_sha256(&a),
            params_sha256(&json!({"x": 2, "y": [2, 3]}))
        );
    }

    #[test]
    fn hash_ignores_the_hash_field_and_covers_everything_else() {
        let entry = chain(1).remove(0);
        let mut other = entry.clone();
        other.hash = "whatever".into();
        assert_eq!(entry_hash(&other), entry.hash);
        for change in [
            |e: &mut AuditEvent| e.actor = "mallory".into(),
            |e: &mut AuditEvent| e.seq = Some(2),
            |e: &mut AuditEvent| e.outcome = Some("denied".into()),
            |e: &mut AuditEvent| e.source = None,
            |e: &mut AuditEvent| e.details = json!({}),
            |e: &mut AuditEvent| e.prev_hash = "00".into(),
            |e: &mut AuditEvent| e.at += chrono::Duration::nanoseconds(1),
        ] {
            let mut changed = entry.clone();
            change(&mut changed);
            assert_ne!(entry_hash(&changed), entry.hash);
        }
    }

    #[test]
    fn an_intact_chain_verifies() {
        let entries = chain(5);
        let last = entries[4].hash.clone();
        assert_eq!(
            verify(entries),
            Ok(VerifyReport {
                entries: 5,
                last_hash: last
            })
        );
        assert_eq!(
            verify(Vec::new()),
            Ok(VerifyReport {
                entries: 0,
                last_hash: String::new()
            })
        );
    }

    #[test]
    fn a_chain_survives_an_export_round_trip() {
        let mut entries = chain(3);
        entries[1].details = settle(json!({"f": 0.1 + 0.2, "g": 1e300, "h": u64::MAX}));
        entries[1].hash = entry_hash(&entries[1]);
        entries[2].prev_hash = entries[1].hash.clone();
        entries[2].hash = entry_hash(&entries[2]);
        let text: Vec<String> = entries
            .iter()
            .map(|e| serde_json::to_string(e).unwrap())
            .collect();
        let back = text.iter().map(|t| serde_json::from_str(t).unwrap());
        assert_eq!(verify(back).unwrap().entries, 3);
    }

    #[test]
    fn a_changed_entry_is_named() {
        let mut entries = chain(5);
        entries[2].actor = "mallory".into();
        let err = verify(entries).unwrap_err();
        assert_eq!((err.seq, err.kind), (3, BreakKind::Changed));
    }

    #[test]
    fn a_changed_entry_with_a_recomputed_hash_breaks_the_next_link() {
        let mut entries = chain(5);
        entries[2].actor = "mallory".into();
        entries[2].hash = entry_hash(&entries[2]);
        let err = verify(entries).unwrap_err();
        assert_eq!((err.seq, err.kind), (4, BreakKind::Unlinked));
    }

    #[test]
    fn a_removed_entry_is_named_by_its_seq() {
        let mut entries = chain(5);
        entries.remove(1);
        let err = verify(entries).unwrap_err();
        assert_eq!((err.seq, err.kind), (2, BreakKind::Missing));
        assert!(err.reason.contains("entry 2 is missing"), "{}", err.reason);

        let mut entries = chain(5);
        entries.remove(0);
        let err = verify(entries).unwrap_err();
        assert_eq!((err.seq, err.kind), (1, BreakKind::Missing));
    }

    #[test]
    fn a_removed_and_renumbered_entry_breaks_the_link() {
        // Entry 2 removed and the rest renumbered (and rehashed so that
        // each matches itself): entry 2 (formerly 3) does not link to 1.
        let mut entries = chain(5);
        entries.remove(1);
        for (i, e) in entries.iter_mut().enumerate().skip(1) {
            e.seq = Some(i as u64 + 1);
            e.hash = entry_hash(e);
        }
        let err = verify(entries).unwrap_err();
        assert_eq!((err.seq, err.kind), (2, BreakKind::Unlinked));
    }

    #[test]
    fn reordered_entries_are_named() {
        let mut entries = chain(5);
        entries.swap(1, 2);
        let err = verify(entries).unwrap_err();
        // 1, 3, …: seq 2 is where the chain first goes wrong.
        assert_eq!((err.seq, err.kind), (2, BreakKind::Missing));

        let mut entries = chain(5);
        entries.swap(3, 4);
        entries.remove(2);
        // 1, 2, 5, 4: the jump is found first.
        let err = verify(entries).unwrap_err();
        assert_eq!((err.seq, err.kind), (3, BreakKind::Missing));

        let mut entries = chain(3);
        let first = entries[0].clone();
        entries.push(first);
        let err = verify(entries).unwrap_err();
        assert_eq!((err.seq, err.kind), (1, BreakKind::OutOfOrder));
    }

    #[test]
    fn swapped_contents_under_the_same_seqs_are_named() {
        // Rows 2 and 3 trade places but keep their seq numbers in order.
        let mut entries = chain(5);
        let (two, three) = (entries[1].clone(), entries[2].clone());
        entries[1] = AuditEvent {
            seq: Some(2),
            ..three
        };
        entries[2] = AuditEvent {
            seq: Some(3),
            ..two
        };
        let err = verify(entries).unwrap_err();
        assert_eq!((err.seq, err.kind), (2, BreakKind::Changed));
    }

    #[test]
    fn a_missing_seq_is_unreadable() {
        let mut entries = chain(2);
        entries[1].seq = None;
        let err = verify(entries).unwrap_err();
        assert_eq!((err.seq, err.kind), (2, BreakKind::Unreadable));
    }

    #[test]
    fn settle_is_stable() {
        let raw: Value =
            serde_json::from_str(r#"{"x":[0.1,2.5e-308,123456789.123456789,0.30000000000000004]}"#)
                .unwrap();
        let value = settle(raw);
        let back: Value = serde_json::from_str(&canonical_json(&value)).unwrap();
        assert_eq!(back, value);
    }
}
