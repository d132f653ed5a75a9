//! Unit tests of the retention policies: what each keeps of a fabricated history.

use super::*;
use crate::manifest::tests::sample;

fn t(day: u32) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(&format!("2026-11-{day:02}T02:00:00Z"))
        .unwrap()
        .to_utc()
}

/// A backup taken on day `day` of `kind`, built on `chain` (oldest first).
fn backup(day: u32, kind: BackupKind, chain: &[&ManifestHead]) -> ManifestHead {
    let mut m = sample().head;
    let full = chain.first().map(|f| &f.label);
    m.label = Label::new(kind, full, t(day));
    m.kind = kind;
    m.references = chain.iter().map(|b| b.label.clone()).collect();
    m.prior = chain.last().map(|b| b.label.clone());
    m.start_time = t(day);
    m.stop_time = t(day) + Duration::minutes(5);
    m.start_lsn = Lsn(u64::from(day) << 24);
    m.stop_lsn = Lsn((u64::from(day) << 24) + 0x100);
    m
}

/// Four fulls (days 1, 8, 15, 22), each with an incr the next day, and a diff on day 24.
fn history() -> Vec<ManifestHead> {
    let mut all = Vec::new();
    let mut last_full = None;
    for day in [1, 8, 15, 22] {
        let f = backup(day, BackupKind::Full, &[]);
        let i = backup(day + 1, BackupKind::Incr, &[&f]);
        all.push(f.clone());
        all.push(i);
        last_full = Some(f);
    }
    let f = last_full.unwrap();
    let d = backup(24, BackupKind::Diff, &[&f]);
    let i = backup(25, BackupKind::Incr, &[&f, &d]);
    all.push(d);
    all.push(i);
    all
}

fn expired_days(d: &Decision) -> Vec<String> {
    d.expire.iter().map(|(l, _)| l.to_string()).collect()
}

fn kept(d: &Decision, m: &ManifestHead) -> bool {
    d.keep.contains_key(&m.label)
}

#[test]
fn without_a_policy_nothing_expires() {
    let all = history();
    let d = decide(&all, &Policy::default(), &[], t(30));
    assert!(d.expire.is_empty());
    assert_eq!(d.keep.len(), all.len());
    assert!(Policy::default().describe().contains("grows without limit"));
}

#[test]
fn count_keeps_the_newest_fulls_with_everything_built_on_them() {
    let all = history();
    let policy = Policy {
        full: Some(2),
        ..Default::default()
    };
    let d = decide(&all, &policy, &[], t(30));
    // Fulls of days 1 and 8 and their incrs go, newest first; the rest stays.
    assert_eq!(
        expired_days(&d),
        // Dependents (longer chains) first, then the fulls, newest first.
        vec![
            all[3].label.to_string(),
            all[1].label.to_string(),
            all[2].label.to_string(),
            all[0].label.to_string()
        ]
    );
    for m in &all[4..] {
        assert!(kept(&d, m), "{}", m.label);
    }
    // Minimum redundancy wins over a smaller count.
    let d = decide(
        &all,
        &Policy {
            full: Some(1),
            min_full: 3,
            ..Default::default()
        },
        &[],
        t(30),
    );
    assert_eq!(d.expire.len(), 2);
}

#[test]
fn diff_retention_counts_a_full_as_one_and_incrs_go_with_their_base() {
    let all = history();
    let d = decide(
        &all,
        &Policy {
            full: Some(2),
            diff: Some(1),
            ..Default::default()
        },
        &[],
        t(30),
    );
    // The diff is the newest of diffs and fulls: kept, with its incr and its full.
    assert!(kept(&d, &all[8]) && kept(&d, &all[9]) && kept(&d, &all[6]));
    // With diff = 1 alone (no full policy) only the diff, its base and its incr stay.
    let d = decide(
        &all,
        &Policy {
            diff: Some(1),
            ..Default::default()
        },
        &[],
        t(30),
    );
    let kept_labels: Vec<String> = d.keep.keys().map(|l| l.to_string()).collect();
    assert_eq!(
        kept_labels,
        vec![
            all[6].label.to_string(),
            all[8].label.to_string(),
            all[9].label.to_string()
        ]
    );
    // The incr of day 23, built on the kept full of day 22 but not on the diff, goes.
    assert!(!kept(&d, &all[7]));
}

#[test]
fn time_keeps_the_newest_full_older_than_the_period() {
    let all = history();
    let policy = Policy {
        full: Some(10),
        full_type: FullType::Time,
        ..Default::default()
    };
    // Now day 30, 10 days: fulls of days 22 (inside) and 15 (the newest before day 20) stay.
    let d = decide(&all, &policy, &[], t(30));
    assert!(kept(&d, &all[4]) && kept(&d, &all[6]));
    assert!(!kept(&d, &all[2]) && !kept(&d, &all[0]));
    assert_eq!(d.expire.len(), 4);
}

#[test]
fn the_recovery_window_keeps_its_base_and_chains() {
    let all = history();
    let policy = Policy {
        window: Some(Duration::days(5)),
        ..Default::default()
    };
    // Now day 26: the window starts on day 21; the newest backup ended before it is the incr of
    // day 16, kept with its full (day 15); everything older goes.
    let d = decide(&all, &policy, &[], t(26));
    assert!(kept(&d, &all[5]), "the base for the window's start");
    assert!(matches!(d.keep.get(&all[4].label), Some(Keep::Base(_))));
    for m in &all[..4] {
        assert!(!kept(&d, m), "{}", m.label);
    }
    // Two policies: the union (count 3 keeps the full of day 8 too).
    let d = decide(
        &all,
        &Policy {
            full: Some(3),
            ..policy.clone()
        },
        &[],
        t(26),
    );
    assert!(kept(&d, &all[2]) && kept(&d, &all[3]));
    assert!(!kept(&d, &all[0]));
}

#[test]
fn a_pinned_backup_is_kept_with_its_chain_whatever_the_policy() {
    let all = history();
    let policy = Policy {
        full: Some(1),
        ..Default::default()
    };
    // The incr of day 2 pinned: it and its full stay; the full of day 8 and its incr go.
    let d = decide(&all, &policy, &[all[1].label.clone()], t(30));
    assert_eq!(d.keep.get(&all[1].label), Some(&Keep::Pinned));
    assert!(matches!(d.keep.get(&all[0].label), Some(Keep::Base(_))));
    assert!(!kept(&d, &all[2]) && !kept(&d, &all[3]));
}

#[test]
fn settings_are_checked_naming_the_setting() {
    let conf = |pairs: &[(&str, &str)]| {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (format!("strata.{k}"), v.to_string()))
            .collect();
        Policy::from_settings(move |n| pairs.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone()))
    };
    let p = conf(&[("retention_full", "2"), ("retention_window", "2 weeks")]).unwrap();
    assert_eq!(p.full, Some(2));
    assert_eq!(p.window, Some(Duration::days(14)));
    assert!(p.describe().contains("2 full backups") && p.describe().contains("14 days"));
    let p = conf(&[
        ("retention_full", "0"),
        ("retention_window", "7days"),
        ("retention_full_type", "TIME"),
    ])
    .unwrap();
    assert_eq!(
        (p.full, p.window, p.full_type),
        (None, Some(Duration::days(7)), FullType::Time)
    );
    for (name, value) in [
        ("retention_full", "-1"),
        ("retention_window", "7 dayss"),
        ("retention_diff", "two"),
        ("retention_full_type", "weekly"),
        ("retention_window", "7 fortnights"),
        ("retention_window", "soon"),
        ("retention_window", "-3 days"),
        ("retention_min_full", "x"),
    ] {
        let e = conf(&[(name, value)]).unwrap_err().to_string();
        assert!(
            e.contains(&format!("strata.{name}")) && e.contains(value),
            "{e}"
        );
    }
}
