//! The event log as stored. Events are written in rows of up to
//! [`ROW_EVENTS`] consecutive sequence numbers, under the first one's
//! number: sled keeps bookkeeping in memory for every page of about ten
//! keys, so a key per event made the daemon's memory grow with the log (the
//! two events the engine raises for a new record were a third of the keys it
//! left behind). A row of one is a plain event, as every row was before.

use super::backend::{Backend, KvWrite};
use super::keys;
use super::kv::{KvStore, ROWS_PER_READ, decode_value, encode_value};
use super::*;
use crate::state::Event;

/// Events per row at most. A sled leaf holds up to 16 keys whatever their
/// size, and fat leaves cost latency: in the ingest benchmark, p99 at a
/// steady 2,000 events/s had a median of 9.5 ms over four runs with rows of
/// 4, against 21.8 ms with rows of 16 (and a reader starting inside a row
/// decodes the events before its start again).
pub const ROW_EVENTS: usize = 4;

/// The rows for events with consecutive sequence numbers, in order.
pub fn encode(events: &[Event]) -> Result<Vec<KvWrite>, StoreError> {
    events
        .chunks(ROW_EVENTS)
        .filter_map(|row| row.first().map(|first| (first.seq, row)))
        .map(|(seq, row)| {
            let value = match row {
                [one] => encode_value(one)?,
                many => encode_value(&many)?,
            };
            Ok(KvWrite::Put(keys::event(seq), value))
        })
        .collect()
}

/// The events of a row: a list, or one event on its own.
pub fn decode(key: &[u8], value: &[u8]) -> Result<Vec<Event>, StoreError> {
    if is_list(value) {
        decode_value(key, value)
    } else {
        decode_value(key, value).map(|one| vec![one])
    }
}

/// Whether a MessagePack value is an array (an event on its own is a map).
fn is_list(value: &[u8]) -> bool {
    matches!(value.first(), Some(0x90..=0x9f | 0xdc | 0xdd))
}

/// The sequence number of a row's last event, from its key and the length
/// in its first byte, without decoding it (`None` if they do not say).
pub fn last_seq(key: &[u8], value: &[u8]) -> Option<u64> {
    let first = keys::read_u64(key.strip_prefix(keys::EVENT)?)?;
    let len = match value.first()? {
        &b @ 0x90..=0x9f => u64::from(b & 0x0f),
        _ if is_list(value) => return None,
        _ => 1,
    };
    first.checked_add(len.checked_sub(1)?)
}

/// How an event's id is treated when it is appended.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Ids {
    /// An id seen before makes the event a duplicate (outside events).
    Deduplicate,
    /// The id is unique by construction (a fired timer's).
    Unique,
}

impl<B: Backend> KvStore<B> {
    /// Gives each new event a sequence number and writes them, skipping ids
    /// already in the log (or earlier in the same batch).
    pub(super) fn stage_events(
        &self,
        events: Vec<NewEvent>,
        ids: Ids,
        next: &mut u64,
        writes: &mut Vec<KvWrite>,
        stored: &mut Vec<Event>,
    ) -> Result<Vec<Appended>, StoreError> {
        let mut seen_here: std::collections::HashMap<String, u64> =
            std::collections::HashMap::new();
        let mut out = Vec::with_capacity(events.len());
        let first = stored.len();
        let deduplicate = ids == Ids::Deduplicate;
        for e in events {
            if let Some(id) = e.id.as_ref().filter(|_| deduplicate) {
                let earlier = match seen_here.get(id) {
                    Some(seq) => Some(*seq),
                    None => self
                        .backend
                        .get(&keys::event_id(id))?
                        .and_then(|b| keys::read_u64(&b)),
                };
                if let Some(seq) = earlier {
                    out.push(Appended {
                        id: id.clone(),
                        seq,
                        duplicate: true,
                    });
                    continue;
                }
            }
            let seq = *next;
            *next += 1;
            let id = e.id.clone().unwrap_or_else(|| format!("gen-{seq}"));
            stored.push(Event {
                seq,
                id: id.clone(),
                event_type: e.event_type,
                record: e.record,
                fields: e.fields,
                data: e.data,
                occurred_at: e.occurred_at,
                depth: e.depth,
            });
            if deduplicate && e.id.is_some() {
                writes.push(KvWrite::Put(
                    keys::event_id(&id),
                    seq.to_be_bytes().to_vec(),
                ));
                seen_here.insert(id.clone(), seq);
            }
            out.push(Appended {
                id,
                seq,
                duplicate: false,
            });
        }
        writes.extend(encode(&stored[first..])?);
        writes.push(KvWrite::Put(
            keys::NEXT_SEQ.to_vec(),
            next.to_be_bytes().to_vec(),
        ));
        Ok(out)
    }
}

impl<B: Backend> KvStore<B> {
    /// Writes and forgets marks, and forgets pruned rows with the
    /// deduplication entries that still point at their events (an id is
    /// left alone when it names another event, as a timer's may).
    pub(super) fn stage_event_retention(
        &self,
        changes: &Changes,
        w: &mut Vec<KvWrite>,
    ) -> Result<(), StoreError> {
        for mark in &changes.event_marks {
            w.push(KvWrite::Put(
                keys::event_mark(mark.at),
                mark.seq.to_be_bytes().to_vec(),
            ));
        }
        for at in &changes.event_marks_pruned {
            w.push(KvWrite::Delete(keys::event_mark(*at)));
        }
        for row in &changes.event_rows_pruned {
            w.push(KvWrite::Delete(keys::event(row.first)));
            for (seq, id) in &row.ids {
                let key = keys::event_id(id);
                let points_here = self
                    .backend
                    .get(&key)?
                    .and_then(|b| keys::read_u64(&b))
                    .is_some_and(|s| s == *seq);
                if points_here {
                    w.push(KvWrite::Delete(key));
                }
            }
        }
        Ok(())
    }
}

impl<B: Backend> KvStore<B> {
    /// The events after `seq`, at most `limit`, read from the backend.
    pub(super) fn stored_events_after(
        &self,
        seq: u64,
        limit: usize,
    ) -> Result<Vec<Event>, StoreError> {
        let mut out = Vec::new();
        let mut take = |key: &[u8], value: &[u8]| -> Result<bool, StoreError> {
            let row = decode(key, value)?;
            out.extend(
                row.into_iter()
                    .filter(|e| e.seq > seq)
                    .take(limit - out.len()),
            );
            Ok(out.len() == limit)
        };
        // The row holding `seq + 1` may start at or before `seq`. Most often
        // it ends at `seq` (the worker read it all last round), and its
        // length says so without decoding it again.
        let next = keys::event(seq.saturating_add(1));
        if let Some((key, value)) = self.backend.scan_rev(keys::EVENT, Some(&next), 1)?.first()
            && last_seq(key, value).is_none_or(|last| last > seq)
            && take(key, value)?
        {
            return Ok(out);
        }
        let mut after = keys::event(seq);
        loop {
            let chunk = self
                .backend
                .scan(keys::EVENT, Some(&after), ROWS_PER_READ)?;
            let exhausted = chunk.len() < ROWS_PER_READ;
            for (key, value) in chunk {
                if take(&key, &value)? {
                    return Ok(out);
                }
                after = key;
            }
            if exhausted {
                return Ok(out);
            }
        }
    }
}

fn decode_mark(key: &[u8], value: &[u8]) -> Option<EventMark> {
    let ms = keys::read_u64(key.strip_prefix(keys::EVENT_MARK)?)?;
    Some(EventMark {
        at: DateTime::from_timestamp_millis(i64::try_from(ms).ok()?)?,
        seq: keys::read_u64(value)?,
    })
}

impl<B: Backend> EventTable for KvStore<B> {
    fn event_mark_before(&self, at: DateTime<Utc>) -> Result<Option<EventMark>, StoreError> {
        let after_at = keys::event_mark(at + chrono::Duration::milliseconds(1));
        Ok(self
            .backend
            .scan_rev(keys::EVENT_MARK, Some(&after_at), 1)?
            .first()
            .and_then(|(k, v)| decode_mark(k, v)))
    }

    fn event_marks_before(
        &self,
        at: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<EventMark>, StoreError> {
        let end = keys::event_mark(at);
        Ok(self
            .backend
            .scan(keys::EVENT_MARK, None, limit)?
            .into_iter()
            .take_while(|(k, _)| *k < end)
            .filter_map(|(k, v)| decode_mark(&k, &v))
            .collect())
    }

    fn oldest_event_rows(&self, limit: usize) -> Result<Vec<EventRow>, StoreError> {
        self.backend
            .scan(keys::EVENT, None, limit)?
            .into_iter()
            .map(|(key, value)| {
                let events = decode(&key, &value)?;
                let first = keys::read_u64(&key[keys::EVENT.len()..]).unwrap_or(0);
                Ok(EventRow {
                    first,
                    last: events.last().map_or(first, |e| e.seq),
                    ids: events.into_iter().map(|e| (e.seq, e.id)).collect(),
                })
            })
            .collect()
    }

    fn append_events(&self, events: Vec<NewEvent>) -> Result<Vec<Appended>, StoreError> {
        let writer = self.lock();
        let mut next = self.next_seq(*writer)?;
        let (mut writes, mut stored) = (Vec::new(), Vec::new());
        let appended = self.stage_events(
            events,
            Ids::Deduplicate,
            &mut next,
            &mut writes,
            &mut stored,
        )?;
        let no_longer_kept = self.apply_appending(writer, writes, stored, next)?;
        if appended.iter().any(|a| !a.duplicate) {
            self.wakeups.events.notify_one();
        }
        // Freed after the lock is let go and the worker is rung.
        drop(no_longer_kept);
        Ok(appended)
    }

    fn events_after(&self, seq: u64, limit: usize) -> Result<Vec<Event>, StoreError> {
        match self.recent_events.after(seq, limit) {
            Some(events) => Ok(events),
            None => self.stored_events_after(seq, limit),
        }
    }

    fn last_seq(&self) -> Result<u64, StoreError> {
        let next = self
            .backend
            .get(keys::NEXT_SEQ)?
            .and_then(|b| keys::read_u64(&b));
        Ok(next.map_or(0, |n| n.saturating_sub(1)))
    }

    fn cursor(&self) -> Result<u64, StoreError> {
        Ok(self
            .backend
            .get(keys::CURSOR)?
            .and_then(|b| keys::read_u64(&b))
            .unwrap_or(0))
    }
}

impl<B: Backend> SetAsideTable for KvStore<B> {
    fn set_aside_events(&self, limit: usize) -> Result<Vec<SetAsideEvent>, StoreError> {
        self.newest_values(keys::SET_ASIDE, limit)
    }

    fn set_aside_count(&self, limit: usize) -> Result<usize, StoreError> {
        self.backend.count(keys::SET_ASIDE, limit)
    }

    fn set_aside_timers(&self, limit: usize) -> Result<Vec<SetAsideTimer>, StoreError> {
        self.newest_values(keys::SET_ASIDE_TIMER, limit)
    }

    fn set_aside_timer_count(&self, limit: usize) -> Result<usize, StoreError> {
        self.backend.count(keys::SET_ASIDE_TIMER, limit)
    }
}

/// Writes events the engine set aside, by sequence number.
pub(super) fn stage_set_aside(
    events: &[SetAsideEvent],
    w: &mut Vec<KvWrite>,
) -> Result<(), StoreError> {
    for event in events {
        w.push(KvWrite::Put(
            keys::set_aside(event.seq),
            encode_value(event)?,
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::RecordKey;
    use chrono::DateTime;

    fn event(seq: u64) -> Event {
        Event {
            seq,
            id: format!("gen-{seq}"),
            event_type: "record.updated".into(),
            record: RecordKey {
                kind: "lead".into(),
                id: "L1".into(),
            },
            fields: Default::default(),
            data: Default::default(),
            occurred_at: DateTime::UNIX_EPOCH,
            depth: 1,
        }
    }

    #[test]
    fn events_go_in_rows_of_at_most_four_and_a_single_one_as_before() {
        let events: Vec<Event> = (5..5 + 9).map(event).collect();
        let rows = encode(&events).unwrap();
        let mut read = Vec::new();
        for (row, first) in rows.iter().zip([5, 9, 13]) {
            let KvWrite::Put(key, value) = row else {
                panic!("{row:?}")
            };
            assert_eq!(key, &keys::event(first));
            read.extend(decode(key, value).unwrap());
        }
        assert_eq!(rows.len(), 3);
        assert_eq!(read, events);
        let KvWrite::Put(_, last) = &rows[2] else {
            panic!()
        };
        assert_eq!(last, &encode_value(&events[8]).unwrap(), "a row of one");
        let lasts: Vec<Option<u64>> = rows
            .iter()
            .map(|row| match row {
                KvWrite::Put(key, value) => last_seq(key, value),
                KvWrite::Delete(_) => None,
            })
            .collect();
        assert_eq!(lasts, [Some(8), Some(12), Some(13)]);
    }

    #[test]
    fn a_broken_row_is_an_error_not_a_panic() {
        for value in [&b""[..], b"\x92\x01", b"\xdd\xff\xff", b"\x81\xa1x"] {
            assert!(decode(&keys::event(1), value).is_err(), "{value:?}");
        }
        assert_eq!(last_seq(&keys::event(1), b""), None);
        assert_eq!(last_seq(&keys::event(1), b"\x90"), None, "an empty row");
        assert_eq!(last_seq(b"ev\0short", b"\x81"), None);
    }

    #[test]
    fn the_newest_events_read_as_the_backend_holds_them() {
        let store = KvStore::open(super::super::MemoryBackend::default(), "memory").unwrap();
        let data = serde_json::json!({
            "lead": {"score": 73, "ratio": 0.5, "big": u64::MAX, "debt": -7, "tags": ["a", null, true]},
            "text": "é \u{1F600}",
        });
        let new = |id: &str| NewEvent {
            data: data.as_object().cloned().unwrap_or_default(),
            fields: serde_json::Map::from_iter([("name".to_owned(), "Pat".into())]),
            occurred_at: DateTime::from_timestamp_nanos(1_772_000_000_123_456_789),
            ..NewEvent::form(id, "L1")
        };
        store
            .append_events(vec![new("a"), new("b"), new("a")])
            .unwrap();
        store
            .commit(Changes::from(crate::state::Effects {
                events: vec![new("c")],
                ..Default::default()
            }))
            .unwrap();
        let kept = store.events_after(0, 10).unwrap();
        assert_eq!(kept.len(), 3, "a duplicate takes no place");
        assert_eq!(kept, store.stored_events_after(0, 10).unwrap());
        assert_eq!(store.events_after(1, 1).unwrap(), kept[1..2]);
    }
}
