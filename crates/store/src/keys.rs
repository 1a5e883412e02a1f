//! Crypto-shredding (DESIGN.md decision 13): per-person data keys and the
//! sealed values they open.
//!
//! Every person (`<insurer>-<insured>`) gets one random 256-bit data key in
//! `person_keys`, outside the chain, the first time a personal field of
//! theirs is sealed. A sealed value is
//!
//! ```text
//! v1.<key_id>.<base64url(nonce ‖ ciphertext ‖ tag)>
//! ```
//!
//! XChaCha20-Poly1305; the associated data binds the ciphertext to the person
//! and the key id ([`associated_data`]), so a value copied into another
//! person's event does not open. `key_id` is 24 random hex digits, derived
//! from nothing (it names no one).
//!
//! The 192-bit nonce is derived, not drawn: SHA-256 over the data key, the
//! caller's `context` (the command id and the field's place in it) and the
//! plaintext ([`PersonKeys::seal`]). A retried command therefore seals to the
//! same bytes and is recognised as the same event (idempotency compares
//! content), while two different plaintexts or places never share a nonce.
//! Only the key holder can compute a nonce, so it reveals nothing.
//!
//! [`PersonKeys::forget`] destroys the key (`data_key` NULL, `forgotten_at`
//! set) and scrubs its old bytes from the database files; from then on every
//! sealed value of the person opens as [`Opened::Forgotten`] and no new one
//! can be sealed for them. The events keep their ciphertext, so the hash
//! chain still verifies.
//!
//! Keys are not wrapped with a platform master key in this version: the
//! threat crypto-shredding answers is "the platform must be able to forget",
//! which destroying the only copy of the key does. Wrapping (with a key from
//! an HSM) would add protection of a stolen database dump; docs/audit.md
//! records the choice. Backups hold keys as of their time and must expire.
//!
//! A small LRU cache keeps recently used keys in memory for
//! [`KEY_CACHE_TTL_MS`]: a forget in this process clears its entry at once;
//! a forget in another process (the `kiban admin forget` CLI beside a
//! running server) takes effect here within the TTL.

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use chrono::{DateTime, Utc};
use kiban_events::domain::SealedValue;
use kiban_events::ids::{InsuredNumber, InsurerNumber};
use lru::LruCache;
use rand::RngCore;
use rand::rngs::OsRng;
use zeroize::Zeroizing;

use crate::Store;
use crate::backend::audit as sql;
use crate::error::Error;

/// The format tag of sealed values written by this code.
pub const SEALED_FORMAT: &str = "v1";

/// Largest plaintext accepted for sealing, in bytes (names and addresses
/// are far shorter; the sealed text stays under the 4096-byte limit).
pub const PLAINTEXT_BYTES_MAX: usize = 1024;

/// How many persons' keys the cache keeps.
pub const KEY_CACHE_CAPACITY: usize = 10_000;

/// How long a cached key is used before it is read again, in milliseconds:
/// the longest a forget in another process goes unnoticed here.
pub const KEY_CACHE_TTL_MS: u64 = 2_000;

/// What readers show instead of a forgotten person's personal field.
pub const FORGOTTEN_MARKER: &str = "忘却済み (forgotten)";

const NONCE_BYTES: usize = 24;
const TAG_BYTES: usize = 16;
const KEY_BYTES: usize = 32;
const KEY_ID_BYTES: usize = 12;

/// The person a key belongs to, as `person_keys.person`: `<insurer>-<insured>`.
pub fn person_of(insurer: &InsurerNumber, insured: &InsuredNumber) -> String {
    format!("{insurer}-{insured}")
}

/// The associated data of a sealed value: the format, the person and the
/// key id, so a ciphertext opens only for the person it was sealed for.
pub fn associated_data(person: &str, key_id: &str) -> Vec<u8> {
    format!("kiban sealed {SEALED_FORMAT}\0{person}\0{key_id}").into_bytes()
}

/// The nonce of sealing `plaintext` at `context` with `key`: the first 24
/// bytes of SHA-256(tag ‖ key ‖ context ‖ plaintext), NUL-separated.
fn derive_nonce(key: &[u8; KEY_BYTES], context: &str, plaintext: &str) -> [u8; NONCE_BYTES] {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    hasher.update(b"kiban sealed nonce v1\0");
    hasher.update(key);
    hasher.update(b"\0");
    hasher.update(context.as_bytes());
    hasher.update(b"\0");
    hasher.update(plaintext.as_bytes());
    let digest = hasher.finalize();
    let mut nonce = [0u8; NONCE_BYTES];
    nonce.copy_from_slice(&digest[..NONCE_BYTES]);
    nonce
}

/// A sealed value, read back.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub enum Opened {
    /// The plaintext.
    Plain { value: String },
    /// The person was forgotten: the key is gone (忘却済み).
    Forgotten,
    /// Not a value kiban sealed for this person (another format, another
    /// person's key, or altered).
    Unreadable,
}

impl Opened {
    /// The text a reader shows: the plaintext, [`FORGOTTEN_MARKER`], or
    /// `None` when unreadable.
    pub fn display(&self) -> Option<&str> {
        match self {
            Opened::Plain { value } => Some(value),
            Opened::Forgotten => Some(FORGOTTEN_MARKER),
            Opened::Unreadable => None,
        }
    }
}

/// Why a value was not sealed.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    /// The person was forgotten; nothing personal is recorded for them again.
    #[error(
        "the person was forgotten (本人情報の消去済み); personal fields are no longer accepted"
    )]
    Forgotten,
    /// The plaintext is empty, too long or holds control characters.
    #[error("{0}")]
    Invalid(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] Error),
}

/// What [`PersonKeys::forget`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forgotten {
    /// The destroyed key's id; `None` when the person never had one (a
    /// tombstone row is written so none is created later).
    pub key_id: Option<String>,
    /// Whether this call destroyed it (false: it was destroyed before).
    pub destroyed_now: bool,
}

#[derive(Clone)]
struct CachedKey {
    key_id: String,
    /// `None` once forgotten.
    key: Option<Zeroizing<[u8; KEY_BYTES]>>,
    fetched: Instant,
}

/// The per-person keys of one store, with a small cache. Cheap to clone.
#[derive(Clone)]
pub struct PersonKeys {
    store: Store,
    cache: Arc<Mutex<LruCache<String, CachedKey>>>,
}

impl std::fmt::Debug for PersonKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PersonKeys").finish_non_exhaustive()
    }
}

impl PersonKeys {
    /// The keys kept in `store`'s database.
    pub fn new(store: Store) -> Self {
        let capacity = NonZeroUsize::new(KEY_CACHE_CAPACITY).expect("non-zero");
        Self {
            store,
            cache: Arc::new(Mutex::new(LruCache::new(capacity))),
        }
    }

    fn cached(&self, person: &str) -> Option<CachedKey> {
        let mut cache = self.cache.lock().expect("not poisoned");
        let entry = cache.get(person)?;
        if entry.fetched.elapsed() < Duration::from_millis(KEY_CACHE_TTL_MS) {
            Some(entry.clone())
        } else {
            cache.pop(person);
            None
        }
    }

    fn remember(&self, person: &str, key_id: String, key: Option<Vec<u8>>) -> CachedKey {
        let key = key.and_then(|bytes| {
            let bytes = Zeroizing::new(bytes);
            <[u8; KEY_BYTES]>::try_from(bytes.as_slice())
                .ok()
                .map(Zeroizing::new)
        });
        let entry = CachedKey {
            key_id,
            key,
            fetched: Instant::now(),
        };
        self.cache
            .lock()
            .expect("not poisoned")
            .put(person.to_owned(), entry.clone());
        entry
    }

    /// The person's key row, from the cache or the database.
    async fn lookup(&self, person: &str) -> Result<Option<CachedKey>, Error> {
        if let Some(entry) = self.cached(person) {
            return Ok(Some(entry));
        }
        Ok(sql::person_key(self.store.readers(), person)
            .await?
            .map(|(key_id, key)| self.remember(person, key_id, key)))
    }

    /// Seals `plaintext` with the person's key, creating the key on first
    /// use. `context` names the place of the value (the command id and the
    /// field path): the same plaintext at the same place seals to the same
    /// bytes, so a retried command records the same event.
    pub async fn seal(
        &self,
        insurer: &InsurerNumber,
        insured: &InsuredNumber,
        plaintext: &str,
        context: &str,
    ) -> Result<SealedValue, SealError> {
        if plaintext.is_empty()
            || plaintext.len() > PLAINTEXT_BYTES_MAX
            || plaintext.chars().any(char::is_control)
        {
            return Err(SealError::Invalid(format!(
                "a personal field is 1-{PLAINTEXT_BYTES_MAX} bytes of text without control characters"
            )));
        }
        let person = person_of(insurer, insured);
        let entry = match self.lookup(&person).await? {
            Some(entry) => entry,
            None => {
                let mut key = Zeroizing::new([0u8; KEY_BYTES]);
                OsRng.fill_bytes(key.as_mut());
                let mut id = [0u8; KEY_ID_BYTES];
                OsRng.fill_bytes(&mut id);
                sql::insert_person_key(
                    self.store.readers(),
                    &person,
                    &hex::encode(id),
                    Some(key.as_slice()),
                    Utc::now().timestamp_micros(),
                    None,
                )
                .await?;
                // Whoever inserted first won; read back the key that counts.
                let (key_id, key) = sql::person_key(self.store.readers(), &person)
                    .await?
                    .ok_or_else(|| Error::Invalid("the person's key vanished".to_owned()))?;
                self.remember(&person, key_id, key)
            }
        };
        let Some(key) = entry.key else {
            return Err(SealError::Forgotten);
        };
        let nonce = derive_nonce(&key, context, plaintext);
        let cipher = XChaCha20Poly1305::new(key.as_slice().into());
        let aad = associated_data(&person, &entry.key_id);
        let ciphertext = cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plaintext.as_bytes(),
                    aad: &aad,
                },
            )
            .map_err(|_| SealError::Invalid("encryption failed".to_owned()))?;
        let mut body = nonce.to_vec();
        body.extend_from_slice(&ciphertext);
        let text = format!(
            "{SEALED_FORMAT}.{}.{}",
            entry.key_id,
            URL_SAFE_NO_PAD.encode(body)
        );
        SealedValue::parse(&text).map_err(|e| SealError::Invalid(e.to_string()))
    }

    /// Opens a sealed value of the person.
    pub async fn open(
        &self,
        insurer: &InsurerNumber,
        insured: &InsuredNumber,
        sealed: &SealedValue,
    ) -> Result<Opened, Error> {
        let person = person_of(insurer, insured);
        let Some(entry) = self.lookup(&person).await? else {
            return Ok(Opened::Unreadable);
        };
        let Some(key) = entry.key else {
            return Ok(Opened::Forgotten);
        };
        let mut parts = sealed.as_str().splitn(3, '.');
        let (Some(SEALED_FORMAT), Some(key_id), Some(body)) =
            (parts.next(), parts.next(), parts.next())
        else {
            return Ok(Opened::Unreadable);
        };
        let Ok(body) = URL_SAFE_NO_PAD.decode(body) else {
            return Ok(Opened::Unreadable);
        };
        if key_id != entry.key_id || body.len() < NONCE_BYTES + TAG_BYTES {
            return Ok(Opened::Unreadable);
        }
        let (nonce, ciphertext) = body.split_at(NONCE_BYTES);
        let cipher = XChaCha20Poly1305::new(key.as_slice().into());
        let aad = associated_data(&person, key_id);
        let plain = cipher.decrypt(
            XNonce::from_slice(nonce),
            Payload {
                msg: ciphertext,
                aad: &aad,
            },
        );
        Ok(match plain.ok().map(String::from_utf8) {
            Some(Ok(value)) => Opened::Plain { value },
            _ => Opened::Unreadable,
        })
    }

    /// Destroys the person's data key (idempotent). A person without a key
    /// gets a tombstone row, so that none is created for them later.
    pub async fn forget(
        &self,
        insurer: &InsurerNumber,
        insured: &InsuredNumber,
        now: DateTime<Utc>,
    ) -> Result<Forgotten, Error> {
        let person = person_of(insurer, insured);
        self.cache.lock().expect("not poisoned").pop(&person);
        let micros = now.timestamp_micros();
        let readers = self.store.readers();
        if let Some((key_id, None)) = sql::person_key(readers, &person).await? {
            return Ok(Forgotten {
                key_id: Some(key_id),
                destroyed_now: false,
            });
        }
        if let Some(key_id) = sql::destroy_person_key(readers, &person, micros).await? {
            return Ok(Forgotten {
                key_id: Some(key_id),
                destroyed_now: true,
            });
        }
        let mut id = [0u8; KEY_ID_BYTES];
        OsRng.fill_bytes(&mut id);
        sql::insert_person_key(
            readers,
            &person,
            &hex::encode(id),
            None,
            micros,
            Some(micros),
        )
        .await?;
        // A key created in between is destroyed now.
        let key_id = sql::destroy_person_key(readers, &person, micros).await?;
        let tombstone = hex::encode(id);
        let key_id = key_id.filter(|id| *id != tombstone);
        Ok(Forgotten {
            destroyed_now: key_id.is_some(),
            key_id,
        })
    }

    /// Whether the person was forgotten (their key destroyed).
    pub async fn is_forgotten(
        &self,
        insurer: &InsurerNumber,
        insured: &InsuredNumber,
    ) -> Result<bool, Error> {
        let person = person_of(insurer, insured);
        Ok(self
            .lookup(&person)
            .await?
            .is_some_and(|entry| entry.key.is_none()))
    }
}
