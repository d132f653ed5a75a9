//! Recovery targets: what `--type` and `--target` mean, parsed and checked before anything else
//! happens, and written back in the form PostgreSQL's recovery settings expect.

use crate::{Error, Result};
use chrono::{DateTime, FixedOffset, Local, NaiveDate, NaiveDateTime, TimeZone};
use pgformat::lsn::Lsn;

/// Where recovery stops.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RecoveryTarget {
    /// Replay all archived WAL, then promote.
    Default,
    /// Stop as soon as the backup is consistent.
    Immediate,
    Time(DateTime<FixedOffset>),
    Lsn(Lsn),
    Xid(u64),
    Name(String),
}

/// What the server does at the target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TargetAction {
    Pause,
    Promote,
    Shutdown,
}

impl TargetAction {
    pub fn parse(s: &str) -> Result<TargetAction> {
        match s {
            "pause" => Ok(TargetAction::Pause),
            "promote" => Ok(TargetAction::Promote),
            "shutdown" => Ok(TargetAction::Shutdown),
            _ => Err(bad(
                "--target-action",
                s,
                "expected pause, promote or shutdown",
            )),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            TargetAction::Pause => "pause",
            TargetAction::Promote => "promote",
            TargetAction::Shutdown => "shutdown",
        }
    }
}

fn bad(name: &str, value: &str, reason: &str) -> Error {
    Error::BadSetting {
        name: name.into(),
        value: value.into(),
        reason: reason.into(),
    }
}

impl RecoveryTarget {
    /// Parses `--type` and `--target`.
    pub fn parse(kind: &str, target: Option<&str>) -> Result<RecoveryTarget> {
        let need = |what: &str| {
            target.ok_or_else(|| {
                bad(
                    "--type",
                    kind,
                    &format!("--type {kind} needs --target {what}"),
                )
            })
        };
        let t = match kind {
            "default" | "immediate" => {
                if let Some(v) = target {
                    return Err(bad(
                        "--target",
                        v,
                        &format!("--type {kind} takes no --target (use --type time|lsn|xid|name)"),
                    ));
                }
                if kind == "default" {
                    RecoveryTarget::Default
                } else {
                    RecoveryTarget::Immediate
                }
            }
            "time" => RecoveryTarget::Time(parse_time(need("TIME")?)?),
            "lsn" => {
                let v = need("LSN")?;
                RecoveryTarget::Lsn(v.parse().map_err(|_| {
                    bad(
                        "--target",
                        v,
                        "not an LSN; write it as PostgreSQL does, e.g. 0/3000028",
                    )
                })?)
            }
            "xid" => {
                let v = need("XID")?;
                let xid: u64 = v.trim().parse().map_err(|_| {
                    bad(
                        "--target",
                        v,
                        "not a transaction id (a non-negative integer)",
                    )
                })?;
                // 0, 1 and 2 are PostgreSQL's invalid, bootstrap and frozen ids: no transaction
                // ever commits with them, so recovery could never stop there.
                if xid % (1 << 32) < 3 {
                    return Err(bad(
                        "--target",
                        v,
                        "transaction ids 0, 1 and 2 are special and never reached; give the id of a \
                         transaction (txid_current() shows them)",
                    ));
                }
                RecoveryTarget::Xid(xid)
            }
            "name" => {
                let v = need("NAME")?;
                if v.is_empty() || v.len() >= 64 {
                    return Err(bad(
                        "--target",
                        v,
                        "a restore point name has 1 to 63 characters",
                    ));
                }
                if v.chars().any(|c| c.is_control()) {
                    return Err(bad(
                        "--target",
                        &v.escape_debug().to_string(),
                        "a restore point name cannot contain a newline or control character",
                    ));
                }
                RecoveryTarget::Name(v.to_string())
            }
            _ => {
                return Err(bad(
                    "--type",
                    kind,
                    "expected default, immediate, time, lsn, xid or name",
                ))
            }
        };
        Ok(t)
    }

    /// The `recovery_target*` setting for this target, if any: (name, value).
    pub fn setting(&self) -> Option<(&'static str, String)> {
        match self {
            RecoveryTarget::Default => None,
            RecoveryTarget::Immediate => Some(("recovery_target", "immediate".into())),
            RecoveryTarget::Time(t) => Some((
                "recovery_target_time",
                t.format("%Y-%m-%d %H:%M:%S%.6f%:z").to_string(),
            )),
            RecoveryTarget::Lsn(l) => Some(("recovery_target_lsn", l.to_string())),
            RecoveryTarget::Xid(x) => Some(("recovery_target_xid", x.to_string())),
            RecoveryTarget::Name(n) => Some(("recovery_target_name", n.clone())),
        }
    }
}

/// Refuses a target that recovery from backup `m` can never reach: one before the backup's end (the
/// point where it becomes consistent; PostgreSQL would stop with "requested recovery stop point is
/// before consistent recovery point").
pub fn check_against_backup(target: &RecoveryTarget, m: &crate::manifest::Manifest) -> Result<()> {
    match target {
        RecoveryTarget::Lsn(l) if *l < m.stop_lsn => Err(bad(
            "--target",
            &l.to_string(),
            &format!(
                "backup {} is consistent only from {} on: choose a later LSN, or an older backup \
                 with --set (or leave --set out to pick one)",
                m.label, m.stop_lsn
            ),
        )),
        RecoveryTarget::Time(t) if *t < m.stop_time => Err(bad(
            "--target",
            &t.to_rfc3339(),
            &format!(
                "backup {} ended at {}: choose a later time, or an older backup with --set (or \
                     leave --set out to pick one)",
                m.label,
                crate::manifest::time_text(m.stop_time)
            ),
        )),
        _ => Ok(()),
    }
}

/// Accepts RFC 3339 and PostgreSQL-style `YYYY-MM-DD HH:MM:SS[.ffffff][+-TZ]`; without an offset the
/// time is this machine's local time.
pub fn parse_time(v: &str) -> Result<DateTime<FixedOffset>> {
    let s = v.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t);
    }
    for f in [
        "%Y-%m-%d %H:%M:%S%.f%#z",
        "%Y-%m-%d %H:%M:%S%#z",
        "%Y-%m-%d %H:%M%#z",
    ] {
        if let Ok(t) = DateTime::parse_from_str(s, f) {
            return Ok(t);
        }
    }
    let s_no_utc = s
        .strip_suffix(" UTC")
        .map(|p| (p, true))
        .unwrap_or((s, false));
    let naive = [
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%d %H:%M",
    ]
    .iter()
    .find_map(|f| NaiveDateTime::parse_from_str(s_no_utc.0, f).ok())
    .or_else(|| {
        NaiveDate::parse_from_str(s_no_utc.0, "%Y-%m-%d")
            .ok()
            .and_then(|d| d.and_hms_opt(0, 0, 0))
    });
    let Some(naive) = naive else {
        return Err(bad(
            "--target",
            v,
            "not a time; write e.g. '2026-11-23 14:05:00+01' or '2026-11-23T13:05:00Z'",
        ));
    };
    if s_no_utc.1 {
        return Ok(naive.and_utc().fixed_offset());
    }
    Local
        .from_local_datetime(&naive)
        .earliest()
        .map(|t| t.fixed_offset())
        .ok_or_else(|| bad("--target", v, "does not exist in the local time zone"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse_and_render_as_postgresql_expects() {
        let t = RecoveryTarget::parse("time", Some("2026-11-23 23:59:01.123456+00")).unwrap();
        assert_eq!(
            t.setting().unwrap(),
            (
                "recovery_target_time",
                "2026-11-23 23:59:01.123456+00:00".into()
            )
        );
        let t = RecoveryTarget::parse("time", Some("2026-11-23T10:00:00+01:00")).unwrap();
        assert_eq!(t.setting().unwrap().1, "2026-11-23 10:00:00.000000+01:00");
        assert!(RecoveryTarget::parse("time", Some("2026-11-23 10:00:00")).is_ok());
        assert_eq!(
            RecoveryTarget::parse("lsn", Some("0/3000028")).unwrap(),
            RecoveryTarget::Lsn(Lsn(0x0300_0028))
        );
        assert_eq!(
            RecoveryTarget::parse("xid", Some("742")).unwrap(),
            RecoveryTarget::Xid(742)
        );
        assert_eq!(
            RecoveryTarget::parse("immediate", None)
                .unwrap()
                .setting()
                .unwrap(),
            ("recovery_target", "immediate".into())
        );
        assert_eq!(
            RecoveryTarget::parse("default", None).unwrap().setting(),
            None
        );
    }

    #[test]
    fn bad_targets_are_named() {
        for (k, v) in [
            ("time", "yesterday-ish"),
            ("lsn", "0/XYZ"),
            ("xid", "-3"),
            ("xid", "0"),
            ("xid", "2"),
        ] {
            let e = RecoveryTarget::parse(k, Some(v)).unwrap_err().to_string();
            assert!(e.contains(v), "{e}");
        }
        let e = RecoveryTarget::parse("time", None).unwrap_err().to_string();
        assert!(e.contains("--target"), "{e}");
        let e = RecoveryTarget::parse("default", Some("x"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("takes no --target"), "{e}");
        let e = RecoveryTarget::parse("weekly", None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("weekly"), "{e}");
        assert!(TargetAction::parse("explode").is_err());
        let e = RecoveryTarget::parse("name", Some("before\nrecovery_target_action = 'x'"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("newline"), "{e}");
        let mut m = crate::manifest::tests::sample();
        m.stop_lsn = Lsn(0x0500_0000);
        let e = check_against_backup(&RecoveryTarget::Lsn(Lsn(0x0400_0000)), &m)
            .unwrap_err()
            .to_string();
        assert!(e.contains("0/5000000"), "{e}");
        assert!(check_against_backup(&RecoveryTarget::Lsn(Lsn(0x0500_0000)), &m).is_ok());
        let early = RecoveryTarget::parse("time", Some("2026-11-23T01:00:00Z")).unwrap();
        assert!(check_against_backup(&early, &m).is_err());
    }
}
