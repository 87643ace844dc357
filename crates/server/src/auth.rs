//! Who may do what: the admin token and the API keys.
//!
//! Where it sits: between the router and the handlers, as two extractors. [`Admin`] guards
//! the admin endpoints (`POST /v1/models/reload`): they answer only to
//! `Authorization: Bearer <admin token>`, and to no one when no token is configured.
//! [`Caller`] identifies the client of `POST /enhance`, `POST /v1/jobs` and the job
//! endpoints: with an API key file configured, each request must carry one of its keys, the
//! key's name becomes the job's owner (see [`crate::queue`]), and the key's limit bounds its
//! jobs in flight. Without a key file every caller is anonymous and the service is open.
//!
//! Secrets are never kept in the clear: the admin token is held as its SHA-256 digest, and
//! the key file holds only digests (`NAME:SHA256HEX[:MAX_IN_FLIGHT]` per line, see
//! [`KeyTable::parse`]). A presented secret is hashed and its digest compared in constant
//! time with every digest known, so the answer's timing does not depend on how much of a
//! guess was right.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use axum::extract::{FromRef, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::ApiError;

/// A SHA-256 digest.
type Digest32 = [u8; 32];

fn sha256(secret: &str) -> Digest32 {
    Sha256::digest(secret.as_bytes()).into()
}

/// The admin token, kept as its digest. Its `Debug` shows nothing of it.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminToken {
    digest: Digest32,
}

impl AdminToken {
    /// The token given in the clear (a flag, a variable, or the first line of a file).
    /// Surrounding whitespace is not part of it; an empty token is refused.
    pub fn new(token: &str) -> Result<AdminToken, String> {
        let token = token.trim();
        if token.is_empty() {
            return Err("the admin token is empty".into());
        }
        Ok(AdminToken {
            digest: sha256(token),
        })
    }

    /// Reads the token from the first line of `path`, trimmed.
    pub fn from_file(path: &Path) -> Result<AdminToken, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the admin token file {}: {e}", path.display()))?;
        let first = text.lines().next().unwrap_or("");
        AdminToken::new(first)
            .map_err(|e| format!("{e}: the first line of {} is blank", path.display()))
    }

    /// Whether `presented` is the token, in time independent of where they differ.
    pub fn matches(&self, presented: &str) -> bool {
        sha256(presented).ct_eq(&self.digest).into()
    }
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(<redacted>)")
    }
}

/// One line of the key file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiKey {
    /// Who the key belongs to: the owner of its jobs and the name in logs.
    pub name: Arc<str>,
    digest: Digest32,
    /// Jobs of this key that may be queued or running at once.
    pub max_in_flight: usize,
}

/// The keys of one reading of the key file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyTable {
    keys: Vec<ApiKey>,
}

impl KeyTable {
    /// Parses a key file: one key per line, `NAME:SHA256HEX[:MAX_IN_FLIGHT]`, where `NAME`
    /// is the key's owner (no `:` or spaces), `SHA256HEX` the 64 hex digits of the SHA-256
    /// of the key (`printf %s "$KEY" | sha256sum`), and `MAX_IN_FLIGHT` its limit of jobs
    /// queued or running at once (`default_max_in_flight` when absent). Blank lines and
    /// lines starting with `#` are skipped. Names and digests must be unique.
    pub fn parse(text: &str, default_max_in_flight: usize) -> Result<KeyTable, String> {
        let mut keys: Vec<ApiKey> = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let n = i + 1;
            let fields: Vec<&str> = line.split(':').map(str::trim).collect();
            let (name, hex, max) = match fields.as_slice() {
                [name, hex] => (*name, *hex, None),
                [name, hex, max] => (*name, *hex, Some(*max)),
                _ => {
                    return Err(format!(
                        "line {n}: expected NAME:SHA256HEX or NAME:SHA256HEX:MAX_IN_FLIGHT"
                    ));
                }
            };
            if name.is_empty() || name.chars().any(char::is_whitespace) {
                return Err(format!(
                    "line {n}: the name must be non-empty, without spaces"
                ));
            }
            let digest = parse_digest(hex).ok_or_else(|| {
                format!(
                    "line {n}: '{name}' needs the SHA-256 of its key as 64 hex digits \
                     (printf %s \"$KEY\" | sha256sum), not the key itself"
                )
            })?;
            let max_in_flight = match max {
                None => default_max_in_flight,
                Some(m) => match m.parse::<usize>() {
                    Ok(v) if v > 0 => v,
                    _ => {
                        return Err(format!(
                            "line {n}: MAX_IN_FLIGHT of '{name}' must be a positive integer, not '{m}'"
                        ));
                    }
                },
            };
            if keys.iter().any(|k| &*k.name == name) {
                return Err(format!("line {n}: the name '{name}' is used twice"));
            }
            if keys.iter().any(|k| k.digest == digest) {
                return Err(format!(
                    "line {n}: the key of '{name}' is also another name's"
                ));
            }
            keys.push(ApiKey {
                name: name.into(),
                digest,
                max_in_flight,
            });
        }
        Ok(KeyTable { keys })
    }

    /// The key whose digest is the presented secret's. Every digest is compared, each in
    /// constant time.
    pub fn find(&self, presented: &str) -> Option<&ApiKey> {
        let digest = sha256(presented);
        let mut found = None;
        for key in &self.keys {
            if bool::from(key.digest.ct_eq(&digest)) {
                found = Some(key);
            }
        }
        found
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

fn parse_digest(hex: &str) -> Option<Digest32> {
    if hex.len() != 64 || !hex.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (byte, pair) in out.iter_mut().zip(hex.as_bytes().chunks_exact(2)) {
        let pair = std::str::from_utf8(pair).ok()?;
        *byte = u8::from_str_radix(pair, 16).ok()?;
    }
    Some(out)
}

/// The key file and its current contents, swapped whole on reload.
pub struct KeyFile {
    path: PathBuf,
    default_max_in_flight: usize,
    table: ArcSwap<KeyTable>,
}

impl KeyFile {
    /// Reads the key file; an unreadable or malformed file is an error.
    pub fn open(path: &Path, default_max_in_flight: usize) -> Result<KeyFile, String> {
        let table = read_keys(path, default_max_in_flight)?;
        Ok(KeyFile {
            path: path.to_path_buf(),
            default_max_in_flight,
            table: ArcSwap::from_pointee(table),
        })
    }

    /// Reads the file again and answers how many keys it has; on failure the keys in use
    /// stay in place.
    pub fn reload(&self) -> Result<usize, String> {
        let table = read_keys(&self.path, self.default_max_in_flight)?;
        let n = table.len();
        self.table.store(Arc::new(table));
        Ok(n)
    }

    /// The keys in use now.
    pub fn current(&self) -> Arc<KeyTable> {
        self.table.load_full()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn read_keys(path: &Path, default_max_in_flight: usize) -> Result<KeyTable, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the API key file {}: {e}", path.display()))?;
    KeyTable::parse(&text, default_max_in_flight)
        .map_err(|e| format!("the API key file {} is not valid: {e}", path.display()))
}

/// Who may do what, for the life of the server.
#[derive(Default)]
pub struct Access {
    /// `None`: the admin endpoints are disabled.
    pub admin: Option<AdminToken>,
    /// `None`: the service is open (no key needed).
    pub keys: Option<KeyFile>,
}

impl Access {
    /// Reloads the key file, if there is one: `Ok(None)` without one, else the number of
    /// keys now in use.
    pub fn reload_keys(&self) -> Result<Option<usize>, String> {
        self.keys.as_ref().map(KeyFile::reload).transpose()
    }

    /// Whether any access control is configured.
    pub fn is_open(&self) -> bool {
        self.admin.is_none() && self.keys.is_none()
    }
}

/// The secret of `Authorization: Bearer <secret>`: `Ok(None)` when there is no such
/// header, `Err` when the header is there but is not a bearer credential.
fn bearer(headers: &HeaderMap) -> Result<Option<&str>, ApiError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let text = value
        .to_str()
        .map_err(|_| ApiError::unauthorized("the Authorization header is not readable text"))?;
    let (scheme, secret) = text.trim().split_once(' ').unwrap_or((text, ""));
    let secret = secret.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || secret.is_empty() {
        return Err(ApiError::unauthorized(
            "the Authorization header must be 'Bearer <token>'",
        ));
    }
    Ok(Some(secret))
}

/// Proof that a request carries the admin token. Handlers that take it are admin
/// endpoints: 403 `admin_disabled` without a configured token, 401 without the header,
/// 403 `forbidden` with another token.
pub struct Admin;

impl<S> FromRequestParts<S> for Admin
where
    S: Send + Sync,
    Arc<Access>: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let access = Arc::<Access>::from_ref(state);
        let Some(token) = &access.admin else {
            return Err(ApiError::admin_disabled());
        };
        match bearer(&parts.headers)? {
            None => Err(ApiError::unauthorized(
                "this is an admin endpoint: send 'Authorization: Bearer <admin token>'",
            )),
            Some(secret) if token.matches(secret) => Ok(Admin),
            Some(_) => Err(ApiError::forbidden("the admin token is not valid")),
        }
    }
}

/// Who is asking: the API key's owner, or nobody in particular when the service is open.
/// With a key file configured, a request without a key is 401 and one with an unknown key
/// 403.
#[derive(Clone, Debug)]
pub struct Caller(pub Option<ApiKey>);

impl Caller {
    /// The owner of the jobs this caller makes and may see.
    pub fn owner(&self) -> Option<&str> {
        self.0.as_ref().map(|k| &*k.name)
    }
}

impl<S> FromRequestParts<S> for Caller
where
    S: Send + Sync,
    Arc<Access>: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let access = Arc::<Access>::from_ref(state);
        let Some(keys) = &access.keys else {
            return Ok(Caller(None));
        };
        let Some(secret) = bearer(&parts.headers)? else {
            return Err(ApiError::unauthorized(
                "this server needs an API key: send 'Authorization: Bearer <key>'",
            ));
        };
        match keys.current().find(secret) {
            Some(key) => {
                tracing::Span::current().record("key", &*key.name);
                Ok(Caller(Some(key.clone())))
            }
            None => Err(ApiError::forbidden("the API key is not valid")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(secret: &str) -> String {
        sha256(secret).iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn the_admin_token_is_trimmed_compared_by_digest_and_never_shown() {
        let t = AdminToken::new("  s3cret\n").unwrap();
        assert!(t.matches("s3cret"));
        assert!(!t.matches("s3cre"));
        assert!(!t.matches("s3cret "));
        assert_eq!(format!("{t:?}"), "AdminToken(<redacted>)");
        assert!(AdminToken::new(" \n").is_err());
    }

    #[test]
    fn a_key_file_gives_names_digests_and_limits() {
        let text = format!(
            "# team keys\n\nalice:{}\nbob:{}:2\n  carol : {} : 9 \n",
            hex("a-key"),
            hex("b-key").to_uppercase(),
            hex("c-key")
        );
        let table = KeyTable::parse(&text, 4).unwrap();
        assert_eq!(table.len(), 3);
        let alice = table.find("a-key").unwrap();
        assert_eq!((&*alice.name, alice.max_in_flight), ("alice", 4));
        let bob = table.find("b-key").unwrap();
        assert_eq!((&*bob.name, bob.max_in_flight), ("bob", 2));
        assert_eq!(table.find("c-key").unwrap().max_in_flight, 9);
        assert!(table.find("d-key").is_none());
        assert!(table.find(&hex("a-key")).is_none(), "the digest is no key");
    }

    #[test]
    fn malformed_key_files_say_which_line_and_why() {
        let h = hex("k");
        for (text, needle) in [
            ("alice".to_string(), "line 1: expected NAME:SHA256HEX"),
            ("alice:plaintext-key".into(), "64 hex digits"),
            (format!("alice:{}", &h[..63]), "64 hex digits"),
            (format!(":{h}"), "name must be non-empty"),
            (format!("alice:{h}:0"), "positive integer"),
            (format!("alice:{h}:x"), "positive integer"),
            (format!("a:{h}:1:2"), "expected NAME"),
            (
                format!("a:{h}\na:{}", hex("j")),
                "line 2: the name 'a' is used twice",
            ),
            (format!("a:{h}\nb:{h}"), "also another name's"),
        ] {
            let err = KeyTable::parse(&text, 4).unwrap_err();
            assert!(err.contains(needle), "{text:?}: {err}");
        }
        assert!(KeyTable::parse("# nobody yet\n", 4).unwrap().is_empty());
    }

    #[test]
    fn bearer_credentials_are_read_from_the_authorization_header() {
        let mut h = HeaderMap::new();
        assert_eq!(bearer(&h), Ok(None));
        h.insert(header::AUTHORIZATION, "Bearer abc".parse().unwrap());
        assert_eq!(bearer(&h), Ok(Some("abc")));
        h.insert(header::AUTHORIZATION, "bearer   abc ".parse().unwrap());
        assert_eq!(bearer(&h), Ok(Some("abc")));
        for bad in ["Basic YTpi", "Bearer", "abc"] {
            h.insert(header::AUTHORIZATION, bad.parse().unwrap());
            let err = bearer(&h).unwrap_err();
            assert_eq!(err.status().as_u16(), 401, "{bad}");
        }
    }
}
