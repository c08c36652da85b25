//! Where each IMAP mailbox was read up to, written in the same commit as
//! the events its messages raised.

use super::backend::{Backend, KvWrite};
use super::keys;
use super::kv::{KvStore, encode_value};
use super::*;

impl<B: Backend> MailboxPositionTable for KvStore<B> {
    fn mailbox_position(&self, name: &str) -> Result<Option<MailboxPosition>, StoreError> {
        self.get(&keys::mailbox(name))
    }
}

/// Writes mailbox positions.
pub(super) fn stage_positions(
    positions: &[MailboxPosition],
    w: &mut Vec<KvWrite>,
) -> Result<(), StoreError> {
    for p in positions {
        w.push(KvWrite::Put(keys::mailbox(&p.name), encode_value(p)?));
    }
    Ok(())
}
