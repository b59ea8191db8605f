//! The archive's sha256 over the whole upload body, computed off the async workers.
//!
//! The body's pieces are gathered into groups and each group is hashed on the blocking pool
//! while the async worker goes on validating and chunking the next pieces (and the chunks'
//! own hashes run on the blocking pool too), so an upload keeps two cores busy instead of
//! hashing the archive inline. At most one group is being hashed and one gathered, so an upload
//! holds at most two groups of its body for this; and it holds no thread while it waits for
//! its client, since a group is only handed over once it is full.

use bytes::Bytes;
use sha2::{Digest, Sha256};
use tokio::task::JoinHandle;

use crate::error::{Error, Result};

/// Bytes hashed per blocking task: large enough that handing a group over costs little next to
/// hashing it (about 0.07 ms at 1.8 GB/s), small enough to keep what an upload holds small.
const GROUP_BYTES: usize = 128 * 1024;

/// The running sha256 of an upload body.
pub(crate) struct ArchiveChecksum {
    /// The hash state while no group is being hashed.
    idle: Option<Sha256>,
    /// The group being hashed, which hands the state back.
    running: Option<JoinHandle<Sha256>>,
    gathered: Vec<Bytes>,
    gathered_bytes: usize,
}

impl ArchiveChecksum {
    pub(crate) fn new() -> ArchiveChecksum {
        ArchiveChecksum {
            idle: Some(Sha256::new()),
            running: None,
            gathered: Vec::new(),
            gathered_bytes: 0,
        }
    }

    /// Adds the next piece of the body. Waits only when the previous group is still being
    /// hashed as the next one fills up.
    pub(crate) async fn update(&mut self, piece: Bytes) -> Result<()> {
        self.gathered_bytes += piece.len();
        self.gathered.push(piece);
        if self.gathered_bytes >= GROUP_BYTES {
            self.hand_over().await?;
        }
        Ok(())
    }

    /// The checksum in lowercase hexadecimal, once every piece is hashed.
    pub(crate) async fn finish(mut self) -> Result<String> {
        self.hand_over().await?;
        let state = self.take_state().await?;
        Ok(hex::encode(state.finalize()))
    }

    async fn take_state(&mut self) -> Result<Sha256> {
        match self.running.take() {
            Some(running) => running
                .await
                .map_err(|error| Error::internal(format!("hashing the archive failed: {error}"))),
            None => Ok(self.idle.take().expect("the state is idle or running")),
        }
    }

    async fn hand_over(&mut self) -> Result<()> {
        if self.gathered.is_empty() {
            return Ok(());
        }
        let mut state = self.take_state().await?;
        let group = std::mem::take(&mut self.gathered);
        self.gathered_bytes = 0;
        self.running = Some(tokio::task::spawn_blocking(move || {
            for piece in &group {
                state.update(piece);
            }
            state
        }));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_checksum_is_the_sha256_of_the_pieces_in_order() {
        let body: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut checksum = ArchiveChecksum::new();
        // Uneven pieces, some larger than a group, some tiny.
        for piece in body.chunks(70_001).flat_map(|piece| {
            let (head, tail) = piece.split_at(piece.len().min(3));
            [head, tail]
        }) {
            checksum
                .update(Bytes::copy_from_slice(piece))
                .await
                .unwrap();
        }
        assert_eq!(
            checksum.finish().await.unwrap(),
            hex::encode(Sha256::digest(&body))
        );
        assert_eq!(
            ArchiveChecksum::new().finish().await.unwrap(),
            hex::encode(Sha256::digest(b"")),
            "an empty body"
        );
    }
}
