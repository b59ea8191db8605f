//! Watches: a streamed body of newline-separated `{"type", "object"}` events read from the
//! store's history. Without a resourceVersion (or "0") a watch starts with the current objects
//! as ADDED; with one it resumes after it, or gets an `ERROR` event with a 410 `Expired` status
//! once the history was compacted past it (kube then lists again). A selector turns a
//! modification that moves an object out of (into) the selection into DELETED (ADDED). With
//! `allowWatchBookmarks` a BOOKMARK carrying the last revision ends the watch, which ends when
//! `timeoutSeconds` pass, or when the test closes every watch (to exercise resumption).

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body::Frame;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::Shared;
use super::errors::ApiError;
use super::routing::Kind;
use super::selectors::{FieldSelector, LabelSelector};
use super::store::{Change, ChangeType};

pub struct WatchRequest {
    pub kind: &'static Kind,
    pub namespace: Option<String>,
    pub labels: LabelSelector,
    pub fields: FieldSelector,
    pub since: Option<u64>,
    pub bookmarks: bool,
    pub timeout: Duration,
}

impl WatchRequest {
    fn selects(&self, object: &Value) -> bool {
        self.labels.matches(object) && self.fields.matches(object)
    }

    /// The event this watch sees of `change`, if any.
    fn event(&self, change: &Change) -> Option<Value> {
        if change.resource != self.kind.resource
            || self
                .namespace
                .as_ref()
                .is_some_and(|ns| *ns != change.namespace)
        {
            return None;
        }
        let now = self.selects(&change.object);
        let kind = match change.change {
            ChangeType::Added if now => "ADDED",
            ChangeType::Deleted if now => "DELETED",
            ChangeType::Modified => {
                let before = change.previous.as_ref().is_some_and(|p| self.selects(p));
                match (before, now) {
                    (true, true) => "MODIFIED",
                    (false, true) => "ADDED",
                    (true, false) => "DELETED",
                    (false, false) => return None,
                }
            }
            _ => return None,
        };
        Some(json!({"type": kind, "object": change.object}))
    }

    fn bookmark(&self, revision: u64) -> Value {
        json!({"type": "BOOKMARK", "object": {
            "apiVersion": self.kind.api_version(),
            "kind": self.kind.kind,
            "metadata": {"resourceVersion": revision.to_string()},
        }})
    }
}

fn line(event: &Value) -> Bytes {
    let mut bytes = serde_json::to_vec(event).expect("JSON");
    bytes.push(b'\n');
    Bytes::from(bytes)
}

struct Cursor {
    shared: Arc<Shared>,
    request: WatchRequest,
    last: u64,
    epoch: u64,
    pending: VecDeque<Bytes>,
    done: bool,
    deadline: Instant,
    changes: tokio::sync::watch::Receiver<u64>,
}

impl Cursor {
    /// Queues what happened after `last`; false once the watch must end.
    fn catch_up(&mut self) -> bool {
        self.changes.borrow_and_update();
        if self.shared.epoch() != self.epoch {
            return false;
        }
        let store = self.shared.store.lock().expect("store lock");
        if self.last < store.compacted() {
            let gone = ApiError::gone(format!(
                "too old resource version: {} ({})",
                self.last,
                store.compacted()
            ));
            self.pending
                .push_back(line(&json!({"type": "ERROR", "object": gone.status()})));
            self.done = true;
            return true;
        }
        for change in store.changes_after(self.last) {
            if let Some(event) = self.request.event(change) {
                self.pending.push_back(line(&event));
            }
        }
        self.last = store.revision();
        true
    }
}

pub type Stream = futures::stream::BoxStream<'static, Result<Frame<Bytes>, Infallible>>;

/// The body of a watch response.
pub fn stream(shared: Arc<Shared>, request: WatchRequest) -> Stream {
    let mut pending = VecDeque::new();
    let start = {
        let store = shared.store.lock().expect("store lock");
        match request.since {
            Some(revision) if revision > 0 => revision,
            _ => {
                let mut objects = store.list(request.kind, request.namespace.as_deref());
                objects.retain(|object| request.selects(object));
                for object in objects {
                    pending.push_back(line(&json!({"type": "ADDED", "object": object})));
                }
                store.revision()
            }
        }
    };
    let cursor = Cursor {
        epoch: shared.epoch(),
        changes: shared.changes.subscribe(),
        shared,
        deadline: Instant::now() + request.timeout,
        request,
        last: start,
        pending,
        done: false,
    };
    Box::pin(futures::stream::unfold(cursor, |mut cursor| async move {
        loop {
            if let Some(bytes) = cursor.pending.pop_front() {
                return Some((Ok(Frame::data(bytes)), cursor));
            }
            if cursor.done || !cursor.catch_up() {
                return None;
            }
            if !cursor.pending.is_empty() {
                continue;
            }
            tokio::select! {
                changed = cursor.changes.changed() => if changed.is_err() { return None },
                _ = tokio::time::sleep_until(cursor.deadline) => {
                    if cursor.request.bookmarks {
                        let bookmark = cursor.request.bookmark(cursor.last);
                        cursor.pending.push_back(line(&bookmark));
                    }
                    cursor.done = true;
                }
            }
        }
    }))
}
