//! Backups of a running store (SPEC §9): one gzip file holding every key
//! at one point in the commit sequence, with a format version and a
//! SHA-256 checksum; and restoring one into an empty folder.
//!
//! A consistent copy without stopping writers: when a backup starts, under
//! the writer lock, the store begins to keep a copy of every batch it
//! applies (the tap); the backup then scans every key, which sees each key
//! at some moment of the scan; when the scan ends, under the writer lock
//! again, the tap is closed and its batches are written after the scanned
//! keys. Restoring applies the scanned keys, then the batches in order, so
//! every key ends as the last batch left it: the store as it was when the
//! tap closed, with no half-applied commit. Writers only pay for a clone of
//! each batch while a backup runs; the backup moves the kept batches to a
//! temporary file every [`DRAIN_EVERY`] keys it scans, so a long backup
//! under heavy ingest holds little of them in memory.
//!
//! The file: `DEALFLOW-BACKUP\n`, a JSON header (length-prefixed), then
//! records (`1` put, `2` delete: lengths and bytes), then `0xFF`, the
//! record count and the SHA-256 of everything before it, all gzip-compressed.

use super::StoreError;
use super::backend::{Backend, KvWrite};
use super::keys;
use super::kv::KvStore;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::io::{Read, Write};

const MAGIC: &[u8] = b"DEALFLOW-BACKUP\n";

/// The layout of backup files this build writes and reads.
pub const BACKUP_FORMAT: u32 = 1;

const PUT: u8 = 1;
const DELETE: u8 = 2;
const END: u8 = 0xFF;

/// Keys scanned between two moves of the tap's batches to the spill file.
const DRAIN_EVERY: u64 = if cfg!(test) { 7 } else { 10_000 };

/// Records applied at a time while restoring.
const RESTORE_BATCH: usize = 1000;

/// Longest key or value a backup may hold (a guard against a damaged file
/// asking for gigabytes).
const MAX_LEN: u32 = 256 << 20;

/// What a backup file says about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupHeader {
    /// [`BACKUP_FORMAT`] of the program that wrote it.
    pub format: u32,
    /// The store's format mark (`dealflow-8`).
    pub store_format: String,
    /// When the backup started.
    pub created_at: DateTime<Utc>,
    /// The data folder's unsubscribe key (base64), so links in emails sent
    /// before the backup still work after a restore.
    pub unsubscribe_key: Option<String>,
}

/// How a backup went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupSummary {
    /// Keys copied by the scan.
    pub keys: u64,
    /// Batches written while it ran, replayed on restore.
    pub batches: u64,
}

/// Why a backup or restore failed.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// Reading or writing the file failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The file is not a whole dealflow backup.
    #[error("the file is not a whole dealflow backup ({0}); nothing was written")]
    Damaged(String),
    /// The file was written by a newer dealflow.
    #[error(
        "the backup was made by a newer dealflow (backup format {format}, store format {store_format}); this one reads backup format {BACKUP_FORMAT} and store format {reads}; use that version to restore it. Nothing was written"
    )]
    Newer {
        /// Its backup format.
        format: u32,
        /// Its store format.
        store_format: String,
        /// The store format this build writes.
        reads: String,
    },
}

impl<B: Backend> KvStore<B> {
    /// Writes a consistent copy of the whole store to `out` (uncompressed
    /// framing; the caller compresses, see [`write_backup`]).
    fn backup_records(&self, out: &mut Framed<impl Write>) -> Result<BackupSummary, BackupError> {
        let mut spill = Spill::new()?;
        self.open_tap();
        let scanned = self.scan_all(out, &mut spill);
        let last = self.close_tap();
        let keys = scanned?;
        spill.keep(last)?;
        let batches = spill.batches;
        spill.copy_into(out)?;
        Ok(BackupSummary { keys, batches })
    }

    fn scan_all(
        &self,
        out: &mut Framed<impl Write>,
        spill: &mut Spill,
    ) -> Result<u64, BackupError> {
        let mut keys = 0;
        self.each_entry(|key, value| {
            out.record(PUT, key, Some(value))?;
            keys += 1;
            if keys % DRAIN_EVERY == 0 {
                spill.keep(self.drain_tap())?;
            }
            Ok::<(), BackupError>(())
        })?;
        Ok(keys)
    }
}

/// The tap's batches, moved to an unnamed temporary file as the scan goes
/// and copied after the scanned keys at the end, in the order applied.
struct Spill {
    file: std::io::BufWriter<std::fs::File>,
    batches: u64,
}

impl Spill {
    fn new() -> std::io::Result<Spill> {
        Ok(Spill {
            file: std::io::BufWriter::new(tempfile::tempfile()?),
            batches: 0,
        })
    }

    /// Appends batches: per write, its tag, then key and value as
    /// length-prefixed bytes (the framing of the backup itself).
    fn keep(&mut self, batches: Vec<Vec<KvWrite>>) -> std::io::Result<()> {
        for batch in batches {
            self.batches += 1;
            for write in batch {
                let (tag, key, value) = match &write {
                    KvWrite::Put(k, v) => (PUT, k, Some(v)),
                    KvWrite::Delete(k) => (DELETE, k, None),
                };
                self.file.write_all(&[tag])?;
                for bytes in std::iter::once(key).chain(value) {
                    let len = u32::try_from(bytes.len()).map_err(std::io::Error::other)?;
                    self.file.write_all(&len.to_be_bytes())?;
                    self.file.write_all(bytes)?;
                }
            }
        }
        Ok(())
    }

    /// Writes every kept write into the backup, in order.
    fn copy_into(self, out: &mut Framed<impl Write>) -> std::io::Result<()> {
        use std::io::Seek;
        let mut file = self.file.into_inner().map_err(|e| e.into_error())?;
        file.rewind()?;
        let mut input = std::io::BufReader::new(file);
        let mut tag = [0u8; 1];
        loop {
            match input.read_exact(&mut tag) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
                Err(e) => return Err(e),
            }
            let key = read_spilled(&mut input)?;
            let value = match tag[0] {
                PUT => Some(read_spilled(&mut input)?),
                _ => None,
            };
            out.record(tag[0], &key, value.as_deref())?;
        }
    }
}

fn read_spilled(input: &mut impl Read) -> std::io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    input.read_exact(&mut len)?;
    let mut bytes = vec![0u8; u32::from_be_bytes(len) as usize];
    input.read_exact(&mut bytes)?;
    Ok(bytes)
}

impl<B: Backend> KvStore<B> {}

/// Writes a gzip-compressed backup of `store` to `out`.
pub fn write_backup<B: Backend>(
    store: &KvStore<B>,
    unsubscribe_key: Option<&[u8]>,
    now: DateTime<Utc>,
    out: impl Write,
) -> Result<BackupSummary, BackupError> {
    use base64::Engine;
    let header = BackupHeader {
        format: BACKUP_FORMAT,
        store_format: String::from_utf8_lossy(keys::FORMAT_VERSION).into_owned(),
        created_at: now,
        unsubscribe_key: unsubscribe_key
            .map(|k| base64::engine::general_purpose::STANDARD.encode(k)),
    };
    let gzip = flate2::write::GzEncoder::new(out, flate2::Compression::fast());
    let mut framed = Framed::new(gzip);
    framed.raw(MAGIC)?;
    let header_json = serde_json::to_vec(&header).map_err(std::io::Error::other)?;
    framed.bytes(&header_json)?;
    let summary = store.backup_records(&mut framed)?;
    framed.raw(&[END])?;
    let (mut gzip, count, digest) = framed.finish();
    gzip.write_all(&count.to_be_bytes())?;
    gzip.write_all(&digest)?;
    gzip.finish()?.flush()?;
    Ok(summary)
}

/// Reads a whole backup, checking its framing, its format and its
/// checksum, handing each record to `each`; answers its header and record
/// count. Nothing is known good until this returns `Ok`.
pub fn read_backup(
    input: impl Read,
    mut each: impl FnMut(KvWrite) -> Result<(), BackupError>,
) -> Result<(BackupHeader, u64), BackupError> {
    let mut input = Hashing::new(flate2::read::GzDecoder::new(input));
    let damaged = |what: &str| BackupError::Damaged(what.to_owned());
    let mut magic = vec![0u8; MAGIC.len()];
    input
        .exact(&mut magic)
        .map_err(|_| damaged("it does not start like one"))?;
    if magic != MAGIC {
        return Err(damaged("it does not start like one"));
    }
    let header_bytes = input
        .sized()
        .map_err(|_| damaged("its header is cut short"))?;
    let header: BackupHeader = serde_json::from_slice(&header_bytes)
        .map_err(|e| BackupError::Damaged(format!("its header does not read: {e}")))?;
    // An older store format is restored as it was, then moved over when
    // `restore` opens it, as the store it was taken from would have been.
    let reads = String::from_utf8_lossy(keys::FORMAT_VERSION).into_owned();
    if header.format > BACKUP_FORMAT || !super::migrations::opens(header.store_format.as_bytes()) {
        return Err(BackupError::Newer {
            format: header.format,
            store_format: header.store_format,
            reads,
        });
    }
    let mut count = 0u64;
    loop {
        let mut tag = [0u8; 1];
        input
            .exact(&mut tag)
            .map_err(|_| damaged("it is cut short"))?;
        match tag[0] {
            PUT => {
                let key = input
                    .sized()
                    .map_err(|_| damaged("a record is cut short"))?;
                let value = input
                    .sized()
                    .map_err(|_| damaged("a record is cut short"))?;
                each(KvWrite::Put(key, value))?;
            }
            DELETE => {
                let key = input
                    .sized()
                    .map_err(|_| damaged("a record is cut short"))?;
                each(KvWrite::Delete(key))?;
            }
            END => break,
            other => {
                return Err(BackupError::Damaged(format!(
                    "an unknown record type {other}"
                )));
            }
        }
        count += 1;
    }
    let expected = input.digest();
    let mut stated = [0u8; 8];
    let mut sum = [0u8; 32];
    input
        .exact(&mut stated)
        .map_err(|_| damaged("its end is cut short"))?;
    input
        .exact(&mut sum)
        .map_err(|_| damaged("its checksum is cut short"))?;
    if u64::from_be_bytes(stated) != count || sum.as_slice() != expected.as_slice() {
        return Err(damaged(
            "its checksum does not match: it was changed or damaged",
        ));
    }
    Ok((header, count))
}

/// Checks a whole backup file without writing anything.
pub fn verify_backup(path: &std::path::Path) -> Result<(BackupHeader, u64), BackupError> {
    read_backup(std::io::BufReader::new(std::fs::File::open(path)?), |_| {
        Ok(())
    })
}

/// Restores a backup into `backend`, which must be empty. Check the file
/// with [`verify_backup`] first: a file that turns out damaged here has
/// been partly applied.
pub fn restore_backup<B: Backend>(
    path: &std::path::Path,
    backend: &B,
) -> Result<(BackupHeader, u64), BackupError> {
    if !backend.scan(b"", None, 1)?.is_empty() {
        return Err(BackupError::Damaged(
            "the target store is not empty".to_owned(),
        ));
    }
    let mut batch = Vec::with_capacity(RESTORE_BATCH);
    let read = read_backup(
        std::io::BufReader::new(std::fs::File::open(path)?),
        |write| {
            batch.push(write);
            if batch.len() == RESTORE_BATCH {
                backend.apply(std::mem::take(&mut batch))?;
            }
            Ok(())
        },
    )?;
    backend.apply(batch)?;
    Ok(read)
}

/// The uncompressed side of a backup being written: frames records,
/// counts them and hashes every byte.
struct Framed<W: Write> {
    out: W,
    hash: Sha256,
    count: u64,
}

impl<W: Write> Framed<W> {
    fn new(out: W) -> Self {
        Framed {
            out,
            hash: Sha256::new(),
            count: 0,
        }
    }

    fn raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.hash.update(bytes);
        self.out.write_all(bytes)
    }

    fn bytes(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        let len =
            u32::try_from(bytes.len()).map_err(|_| std::io::Error::other("a value over 4 GiB"))?;
        self.raw(&len.to_be_bytes())?;
        self.raw(bytes)
    }

    fn record(&mut self, tag: u8, key: &[u8], value: Option<&[u8]>) -> std::io::Result<()> {
        self.raw(&[tag])?;
        self.bytes(key)?;
        if let Some(value) = value {
            self.bytes(value)?;
        }
        self.count += 1;
        Ok(())
    }

    /// The stream, the record count and the checksum of all written so far.
    fn finish(self) -> (W, u64, [u8; 32]) {
        (self.out, self.count, self.hash.finalize().into())
    }
}

/// The uncompressed side of a backup being read, hashed as it goes.
struct Hashing<R: Read> {
    input: R,
    hash: Sha256,
}

impl<R: Read> Hashing<R> {
    fn new(input: R) -> Self {
        Hashing {
            input,
            hash: Sha256::new(),
        }
    }

    fn exact(&mut self, buf: &mut [u8]) -> std::io::Result<()> {
        self.input.read_exact(buf)?;
        self.hash.update(&*buf);
        Ok(())
    }

    fn sized(&mut self) -> std::io::Result<Vec<u8>> {
        let mut len = [0u8; 4];
        self.exact(&mut len)?;
        let len = u32::from_be_bytes(len);
        if len > MAX_LEN {
            return Err(std::io::Error::other("a length beyond any record"));
        }
        let mut buf = vec![0u8; len as usize];
        self.exact(&mut buf)?;
        Ok(buf)
    }

    /// The checksum of everything read so far (what the end record states).
    fn digest(&self) -> [u8; 32] {
        self.hash.clone().finalize().into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::NewEvent;
    use crate::store::{EventTable, MemoryBackend};
    use std::sync::Arc;

    fn event(id: &str) -> NewEvent {
        NewEvent::form(id, id)
    }

    fn everything(backend: &MemoryBackend) -> Vec<(Vec<u8>, Vec<u8>)> {
        backend.scan(b"", None, usize::MAX).unwrap()
    }

    /// A file that, while the backup writes to it, appends events to the
    /// store being backed up: ingest during a backup.
    struct Busy {
        store: Arc<KvStore<MemoryBackend>>,
        bytes: Vec<u8>,
        writes: usize,
    }

    impl Write for Busy {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.writes += 1;
            // Only while the backup copies: what comes after is not in it.
            if self.writes.is_multiple_of(3) && self.store.tap_open() {
                let id = format!("during-{}", self.writes);
                self.store
                    .append_events(vec![event(&id)])
                    .map_err(std::io::Error::other)?;
            }
            self.bytes.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_backup_taken_while_writing_restores_the_store_as_it_ended() {
        let store = Arc::new(KvStore::open(MemoryBackend::default(), "memory").unwrap());
        for i in 0..3000 {
            store
                .append_events(vec![event(&format!("before-{i}"))])
                .unwrap();
        }
        let mut busy = Busy {
            store: store.clone(),
            bytes: Vec::new(),
            writes: 0,
        };
        let summary = write_backup(&store, Some(b"key"), DateTime::UNIX_EPOCH, &mut busy).unwrap();
        assert!(summary.batches > 0, "nothing was written during the backup");
        let Busy {
            bytes,
            store: writer,
            ..
        } = busy;
        drop(writer);
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), &bytes).unwrap();
        let (header, _) = verify_backup(file.path()).unwrap();
        assert_eq!(header.unsubscribe_key.as_deref(), Some("a2V5"));
        let restored = MemoryBackend::default();
        restore_backup(file.path(), &restored).unwrap();
        // Every write made before the tap closed is in the copy; nothing
        // was written after it, so the copy is the store itself.
        let original = Arc::try_unwrap(store).ok().unwrap().into_backend();
        assert_eq!(everything(&restored), everything(&original));
        let restored = KvStore::open(restored, "memory").unwrap();
        assert!(restored.append_events(vec![event("before-7")]).unwrap()[0].duplicate);
    }

    #[test]
    fn damaged_truncated_foreign_and_newer_files_are_refused() {
        let store = KvStore::open(MemoryBackend::default(), "memory").unwrap();
        store.append_events(vec![event("e1")]).unwrap();
        let mut good = Vec::new();
        write_backup(&store, None, DateTime::UNIX_EPOCH, &mut good).unwrap();
        let check = |bytes: &[u8]| {
            read_backup(bytes, |_| Ok(()))
                .map(|_| ())
                .map_err(|e| e.to_string())
        };
        assert!(check(&good).is_ok());
        let mut flipped = good.clone();
        let middle = flipped.len() / 2;
        flipped[middle] ^= 0x40;
        assert!(check(&flipped).is_err());
        assert!(
            check(&good[..good.len() - 10])
                .unwrap_err()
                .contains("not a whole dealflow backup")
        );
        assert!(
            check(b"PK\x03\x04 a zip file")
                .unwrap_err()
                .contains("not a whole dealflow backup")
        );
        // A newer store format, with a valid checksum, is refused; an older
        // one this build moves over is restored.
        assert!(
            check(&empty_backup_of("dealflow-99"))
                .unwrap_err()
                .contains("made by a newer dealflow")
        );
        assert!(check(&empty_backup_of("dealflow-7")).is_ok());
    }

    /// A whole backup of no entries, marked with `store_format`.
    fn empty_backup_of(store_format: &str) -> Vec<u8> {
        let mut framed = Framed::new(flate2::write::GzEncoder::new(
            Vec::new(),
            flate2::Compression::fast(),
        ));
        framed.raw(MAGIC).unwrap();
        let header = BackupHeader {
            format: BACKUP_FORMAT,
            store_format: store_format.into(),
            created_at: DateTime::UNIX_EPOCH,
            unsubscribe_key: None,
        };
        framed.bytes(&serde_json::to_vec(&header).unwrap()).unwrap();
        framed.raw(&[END]).unwrap();
        let (mut gzip, count, digest) = framed.finish();
        gzip.write_all(&count.to_be_bytes()).unwrap();
        gzip.write_all(&digest).unwrap();
        gzip.finish().unwrap()
    }
}
