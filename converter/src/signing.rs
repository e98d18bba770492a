//! Ed25519 keys that sign bundles (`badexpert-convert keygen`, `bundle
//! --sign-key`, `seal`); the runtime checks the signature against the public
//! key a deployer trusts ([`badexpert_runtime::seal`]).
//!
//! Key files are text: a `#` comment line, then 64 hex digits. The secret key
//! is written with mode 600 and refused when group or others may read it, as
//! ssh does: a signing key anyone on the host can read signs for anyone.

use std::io::Write;
use std::path::{Path, PathBuf};

use badexpert_runtime::manifest::{Manifest, MANIFEST_FILE};
use badexpert_runtime::seal::{self, Seal};
use badexpert_runtime::{verify_files, TrustedKey};
use ed25519_dalek::SigningKey;
use rand::RngCore;

use crate::{Error, Result};

/// A secret signing key (never printed: `Debug` shows its public fingerprint).
#[derive(Clone)]
pub struct SecretKey(SigningKey);

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretKey(public {})", self.public().fingerprint())
    }
}

impl SecretKey {
    /// A fresh key from the operating system's random source.
    pub fn generate() -> SecretKey {
        let mut seed = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut seed);
        SecretKey(SigningKey::from_bytes(&seed))
    }

    /// The public half, as the runtime takes it.
    pub fn public(&self) -> TrustedKey {
        TrustedKey::of_secret(self.0.as_bytes())
    }

    /// Writes the secret key to `path` (mode 600, never over an existing
    /// file) and the public key to `path.pub`; returns the public key's path.
    pub fn write_new(&self, path: &Path) -> Result<PathBuf> {
        let public_path = public_path(path);
        for p in [path, public_path.as_path()] {
            if p.exists() {
                return Err(Error::Invalid(format!("{} already exists; not overwriting a key", p.display())));
            }
        }
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(path).map_err(|e| Error::io(path, e))?;
        let text = format!(
            "# badexpert Ed25519 signing key (secret: keep it mode 600, off the devices)\n{}\n",
            seal::hex(self.0.as_bytes())
        );
        file.write_all(text.as_bytes()).map_err(|e| Error::io(path, e))?;
        let public = self.public();
        let text = format!(
            "# badexpert Ed25519 public key {} (give it to the devices: --trusted-key)\n{}\n",
            public.fingerprint(),
            seal::hex(public.as_bytes())
        );
        std::fs::write(&public_path, text).map_err(|e| Error::io(&public_path, e))?;
        Ok(public_path)
    }

    /// Reads a secret key file, refusing one that group or others can read.
    pub fn read(path: &Path) -> Result<SecretKey> {
        let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(Error::Invalid(format!(
                    "signing key {}: permissions {mode:03o} let others read it; run `chmod 600 {}`",
                    path.display(),
                    path.display()
                )));
            }
        }
        let _ = meta;
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let bytes = seal::key_line(&text).and_then(seal::decode_hex::<32>).ok_or_else(|| {
            Error::Invalid(format!("signing key {}: expected a line of 64 hex digits", path.display()))
        })?;
        Ok(SecretKey(SigningKey::from_bytes(&bytes)))
    }

    /// Signs a seal in place.
    pub fn sign(&self, seal: &mut Seal) {
        seal.sign(self.0.as_bytes());
    }
}

/// Where `write_new` puts the public half of the key at `path`.
pub fn public_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".pub");
    PathBuf::from(name)
}

/// Seals a bundle directory anew (and signs it with `key`): every file the
/// manifest names is checked against its sha256 first, so only what the
/// manifest describes gets sealed. Whoever runs this vouches for the
/// manifest's values; it is how a bundle written elsewhere gets signed.
pub fn seal_bundle(dir: &Path, key: Option<&SecretKey>) -> Result<Seal> {
    let manifest = Manifest::read(&dir.join(MANIFEST_FILE))?;
    verify_files(dir, &manifest)
        .map_err(|e| Error::Invalid(format!("not sealing a bundle whose files do not match its manifest: {e}")))?;
    write_seal(dir, &manifest, key)
}

/// Writes `manifest`'s seal into `dir`, signed with `key` when given.
pub(crate) fn write_seal(dir: &Path, manifest: &Manifest, key: Option<&SecretKey>) -> Result<Seal> {
    let mut seal = Seal::of(manifest)?;
    if let Some(key) = key {
        key.sign(&mut seal);
    }
    seal.write(dir)?;
    Ok(seal)
}
