//! Tests of `restore::file_writer`: rebuilds files of fabricated chains in a temporary repository.

use super::*;
use crate::compress::CompressType;
use crate::config::RepoUrl;
use crate::manifest::{BackupKind, Manifest, StoredObject};

const B: usize = BLOCK as usize;
const FULL: &str = "20261123-020000F";
const I1: &str = "20261123-020000F_20261124-020000I";
const I2: &str = "20261123-020000F_20261125-020000I";

/// A block whose every byte says where it came from.
fn page(tag: u8) -> Vec<u8> {
    vec![tag; B]
}

/// A chain of fabricated backups in a temporary repository, objects stored as the copy stores them.
struct Chain {
    _dir: tempfile::TempDir,
    repo: Repo,
    manifests: Vec<Manifest>,
}

impl Chain {
    fn new() -> Chain {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repo::open(&RepoUrl::Local(dir.path().into()), "st").unwrap();
        let mut manifests = Vec::new();
        for (i, label) in [FULL, I1, I2].iter().enumerate() {
            let mut m = crate::manifest::tests::sample();
            m.label = crate::manifest::tests::label(label);
            m.files.clear();
            m.objects.clear();
            if i > 0 {
                m.kind = BackupKind::Incr;
                m.prior = Some(crate::manifest::tests::label([FULL, I1][i - 1]));
                m.references = [FULL, I1][..i]
                    .iter()
                    .map(|l| crate::manifest::tests::label(l))
                    .collect();
            }
            manifests.push(m);
        }
        Chain {
            _dir: dir,
            repo,
            manifests,
        }
    }

    fn store(&mut self, backup: usize, plain: &[u8]) -> Piece {
        let m = &mut self.manifests[backup];
        let name = crate::paths::RepoKeys::backup_object_name(m.objects.len() as u64);
        let sha = object::digest(plain);
        let stored = object::encode_with_hash(plain, sha, CompressType::Zstd, 1).unwrap();
        m.objects.push(StoredObject {
            name: name.clone(),
            size: stored.len() as u64,
            crc32c: crc32c::crc32c(&stored),
        });
        let piece = Piece::whole_object(name.clone(), stored.len() as u64, plain.len() as u64, sha);
        let key = self.repo.keys().backup_object(&m.label, &name).unwrap();
        self.repo.storage().put_new(&key, stored).unwrap();
        piece
    }

    /// A whole copy of `content` in backup `backup`, in pieces of `piece_blocks` blocks.
    fn whole(&mut self, backup: usize, path: &str, content: &[u8], piece_blocks: usize) {
        let pieces: Vec<Piece> = content
            .chunks(piece_blocks * B)
            .map(|c| self.store(backup, c))
            .collect();
        let shas: Vec<[u8; 32]> = content
            .chunks(piece_blocks * B)
            .map(object::digest)
            .collect();
        self.manifests[backup].files.push(FileEntry {
            path: path.into(),
            size: content.len() as u64,
            mode: 0o600,
            mtime: 1_795_000_000,
            digest: Some(Checksum(object::content_digest(&shas))),
            incremental: None,
            pieces,
        });
    }

    /// `path` in incremental form in backup `backup`: `length` blocks, the `blocks` (number, tag)
    /// stored, `piece_blocks` to a piece.
    fn incr(
        &mut self,
        backup: usize,
        path: &str,
        length: u32,
        blocks: &[(u32, u8)],
        piece_blocks: usize,
    ) {
        let mut pieces = Vec::new();
        for group in blocks.chunks(piece_blocks) {
            let pages: Vec<(u32, Vec<u8>)> = group.iter().map(|&(n, t)| (n, page(t))).collect();
            let refs: Vec<(u32, &[u8])> = pages.iter().map(|(n, p)| (*n, p.as_slice())).collect();
            let plain = crate::incremental::encode(length, &refs).unwrap();
            pieces.push(self.store(backup, &plain));
        }
        self.manifests[backup].files.push(FileEntry {
            path: path.into(),
            size: length as u64 * BLOCK,
            mode: 0o600,
            mtime: 1_795_000_000,
            digest: None,
            incremental: Some(length),
            pieces,
        });
    }

    /// Restores `path` of the newest backup into a temporary directory and returns its bytes.
    fn restore(&self, path: &str) -> Result<Vec<u8>> {
        self.restore_into(path, tempfile::tempdir().unwrap().path())
    }

    fn restore_into(&self, path: &str, out: &Path) -> Result<Vec<u8>> {
        let mut chain: Vec<Manifest> = self.manifests.iter().rev().cloned().collect();
        let target = chain.remove(0);
        let plan = Plan::for_chain(target, chain)?;
        std::fs::create_dir_all(out.join(path).parent().unwrap()).unwrap();
        let root = Root::open(out)?;
        let f = plan.manifest.files.iter().find(|f| f.path == path).unwrap();
        let mut writer = FileWriter {
            repo: &self.repo,
            plan: &plan,
            fsync: false,
            owner: None,
            fetched: None,
        };
        writer.write(f, &root, path)?;
        Ok(std::fs::read(out.join(path)).unwrap())
    }
}

fn pages(tags: &[u8]) -> Vec<u8> {
    tags.iter().flat_map(|&t| page(t)).collect()
}

#[test]
fn a_relation_that_shrank_keeps_no_stale_block() {
    let mut c = Chain::new();
    let p = "base/5/16384";
    c.whole(0, p, &pages(&[10, 11, 12, 13, 14, 15]), 2);
    // Cut to 3 blocks, block 1 changed; then grown back to 5, blocks 3 and 4 new.
    c.incr(1, p, 3, &[(1, 21)], 8);
    c.incr(2, p, 5, &[(3, 33), (4, 34)], 8);
    assert_eq!(c.restore(p).unwrap(), pages(&[10, 21, 12, 33, 34]));
    // Cut again in the newest backup: nothing past its length, whatever the older ones had.
    let mut c = Chain::new();
    c.whole(0, p, &pages(&[10, 11, 12, 13, 14, 15]), 2);
    c.incr(1, p, 6, &[(1, 21), (5, 25)], 8);
    c.incr(2, p, 2, &[], 8);
    assert_eq!(c.restore(p).unwrap(), pages(&[10, 21]));
}

#[test]
fn a_relation_extended_past_the_base_gets_its_new_blocks_and_holes() {
    let mut c = Chain::new();
    let p = "base/5/16385";
    c.whole(0, p, &pages(&[10, 11]), 8);
    // Grown to 5 (block 3 never written: a hole), then to 7 (block 5 never written either).
    c.incr(1, p, 5, &[(2, 22), (4, 24)], 8);
    c.incr(2, p, 7, &[(6, 36)], 8);
    let got = c.restore(p).unwrap();
    assert_eq!(got, pages(&[10, 11, 22, 0, 24, 0, 36]));
    // Blocks never written stay holes: a 100 MB file of two stored blocks takes no 100 MB.
    let mut c = Chain::new();
    let p = "base/5/16389";
    c.whole(0, p, &pages(&[10]), 8);
    c.incr(1, p, 12_800, &[(12_799, 29)], 8);
    c.incr(2, p, 12_800, &[], 8);
    let restored = tempfile::tempdir().unwrap();
    let got = c.restore_into(p, restored.path()).unwrap();
    assert_eq!(got.len(), 12_800 * B);
    assert_eq!(&got[..B], &page(10)[..]);
    assert_eq!(&got[12_799 * B..], &page(29)[..]);
    assert!(got[B..12_799 * B].iter().all(|&b| b == 0));
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(restored.path().join(p)).unwrap();
    assert!(
        meta.blocks() * 512 < 1 << 20,
        "{} bytes allocated",
        meta.blocks() * 512
    );
}

#[test]
fn a_block_changed_in_several_layers_comes_from_the_newest() {
    let mut c = Chain::new();
    let p = "base/5/16386";
    c.whole(0, p, &pages(&[10, 11, 12, 13]), 8);
    // Blocks spread over several pieces per layer, consecutive ones written as runs.
    c.incr(1, p, 4, &[(0, 20), (1, 21), (2, 22)], 2);
    c.incr(2, p, 4, &[(1, 31), (2, 32)], 1);
    assert_eq!(c.restore(p).unwrap(), pages(&[20, 31, 32, 13]));
}

#[test]
fn an_unchanged_file_comes_whole_from_the_full_and_its_digest_is_checked() {
    let mut c = Chain::new();
    let p = "base/5/16387";
    let content = pages(&[10, 11, 12, 13, 14]);
    c.whole(0, p, &content, 2);
    c.incr(1, p, 5, &[], 8);
    c.incr(2, p, 5, &[], 8);
    assert_eq!(c.restore(p).unwrap(), content);
    // Every piece of the base read: a base that does not match its digest is refused.
    c.manifests[0].files[0].digest = Some(Checksum([0; 32]));
    let e = c.restore(p).unwrap_err();
    assert!(matches!(e, Error::ChecksumMismatch { .. }), "{e}");
    // A base piece whose blocks all changed later is not read (nor its digest checked).
    let mut c2 = Chain::new();
    c2.whole(0, p, &content, 2);
    c2.manifests[0].files[0].digest = Some(Checksum([0; 32]));
    c2.incr(1, p, 5, &[(2, 22), (3, 23)], 8);
    c2.incr(2, p, 5, &[], 8);
    assert_eq!(c2.restore(p).unwrap(), pages(&[10, 11, 22, 23, 14]));
}

#[test]
fn an_incremental_piece_disagreeing_with_the_manifest_is_refused() {
    let mut c = Chain::new();
    let p = "base/5/16388";
    c.whole(0, p, &pages(&[10]), 8);
    c.incr(1, p, 1, &[], 8);
    c.incr(2, p, 3, &[(2, 32)], 8);
    c.manifests[2].files[0].incremental = Some(4);
    let e = c.restore(p).unwrap_err().to_string();
    assert!(e.contains("says 3 blocks"), "{e}");
    // A length no segment can have is refused before anything is planned.
    c.manifests[2].files[0].incremental = Some(pgformat::relfile::RELSEG_SIZE + 1);
    let e = c.restore(p).unwrap_err().to_string();
    assert!(e.contains("more than a relation segment"), "{e}");
}
