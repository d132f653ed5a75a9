//! Value types of the manifest: a backup label (`Label`, checked when made, so a label held anywhere
//! in a manifest is one) and a 32-byte digest (`Checksum`, written as 64 hex digits): SHA-256 or
//! BLAKE3, as the manifest's `digest` says (see `object::DigestAlg`).

use super::BackupKind;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// A backup label: `YYYYMMDD-HHMMSSF` for a full, `<full label>_YYYYMMDD-HHMMSS<D|I>` for a diff or
/// incr, so that labels sort by time and show the chain. Only a string of that shape becomes a
/// `Label`, so a key built from one stays inside the stanza's backup directories.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Label(String);

impl Label {
    /// A new label for a backup of `kind` taken at `now`, built on the chain of `full` (the reference's
    /// label, whose full part is kept) unless it is a full.
    pub fn new(
        kind: BackupKind,
        full: Option<&Label>,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Label {
        let stamp = now.format("%Y%m%d-%H%M%S");
        Label(match (kind, full) {
            (BackupKind::Full, _) | (_, None) => format!("{stamp}F"),
            (k, Some(full)) => format!("{}_{stamp}{}", full.full_part(), k.letter()),
        })
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The kind the label's last letter says.
    pub fn kind(&self) -> BackupKind {
        match self.0.as_bytes()[self.0.len() - 1] {
            b'F' => BackupKind::Full,
            b'D' => BackupKind::Diff,
            _ => BackupKind::Incr,
        }
    }

    /// The time part of the label (`20261124-020000` of `20261123-020000F_20261124-020000I`): labels of
    /// one chain sort by it, and so do all of a stanza's backups.
    pub fn time(&self) -> &str {
        label_time(&self.0)
    }

    /// The label of the full backup the chain starts with (the label itself for a full).
    pub fn full_part(&self) -> &str {
        self.0.split('_').next().unwrap_or(&self.0)
    }
}

/// The time part of a label-shaped string (see `Label::time`); the whole string when it has none.
pub fn label_time(label: &str) -> &str {
    let own = label.rsplit('_').next().unwrap_or(label);
    own.get(..15).unwrap_or(own)
}

/// Whether a string has the shape of a backup label.
pub fn is_label(s: &str) -> bool {
    let one = |p: &str| {
        let b = p.as_bytes();
        b.len() == 16
            && b[..8].iter().all(u8::is_ascii_digit)
            && b[8] == b'-'
            && b[9..15].iter().all(u8::is_ascii_digit)
            && matches!(b[15], b'F' | b'D' | b'I')
    };
    let parts: Vec<&str> = s.split('_').collect();
    match parts.as_slice() {
        [full] => one(full) && full.ends_with('F'),
        [full, other] => one(full) && full.ends_with('F') && one(other) && !other.ends_with('F'),
        _ => false,
    }
}

impl FromStr for Label {
    type Err = Error;
    fn from_str(s: &str) -> Result<Label> {
        if is_label(s) {
            Ok(Label(s.to_string()))
        } else {
            Err(Error::BadSetting {
                name: "backup label".into(),
                value: s.into(),
                reason: "expected YYYYMMDD-HHMMSSF, or a full's label, '_' and YYYYMMDD-HHMMSS \
                         followed by D or I"
                    .into(),
            })
        }
    }
}

impl TryFrom<String> for Label {
    type Error = String;
    fn try_from(s: String) -> std::result::Result<Label, String> {
        if is_label(&s) {
            Ok(Label(s))
        } else {
            Err(format!("{s:?} is not a backup label"))
        }
    }
}

impl From<Label> for String {
    fn from(l: Label) -> String {
        l.0
    }
}

impl fmt::Display for Label {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A label reads as the string it is (`&Label` goes wherever a `&str` key part does).
impl std::ops::Deref for Label {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for Label {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl std::borrow::Borrow<str> for Label {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl PartialEq<str> for Label {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for Label {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

impl PartialEq<String> for Label {
    fn eq(&self, other: &String) -> bool {
        &self.0 == other
    }
}

/// A 32-byte digest (SHA-256 or BLAKE3, see `object::DigestAlg`); 64 lower-case hex digits in JSON
/// and in text.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Checksum(pub [u8; 32]);

impl Checksum {
    /// The SHA-256 of `bytes` (manifest heads and bodies).
    pub fn of(bytes: &[u8]) -> Checksum {
        Checksum(crate::object::sha256(bytes))
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl FromStr for Checksum {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Checksum, String> {
        let mut out = [0u8; 32];
        // Lower case only: one digest has one text (hex::decode_to_slice takes both cases).
        if s.len() != 64 || s.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(format!("{s:?} is not a digest (64 lower-case hex digits)"));
        }
        hex::decode_to_slice(s, &mut out)
            .map_err(|_| format!("{s:?} is not a digest (64 lower-case hex digits)"))?;
        Ok(Checksum(out))
    }
}

impl TryFrom<String> for Checksum {
    type Error = String;
    fn try_from(s: String) -> std::result::Result<Checksum, String> {
        s.parse()
    }
}

impl From<Checksum> for String {
    fn from(d: Checksum) -> String {
        d.to_hex()
    }
}

impl From<[u8; 32]> for Checksum {
    fn from(b: [u8; 32]) -> Checksum {
        Checksum(b)
    }
}

impl fmt::Display for Checksum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Checksum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Checksum({})", self.to_hex())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn labels_sort_by_time_and_show_the_chain() {
        let t = chrono::Utc.with_ymd_and_hms(2026, 11, 24, 2, 0, 0).unwrap();
        let full: Label = "20261123-020000F_20261123-120000I".parse().unwrap();
        assert_eq!(Label::new(BackupKind::Full, None, t), "20261124-020000F");
        assert_eq!(Label::new(BackupKind::Incr, None, t), "20261124-020000F");
        let incr = Label::new(BackupKind::Incr, Some(&full), t);
        assert_eq!(incr, "20261123-020000F_20261124-020000I");
        assert_eq!(incr.kind(), BackupKind::Incr);
        assert_eq!(incr.full_part(), "20261123-020000F");
        assert_eq!(
            Label::new(BackupKind::Diff, Some(&full), t).kind(),
            BackupKind::Diff
        );
        assert_eq!(label_time("20261123-020000F"), "20261123-020000");
        assert_eq!(incr.time(), "20261124-020000");
        // An incr built on an older full sorts before a newer full by label, not by time.
        let newer_full: Label = "20261124-020000F".parse().unwrap();
        let old_chain: Label = "20261123-020000F_20261125-020000I".parse().unwrap();
        assert!(old_chain < newer_full);
        assert!(old_chain.time() > newer_full.time());
        for bad in [
            "20261123-020000I",
            "../x",
            "20261123-020000F_20261124-020000F",
            "20261123-020000F_",
            "",
            "2026112३-020000F",
        ] {
            let e = bad.parse::<Label>().unwrap_err().to_string();
            assert!(e.contains("backup label"), "{bad}: {e}");
            assert!(serde_json::from_str::<Label>(&format!("{bad:?}")).is_err());
        }
        assert_eq!(serde_json::to_string(&full).unwrap(), format!("\"{full}\""));
        assert!("Full".parse::<BackupKind>().is_ok());
        let e = "weekly".parse::<BackupKind>().unwrap_err().to_string();
        assert!(
            e.contains("weekly") && e.contains("full, diff or incr"),
            "{e}"
        );
    }

    #[test]
    fn digests_are_64_lower_case_hex_digits() {
        let d = Checksum::of(b"abc");
        let text = serde_json::to_string(&d).unwrap();
        assert_eq!(
            text,
            "\"ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad\""
        );
        assert_eq!(serde_json::from_str::<Checksum>(&text).unwrap(), d);
        for bad in ["ab", &"AB".repeat(32), &"zz".repeat(32), &"ab".repeat(33)] {
            assert!(
                serde_json::from_str::<Checksum>(&format!("{bad:?}")).is_err(),
                "{bad}"
            );
        }
    }
}
