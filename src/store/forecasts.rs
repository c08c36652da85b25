//! Daily forecast snapshots, one per forecasting pipeline and day.

use super::backend::{Backend, KvWrite};
use super::keys;
use super::kv::{KvStore, decode_value, encode_value};
use super::*;

impl<B: Backend> ForecastTable for KvStore<B> {
    fn forecast_on_or_before(
        &self,
        pipeline: &str,
        day: chrono::NaiveDate,
    ) -> Result<Option<ForecastSnapshot>, StoreError> {
        // Scanning down from just above the day's key finds the day itself
        // or the latest before it.
        let mut above = keys::forecast(pipeline, day);
        above.push(0xff);
        let found = self
            .backend
            .scan_rev(&keys::forecast_prefix(pipeline), Some(&above), 1)?;
        found
            .into_iter()
            .next()
            .map(|(key, value)| decode_value(&key, &value))
            .transpose()
    }
}

/// Writes snapshots (a second one for the same day replaces the first).
pub(super) fn stage(
    snapshots: &[ForecastSnapshot],
    w: &mut Vec<KvWrite>,
) -> Result<(), StoreError> {
    for s in snapshots {
        w.push(KvWrite::Put(
            keys::forecast(&s.pipeline, s.day),
            encode_value(s)?,
        ));
    }
    Ok(())
}
