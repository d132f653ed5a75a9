//! The name of every `strata.*` setting, in one list: the extension defines exactly these as GUCs (its
//! tests check both ways) and reserves the `strata.` prefix, so PostgreSQL warns about any other name;
//! the `strata` command refuses another name given with `--repo-option` and warns about one in
//! `--config`. A misspelt setting (`repo1_cipher_pas`) is then named, with the nearest real one,
//! instead of being silently ignored.

use super::repos::{CIPHER_SETTINGS, MAX_REPOS, RETENTION_SETTINGS};
use super::s3::S3_SETTINGS;
use crate::{Error, Result};

/// The settings without a repository number (repo1's retention policy is the unnumbered one).
pub const GLOBAL_SETTINGS: &[&str] = &[
    "stanza",
    "compress_type",
    "compress_level",
    "process_max",
    "archive_process_max",
    "backup_archive_timeout",
    "backup_max_age_full",
    "backup_max_age_diff",
    "backup_max_age_incr",
    "metrics_cache_seconds",
    "metrics_listen",
    "repo_usage_warn",
];

/// Every setting name, `strata.` included, in a stable order.
pub fn all_setting_names() -> Vec<String> {
    let mut names: Vec<String> = GLOBAL_SETTINGS
        .iter()
        .chain(RETENTION_SETTINGS)
        .map(|n| format!("strata.{n}"))
        .collect();
    for number in 1..=MAX_REPOS {
        names.push(format!("strata.repo{number}"));
        let own_retention = if number == 1 {
            &[][..]
        } else {
            RETENTION_SETTINGS
        };
        for n in S3_SETTINGS
            .iter()
            .chain(CIPHER_SETTINGS)
            .chain(own_retention)
        {
            names.push(super::repos::repo_setting(number, n));
        }
    }
    names
}

/// Refuses a name that is not a setting (`strata.` included, any case as in PostgreSQL), naming the
/// nearest one. The value is never part of the message: a misspelt name may hold a secret.
pub fn check_setting_name(name: &str) -> Result<()> {
    let lower = name.to_ascii_lowercase();
    let names = all_setting_names();
    if names.contains(&lower) {
        return Ok(());
    }
    // repo1's retention policy is the unnumbered one: say so rather than suggest repo2's.
    let unnumbered = lower
        .strip_prefix("strata.repo1_")
        .map(|rest| format!("strata.{rest}"))
        .filter(|n| names.contains(n));
    let nearest = unnumbered.or_else(|| {
        names
            .iter()
            .map(|n| (edit_distance(&lower, n), n))
            .filter(|(d, _)| *d <= 3)
            .min()
            .map(|(_, n)| n.clone())
    });
    Err(Error::UnknownSetting {
        name: name.to_string(),
        nearest,
    })
}

/// Levenshtein distance (names are short ASCII: the simple table is enough).
fn edit_distance(a: &str, b: &str) -> usize {
    let b = b.as_bytes();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.bytes().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (diagonal + usize::from(ca != cb))
                .min(above + 1)
                .min(row[j] + 1);
            diagonal = above;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_real_setting_passes_in_any_case() {
        for name in all_setting_names() {
            check_setting_name(&name).unwrap();
            check_setting_name(&name.to_ascii_uppercase()).unwrap();
        }
        check_setting_name("strata.repo4_retention_window").unwrap();
        check_setting_name("strata.repo1_cipher_pass_file").unwrap();
    }

    #[test]
    fn a_misspelt_setting_is_refused_with_the_nearest_name_and_without_its_value() {
        let e = check_setting_name("strata.repo1_cipher_pas").unwrap_err();
        let text = e.to_string();
        assert!(text.contains("strata.repo1_cipher_pas"), "{text}");
        assert!(
            text.contains("did you mean strata.repo1_cipher_pass?"),
            "{text}"
        );
        let e = check_setting_name("strata.retention_ful").unwrap_err();
        assert!(e.to_string().contains("strata.retention_full?"), "{e}");
        // Far from every name: no suggestion, but still refused.
        let e = check_setting_name("strata.colour").unwrap_err().to_string();
        assert!(!e.contains("did you mean"), "{e}");
        // repo1's retention policy is the unnumbered one; repo5 does not exist.
        let e = check_setting_name("strata.repo1_retention_full").unwrap_err();
        assert!(
            e.to_string()
                .contains("did you mean strata.retention_full?"),
            "{e}"
        );
        assert!(check_setting_name("strata.repo5").is_err());
        assert!(check_setting_name("strata.repo2_s3_bucket").is_err());
    }

    #[test]
    fn edit_distances() {
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("same", "same"), 0);
    }
}
