//! Where the live keys of the due-ordered indexes (outbox queue, timers)
//! begin, so a scan for what is due starts there.
//!
//! Those indexes are queues: keys are written ahead of their due time and
//! deleted once done, so the start of the index is a run of deleted keys.
//! An LSM engine keeps a deleted key as a tombstone until compaction, and
//! a scan from the start steps over every one of them: with fjall, W1's
//! delivery spent more time skipping its own delivered rows than on
//! anything else. A floor per index says "no live key is due before
//! this", so scans skip the run.
//!
//! Kept right without reading the backend: once a batch is applied, each
//! index it put keys under has its floor lowered to them and its count of
//! batches raised; a scan raises the floor to the first key it found only
//! if no batch landed between its start and its end. A scan that started
//! before a batch landed may have missed its keys, and may even raise the
//! floor past them before the batch's lowering comes, but that lowering
//! comes after either way.

use super::backend::KvWrite;
use super::keys;
use std::sync::Mutex;

/// A floor: no live key of the index is due before `ms`.
#[derive(Clone, Copy, Default)]
pub(super) struct Floor {
    ms: u64,
    puts: u64,
}

impl Floor {
    /// The exclusive scan start: sorts after every key due before `ms` and
    /// before every key due at `ms` or later (ids are never empty).
    pub(super) fn after(&self, prefix: &[u8]) -> Option<Vec<u8>> {
        (self.ms > 0).then(|| [prefix, &self.ms.to_be_bytes()].concat())
    }
}

/// The floors of the outbox queue and the timers.
pub(super) struct DueFloors {
    floors: [(&'static [u8], Mutex<Floor>); 2],
}

impl Default for DueFloors {
    fn default() -> Self {
        DueFloors {
            floors: [
                (keys::OUTBOX_DUE, Mutex::default()),
                (keys::TIMER, Mutex::default()),
            ],
        }
    }
}

impl DueFloors {
    fn floor(&self, prefix: &[u8]) -> Option<&Mutex<Floor>> {
        self.floors
            .iter()
            .find(|(p, _)| *p == prefix)
            .map(|(_, floor)| floor)
    }

    /// The floor of `prefix` now (zero for an index without one).
    pub(super) fn read(&self, prefix: &[u8]) -> Floor {
        self.floor(prefix)
            .map(|f| *f.lock().unwrap_or_else(|p| p.into_inner()))
            .unwrap_or_default()
    }

    /// The earliest due time `writes` puts under each index, to lower the
    /// floors with once the writes are applied.
    pub(super) fn lowest(&self, writes: &[KvWrite]) -> [Option<u64>; 2] {
        let mut lowest = [None; 2];
        for write in writes {
            let KvWrite::Put(key, _) = write else {
                continue;
            };
            for ((prefix, _), low) in self.floors.iter().zip(&mut lowest) {
                if let Some(ms) = keys::due_ms(prefix, key) {
                    *low = Some(low.map_or(ms, |l: u64| l.min(ms)));
                }
            }
        }
        lowest
    }

    /// Lowers the floors to what [`DueFloors::lowest`] found, after the
    /// writes are applied.
    pub(super) fn lower(&self, lowest: [Option<u64>; 2]) {
        for ((_, floor), low) in self.floors.iter().zip(lowest) {
            if let Some(ms) = low {
                let mut floor = floor.lock().unwrap_or_else(|p| p.into_inner());
                floor.ms = floor.ms.min(ms);
                floor.puts += 1;
            }
        }
    }

    /// Raises the floor of `prefix` to `ms` (the first live key a scan
    /// that started at `seen` found), unless a put came since.
    pub(super) fn raise(&self, prefix: &[u8], seen: Floor, ms: u64) {
        if let Some(floor) = self.floor(prefix) {
            let mut floor = floor.lock().unwrap_or_else(|p| p.into_inner());
            if floor.puts == seen.puts && ms > floor.ms {
                floor.ms = ms;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(prefix: &[u8], ms: u64) -> KvWrite {
        KvWrite::Put([prefix, &ms.to_be_bytes(), b"id"].concat(), Vec::new())
    }

    fn apply(floors: &DueFloors, writes: &[KvWrite]) {
        floors.lower(floors.lowest(writes));
    }

    #[test]
    fn a_put_before_the_floor_lowers_it_and_a_scan_raced_by_a_put_does_not_raise_it() {
        let floors = DueFloors::default();
        let seen = floors.read(keys::TIMER);
        floors.raise(keys::TIMER, seen, 500);
        assert_eq!(floors.read(keys::TIMER).ms, 500);
        // A scan starts, a put lands below its floor, the scan ends.
        let seen = floors.read(keys::TIMER);
        apply(&floors, &[put(keys::TIMER, 100), put(keys::TIMER, 300)]);
        floors.raise(keys::TIMER, seen, 900);
        assert_eq!(floors.read(keys::TIMER).ms, 100);
        // A scan that missed a batch still being applied (it found the
        // index empty) raises the floor past it; the batch's lowering, which
        // comes after, undoes that.
        let seen = floors.read(keys::TIMER);
        let lowest = floors.lowest(&[put(keys::TIMER, 150)]);
        floors.raise(keys::TIMER, seen, u64::MAX);
        floors.lower(lowest);
        assert_eq!(floors.read(keys::TIMER).ms, 150);
        // The outbox queue's floor is its own.
        assert_eq!(floors.read(keys::OUTBOX_DUE).ms, 0);
    }

    #[test]
    fn the_scan_start_sorts_between_the_keys_due_before_and_at_the_floor() {
        let floor = Floor { ms: 7, puts: 0 };
        let after = floor.after(keys::TIMER).unwrap();
        let before = [keys::TIMER, &6u64.to_be_bytes(), "\u{10FFFF}".as_bytes()].concat();
        let at = [keys::TIMER, &7u64.to_be_bytes(), b"a"].concat();
        assert!(before < after && after < at);
        assert_eq!(Floor::default().after(keys::TIMER), None);
    }
}
