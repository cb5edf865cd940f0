//! In-process metadata: one map per process, shared by every engine that
//! connects with `embedded`. The default for single-process use and tests.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use parking_lot::Mutex;
use tokio::sync::mpsc;

use crate::{MetadataError, MetadataStore, WatchEvent};

#[derive(Debug, Default)]
struct Inner {
    map: BTreeMap<String, Vec<u8>>,
    watchers: Vec<(String, mpsc::Sender<WatchEvent>)>,
}

/// An in-memory metadata store. `EmbeddedMetadata::global()` is the process-wide
/// instance behind the `embedded` connection string; `new()` makes an isolated one.
#[derive(Debug, Default, Clone)]
pub struct EmbeddedMetadata {
    inner: Arc<Mutex<Inner>>,
}

impl EmbeddedMetadata {
    /// A fresh, isolated store.
    pub fn new() -> Self {
        Self::default()
    }

    /// The process-wide store shared by every `embedded` connection.
    pub fn global() -> Self {
        static GLOBAL: OnceLock<EmbeddedMetadata> = OnceLock::new();
        GLOBAL.get_or_init(EmbeddedMetadata::new).clone()
    }

    fn notify(inner: &mut Inner, event: WatchEvent) {
        let key = match &event {
            WatchEvent::Put { key, .. } | WatchEvent::Delete { key } => key.clone(),
        };
        // Drop watchers whose receiver is gone; a full channel drops the event
        // rather than blocking writers (watchers re-read on lag).
        inner.watchers.retain(|(prefix, tx)| {
            if !key.starts_with(prefix.as_str()) {
                return !tx.is_closed();
            }
            !matches!(
                tx.try_send(event.clone()),
                Err(mpsc::error::TrySendError::Closed(_))
            )
        });
    }
}

#[async_trait::async_trait]
impl MetadataStore for EmbeddedMetadata {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, MetadataError> {
        Ok(self.inner.lock().map.get(key).cloned())
    }

    async fn put(&self, key: &str, value: &[u8]) -> Result<(), MetadataError> {
        let mut inner = self.inner.lock();
        inner.map.insert(key.to_string(), value.to_vec());
        Self::notify(
            &mut inner,
            WatchEvent::Put {
                key: key.to_string(),
                value: value.to_vec(),
            },
        );
        Ok(())
    }

    async fn delete(&self, key: &str) -> Result<(), MetadataError> {
        let mut inner = self.inner.lock();
        if inner.map.remove(key).is_some() {
            Self::notify(
                &mut inner,
                WatchEvent::Delete {
                    key: key.to_string(),
                },
            );
        }
        Ok(())
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, MetadataError> {
        let inner = self.inner.lock();
        Ok(inner
            .map
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, _)| k.clone())
            .collect())
    }

    async fn watch(&self, prefix: &str) -> Result<mpsc::Receiver<WatchEvent>, MetadataError> {
        let (tx, rx) = mpsc::channel(1024);
        self.inner.lock().watchers.push((prefix.to_string(), tx));
        Ok(rx)
    }

    fn backend(&self) -> &'static str {
        "embedded"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn put_get_delete_list_watch() {
        let m = EmbeddedMetadata::new();
        let mut rx = m.watch("mooncake/ram/").await.unwrap();
        assert_eq!(m.get("a").await.unwrap(), None);
        m.put("mooncake/ram/x", b"1").await.unwrap();
        m.put("other", b"2").await.unwrap();
        assert_eq!(m.get("mooncake/ram/x").await.unwrap(), Some(b"1".to_vec()));
        assert_eq!(m.list("mooncake/").await.unwrap(), vec!["mooncake/ram/x"]);
        m.delete("mooncake/ram/x").await.unwrap();
        m.delete("absent").await.unwrap();
        assert_eq!(
            rx.recv().await.unwrap(),
            WatchEvent::Put {
                key: "mooncake/ram/x".into(),
                value: b"1".to_vec()
            }
        );
        assert_eq!(
            rx.recv().await.unwrap(),
            WatchEvent::Delete {
                key: "mooncake/ram/x".into()
            }
        );
    }
}
