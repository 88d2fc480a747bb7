//! Bearer tokens from a file, re-read when it changes, compared in constant time.
//!
//! The file is `stat`ed on every request (a microsecond): a change of its modification
//! time, size, inode or ctime reloads it, so a token removed from the file stops working
//! on the next request, without a restart. File times are coarse (a kernel tick), so a
//! file modified within a second of being read is read again on each request until it
//! settles. An unreadable file leaves no valid token (fail closed).
//!
//! Tokens are kept as blake3 digests and a presented token is compared, digest to
//! digest, with every one of them using `subtle`: the time taken depends neither on
//! where a guess first differs nor on which token matched.

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::RwLock;
use std::time::{Duration, SystemTime};

use axum::extract::Request;
use axum::http::header;
use subtle::ConstantTimeEq;

use crate::ApiError;

/// What identifies one version of the token file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
    device: u64,
    ctime: (i64, i64),
}

#[derive(Debug)]
struct Loaded {
    stamp: Option<Stamp>,
    /// When the file was read: a stamp this close to it may hide a later change.
    read_at: SystemTime,
    digests: Vec<[u8; 32]>,
}

/// The token file and the digests of its tokens.
#[derive(Debug)]
pub(crate) struct TokenStore {
    path: PathBuf,
    loaded: RwLock<Loaded>,
}

/// Files modified this close to when they were read are re-read.
const SETTLE: Duration = Duration::from_secs(1);

impl TokenStore {
    /// Reads the file; refuses one that cannot be read or holds no token.
    pub(crate) fn open(path: PathBuf) -> Result<TokenStore, ApiError> {
        let (stamp, digests) = read_tokens(&path).map_err(|e| {
            ApiError::Config(format!(
                "cannot read the token file {}: {e}",
                path.display()
            ))
        })?;
        if digests.is_empty() {
            return Err(ApiError::Config(format!(
                "the token file {} holds no token",
                path.display()
            )));
        }
        Ok(TokenStore {
            path,
            loaded: RwLock::new(Loaded {
                stamp: Some(stamp),
                read_at: SystemTime::now(),
                digests,
            }),
        })
    }

    /// Whether `token` is one of the file's tokens as it is now.
    pub(crate) fn verify(&self, token: &[u8]) -> bool {
        let now_stamp = stamp_of(&self.path).ok();
        let fresh = {
            let loaded = self.loaded.read().unwrap_or_else(|e| e.into_inner());
            let settled = match (loaded.stamp.and_then(|s| s.modified), now_stamp) {
                (Some(modified), Some(_)) => modified + SETTLE < loaded.read_at,
                _ => true,
            };
            if loaded.stamp == now_stamp && settled {
                Some(matches(&loaded.digests, token))
            } else {
                None
            }
        };
        if let Some(result) = fresh {
            return result;
        }
        let mut loaded = self.loaded.write().unwrap_or_else(|e| e.into_inner());
        let read_at = SystemTime::now();
        match read_tokens(&self.path) {
            Ok((stamp, digests)) => {
                if digests.is_empty() {
                    tracing::warn!(path = %self.path.display(), "the token file holds no token: every request is refused");
                }
                *loaded = Loaded {
                    stamp: Some(stamp),
                    read_at,
                    digests,
                };
            }
            Err(e) => {
                tracing::warn!(path = %self.path.display(), error = %e, "cannot read the token file: every request is refused");
                *loaded = Loaded {
                    stamp: None,
                    read_at,
                    digests: Vec::new(),
                };
            }
        }
        matches(&loaded.digests, token)
    }
}

fn matches(digests: &[[u8; 32]], token: &[u8]) -> bool {
    let presented = blake3::hash(token);
    let presented = presented.as_bytes();
    let mut found = subtle::Choice::from(0);
    for digest in digests {
        found |= digest.ct_eq(presented);
    }
    bool::from(found)
}

fn stamp_of(path: &std::path::Path) -> std::io::Result<Stamp> {
    let metadata = std::fs::metadata(path)?;
    Ok(Stamp {
        modified: metadata.modified().ok(),
        len: metadata.len(),
        inode: metadata.ino(),
        device: metadata.dev(),
        ctime: (metadata.ctime(), metadata.ctime_nsec()),
    })
}

/// The stamp taken before reading, so a change during the read is seen next time.
fn read_tokens(path: &std::path::Path) -> std::io::Result<(Stamp, Vec<[u8; 32]>)> {
    let stamp = stamp_of(path)?;
    let text = std::fs::read_to_string(path)?;
    let digests = text
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(|token| *blake3::hash(token.as_bytes()).as_bytes())
        .collect();
    Ok((stamp, digests))
}

/// The token in an `Authorization: Bearer <token>` header. Several `Authorization`
/// headers are refused (400 `duplicate_header`) rather than one of them picked: a proxy
/// and the service could otherwise each act on a different one.
pub(crate) fn bearer(request: &Request) -> Result<&[u8], ApiError> {
    let mut values = request.headers().get_all(header::AUTHORIZATION).iter();
    let value = values.next().ok_or_else(|| {
        ApiError::Unauthorized("missing Authorization: Bearer <token> header".into())
    })?;
    let count = 1 + values.count();
    if count > 1 {
        return Err(ApiError::request(
            axum::http::StatusCode::BAD_REQUEST,
            "duplicate_header",
            format!("the request has {count} Authorization headers; send exactly one"),
        ));
    }
    let value = value.as_bytes();
    let (scheme, token) = match value.iter().position(|b| *b == b' ') {
        Some(space) => (&value[..space], &value[space + 1..]),
        None => (value, &b""[..]),
    };
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        return Err(ApiError::Unauthorized(
            "the Authorization header must use the Bearer scheme".into(),
        ));
    }
    let token = token.trim_ascii();
    if token.is_empty() {
        return Err(ApiError::Unauthorized("the bearer token is empty".into()));
    }
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_read_reloaded_and_compared() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens");
        std::fs::write(&path, "# operators\n\n  alpha-token-1  \nbeta-token-2\n").unwrap();
        let store = TokenStore::open(path.clone()).unwrap();
        assert!(store.verify(b"alpha-token-1"));
        assert!(store.verify(b"beta-token-2"));
        assert!(!store.verify(b"# operators"));
        assert!(!store.verify(b"alpha-token-"));
        assert!(!store.verify(b""));
        std::fs::write(&path, "beta-token-2\n").unwrap();
        assert!(!store.verify(b"alpha-token-1"));
        assert!(store.verify(b"beta-token-2"));
        // Same length, same second: still seen.
        std::fs::write(&path, "gamma-token3\n").unwrap();
        assert!(!store.verify(b"beta-token-2"));
        assert!(store.verify(b"gamma-token3"));
        std::fs::remove_file(&path).unwrap();
        assert!(!store.verify(b"gamma-token3"));
    }

    #[test]
    fn an_empty_or_missing_file_is_refused_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens");
        assert!(TokenStore::open(path.clone()).is_err());
        std::fs::write(&path, "# nothing\n\n").unwrap();
        assert!(TokenStore::open(path).is_err());
    }
}
