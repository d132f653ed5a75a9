//! Archiving into every configured repository (`strata.repo1` … `strata.repo4`).
//!
//! Rule: a WAL file is reported archived only when every repository has it durably — a segment missing
//! from one repository would break that repository's restores. The repositories are written in
//! parallel, each by its own `ArchivePusher` (its stanza guard and summarizer). When one fails, the
//! call fails (PostgreSQL keeps the file and retries) and the repositories that did store it are
//! remembered for that file, so the retry writes only where it is missing; a repository that finds the
//! file already archived with the same content counts as done anyway (after a restart, say).

use super::lookahead::LookAhead;
use super::push::{ArchivePusher, PushReport, ReadBytes, ServerFacts};
use crate::config::{RepoConfig, RepoSet};
use crate::{Error, Result};
use std::path::Path;

struct Slot {
    config: RepoConfig,
    /// Opened on first use (and again after a panic).
    pusher: Option<ArchivePusher>,
}

/// What one archived file gave in each repository.
#[derive(Debug)]
pub struct MultiPushReport {
    /// (repository number, its report), for the repositories written by this call.
    pub reports: Vec<(u8, PushReport)>,
}

impl MultiPushReport {
    /// The report of the first repository written (status counters are per file, not per repository).
    pub fn first(&self) -> Option<&PushReport> {
        self.reports.first().map(|(_, r)| r)
    }
}

/// Why a file is not archived yet: each failing repository's error, and the repositories that have it.
#[derive(Debug)]
pub struct MultiPushFailure {
    pub errors: Vec<(u8, Error)>,
    pub stored: Vec<u8>,
    several: bool,
}

impl std::fmt::Display for MultiPushFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if !self.several {
            // One repository: its error as it is.
            for (_, e) in &self.errors {
                write!(f, "{e}")?;
            }
            return Ok(());
        }
        let text: Vec<String> = self
            .errors
            .iter()
            .map(|(n, e)| format!("repo{n}: {e}"))
            .collect();
        write!(f, "{}", text.join("; "))?;
        if self.stored.is_empty() {
            write!(f, " (no repository has it yet)")
        } else {
            let list: Vec<String> = self.stored.iter().map(|n| format!("repo{n}")).collect();
            write!(
                f,
                " ({} {} it; only the others are written again)",
                list.join(", "),
                if list.len() == 1 { "has" } else { "have" }
            )
        }
    }
}

/// The archiver's long-lived state for several repositories.
pub struct MultiPusher {
    facts: ServerFacts,
    slots: Vec<Slot>,
    /// The file of the last failed call and the repositories that stored it then.
    done: Option<(String, Vec<u8>)>,
    /// Workers storing the segments PostgreSQL will ask for next (`with_look_ahead`).
    ahead: Option<LookAhead>,
}

impl MultiPusher {
    pub fn new(repos: &RepoSet, facts: ServerFacts) -> MultiPusher {
        MultiPusher {
            facts,
            slots: repos
                .repos()
                .iter()
                .map(|config| Slot {
                    config: config.clone(),
                    pusher: None,
                })
                .collect(),
            done: None,
            ahead: None,
        }
    }

    /// With `workers` look-ahead threads (0: none) storing the segments waiting after the one asked
    /// for (see `lookahead`).
    pub fn with_look_ahead(mut self, repos: &RepoSet, workers: usize) -> MultiPusher {
        self.ahead = (workers > 0).then(|| LookAhead::new(repos, self.facts, workers));
        self
    }

    /// The number of look-ahead workers asked for (see `LookAhead::requested`): a pusher whose
    /// workers were capped is still the one for these settings, not rebuilt on every call.
    pub fn look_ahead_workers(&self) -> usize {
        self.ahead.as_ref().map_or(0, LookAhead::requested)
    }

    /// Whether this pusher writes to exactly these repositories with these settings.
    pub fn same_target(&self, repos: &RepoSet) -> bool {
        self.slots.len() == repos.repos().len()
            && self
                .slots
                .iter()
                .zip(repos.repos())
                .all(|(s, c)| same_config(&s.config, c))
    }

    /// Archives `wal_path` (named `file_name`) into every repository that does not have it yet. Ok only
    /// when all have it; the error names each repository that failed (and, with several, which have it).
    pub fn push(
        &mut self,
        wal_path: &Path,
        file_name: &str,
    ) -> std::result::Result<MultiPushReport, MultiPushFailure> {
        let already: Vec<u8> = match &self.done {
            Some((f, numbers)) if f == file_name => numbers.clone(),
            _ => Vec::new(),
        };
        let facts = self.facts;
        // What look-ahead stored, when a worker stored it in every repository.
        let ahead = self
            .ahead
            .as_mut()
            .and_then(|a| a.asked_for(file_name, wal_path))
            .and_then(|outcome| outcome.ok());
        // The bytes the worker read and stored, while the file is still the one it read.
        let read = ahead.as_ref().and_then(|a| a.read_bytes(wal_path));
        let outcomes: Vec<(u8, Result<PushReport>)> = std::thread::scope(|scope| {
            let jobs: Vec<_> = self
                .slots
                .iter_mut()
                .filter(|s| !already.contains(&s.config.number))
                .map(|slot| {
                    let number = slot.config.number;
                    let stored_ahead = ahead
                        .as_ref()
                        .and_then(|a| a.stored.iter().find(|(n, _)| *n == number))
                        .map(|(_, size)| *size);
                    let job = scope.spawn(move || {
                        push_one(slot, facts, wal_path, file_name, stored_ahead, read)
                    });
                    (number, job)
                })
                .collect();
            jobs.into_iter()
                .map(|(number, job)| {
                    let r = job.join().unwrap_or_else(|panic| {
                        Err(Error::Internal(format!(
                            "archiving panicked: {}",
                            panic_text(&panic)
                        )))
                    });
                    (number, r)
                })
                .collect()
        });
        let mut stored = already;
        let mut reports = Vec::new();
        let mut errors = Vec::new();
        for (number, outcome) in outcomes {
            match outcome {
                Ok(report) => {
                    stored.push(number);
                    reports.push((number, report));
                }
                Err(e) => {
                    if matches!(e, Error::Internal(_)) {
                        // A panic may have left the pusher half-updated.
                        if let Some(s) = self.slots.iter_mut().find(|s| s.config.number == number) {
                            s.pusher = None;
                        }
                    }
                    errors.push((number, e));
                }
            }
        }
        if let Some(a) = &self.ahead {
            a.reported(file_name, errors.is_empty());
            if let Some(done) = ahead {
                a.recycle(done.data);
            }
        }
        if errors.is_empty() {
            self.done = None;
            return Ok(MultiPushReport { reports });
        }
        stored.sort_unstable();
        self.done = Some((file_name.to_string(), stored.clone()));
        Err(MultiPushFailure {
            errors,
            stored,
            several: self.slots.len() > 1,
        })
    }
}

fn push_one(
    slot: &mut Slot,
    facts: ServerFacts,
    wal_path: &Path,
    file_name: &str,
    stored_ahead: Option<u64>,
    read: Option<ReadBytes>,
) -> Result<PushReport> {
    if slot.pusher.is_none() {
        slot.pusher = Some(ArchivePusher::new(slot.config.clone(), facts)?);
    }
    let pusher = slot.pusher.as_mut().expect("opened above");
    pusher.push_hinted(wal_path, file_name, stored_ahead, read)
}

fn same_config(a: &RepoConfig, b: &RepoConfig) -> bool {
    a.number == b.number
        && a.repo == b.repo
        && a.stanza == b.stanza
        && a.compress_type == b.compress_type
        && a.compress_level == b.compress_level
        && a.cipher == b.cipher
}

fn panic_text(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "unknown panic".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::{archive_get, GetOutcome};
    use crate::repo::Repo;

    #[test]
    fn every_repository_or_none_and_a_retry_writes_only_where_missing() {
        let one = tempfile::tempdir().unwrap();
        let parent = tempfile::tempdir().unwrap();
        let two = parent.path().join("two");
        let settings = [
            ("strata.repo1", format!("file://{}", one.path().display())),
            ("strata.repo2", format!("file://{}", two.display())),
            ("strata.compress_type", "lz4".to_string()),
        ];
        let get = |n: &str| {
            settings
                .iter()
                .find(|(k, _)| *k == n)
                .map(|(_, v)| v.clone())
        };
        let set = RepoSet::from_settings(&get).unwrap();
        let facts = ServerFacts {
            system_identifier: 42,
            pg_version: 15,
            wal_segment_size: 16 << 20,
        };
        let wal = tempfile::tempdir().unwrap();
        let file = wal.path().join("00000002.history");
        std::fs::write(&file, "1\t0/3000000\tno recovery target specified\n").unwrap();
        let mut pusher = MultiPusher::new(&set, facts);
        assert!(pusher.same_target(&set));
        // repo2's directory does not exist: not archived, and the message says repo1 has it.
        let e = pusher.push(&file, "00000002.history").unwrap_err();
        assert_eq!(e.stored, vec![1]);
        let text = e.to_string();
        assert!(
            text.contains("repo2: ") && text.contains("repo1 has it"),
            "{text}"
        );
        // Back: only repo2 is written.
        std::fs::create_dir(&two).unwrap();
        let report = pusher.push(&file, "00000002.history").unwrap();
        let written: Vec<u8> = report.reports.iter().map(|(n, _)| *n).collect();
        assert_eq!(written, vec![2]);
        for config in set.repos() {
            let repo = Repo::open_config(config).unwrap();
            let dest = wal.path().join(format!("back{}", config.number));
            let got = archive_get(&repo, "00000002.history", &dest).unwrap();
            assert!(matches!(got, GetOutcome::Restored { .. }));
            assert_eq!(std::fs::read(&dest).unwrap(), std::fs::read(&file).unwrap());
        }
        // Again (a restart forgot what was done): both find it archived, the same content.
        let mut fresh = MultiPusher::new(&set, facts);
        let report = fresh.push(&file, "00000002.history").unwrap();
        assert!(report.reports.iter().all(|(_, r)| r.already_archived));
    }
}
