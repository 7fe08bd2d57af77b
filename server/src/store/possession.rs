//! Proof of possession of V1 images (issue 14). V1 image ids are global and
//! chosen by clients, so "this id exists" says nothing about who may read
//! it. Besides a readable repository that references an image, the one
//! thing that lets a user read (and tag) an image is having uploaded its
//! exact json and layer bytes: the publisher of an image, and anyone who
//! later re-uploads identical bytes (which then never replace the stored
//! ones).
//!
//! The record `images/<id>/_possession` holds the users who proved it and,
//! per user, the last upload step that matched: while an image is being
//! uploaded, only its uploader (whoever PUT its json last) has a step; on a
//! published image, each user proving possession goes json, then layer
//! (both compared, never stored), and the checksum PUT completes the proof. It is rewritten whole (temp + fsync +
//! rename) by the V1 upload handlers of `store::v1`, always under the
//! image's `fcntl` lock. It does not decide access: `registry::v1` combines
//! it with the repository rules.

use std::collections::{BTreeMap, BTreeSet};
use std::io;

use serde::{Deserialize, Serialize};

use super::atomic::write_atomic;
use super::{read_optional, Store};
use crate::names::ImageId;

/// How far one user's upload of an image has come.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UploadStep {
    /// The json PUT was accepted (stored, or identical to the stored json).
    Json,
    /// A published image's layer was re-uploaded with identical bytes.
    Layer,
}

/// The `_possession` record of one image.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Possession {
    /// Users who uploaded this image's exact json and layer bytes.
    #[serde(default)]
    pub proven: BTreeSet<String>,
    /// Users part-way through an upload of this image.
    #[serde(default)]
    pub steps: BTreeMap<String, UploadStep>,
}

impl Possession {
    /// The step `user` has reached, if any.
    pub fn step(&self, user: &str) -> Option<UploadStep> {
        self.steps.get(user).copied()
    }
}

impl Store {
    /// The possession record of an image (empty when there is none).
    pub fn possession(&self, id: &ImageId) -> io::Result<Possession> {
        match read_optional(&self.paths().image_possession(id))? {
            Some(raw) => serde_json::from_slice(&raw)
                .map_err(|e| io::Error::other(format!("corrupt possession record of {id}: {e}"))),
            None => Ok(Possession::default()),
        }
    }

    /// Whether `user` proved possession of the image. A record that cannot
    /// be read proves nothing (and is logged).
    pub fn has_proven(&self, id: &ImageId, user: &str) -> bool {
        match self.possession(id) {
            Ok(p) => p.proven.contains(user),
            Err(e) => {
                tracing::warn!(image = %id, error = %e, "possession record unreadable");
                false
            }
        }
    }

    /// Replaces the possession record. The caller holds the image lock
    /// (`images/<id>/.lock`), which makes this read-modify-write safe.
    pub(crate) fn write_possession(&self, id: &ImageId, record: &Possession) -> io::Result<()> {
        let bytes = serde_json::to_vec(record).map_err(io::Error::other)?;
        write_atomic(&self.paths().image_possession(id), &bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let id = ImageId::parse(&"c".repeat(64)).unwrap();
        assert_eq!(store.possession(&id).unwrap(), Possession::default());
        assert!(!store.has_proven(&id, "alice"));
        std::fs::create_dir_all(store.paths().image_dir(&id)).unwrap();
        let mut rec = Possession::default();
        rec.proven.insert("alice".into());
        rec.steps.insert("bob".into(), UploadStep::Json);
        store.write_possession(&id, &rec).unwrap();
        assert_eq!(store.possession(&id).unwrap(), rec);
        assert!(store.has_proven(&id, "alice") && !store.has_proven(&id, "bob"));
        assert_eq!(
            std::fs::read(store.paths().image_possession(&id)).unwrap(),
            br#"{"proven":["alice"],"steps":{"bob":"json"}}"#
        );
    }
}
