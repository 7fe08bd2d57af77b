//! Private key files, each loaded once per transport: every hop (each `-J`
//! jump host, then the registry) and every reconnection authenticates with
//! the same keys, so an encrypted key's passphrase is asked for only the
//! first time.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use russh::keys::PrivateKey;
use tokio::sync::Mutex;

use super::SshError;

/// The keys loaded so far, and the files that could not be loaded (with
/// why, so a wrong passphrase is not asked for again).
#[derive(Default)]
pub(crate) struct KeyCache {
    loaded: Mutex<HashMap<PathBuf, Result<Arc<PrivateKey>, String>>>,
}

impl KeyCache {
    /// The key in `path`, loaded (and its passphrase asked for) on first
    /// use. Callers racing for the same file wait for the first one, so
    /// only one prompt appears.
    pub(crate) async fn get(&self, path: &Path) -> Result<Arc<PrivateKey>, SshError> {
        let mut loaded = self.loaded.lock().await;
        if !loaded.contains_key(path) {
            // Reading the file and the passphrase prompt block: off the
            // runtime, so the connection's other tasks keep running.
            let owned = path.to_path_buf();
            let key = tokio::task::spawn_blocking(move || load_key(&owned))
                .await
                .unwrap_or_else(|e| Err(format!("loading the key failed: {e}")));
            loaded.insert(path.to_path_buf(), key.map(Arc::new));
        }
        let entry = &loaded[path];
        entry.clone().map_err(|message| SshError::Identity {
            path: path.display().to_string(),
            message,
        })
    }
}

/// Loads a private key, asking for its passphrase on the terminal when it
/// is encrypted (and failing clearly when there is no terminal).
fn load_key(path: &Path) -> Result<PrivateKey, String> {
    match russh::keys::load_secret_key(path, None) {
        Ok(k) => Ok(k),
        Err(russh::keys::Error::KeyIsEncrypted) => {
            let prompt = format!("Enter passphrase for key '{}': ", path.display());
            let passphrase = rpassword::prompt_password(prompt).map_err(|e| {
                format!(
                    "the key is encrypted and its passphrase cannot be asked for \
                     (no terminal: {e}); add it to ssh-agent with ssh-add"
                )
            })?;
            russh::keys::load_secret_key(path, Some(&passphrase))
                .map_err(|e| format!("wrong passphrase? ({e})"))
        }
        Err(e) => Err(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_file_that_cannot_be_loaded_fails_the_same_way_each_time() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("id_none");
        std::fs::write(&path, "not a key").unwrap();
        let cache = KeyCache::default();
        let first = cache.get(&path).await.err().unwrap().to_string();
        // Fixed now, the file is not read again: the first answer stands.
        std::fs::remove_file(&path).unwrap();
        let second = cache.get(&path).await.err().unwrap().to_string();
        assert_eq!(first, second);
        assert!(first.contains("id_none"), "{first}");
    }
}
