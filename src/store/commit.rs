//! The one atomic commit: every table stages its part of a [`Changes`]
//! into one batch, applied under the writer lock, then the loops that wait
//! for it are rung. Above the tables (it calls each), below nothing.

use super::backend::{Backend, KvWrite};
use super::events::Ids;
use super::kv::KvStore;
use super::*;
use super::{
    enrollments, events, forecasts, keys, ledger, mailboxes, outbox, records, rejected, runs,
    suppressions, timers,
};

impl<B: Backend> Store for KvStore<B> {
    fn commit(&self, changes: Changes) -> Result<(), StoreError> {
        // Encode before taking the writer lock, so ingest waits only for
        // the sequence numbers and the apply. Tasks are read-modify-write,
        // but only the engine worker writes them.
        let mut w = Vec::with_capacity(changes.writes_estimate());
        // Each table writes its own keys and keeps its own indexes in step.
        records::stage(&changes.round.records, &mut w)?;
        self.stage_history_writes(&changes.round.stage_visits, &mut w)?;
        for t in &changes.round.tasks {
            self.stage_task(t, &mut w)?;
        }
        // One version per row, the last: each version moves the indexes
        // from the stored one, which knows nothing of the others.
        let mut later = std::collections::HashSet::new();
        let rows: Vec<&OutboxEntry> = (changes.round.outbox.iter().rev())
            .filter(|o| later.insert(o.id.as_str()))
            .collect();
        for o in rows.into_iter().rev() {
            self.stage_outbox(o, &mut w)?;
        }
        timers::stage(&changes.round.timers, &changes.round.timers_done, &mut w)?;
        enrollments::stage(&changes.round.enrollments, &mut w)?;
        runs::stage(&changes.round.runs, &mut w)?;
        self.stage_pruned_runs(&changes.runs_pruned, &mut w)?;
        for (name, value) in &changes.round.counters {
            w.push(KvWrite::Put(
                keys::counter(name),
                value.to_be_bytes().to_vec(),
            ));
        }
        for notes in &changes.round.ledger {
            ledger::encode(notes, &mut w)?;
        }
        suppressions::stage(&changes.round.suppress, &changes.unsuppress, &mut w)?;
        events::stage_set_aside(&changes.set_aside, &mut w)?;
        timers::stage_set_aside(&changes.set_aside_timers, &mut w)?;
        rejected::stage(&changes.rejected, &changes.replayed, &mut w)?;
        mailboxes::stage_positions(&changes.mailbox_positions, &mut w)?;
        outbox::stage_receipts(&changes.receipts, &mut w)?;
        self.stage_event_retention(&changes, &mut w)?;
        forecasts::stage(&changes.forecasts, &mut w)?;
        let rings_worker = !changes.round.events.is_empty() || !changes.fired.is_empty();
        let rings_delivery = !changes.round.outbox.is_empty();
        let writer = self.lock();
        let mut next = self.next_seq(*writer)?;
        let mut stored = Vec::new();
        if !changes.round.events.is_empty() {
            let events = changes.round.events;
            self.stage_events(events, Ids::Deduplicate, &mut next, &mut w, &mut stored)?;
        }
        if !changes.fired.is_empty() {
            self.stage_events(changes.fired, Ids::Unique, &mut next, &mut w, &mut stored)?;
        }
        if let Some(seq) = changes.round.handled {
            w.push(KvWrite::Put(
                keys::CURSOR.to_vec(),
                seq.to_be_bytes().to_vec(),
            ));
        }
        if let Some(last) = changes.event_rows_pruned.iter().map(|row| row.last).max() {
            // Forgotten before the apply deletes them, so the kept events
            // never hold one the backend no longer does.
            self.recent_events.pruned_through(last);
        }
        let no_longer_kept = self.apply_appending(writer, w, stored, next)?;
        self.records.written(changes.round.records);
        self.wakeups.commits.send_modify(|n| *n += 1);
        if rings_worker {
            self.wakeups.events.notify_one();
        }
        if rings_delivery {
            self.wakeups.outbox.notify_one();
        }
        // Freed after the lock is let go and the loops are rung.
        drop(no_longer_kept);
        Ok(())
    }

    fn flush(&self) -> impl Future<Output = Result<(), StoreError>> + Send {
        self.backend.flush()
    }

    fn flush_soon(&self) -> impl Future<Output = Result<(), StoreError>> + Send {
        self.backend.flush_soon()
    }

    fn write_failure(&self) -> Option<String> {
        self.backend.write_failure()
    }

    fn size_on_disk(&self) -> u64 {
        self.backend.size_on_disk()
    }

    fn wakeups(&self) -> &super::Wakeups {
        &self.wakeups
    }

    fn backup_to(
        &self,
        out: &mut dyn std::io::Write,
        unsubscribe_key: Option<&[u8]>,
        now: DateTime<Utc>,
    ) -> Result<super::backup::BackupSummary, super::backup::BackupError> {
        super::backup::write_backup(self, unsubscribe_key, now, out)
    }
}
