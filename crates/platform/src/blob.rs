//! Blobs: files a service keeps beside its database (product images, attachments). By default they live in a
//! directory of the data directory, `<MERCATO_DATA_DIR>/blobs/<service>/`, written whole (to a temporary
//! file, then renamed), so a reader never sees half a blob. With `MERCATO_S3_BUCKET` set they live in that
//! S3 bucket (or an S3-compatible store at `MERCATO_S3_ENDPOINT`) under `<service>/`, where every replica of
//! a service sees the same blobs.
//!
//! The metadata of a blob (what it is, who owns it) is the service's to keep in its database; a blob store
//! only maps keys to bytes. Keys are the service's own (`products/<id>/<image id>`), never a user's input.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use object_store::ObjectStore;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path as Key;
use object_store::prefix::PrefixStore;

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

    /// Removes the blob under `key`; a key with no blob is fine.
    pub async fn delete(&self, key: &str) -> Result<(), BlobError> {
        match self.store.delete(&Key::from(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(error) => Err(error.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
