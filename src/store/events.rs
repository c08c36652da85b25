//! The event log as stored. Events are written in rows of up to
//! [`ROW_EVENTS`] consecutive sequence numbers, under the first one's
//! number: sled keeps bookkeeping in memory for every page of about ten
//! keys, so a key per event made the daemon's memory grow with the log (the
//! two events the engine raises for a new record were a third of the keys it
//! left behind). A row of one is a plain event, as every row was before.

use super::StoreError;
use super::backend::KvWrite;
use super::keys;
use super::kv::{decode_value, encode_value};
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
}
