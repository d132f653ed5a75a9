//! A manifest in an encrypted stanza: its head line and its body sealed as two objects one after the
//! other (`object::seal_bytes`, at offsets 0 and the head's stored length), so that a listing still
//! reads only the first bytes to get the head (the length of the first sealed object follows from its
//! header).

use crate::object::{self, Place, SEALED_HEADER_LEN};
use crate::paths::RepoKey;
use crate::repo::Repo;
use crate::Result;

/// The stored form of a manifest's bytes (`Manifest::to_bytes`): unchanged in an unencrypted stanza.
pub fn seal(repo: &Repo, key: &RepoKey, bytes: Vec<u8>) -> Result<Vec<u8>> {
    let Some(keys) = repo.data_keys()? else {
        return Ok(bytes);
    };
    let split = bytes
        .iter()
        .position(|&b| b == b'\n')
        .map_or(bytes.len(), |i| i + 1);
    let mut out = object::seal_bytes(&bytes[..split], &keys, Place::whole(key.as_str()))?;
    let body = object::seal_bytes(
        &bytes[split..],
        &keys,
        Place {
            key: key.as_str(),
            offset: out.len() as u64,
        },
    )?;
    out.extend_from_slice(&body);
    Ok(out)
}

/// The whole manifest's bytes from its stored form.
pub fn open(repo: &Repo, key: &RepoKey, stored: bytes::Bytes) -> Result<bytes::Bytes> {
    let Some(keys) = repo.data_keys()? else {
        return Ok(stored);
    };
    let head_len = head_len(key, &stored)?;
    let (head, body) = stored.split_at(head_len.min(stored.len()));
    let mut out = object::open_bytes(
        head,
        &keys,
        Place::whole(key.as_str()),
        object::MAX_PLAIN_SIZE,
    )?;
    let place = Place {
        key: key.as_str(),
        offset: head_len as u64,
    };
    out.extend(object::open_bytes(
        body,
        &keys,
        place,
        object::MAX_PLAIN_SIZE,
    )?);
    Ok(out.into())
}

fn head_len(key: &RepoKey, stored: &[u8]) -> Result<usize> {
    let len = object::sealed_len(key.as_str(), stored)?;
    usize::try_from(len).map_err(|_| crate::Error::CorruptObject {
        key: key.to_string(),
        reason: "its head is too long".into(),
    })
}

/// The head line from the first bytes of a stored manifest (`whole`: they are the whole object):
/// `Ok(None)` when more bytes are needed, with how many. In an unencrypted stanza the bytes themselves.
pub fn open_prefix(
    repo: &Repo,
    key: &RepoKey,
    prefix: bytes::Bytes,
    whole: bool,
) -> Result<Result<(bytes::Bytes, bool), u64>> {
    let Some(keys) = repo.data_keys()? else {
        return Ok(Ok((prefix, whole)));
    };
    if prefix.len() < SEALED_HEADER_LEN && !whole {
        return Ok(Err(SEALED_HEADER_LEN as u64));
    }
    let len = head_len(key, &prefix)?;
    if prefix.len() < len && !whole {
        return Ok(Err(len as u64));
    }
    let head = &prefix[..len.min(prefix.len())];
    let plain = object::open_bytes(
        head,
        &keys,
        Place::whole(key.as_str()),
        object::MAX_PLAIN_SIZE,
    )?;
    // The head line ends with its newline: complete.
    Ok(Ok((plain.into(), false)))
}
