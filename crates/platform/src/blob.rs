//! Blobs: files a service keeps beside its database (product images, attachments). By default they live in a
//! directory of the data directory, `<MERCATO_DATA_DIR>/blobs/<service>/`, written whole (to a temporary
//! file, then renamed), so a reader never sees half a blob. With `MERCATO_S3_BUCKET` set they live in that
//! S3 bucket (or an S3-compatible store at `MERCATO_S3_ENDPOINT`) under `<service>/`, where every replica of
//! a service sees the same blobs.
//!
//! The metadata of a blob (what it is, who owns it) is the service's to keep in its database; a blob store
//! only maps keys to bytes. Keys are the service's own (`products/<id>/<image id>`), never a user's input.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use object_store::ObjectStore;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path as Key;
use object_store::prefix::PrefixStore;
use tokio_util::sync::CancellationToken;

use crate::Settings;

/// A blob store could not be opened or used.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    /// The blob directory could not be made.
    #[error("blob directory {path}: {source}")]
    Directory {
        /// The directory.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The store failed (disk, network, permissions).
    #[error("blob store: {0}")]
    Store(#[from] object_store::Error),
}

/// The blob store of one service.
#[derive(Debug, Clone)]
pub struct Blobs {
    store: Arc<dyn ObjectStore>,
    backend: &'static str,
}

impl Blobs {
    /// The blob store of `service` as configured: `<service>/` of the S3 bucket `MERCATO_S3_BUCKET`, else
    /// `<MERCATO_DATA_DIR>/blobs/<service>/`.
    pub fn open(settings: &Settings, service: &str) -> Result<Self, BlobError> {
        let Some(bucket) = &settings.s3_bucket else {
            return Self::in_directory(&settings.data_dir.join("blobs").join(service));
        };
        // Region, credentials (keys, web identity, instance role) from the standard AWS_* variables, unless
        // the MERCATO_S3_* ones name them.
        let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket);
        if let Some(region) = &settings.s3_region {
            builder = builder.with_region(region);
        }
        if let Some((key_id, secret)) = &settings.s3_credentials {
            builder = builder.with_access_key_id(key_id).with_secret_access_key(secret);
        }
        if let Some(endpoint) = &settings.s3_endpoint {
            // S3-compatible stores (MinIO, Ceph) are addressed by path, often over plain HTTP inside a cluster.
            builder = builder
                .with_endpoint(endpoint)
                .with_virtual_hosted_style_request(false)
                .with_allow_http(endpoint.starts_with("http://"));
        }
        let store = PrefixStore::new(builder.build()?, service);
        Ok(Self { store: Arc::new(store), backend: "s3" })
    }

    /// Blobs kept as files under `dir` (made if missing).
    pub fn in_directory(dir: &Path) -> Result<Self, BlobError> {
        let path: PathBuf = dir.to_path_buf();
        std::fs::create_dir_all(&path)
            .map_err(|source| BlobError::Directory { path: path.display().to_string(), source })?;
        let store = LocalFileSystem::new_with_prefix(&path)?;
        Ok(Self { store: Arc::new(store), backend: "directory" })
    }

    /// Where the blobs are kept: `directory` or `s3`.
    pub fn backend(&self) -> &'static str {
        self.backend
    }

    /// Stores `bytes` under `key`, replacing what was there.
    pub async fn put(&self, key: &str, bytes: Bytes) -> Result<(), BlobError> {
        self.store.put(&Key::from(key), bytes.into()).await?;
        Ok(())
    }

    /// The bytes under `key`; `None` when there are none.
    pub async fn get(&self, key: &str) -> Result<Option<Bytes>, BlobError> {
        match self.store.get(&Key::from(key)).await {
            Ok(found) => Ok(Some(found.bytes().await?)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(error) => Err(error.into()),
        }
    }

    /// Deletes the blobs under `prefix/` written before `written_before` (microseconds since the epoch) that
    /// `named` says no row of the service names (it gets each blob's key); returns how many went.
    ///
    /// Bytes are written before their row and deleted after it, so a crash between the two leaves bytes nothing
    /// names: this is how a service gets rid of them. The grace of `written_before` keeps bytes whose row is
    /// still being written.
    pub async fn sweep_orphans(
        &self,
        prefix: &str,
        written_before: i64,
        named: impl Fn(&str) -> bool,
    ) -> Result<usize, BlobError> {
        use futures::TryStreamExt;
        let listed: Vec<_> = self.store.list(Some(&Key::from(prefix))).try_collect().await?;
        let mut swept = 0;
        for meta in listed {
            let key = meta.location.to_string();
            if meta.last_modified.timestamp_micros() < written_before && !named(&key) {
                self.delete(&key).await?;
                swept += 1;
            }
        }
        Ok(swept)
    }

    /// Removes the blob under `key`; a key with no blob is fine.
    pub async fn delete(&self, key: &str) -> Result<(), BlobError> {
        match self.store.delete(&Key::from(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(error) => Err(error.into()),
        }
    }
}

/// How long bytes may go unnamed before they count as orphans: far longer than any upload takes between
/// writing its bytes and its row.
pub const ORPHAN_GRACE_MICROS: i64 = 3600 * 1_000_000;

/// Sweeps the orphans under `prefix/` of `blobs` ([`Blobs::sweep_orphans`], with [`ORPHAN_GRACE_MICROS`]) every
/// hour until `shutdown`, the first an hour after start (listing every blob is no work for start-up, and what a
/// crash just left is within the grace anyway); `named` lists the keys the service's rows name, read anew each
/// time. A failed sweep is logged and tried again an hour later.
pub async fn sweep_hourly<F, Fut, E>(blobs: Blobs, prefix: &'static str, shutdown: CancellationToken, named: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<HashSet<String>, E>>,
    E: std::fmt::Display,
{
    let hour = std::time::Duration::from_secs(3600);
    tokio::select! {
        () = shutdown.cancelled() => return,
        () = tokio::time::sleep(hour) => {}
    }
    crate::shutdown::every(hour, &shutdown, || async {
        let written_before = crate::time::now_micros() - ORPHAN_GRACE_MICROS;
        let keys = match named().await {
            Ok(keys) => keys,
            Err(error) => {
                return tracing::warn!(prefix, %error, "listing the blobs rows name failed; sweeping in an hour");
            }
        };
        match blobs.sweep_orphans(prefix, written_before, |key| keys.contains(key)).await {
            Ok(0) => {}
            Ok(swept) => tracing::info!(prefix, swept, "orphan blobs deleted"),
            Err(error) => tracing::warn!(prefix, %error, "sweeping orphan blobs failed; trying again in an hour"),
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn orphans_old_enough_are_swept_and_named_or_young_blobs_stay() {
        let dir = crate::testkit::TempDir::new("blobs").expect("temp dir");
        let blobs = Blobs::in_directory(&dir.path().join("catalog")).expect("open");
        for key in ["products/p1/kept", "products/p1/orphan", "products/p2/orphan", "other/orphan"] {
            blobs.put(key, Bytes::from_static(b"x")).await.expect("put");
        }
        let named = |key: &str| key.ends_with("/kept");
        let now = crate::time::now_micros();
        // Written just now: within the grace, even the orphans stay.
        assert_eq!(blobs.sweep_orphans("products", now - 3_600_000_000, named).await.expect("sweep"), 0);
        assert_eq!(blobs.sweep_orphans("products", now + 1_000_000, named).await.expect("sweep"), 2);
        assert!(blobs.get("products/p1/kept").await.expect("get").is_some(), "a named blob stays");
        assert!(blobs.get("products/p1/orphan").await.expect("get").is_none());
        assert!(blobs.get("other/orphan").await.expect("get").is_some(), "other prefixes are not looked at");
    }

    #[tokio::test]
    async fn blobs_are_stored_read_replaced_and_deleted() {
        let dir = crate::testkit::TempDir::new("blobs").expect("temp dir");
        let blobs = Blobs::in_directory(&dir.path().join("catalog")).expect("open");
        assert_eq!(blobs.get("products/p1/i1").await.expect("get"), None);
        blobs.put("products/p1/i1", Bytes::from_static(b"first")).await.expect("put");
        blobs.put("products/p1/i1", Bytes::from_static(b"second")).await.expect("replace");
        assert_eq!(blobs.get("products/p1/i1").await.expect("get"), Some(Bytes::from_static(b"second")));
        // Where it is: a file of the service's directory, nothing else beside it.
        let file = dir.path().join("catalog/products/p1/i1");
        assert_eq!(std::fs::read(&file).expect("a file"), b"second");
        blobs.delete("products/p1/i1").await.expect("delete");
        blobs.delete("products/p1/i1").await.expect("deleting again is fine");
        assert_eq!(blobs.get("products/p1/i1").await.expect("get"), None);
        assert!(!file.exists());
    }
}
