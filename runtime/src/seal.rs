//! `seal.json`: one digest over everything a bundle decides with, and an
//! optional Ed25519 signature of it (docs/design.md §5.1).
//!
//! The manifest lists the sha256 of every file it names, so a digest over the
//! manifest's values covers the plans and stored frames too. Each top-level
//! manifest field (`decision`, `normalization`, `classes`, `camera`, `plans`,
//! …) is hashed on its own, canonically encoded (compact JSON of the parsed
//! value, object keys sorted), so a check can name the field that changed and
//! whitespace or key order never matter. The digest is a hash of those
//! per-field hashes; a signature signs the digest.
//!
//! Without a trusted key the seal catches edits by anyone who does not also
//! rewrite `seal.json` (a careless or scripted change of τ); with a trusted
//! key ([`TrustedKey`], given to the runtime at load) only the key's holder
//! can produce a bundle the runtime accepts.

use std::collections::BTreeMap;
use std::path::Path;

use ed25519_dalek::{Signature as Ed25519Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::{Error, Result};

/// File name of the seal inside a bundle.
pub const SEAL_FILE: &str = "seal.json";

/// Domain tag hashed before the per-field hashes (bumped if the encoding changes).
const DIGEST_DOMAIN: &str = "badexpert bundle seal v1";
/// Domain tag of the signed message, so a bundle signature is never valid for anything else.
const SIGNATURE_DOMAIN: &str = "badexpert bundle signature v1\n";

/// The seal of a bundle as stored in `seal.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Seal {
    /// Hex sha256 of each top-level manifest field, canonically encoded.
    pub fields: BTreeMap<String, String>,
    /// Hex sha256 over `fields`: what a signature signs.
    pub digest: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<SealSignature>,
}

/// An Ed25519 signature of a seal's digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SealSignature {
    /// Always "ed25519".
    pub algorithm: String,
    /// Hex of the signer's 32-byte public key.
    pub public_key: String,
    /// Hex of the 64-byte signature of [`Seal::signed_message`].
    pub signature: String,
}

/// A public key the runtime trusts: with one, only bundles it signed load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrustedKey([u8; 32]);

/// What checking a bundle's seal established, for reports (`info`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealStatus {
    /// Hex digest over the manifest's fields.
    pub digest: String,
    /// Fingerprint of the key that signed it (first 16 hex digits of its sha256), if signed.
    pub signer: Option<String>,
    /// The signature was checked against a key the caller trusts.
    pub trusted: bool,
}

impl TrustedKey {
    /// A key from its 32 bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Result<TrustedKey> {
        VerifyingKey::from_bytes(&bytes).map_err(|e| Error::Invalid(format!("not an Ed25519 public key: {e}")))?;
        Ok(TrustedKey(bytes))
    }

    /// A key from 64 hex digits.
    pub fn from_hex(hex: &str) -> Result<TrustedKey> {
        let bytes = decode_hex::<32>(hex.trim())
            .ok_or_else(|| Error::Invalid("an Ed25519 public key is 64 hex digits".into()))?;
        Self::from_bytes(bytes)
    }

    /// Reads a public key file (`badexpert-convert keygen`'s `.pub`: 64 hex
    /// digits; lines starting with `#` are comments).
    pub fn read(path: &Path) -> Result<TrustedKey> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let hex = key_line(&text).ok_or_else(|| Error::format(path, "public key file", "no key line"))?;
        Self::from_hex(hex).map_err(|e| Error::format(path, "public key file", e))
    }

    /// The public half of an Ed25519 secret key (its 32-byte seed).
    pub fn of_secret(secret_key: &[u8; 32]) -> TrustedKey {
        TrustedKey(SigningKey::from_bytes(secret_key).verifying_key().to_bytes())
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Short name of the key: the first 16 hex digits of its sha256.
    pub fn fingerprint(&self) -> String {
        fingerprint(&self.0)
    }
}

/// Short name of a public key: the first 16 hex digits of its sha256.
pub fn fingerprint(public_key: &[u8; 32]) -> String {
    hex(&Sha256::digest(public_key))[..16].to_owned()
}

/// The first line of a key file that is not empty or a `#` comment.
pub fn key_line(text: &str) -> Option<&str> {
    text.lines().map(str::trim).find(|l| !l.is_empty() && !l.starts_with('#'))
}

impl Seal {
    /// The unsigned seal of `manifest` (a bundle's [`Manifest`](crate::Manifest):
    /// any value that serialises to a JSON object, each field sealed apart).
    pub fn of(manifest: &impl Serialize) -> Result<Seal> {
        let fields = field_digests(manifest)?;
        let digest = digest_of(&fields);
        Ok(Seal { fields, digest, signature: None })
    }

    /// The bytes a signature signs.
    pub fn signed_message(&self) -> Vec<u8> {
        format!("{SIGNATURE_DOMAIN}{}", self.digest).into_bytes()
    }

    /// Signs the seal in place with an Ed25519 secret key (its 32-byte seed;
    /// `badexpert-convert keygen` makes one).
    pub fn sign(&mut self, secret_key: &[u8; 32]) {
        let key = SigningKey::from_bytes(secret_key);
        let signature = key.sign(&self.signed_message());
        self.signature = Some(SealSignature {
            algorithm: "ed25519".into(),
            public_key: hex(key.verifying_key().as_bytes()),
            signature: hex(&signature.to_bytes()),
        });
    }

    /// Reads `seal.json` from a bundle directory.
    pub fn read(dir: &Path) -> Result<Seal> {
        let path = dir.join(SEAL_FILE);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::Seal {
                    dir: dir.to_owned(),
                    reason: format!(
                        "it has no {SEAL_FILE}: the seal was removed, or the bundle predates sealed bundles (seal it again with `badexpert-convert seal`)"
                    ),
                })
            }
            Err(e) => return Err(Error::io(path, e)),
        };
        serde_json::from_slice(&bytes).map_err(|e| Error::format(path, "bundle seal", e))
    }

    /// Writes `seal.json` into a bundle directory.
    pub fn write(&self, dir: &Path) -> Result<()> {
        let path = dir.join(SEAL_FILE);
        let json = serde_json::to_string_pretty(self).map_err(|e| Error::Invalid(e.to_string()))?;
        std::fs::write(&path, json + "\n").map_err(|e| Error::io(path, e))
    }

    /// Checks that `manifest` is the one sealed (naming every field that
    /// changed), that the seal is whole, and its signature: against `trusted`
    /// when given (then an unsigned bundle or another signer is refused),
    /// else against the key it names.
    pub fn check(&self, dir: &Path, manifest: &impl Serialize, trusted: Option<TrustedKey>) -> Result<SealStatus> {
        let refuse = |reason: String| Error::Seal { dir: dir.to_owned(), reason };
        let now = field_digests(manifest)?;
        let mut changed: Vec<&str> = now
            .iter()
            .filter(|(k, v)| self.fields.get(*k) != Some(v))
            .map(|(k, _)| k.as_str())
            .chain(self.fields.keys().filter(|k| !now.contains_key(*k)).map(String::as_str))
            .collect();
        changed.sort_unstable();
        if !changed.is_empty() {
            return Err(refuse(format!(
                "manifest.json was changed after the bundle was sealed: {} differ{} from the sealed value{}",
                changed.join(", "),
                if changed.len() == 1 { "s" } else { "" },
                if changed.len() == 1 { "" } else { "s" },
            )));
        }
        if digest_of(&self.fields) != self.digest {
            return Err(refuse(format!("{SEAL_FILE} was edited: its digest does not match its field hashes")));
        }
        let Some(sig) = &self.signature else {
            if let Some(key) = trusted {
                return Err(refuse(format!(
                    "it is not signed, and a trusted key ({}) was given: only bundles signed by it load",
                    key.fingerprint()
                )));
            }
            return Ok(SealStatus { digest: self.digest.clone(), signer: None, trusted: false });
        };
        if sig.algorithm != "ed25519" {
            return Err(refuse(format!("signature algorithm {:?} is not supported (ed25519)", sig.algorithm)));
        }
        let public = decode_hex::<32>(&sig.public_key)
            .ok_or_else(|| refuse("the signature's public_key is not 64 hex digits".into()))?;
        let signer = fingerprint(&public);
        if let Some(key) = trusted {
            if key.0 != public {
                return Err(refuse(format!(
                    "it is signed by key {signer}, not by the trusted key {}",
                    key.fingerprint()
                )));
            }
        }
        let verifying = VerifyingKey::from_bytes(&public)
            .map_err(|e| refuse(format!("the signer's public key is invalid: {e}")))?;
        let bytes =
            decode_hex::<64>(&sig.signature).ok_or_else(|| refuse("the signature is not 128 hex digits".into()))?;
        verifying
            .verify(&self.signed_message(), &Ed25519Signature::from_bytes(&bytes))
            .map_err(|_| refuse(format!("the signature by key {signer} does not verify: the seal was altered")))?;
        Ok(SealStatus { digest: self.digest.clone(), signer: Some(signer), trusted: trusted.is_some() })
    }
}

/// sha256 of each top-level manifest field, canonically encoded.
fn field_digests(manifest: &impl Serialize) -> Result<BTreeMap<String, String>> {
    let value = serde_json::to_value(manifest).map_err(|e| Error::Invalid(format!("manifest: {e}")))?;
    let Value::Object(fields) = value else {
        return Err(Error::Invalid("manifest does not serialise to an object".into()));
    };
    Ok(fields
        .iter()
        .map(|(k, v)| {
            let mut bytes = Vec::new();
            canonical(v, &mut bytes);
            (k.clone(), hex(&Sha256::digest(&bytes)))
        })
        .collect())
}

fn digest_of(fields: &BTreeMap<String, String>) -> String {
    let mut h = Sha256::new();
    h.update(DIGEST_DOMAIN.as_bytes());
    for (k, v) in fields {
        h.update(format!("\n{k} {v}").as_bytes());
    }
    hex(&h.finalize())
}

/// Compact JSON with object keys sorted, whatever order the map keeps.
fn canonical(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort_unstable();
            out.push(b'{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(Value::String(k.clone()).to_string().as_bytes());
                out.push(b':');
                canonical(&map[k], out);
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                canonical(item, out);
            }
            out.push(b']');
        }
        scalar => out.extend_from_slice(scalar.to_string().as_bytes()),
    }
}

/// Lower-case hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Exactly `N` bytes from 2N hex digits.
pub fn decode_hex<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != 2 * N || !s.is_ascii() {
        return None;
    }
    let mut out = [0u8; N];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_encoding_ignores_key_order_and_whitespace() {
        let a: Value = serde_json::from_str(r#"{"b": [1, 2.5, {"y": 1, "x": "s"}], "a": null}"#).unwrap();
        let b: Value = serde_json::from_str(r#"{"a":null,"b":[1,2.5,{"x":"s","y":1}]}"#).unwrap();
        let (mut x, mut y) = (Vec::new(), Vec::new());
        canonical(&a, &mut x);
        canonical(&b, &mut y);
        assert_eq!(x, y);
        assert_eq!(String::from_utf8(x).unwrap(), r#"{"a":null,"b":[1,2.5,{"x":"s","y":1}]}"#);
    }

    #[test]
    fn hex_round_trips_and_refuses_bad_input() {
        let bytes = [0u8, 1, 0xab, 0xff];
        assert_eq!(decode_hex::<4>(&hex(&bytes)), Some(bytes));
        assert_eq!(decode_hex::<4>("00ff"), None);
        assert_eq!(decode_hex::<2>("zz00"), None);
        assert_eq!(decode_hex::<2>("é0"), None);
    }
}
