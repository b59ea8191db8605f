//! Fault injection around the real store, not a mock: [`InjectedStore`] sends every call to the
//! store a test runs on, and lets an [`Injection`] act just before a put, just after it, just
//! before a delete, or around a get (fail it, pause it, pair it with another, count it, "crash"
//! the process). Each test file states only what it injects.

use std::ops::Deref;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;

use niso_registry::storage::{ListingPages, ObjectStore, RemovedDebris, StorageError};

/// What a test does around the store's calls; every hook does nothing unless overridden.
#[async_trait::async_trait]
pub trait Injection: Send + Sync + 'static {
    /// Runs before the object is written; an error fails the put without writing.
    async fn before_put(&self, _key: &str) -> Result<(), StorageError> {
        Ok(())
    }
    /// Runs once the object is written.
    async fn after_put(&self, _key: &str) {}
    /// Runs before the object is deleted.
    async fn before_delete(&self, _key: &str) {}
    /// Runs before the object is read.
    async fn before_get(&self, _key: &str) {}
    /// Runs once the read returned, whatever its outcome.
    async fn after_get(&self, _key: &str) {}
}

/// The real store with an [`Injection`] around it; derefs to the injection, so a test reaches
/// its switches through the store it handed to the registry.
pub struct InjectedStore<I> {
    inner: Arc<dyn ObjectStore>,
    injection: I,
}

impl<I: Injection> InjectedStore<I> {
    pub fn new(inner: Arc<dyn ObjectStore>, injection: I) -> Arc<InjectedStore<I>> {
        Arc::new(InjectedStore { inner, injection })
    }
}

impl<I> Deref for InjectedStore<I> {
    type Target = I;

    fn deref(&self) -> &I {
        &self.injection
    }
}

#[async_trait::async_trait]
impl<I: Injection> ObjectStore for InjectedStore<I> {
    async fn put(&self, key: &str, body: Bytes) -> Result<(), StorageError> {
        self.injection.before_put(key).await?;
        self.inner.put(key, body).await?;
        self.injection.after_put(key).await;
        Ok(())
    }
    async fn get(&self, key: &str) -> Result<Bytes, StorageError> {
        self.injection.before_get(key).await;
        let object = self.inner.get(key).await;
        self.injection.after_get(key).await;
        object
    }
    async fn delete(&self, key: &str) -> Result<(), StorageError> {
        self.injection.before_delete(key).await;
        self.inner.delete(key).await
    }
    fn list<'a>(&'a self, prefix: &'a str, page_size: usize) -> ListingPages<'a> {
        self.inner.list(prefix, page_size)
    }
    async fn remove_interrupted_writes(
        &self,
        older_than: SystemTime,
    ) -> Result<RemovedDebris, StorageError> {
        self.inner.remove_interrupted_writes(older_than).await
    }
    async fn check(&self) -> Result<(), StorageError> {
        self.inner.check().await
    }
    fn describe(&self) -> String {
        self.inner.describe()
    }
    fn read_ahead(&self) -> usize {
        self.inner.read_ahead()
    }
}
