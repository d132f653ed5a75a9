//! Pushing one WAL file into the repository, as the archiver's `archive_file_cb` does.
//!
//! Steps: read the file once; the digest of the plaintext (`object::digest`); if any object for this file name exists already,
//! the same digest is success and a different one is refused (never overwritten); otherwise compress and
//! store durably; then, for segments, decode the records and store the block-change summary. Before all
//! that, the stanza's identity is checked (every call, cheaply): nothing is written into a stanza whose
//! `strata.repo` is missing or another cluster's. The caller
//! reports success to PostgreSQL only when this returns Ok, so any failure leaves the segment in pg_wal
//! to be retried.

use super::summarize::{SegmentKind, SegmentSummarizer};

use crate::config::RepoConfig;
use crate::identity;
use crate::object;
use crate::paths::RepoKey;
use crate::repo::Repo;
use crate::storage::PutOutcome;
use crate::summary::Summary;
use crate::{Error, Result};
use pgformat::lsn::{segment_file_name, WalFileName};
use std::path::Path;

/// Facts about the server whose WAL is archived.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct ServerFacts {
    pub system_identifier: u64,
    /// Major version, e.g. 15.
    pub pg_version: u32,
    pub wal_segment_size: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SummaryReport {
    /// Not a segment (history or backup history file).
    NotApplicable,
    /// Written (or already there), with the number of modified blocks recorded.
    Written { blocks: usize },
    /// Stored as missing, with the reason.
    Missing(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PushReport {
    pub key: RepoKey,
    pub original_bytes: u64,
    pub stored_bytes: u64,
    /// The same content was archived before (a retry after a crash): nothing was written.
    pub already_archived: bool,
    /// A look-ahead worker had stored it before PostgreSQL asked (see `lookahead`); checked here.
    pub stored_ahead: bool,
    /// The digest (`object::digest`) of the bytes archived.
    pub digest: [u8; 32],
    pub summary: SummaryReport,
}

/// A file's bytes read already, with their digest (`object::digest`): what a look-ahead worker read,
/// hashed and stored, handed to the call for the same file.
#[derive(Clone, Copy)]
pub struct ReadBytes<'a> {
    pub data: &'a [u8],
    pub digest: [u8; 32],
}

/// Long-lived state of an archiver: the open repository and the summarizer carried across segments.
pub struct ArchivePusher {
    config: RepoConfig,
    facts: ServerFacts,
    repo: Repo,
    /// Re-checks the stanza's identity before every push (see `identity`).
    guard: identity::StanzaGuard,
    summarizer: SegmentSummarizer,
    /// Off for a look-ahead worker's pushers: summaries are made in segment order by the archiver's.
    summaries: bool,
    read_buf: Vec<u8>,
}

impl ArchivePusher {
    pub fn new(config: RepoConfig, facts: ServerFacts) -> Result<ArchivePusher> {
        let repo = Repo::open_config(&config)?;
        Ok(ArchivePusher {
            summarizer: SegmentSummarizer::new(facts.wal_segment_size),
            config,
            facts,
            repo,
            guard: identity::StanzaGuard::new(
                facts.system_identifier,
                facts.pg_version,
                facts.wal_segment_size,
            ),
            summaries: true,
            read_buf: Vec::new(),
        })
    }

    /// A look-ahead worker's pusher: it stores files without their block-change summaries (a summary
    /// needs the previous segment's last record, so summaries are made in order by the archiver when
    /// PostgreSQL asks for each segment), and never creates the stanza (it works only after the
    /// archiver's pusher found it, see `StanzaGuard::existing_only`).
    pub fn for_look_ahead(mut self) -> ArchivePusher {
        self.summaries = false;
        self.guard = self.guard.existing_only();
        self
    }

    pub fn config(&self) -> &RepoConfig {
        &self.config
    }

    /// The repository written to (tests count its requests).
    pub fn repo(&self) -> &Repo {
        &self.repo
    }

    /// Archives the file at `wal_path`, named `file_name` (as PostgreSQL names it).
    pub fn push(&mut self, wal_path: &Path, file_name: &str) -> Result<PushReport> {
        self.push_hinted(wal_path, file_name, None, None)
    }

    /// `push`, told that a look-ahead worker stored the file already (`stored_ahead`: the stored size
    /// here): the stored object is then looked up first instead of compressing again, and its digest
    /// must be the one of the file's bytes, as for any file found archived. `read` are the bytes the
    /// worker read and stored (the caller checked that the file is still the one read): they are
    /// summarized instead of reading and hashing the file again. Without them the file is read here.
    pub fn push_hinted(
        &mut self,
        wal_path: &Path,
        file_name: &str,
        stored_ahead: Option<u64>,
        read: Option<ReadBytes>,
    ) -> Result<PushReport> {
        let parsed = self.parse_name(file_name)?;
        // Every time: the repository may have been unmounted or moved since the last segment.
        self.guard.check(&self.repo)?;
        // On a remote repository the create is tried first (the server refuses it when the object
        // exists, and only then is the stored header read): one request per file instead of two.
        let look_first = self.repo.storage().local_root().is_some() || stored_ahead.is_some();
        let result = match read {
            Some(read) => self.push_data(
                wal_path,
                file_name,
                parsed,
                (read.data, Some(read.digest)),
                look_first,
                None,
            ),
            None => self.read_and_push(wal_path, file_name, parsed, look_first),
        };
        let mut report = result?;
        if let Some(stored) = stored_ahead {
            if report.already_archived {
                report.already_archived = false;
                report.stored_ahead = true;
                report.stored_bytes = stored;
            }
        }
        Ok(report)
    }

    fn read_and_push(
        &mut self,
        wal_path: &Path,
        file_name: &str,
        parsed: WalFileName,
        look_first: bool,
    ) -> Result<PushReport> {
        // Reuse one buffer across segments: a fresh 16 MB allocation per segment costs page faults.
        let mut data = std::mem::take(&mut self.read_buf);
        data.clear();
        let read = std::fs::File::open(wal_path)
            .and_then(|mut f| std::io::Read::read_to_end(&mut f, &mut data));
        if let Err(source) = read {
            self.read_buf = data;
            return Err(Error::ReadFile {
                path: wal_path.into(),
                source,
            });
        }
        let result = self.push_data(wal_path, file_name, parsed, (&data, None), look_first, None);
        self.read_buf = data;
        result
    }

    /// Stores a file already read (`data`, the bytes of `wal_path`; `digest` their digest if known),
    /// as a look-ahead worker does: `gate` is called once the object is ready and before it is
    /// written, and no object is written when it fails (a worker waits there for the segment before
    /// to be stored).
    pub fn push_bytes(
        &mut self,
        wal_path: &Path,
        file_name: &str,
        data: &[u8],
        digest: Option<[u8; 32]>,
        gate: &dyn Fn() -> Result<()>,
    ) -> Result<PushReport> {
        let parsed = self.parse_name(file_name)?;
        self.guard.check(&self.repo)?;
        let look_first = self.repo.storage().local_root().is_some();
        self.push_data(
            wal_path,
            file_name,
            parsed,
            (data, digest),
            look_first,
            Some(gate),
        )
    }

    fn parse_name(&self, file_name: &str) -> Result<WalFileName> {
        WalFileName::parse(file_name, self.facts.wal_segment_size).ok_or_else(|| {
            Error::BadWalFileName {
                what: file_name.to_string(),
            }
        })
    }

    fn push_data(
        &mut self,
        wal_path: &Path,
        file_name: &str,
        parsed: WalFileName,
        // The bytes, and their digest when known already.
        (data, known_digest): (&[u8], Option<[u8; 32]>),
        look_first: bool,
        gate: Option<&dyn Fn() -> Result<()>>,
    ) -> Result<PushReport> {
        let seg_size = self.facts.wal_segment_size;
        if let WalFileName::Segment { .. } = parsed {
            if data.len() != seg_size as usize {
                return Err(Error::BadInput(format!(
                    "WAL segment {} has {} bytes, expected {seg_size}",
                    wal_path.display(),
                    data.len()
                )));
            }
        }
        let segment = match parsed {
            WalFileName::Segment { timeline, segno } => {
                Some((timeline, segno, SegmentKind::Complete))
            }
            WalFileName::Partial { timeline, segno } => {
                Some((timeline, segno, SegmentKind::Partial))
            }
            _ => None,
        };
        if segment.is_some() {
            self.check_system_identifier(file_name, data)?;
        }
        let key = self.repo.keys().archive_file(file_name, seg_size)?;
        let existing = match look_first {
            true => self.repo.wal_header(file_name, seg_size)?,
            false => None,
        };
        let data_keys = self.repo.data_keys()?;

        // The CPU work runs in parallel: the digest and the summary on their own threads, compression here
        // (where the zstd context is cached). Compressing before knowing whether the object exists wastes
        // work only on a retry, which is rare.
        let (repo, facts, config) = (&self.repo, &self.facts, &self.config);
        let summarizer = &mut self.summarizer;
        let summarized = segment.filter(|_| self.summaries);
        let (sha, payload, summary) = std::thread::scope(|scope| {
            let sha_job = match known_digest {
                None => Some(scope.spawn(|| object::digest(data))),
                Some(_) => None,
            };
            let summary_job = summarized.map(|(timeline, segno, kind)| {
                scope.spawn(move || {
                    summarizer.summarize(timeline, segno, kind, data, || {
                        previous_segment(repo, facts.wal_segment_size, wal_path, timeline, segno)
                    })
                })
            });
            let payload = match existing {
                None => Some(object::compress_payload_for(
                    data,
                    config.compress_type,
                    config.compress_level,
                    data_keys.is_some(),
                )),
                Some(_) => None,
            };
            let sha = match sha_job {
                Some(job) => job
                    .join()
                    .map_err(|_| Error::Internal("the digest thread panicked".into())),
                None => Ok(known_digest.expect("not computed when known")),
            };
            let summary = summary_job
                .map(|j| {
                    j.join()
                        .map_err(|_| Error::Internal("the summary thread panicked".into()))
                })
                .transpose();
            (sha, payload, summary)
        });
        let (sha, summary) = (sha?, summary?);

        let mut report = PushReport {
            key: key.clone(),
            original_bytes: data.len() as u64,
            stored_bytes: 0,
            already_archived: false,
            stored_ahead: false,
            digest: sha,
            summary: SummaryReport::NotApplicable,
        };
        // An object archived by an earlier pg_strata has a digest of another hash: compared in that one.
        let same = |header: &object::ObjectHeader| match header.alg {
            object::DigestAlg::CURRENT => header.digest == sha,
            other => header.digest == other.hash(data),
        };
        match existing {
            Some((existing_key, header)) if same(&header) => {
                report.already_archived = true;
                report.key = existing_key;
            }
            Some((existing_key, header)) => {
                return Err(Error::ArchiveMismatch {
                    file: file_name.to_string(),
                    key: existing_key.to_string(),
                    stored: format!("{} {}", header.alg.name(), header.digest_hex()),
                    new: format!(
                        "{} {}",
                        header.alg.name(),
                        hex::encode(header.alg.hash(data))
                    ),
                })
            }
            None => {
                let mut stored = payload.expect("compressed when no object exists")?;
                object::finish(
                    &mut stored,
                    data.len() as u64,
                    sha,
                    self.config.compress_type,
                    data_keys.as_deref(),
                    object::Place::whole(key.as_str()),
                )?;
                report.stored_bytes = stored.len() as u64;
                if let Some(gate) = gate {
                    gate()?;
                }
                if self.repo.storage().put_new(&key, stored)? == PutOutcome::AlreadyExists {
                    // Archived before (a retry), or raced with another writer: judge by what is
                    // there now.
                    return self.push_data(
                        wal_path,
                        file_name,
                        parsed,
                        (data, Some(sha)),
                        true,
                        gate,
                    );
                }
            }
        }
        if let Some(summary) = summary {
            report.summary = self.store_summary(&summary)?;
        }
        Ok(report)
    }

    fn check_system_identifier(&self, file_name: &str, data: &[u8]) -> Result<()> {
        if let Some(sysid) = pgformat::wal::segment_system_identifier(data) {
            if sysid != self.facts.system_identifier {
                return Err(Error::BadInput(format!(
                    "WAL file {file_name} was written by system identifier {sysid}, but this cluster is {}; \
                     refusing to archive it",
                    self.facts.system_identifier
                )));
            }
        }
        Ok(())
    }

    fn store_summary(&self, summary: &Summary) -> Result<SummaryReport> {
        let key = self
            .repo
            .keys()
            .summary(summary.timeline, summary.start, summary.end);
        let storage = self.repo.storage();
        // A retry may find the summary written already; either version describes the same WAL, except
        // that a complete one is better than a missing one.
        let repo = &self.repo;
        match storage.put_new(&key, repo.seal(&key, summary.encode())?)? {
            PutOutcome::Written => {}
            PutOutcome::AlreadyExists => {
                if summary.missing.is_none() {
                    let existing = storage.get(&key)?;
                    let was_missing = existing
                        .map(|b| {
                            repo.unseal(&key, b)
                                .and_then(|b| {
                                    Summary::decode(key.as_str(), &b).map_err(|e| {
                                        Error::CorruptObject {
                                            key: key.to_string(),
                                            reason: e.to_string(),
                                        }
                                    })
                                })
                                .map(|s| s.missing.is_some())
                                .unwrap_or(true)
                        })
                        .unwrap_or(true);
                    if was_missing {
                        storage.put_replace(&key, repo.seal(&key, summary.encode())?)?;
                    }
                }
            }
        }
        Ok(match &summary.missing {
            Some(reason) => SummaryReport::Missing(reason.clone()),
            None => SummaryReport::Written {
                blocks: summary.block_count(),
            },
        })
    }
}

/// The segment before `segno`, from pg_wal beside `wal_path` or from the repository: on the same
/// timeline, else on earlier ones (the first segment of a new timeline continues its parent's WAL). A
/// wrong predecessor cannot slip through: the decoder checks the continuation length and the record CRC.
pub(crate) fn previous_segment(
    repo: &Repo,
    seg_size: u32,
    wal_path: &Path,
    timeline: u32,
    segno: u64,
) -> Option<Vec<u8>> {
    let prev = segno.checked_sub(1)?;
    for tli in (timeline.saturating_sub(16).max(1)..=timeline).rev() {
        let name = segment_file_name(tli, prev, seg_size);
        if let Some(dir) = wal_path.parent() {
            if let Ok(bytes) = std::fs::read(dir.join(&name)) {
                if bytes.len() == seg_size as usize {
                    return Some(bytes);
                }
            }
        }
        if let Ok(Some((_, plain))) = repo.fetch_wal(&name, seg_size) {
            return Some(plain);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::{archive_get, GetOutcome};
    use crate::compress::CompressType;
    use crate::config::RepoConfig;

    fn setup(dir: &Path) -> ArchivePusher {
        let config = RepoConfig::new(
            &format!("file://{}", dir.display()),
            "main",
            CompressType::Lz4,
            1,
        )
        .unwrap();
        let facts = ServerFacts {
            system_identifier: 42,
            pg_version: 15,
            wal_segment_size: 16 << 20,
        };
        ArchivePusher::new(config, facts).unwrap()
    }

    #[test]
    fn history_files_push_once_refuse_changes_and_come_back() {
        let repo = tempfile::tempdir().unwrap();
        let wal = tempfile::tempdir().unwrap();
        let file = wal.path().join("00000002.history");
        std::fs::write(&file, "1\t0/3000000\tno recovery target specified\n").unwrap();
        let mut pusher = setup(repo.path());
        let first = pusher.push(&file, "00000002.history").unwrap();
        assert!(!first.already_archived);
        assert_eq!(first.key.as_str(), "main/archive/00000002.history");
        assert_eq!(first.summary, SummaryReport::NotApplicable);
        assert!(
            pusher
                .push(&file, "00000002.history")
                .unwrap()
                .already_archived
        );

        std::fs::write(&file, "1\t0/4000000\tsomething else\n").unwrap();
        let err = pusher
            .push(&file, "00000002.history")
            .unwrap_err()
            .to_string();
        assert!(err.contains("different content"), "{err}");

        let repo = Repo::open_config(pusher.config()).unwrap();
        let dest = wal.path().join("restored");
        let got = archive_get(&repo, "00000002.history", &dest).unwrap();
        assert!(matches!(got, GetOutcome::Restored { .. }));
        assert!(std::fs::read_to_string(&dest)
            .unwrap()
            .contains("0/3000000"));
        let missing = archive_get(&repo, "00000003.history", &dest).unwrap();
        assert_eq!(missing, GetOutcome::NotFound);
    }

    #[test]
    fn an_undecodable_segment_is_archived_with_its_summary_marked_missing() {
        let repo = tempfile::tempdir().unwrap();
        let wal = tempfile::tempdir().unwrap();
        let file = wal.path().join("000000010000000000000003");
        std::fs::write(&file, vec![0xABu8; 16 << 20]).unwrap();
        let mut pusher = setup(repo.path());
        let report = pusher.push(&file, "000000010000000000000003").unwrap();
        let SummaryReport::Missing(reason) = &report.summary else {
            panic!("{:?}", report.summary)
        };
        assert!(
            reason.contains("0/3000000"),
            "the reason names the LSN: {reason}"
        );
        let key = "main/summary/00000001/0000000003000000-0000000004000000.blkref";
        let bytes = std::fs::read(repo.path().join(key)).unwrap();
        let summary = crate::summary::Summary::decode(key, &bytes).unwrap();
        assert_eq!(summary.missing.as_deref(), Some(reason.as_str()));
        assert!(summary.forks.is_empty());
        // The segment itself is archived and comes back.
        let repo = Repo::open_config(pusher.config()).unwrap();
        let dest = wal.path().join("back");
        let before = repo.storage().requests();
        archive_get(&repo, "000000010000000000000003", &dest).unwrap();
        // One request for the identity (read once per process), one for the segment.
        assert_eq!(repo.storage().requests() - before, 2);
        let before = repo.storage().requests();
        archive_get(&repo, "000000010000000000000004", &dest).unwrap();
        assert_eq!(
            repo.storage().requests() - before,
            1,
            "one request per lookup"
        );
        assert_eq!(std::fs::read(&dest).unwrap(), vec![0xABu8; 16 << 20]);
    }

    #[test]
    fn bad_names_and_short_segments_are_refused() {
        let repo = tempfile::tempdir().unwrap();
        let wal = tempfile::tempdir().unwrap();
        let file = wal.path().join("000000010000000000000001");
        std::fs::write(&file, vec![0u8; 100]).unwrap();
        let mut pusher = setup(repo.path());
        let err = pusher
            .push(&file, "000000010000000000000001")
            .unwrap_err()
            .to_string();
        assert!(err.contains("has 100 bytes"), "{err}");
        let err = pusher.push(&file, "notwal").unwrap_err().to_string();
        assert!(err.contains("not a WAL file name"), "{err}");
        let err = pusher
            .push(&wal.path().join("absent"), "000000010000000000000002")
            .unwrap_err()
            .to_string();
        assert!(err.contains("cannot read"), "{err}");
    }
}
