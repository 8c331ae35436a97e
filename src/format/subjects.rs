//! Crypto-shredding: the sealed envelope that holds an event's personal
//! fields (data and metadata) encrypted under its subject's key, and the key
//! store file `subjects.key` (see format.md, "Sealed events" and "Subject key
//! store").
//!
//! Sealing uses XChaCha20-Poly1305 (RustCrypto `chacha20poly1305`) with a
//! random 192-bit nonce per event; subject names are looked up by
//! HMAC-SHA-256 under a random secret of the store, never stored as text. This
//! module turns bytes into values and back, and draws random bytes from the
//! operating system; it must never open a file or know that a store exists.

use chacha20poly1305::aead::{Aead, Generate, KeyInit, Payload};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use uuid::Uuid;

use crate::format::codec::{Reader, le_u32};

/// Name of the subject key store in the data directory.
pub const SUBJECTS_FILE: &str = "subjects.key";
/// Magic bytes at the start of `subjects.key`.
pub const SUBJECTS_MAGIC: &[u8; 8] = b"ANNALSUB";
/// Format version of `subjects.key`.
pub const SUBJECTS_VERSION: u32 = 1;
/// Bytes of the key store's header.
pub const SUBJECTS_HEADER: usize = 8 + 4 + 4 + 32 + 4;
/// Bytes of every record of the key store (kind, 80 bytes of payload, CRC).
pub const SUBJECT_RECORD: usize = 1 + 80 + 4;
/// Record kind: a subject's live key.
const RECORD_KEY: u8 = 1;
/// Record kind: a key destroyed by a shred.
const RECORD_SHREDDED: u8 = 2;

/// Bytes of a key id.
pub const KEY_ID_LEN: usize = 16;
/// Bytes of a nonce.
pub const NONCE_LEN: usize = 24;
/// Bytes of the authentication tag.
pub const TAG_LEN: usize = 16;
/// Bytes a sealed envelope adds to an event's data and metadata, besides the subject name.
pub const SEALED_OVERHEAD: usize = KEY_ID_LEN + NONCE_LEN + TAG_LEN + 2 + 4;
/// Domain separation of the associated data of a sealed envelope.
const AAD_DOMAIN: &[u8] = b"annal.sealed.1\0";
/// Domain separation of a subject's lookup hash.
const LOOKUP_DOMAIN: &[u8] = b"annal.subject.1\0";

/// The key id of events that arrived erased (appended with
/// `EventData::erased`): no key was ever made under it; a store that holds
/// such events lists it among its shredded keys, so they read as erased. Its
/// envelope is this id alone. A random key id equals it with probability
/// 2^-128.
pub const ARRIVED_ERASED: KeyId = *b"annal:erased:v1!";

/// Random id of a subject key, stored in every event sealed under it.
pub type KeyId = [u8; KEY_ID_LEN];
/// The keyed hash a subject's name is looked up by.
pub type Lookup = [u8; 32];

/// A 256-bit secret: a subject key or the store's lookup secret.
/// Its bytes are wiped when it is dropped (copies taken of the array are not).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub [u8; 32]);

impl Drop for Secret {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.0);
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// The operating system's random generator failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RandomError;

impl Secret {
    /// A fresh random secret from the operating system's generator.
    pub fn random() -> Result<Self, RandomError> {
        let k = Key::try_generate().map_err(|_| RandomError)?;
        let mut out = [0u8; 32];
        out.copy_from_slice(k.as_slice());
        Ok(Secret(out))
    }
}

/// A fresh random key id.
pub fn random_key_id() -> Result<KeyId, RandomError> {
    let s = Secret::random()?;
    let mut id = [0u8; KEY_ID_LEN];
    id.copy_from_slice(&s.0[..KEY_ID_LEN]);
    Ok(id)
}

/// The keyed hash of a subject's name under the store's lookup secret.
pub fn lookup(secret: &Secret, subject: &str) -> Lookup {
    // HMAC accepts a key of any length: this cannot fail.
    let mut mac = match <Hmac<Sha256> as KeyInit>::new_from_slice(&secret.0) {
        Ok(m) => m,
        Err(_) => return [0u8; 32],
    };
    mac.update(LOOKUP_DOMAIN);
    mac.update(subject.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(&mac.finalize().into_bytes());
    out
}

/// What a sealed envelope holds once opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    /// The subject's name.
    pub subject: String,
    /// The event's metadata.
    pub metadata: Vec<u8>,
    /// The event's data.
    pub data: Vec<u8>,
}

/// Why a sealed envelope could not be opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenError {
    /// Shorter than a key id, a nonce and a tag.
    Truncated,
    /// The tag does not match: the ciphertext, its key id or the event's id was changed.
    Tag,
    /// The tag matches but the plaintext is not laid out as sealing lays it out.
    Malformed,
}

impl std::fmt::Display for OpenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            OpenError::Truncated => "sealed envelope shorter than its fixed fields",
            OpenError::Tag => "sealed envelope fails its authentication tag",
            OpenError::Malformed => "sealed envelope holds a malformed plaintext",
        })
    }
}

fn aad(id: Uuid, key_id: &KeyId) -> [u8; 15 + 16 + KEY_ID_LEN] {
    let mut a = [0u8; 15 + 16 + KEY_ID_LEN];
    a[..15].copy_from_slice(AAD_DOMAIN);
    a[15..31].copy_from_slice(id.as_bytes());
    a[31..].copy_from_slice(key_id);
    a
}

/// Seals an event's personal fields: `key_id | nonce | ciphertext+tag`, the
/// plaintext being `subject (str16) | metadata_len (u32) | metadata | data`
/// and the associated data binding it to the event's id and the key id.
/// `None` if the subject does not fit a str16 or the operating system's
/// random generator failed.
pub fn seal(key_id: &KeyId, key: &Secret, id: Uuid, subject: &str, metadata: &[u8], data: &[u8]) -> Option<Vec<u8>> {
    let slen = u16::try_from(subject.len()).ok()?;
    let mlen = u32::try_from(metadata.len()).ok()?;
    let mut plain = Vec::with_capacity(2 + subject.len() + 4 + metadata.len() + data.len());
    plain.extend_from_slice(&slen.to_le_bytes());
    plain.extend_from_slice(subject.as_bytes());
    plain.extend_from_slice(&mlen.to_le_bytes());
    plain.extend_from_slice(metadata);
    plain.extend_from_slice(data);
    let nonce = XNonce::try_generate().ok()?;
    let cipher = XChaCha20Poly1305::new(&Key::from(key.0));
    let a = aad(id, key_id);
    let ct = cipher.encrypt(&nonce, Payload { msg: &plain, aad: &a }).ok()?;
    let mut out = Vec::with_capacity(KEY_ID_LEN + NONCE_LEN + ct.len());
    out.extend_from_slice(key_id);
    out.extend_from_slice(nonce.as_slice());
    out.extend_from_slice(&ct);
    Some(out)
}

/// The key id a sealed envelope names; `None` if it is too short to hold one.
pub fn envelope_key_id(envelope: &[u8]) -> Option<KeyId> {
    envelope.get(..KEY_ID_LEN)?.try_into().ok()
}

/// Opens a sealed envelope of the event `id` with its key.
pub fn open(key: &Secret, id: Uuid, envelope: &[u8]) -> Result<Opened, OpenError> {
    if envelope.len() < KEY_ID_LEN + NONCE_LEN + TAG_LEN {
        return Err(OpenError::Truncated);
    }
    let key_id = envelope_key_id(envelope).ok_or(OpenError::Truncated)?;
    let nonce_bytes: [u8; NONCE_LEN] = envelope[KEY_ID_LEN..KEY_ID_LEN + NONCE_LEN]
        .try_into()
        .map_err(|_| OpenError::Truncated)?;
    let nonce = XNonce::from(nonce_bytes);
    let cipher = XChaCha20Poly1305::new(&Key::from(key.0));
    let a = aad(id, &key_id);
    let plain = cipher
        .decrypt(
            &nonce,
            Payload {
                msg: &envelope[KEY_ID_LEN + NONCE_LEN..],
                aad: &a,
            },
        )
        .map_err(|_| OpenError::Tag)?;
    let mut r = Reader::new(&plain);
    let subject = r.str16().map_err(|_| OpenError::Malformed)?.to_string();
    let mlen = r.u32().map_err(|_| OpenError::Malformed)? as usize;
    let metadata = r.take(mlen).map_err(|_| OpenError::Malformed)?.to_vec();
    let data = r.buf.to_vec();
    Ok(Opened {
        subject,
        metadata,
        data,
    })
}

/// One live key of the key store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRecord {
    /// The keyed hash of its subject's name.
    pub lookup: Lookup,
    /// Its id, named by the events sealed under it.
    pub key_id: KeyId,
    /// The key.
    pub key: Secret,
}

/// The content of `subjects.key`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyFile {
    /// The secret subject names are hashed under.
    pub secret: Secret,
    /// Live keys, in the order they were recorded (a later one for the same subject wins).
    pub keys: Vec<KeyRecord>,
    /// Ids of the keys shredded.
    pub shredded: Vec<KeyId>,
    /// Offsets of the full-length records that fail their checksum or are of
    /// an unknown kind (damage: left out, the records around them kept).
    pub damaged: Vec<usize>,
    /// Bytes of the file that hold whole records, damaged or not (what
    /// follows is shorter than a record: a torn append).
    pub valid_len: usize,
}

/// Why `subjects.key` could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyFileError {
    /// Not a key store: too short or wrong magic.
    NotKeyStore,
    /// The header's checksum does not match.
    HeaderChecksum,
    /// A version this annal does not know.
    Version(u32),
}

/// Encodes the header of a key store with `secret`.
pub fn encode_header(secret: &Secret) -> Vec<u8> {
    let mut out = Vec::with_capacity(SUBJECTS_HEADER);
    out.extend_from_slice(SUBJECTS_MAGIC);
    out.extend_from_slice(&SUBJECTS_VERSION.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&secret.0);
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Encodes the record of a live key.
pub fn encode_key_record(rec: &KeyRecord) -> [u8; SUBJECT_RECORD] {
    let mut payload = [0u8; 80];
    payload[..32].copy_from_slice(&rec.lookup);
    payload[32..48].copy_from_slice(&rec.key_id);
    payload[48..80].copy_from_slice(&rec.key.0);
    record(RECORD_KEY, &payload)
}

/// Encodes the record of a shredded key.
pub fn encode_shredded_record(key_id: &KeyId) -> [u8; SUBJECT_RECORD] {
    let mut payload = [0u8; 80];
    payload[..KEY_ID_LEN].copy_from_slice(key_id);
    record(RECORD_SHREDDED, &payload)
}

fn record(kind: u8, payload: &[u8; 80]) -> [u8; SUBJECT_RECORD] {
    let mut out = [0u8; SUBJECT_RECORD];
    out[0] = kind;
    out[1..81].copy_from_slice(payload);
    let crc = crc32fast::hash(&out[..81]);
    out[81..].copy_from_slice(&crc.to_le_bytes());
    out
}

/// Encodes a whole key store: header, live keys, shredded key ids.
pub fn encode_file(secret: &Secret, keys: &[KeyRecord], shredded: &[KeyId]) -> Vec<u8> {
    let mut out = encode_header(secret);
    for k in keys {
        out.extend_from_slice(&encode_key_record(k));
    }
    for id in shredded {
        out.extend_from_slice(&encode_shredded_record(id));
    }
    out
}

/// Decodes a key store. A last record shorter than a full record is a torn
/// append: it is left out and `valid_len` stops before it. A full-length
/// record that fails its checksum (or is of an unknown kind), wherever it is,
/// is damage: it is left out, its offset listed in `damaged`, and the records
/// after it are decoded.
pub fn decode_file(bytes: &[u8]) -> Result<KeyFile, KeyFileError> {
    if bytes.len() < SUBJECTS_HEADER || &bytes[..8] != SUBJECTS_MAGIC {
        return Err(KeyFileError::NotKeyStore);
    }
    if crc32fast::hash(&bytes[..SUBJECTS_HEADER - 4]) != le_u32(bytes, SUBJECTS_HEADER - 4) {
        return Err(KeyFileError::HeaderChecksum);
    }
    let version = le_u32(bytes, 8);
    if version != SUBJECTS_VERSION {
        return Err(KeyFileError::Version(version));
    }
    let mut secret = [0u8; 32];
    secret.copy_from_slice(&bytes[16..48]);
    let mut file = KeyFile {
        secret: Secret(secret),
        keys: Vec::new(),
        shredded: Vec::new(),
        damaged: Vec::new(),
        valid_len: SUBJECTS_HEADER,
    };
    let mut at = SUBJECTS_HEADER;
    while at < bytes.len() {
        let Some(rec) = bytes.get(at..at + SUBJECT_RECORD) else {
            break; // a short last record: torn
        };
        let ok = crc32fast::hash(&rec[..81]) == le_u32(rec, 81);
        match (ok, rec[0]) {
            (true, RECORD_KEY) => {
                let mut r = KeyRecord {
                    lookup: [0u8; 32],
                    key_id: [0u8; KEY_ID_LEN],
                    key: Secret([0u8; 32]),
                };
                r.lookup.copy_from_slice(&rec[1..33]);
                r.key_id.copy_from_slice(&rec[33..49]);
                r.key.0.copy_from_slice(&rec[49..81]);
                file.keys.push(r);
            }
            (true, RECORD_SHREDDED) => {
                let mut id = [0u8; KEY_ID_LEN];
                id.copy_from_slice(&rec[1..17]);
                file.shredded.push(id);
            }
            _ => file.damaged.push(at),
        }
        at += SUBJECT_RECORD;
        file.valid_len = at;
    }
    Ok(file)
}

/// A header for a key store whose header does not decode (bad magic or
/// checksum), if the damage can be undone with certainty: the magic, version
/// and reserved fields are known (version 1), and the secret is trusted only
/// if the stored checksum vouches for it, as read or with one bit flipped in
/// the secret or the checksum itself (only when the known fields read right:
/// the checksum's distance of 5 bits at this length makes a one-bit
/// correction unique). The secret is random and cannot be rebuilt otherwise:
/// the records' lookups match a subject only under it. `None` if the header
/// cannot be mended.
pub fn mend_header(bytes: &[u8]) -> Option<Vec<u8>> {
    let stored = bytes.get(..SUBJECTS_HEADER)?;
    let crc = le_u32(stored, SUBJECTS_HEADER - 4);
    let mut secret = Secret([0u8; 32]);
    secret.0.copy_from_slice(&stored[16..48]);
    let mut out = encode_header(&secret);
    let known_fields_intact = stored[..16] == out[..16];
    if crc32fast::hash(&out[..SUBJECTS_HEADER - 4]) == crc {
        return Some(out);
    }
    if !known_fields_intact {
        return None;
    }
    // One flipped bit in the checksum: the secret as read is vouched for.
    if (crc32fast::hash(&out[..SUBJECTS_HEADER - 4]) ^ crc).count_ones() == 1 {
        return Some(out);
    }
    // One flipped bit in the secret.
    for bit in 0..32 * 8 {
        out[16 + bit / 8] ^= 1 << (bit % 8);
        if crc32fast::hash(&out[..SUBJECTS_HEADER - 4]) == crc {
            out[SUBJECTS_HEADER - 4..].copy_from_slice(&crc.to_le_bytes());
            return Some(out);
        }
        out[16 + bit / 8] ^= 1 << (bit % 8);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_envelope_round_trips_and_is_bound_to_its_event_and_key() {
        let key = Secret::random().unwrap();
        let key_id = random_key_id().unwrap();
        let id = Uuid::from_u128(7);
        let env = seal(&key_id, &key, id, "customer-42", b"{\"m\":1}", b"{\"name\":\"Ann\"}").unwrap();
        assert_eq!(envelope_key_id(&env), Some(key_id));
        let opened = open(&key, id, &env).unwrap();
        assert_eq!(opened.subject, "customer-42");
        assert_eq!(opened.metadata, b"{\"m\":1}");
        assert_eq!(opened.data, b"{\"name\":\"Ann\"}");
        // Another event's id, another key, a flipped bit anywhere: the tag fails.
        assert_eq!(open(&key, Uuid::from_u128(8), &env), Err(OpenError::Tag));
        assert_eq!(open(&Secret::random().unwrap(), id, &env), Err(OpenError::Tag));
        for i in 0..env.len() * 8 {
            let mut bad = env.clone();
            bad[i / 8] ^= 1 << (i % 8);
            assert!(open(&key, id, &bad).is_err(), "flip of bit {i} went unnoticed");
        }
        assert_eq!(
            open(&key, id, &env[..KEY_ID_LEN + NONCE_LEN + TAG_LEN - 1]),
            Err(OpenError::Truncated)
        );
        // Two seals of the same content differ (a fresh nonce each).
        assert_ne!(
            env,
            seal(&key_id, &key, id, "customer-42", b"{\"m\":1}", b"{\"name\":\"Ann\"}").unwrap()
        );
    }

    #[test]
    fn key_file_round_trips_and_a_torn_last_record_is_left_out() {
        let secret = Secret::random().unwrap();
        let rec = |n: u8| KeyRecord {
            lookup: lookup(&secret, &format!("s{n}")),
            key_id: [n; KEY_ID_LEN],
            key: Secret([n; 32]),
        };
        let bytes = encode_file(&secret, &[rec(1), rec(2)], &[[9; KEY_ID_LEN]]);
        let f = decode_file(&bytes).unwrap();
        assert_eq!(
            (f.keys.clone(), f.shredded.clone(), f.valid_len),
            (vec![rec(1), rec(2)], vec![[9; KEY_ID_LEN]], bytes.len())
        );
        assert_eq!(f.secret, secret);
        // Every cut inside the last record leaves the records before it.
        let before_last = bytes.len() - SUBJECT_RECORD;
        for cut in before_last..bytes.len() {
            let f = decode_file(&bytes[..cut]).unwrap();
            assert_eq!((f.keys.len(), f.shredded.len(), f.valid_len), (2, 0, before_last));
        }
        // A flipped byte in a full-length record, last or not, is damage: the
        // record is left out, listed, and never counted as a torn tail.
        let mut rotted = bytes.clone();
        rotted[before_last + 5] ^= 1;
        let f = decode_file(&rotted).unwrap();
        assert_eq!(
            (f.keys.len(), f.shredded.len(), f.damaged.clone(), f.valid_len),
            (2, 0, vec![before_last], bytes.len())
        );
        let mut bad = bytes.clone();
        bad[SUBJECTS_HEADER + 5] ^= 1;
        let f = decode_file(&bad).unwrap();
        assert_eq!(
            (f.keys, f.shredded.len(), f.damaged),
            (vec![rec(2)], 1, vec![SUBJECTS_HEADER])
        );
        let mut header = bytes;
        header[20] ^= 1;
        assert_eq!(decode_file(&header), Err(KeyFileError::HeaderChecksum));
    }

    #[test]
    fn a_header_is_mended_only_when_one_bit_or_a_known_field_rotted() {
        let secret = Secret::random().unwrap();
        let bytes = encode_file(&secret, &[], &[[9; KEY_ID_LEN]]);
        for bit in 0..SUBJECTS_HEADER * 8 {
            let mut bad = bytes.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            assert_eq!(
                mend_header(&bad).as_deref(),
                Some(&bytes[..SUBJECTS_HEADER]),
                "bit {bit}"
            );
        }
        // The whole magic gone, the secret and checksum intact: mended.
        let mut magic = bytes.clone();
        magic[..8].copy_from_slice(b"XXXXXXXX");
        assert_eq!(mend_header(&magic).as_deref(), Some(&bytes[..SUBJECTS_HEADER]));
        // Two bits of the secret: it cannot be told, never guessed.
        let mut two = bytes.clone();
        two[20] ^= 1;
        two[40] ^= 4;
        assert_eq!(mend_header(&two), None);
        assert_eq!(mend_header(&bytes[..SUBJECTS_HEADER - 1]), None);
    }

    #[test]
    fn a_secret_is_wiped_when_dropped() {
        // No safe code can read a dropped value: check that dropping runs
        // code at all (a plain byte array needs none), and what that code does.
        assert!(
            std::mem::needs_drop::<Secret>(),
            "a key must not be left in freed memory"
        );
        let mut s = Secret([7; 32]);
        zeroize::Zeroize::zeroize(&mut s.0);
        assert_eq!(s.0, [0; 32]);
    }

    #[test]
    fn lookups_depend_on_the_secret_and_the_name() {
        let a = Secret([1; 32]);
        let b = Secret([2; 32]);
        assert_eq!(lookup(&a, "x"), lookup(&a, "x"));
        assert_ne!(lookup(&a, "x"), lookup(&a, "y"));
        assert_ne!(lookup(&a, "x"), lookup(&b, "x"));
    }
}
