//! Where a record stands in each scoring model: its score and each rule's
//! part of it.
//!
//! A standing keeps its parts in slots laid out like the model's rules, so
//! an event changes a part by the rule's position, and reading a record
//! reads one string of names per model rather than one name per part. That
//! reading was most of the cost of a scored event (issue 6's benchmark).
//! The names stay with the parts, so a reload that reorders, adds or
//! removes rules moves each part to its rule by name ([`ModelScore::align`]).

use chrono::{DateTime, Utc};
use compact_str::CompactString;
use serde::de::{self, Error as _};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::sync::Arc;

/// A record's standing in each scoring model, in model-name order. A
/// sorted list rather than a map: a record has a few models and is read
/// whole with every event, and a list is cheaper to read, search and copy.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Scores(Vec<(CompactString, ModelScore)>);

impl Scores {
    /// The standing in a model.
    pub fn get(&self, model: &str) -> Option<&ModelScore> {
        self.find(model).ok().map(|i| &self.0[i].1)
    }

    /// The standing in a model, created empty if there is none yet, and
    /// whether it was.
    pub fn standing_mut(&mut self, model: &str) -> (&mut ModelScore, bool) {
        match self.find(model) {
            Ok(i) => (&mut self.0[i].1, false),
            Err(i) => {
                self.0.insert(i, (model.into(), ModelScore::default()));
                (&mut self.0[i].1, true)
            }
        }
    }

    /// Sets the standing in a model.
    pub fn insert(&mut self, model: &str, standing: ModelScore) {
        *self.standing_mut(model).0 = standing;
    }

    /// Every model's standing, in model-name order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &ModelScore)> {
        self.0
            .iter()
            .map(|(model, standing)| (model.as_str(), standing))
    }

    fn find(&self, model: &str) -> Result<usize, usize> {
        self.0
            .binary_search_by(|(name, _)| name.as_str().cmp(model))
    }
}

/// A model's slots: each rule name once, in rule order, and whether its
/// part is held (an attribute rule's: who the lead is does not fade, what
/// it did does). Built once per model; standings share its names.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RuleSlots {
    /// Each name ended by a NUL.
    names: Arc<str>,
    held: Vec<bool>,
}

impl RuleSlots {
    /// The slots of rules given as (name, held) in rule order, and each
    /// rule's slot. Rules of the same name share a part, as they share it
    /// in the ledger, so they share the first one's slot.
    pub fn new<'a>(rules: impl IntoIterator<Item = (&'a str, bool)>) -> (Self, Vec<usize>) {
        let mut names: Vec<Cow<str>> = Vec::new();
        let mut held = Vec::new();
        let mut slot_of_rule = Vec::new();
        for (name, is_held) in rules {
            let name = slot_name(name);
            let slot = match names.iter().position(|n| *n == name) {
                Some(slot) => slot,
                None => {
                    names.push(name);
                    held.push(false);
                    names.len() - 1
                }
            };
            held[slot] |= is_held;
            slot_of_rule.push(slot);
        }
        let names = names.iter().fold(String::new(), |mut all, name| {
            all.push_str(name);
            all.push('\0');
            all
        });
        let slots = RuleSlots {
            names: names.into(),
            held,
        };
        (slots, slot_of_rule)
    }

    fn len(&self) -> usize {
        self.held.len()
    }
}

/// A name as a slot holds it: NUL ends a slot's name, so one inside a name
/// (nothing sensible has one) is replaced rather than let break the layout.
fn slot_name(name: &str) -> Cow<'_, str> {
    if name.contains('\0') {
        Cow::Owned(name.replace('\0', "\u{FFFD}"))
    } else {
        Cow::Borrowed(name)
    }
}

/// Where a record stands in one scoring model.
#[derive(Debug, Clone, Default)]
pub struct ModelScore {
    /// The score after the last event: the sum of the parts then.
    pub score: f64,
    /// When the parts were last decayed; `None` before the first points.
    pub as_of: Option<DateTime<Utc>>,
    /// The slots' names, each ended by a NUL: the model's rules when the
    /// standing last changed, then any other parts (a `score` action's,
    /// a rule a reload removed).
    slots: Arc<str>,
    /// Each slot's part, decayed to `as_of`; 0 when it has none.
    points: Vec<f64>,
}

impl ModelScore {
    /// A standing with these parts (later ones of the same rule win).
    pub fn with_parts<'a>(
        score: f64,
        as_of: Option<DateTime<Utc>>,
        parts: impl IntoIterator<Item = (&'a str, f64)>,
    ) -> Self {
        let mut standing = ModelScore {
            score,
            as_of,
            ..ModelScore::default()
        };
        for (rule, points) in parts {
            standing.change_part(rule, |_| points);
        }
        standing
    }

    /// Each rule's part, in slot order (the model's rule order first).
    pub fn parts(&self) -> impl Iterator<Item = (&str, f64)> {
        self.slots
            .split_terminator('\0')
            .zip(self.points.iter().copied())
            .filter(|(_, points)| *points != 0.0)
    }

    /// Each rule's part, in rule-name order.
    pub fn parts_by_name(&self) -> Vec<(&str, f64)> {
        let mut parts: Vec<_> = self.parts().collect();
        parts.sort_by(|a, b| a.0.cmp(b.0));
        parts
    }

    /// The sum of the parts.
    pub fn sum(&self) -> f64 {
        self.points.iter().sum()
    }

    /// Lays the slots out as the model's, so the model's slot `i` is the
    /// standing's slot `i`. Free when they already are; after a reload that
    /// changed the rules, each part moves to its rule by name, and a part
    /// with no rule any more is kept after them.
    pub fn align(&mut self, rules: &RuleSlots) {
        if Arc::ptr_eq(&self.slots, &rules.names) {
            return;
        }
        if self.slots.starts_with(&*rules.names) {
            if self.slots.len() == rules.names.len() {
                // Share the model's names: a record kept decoded then holds
                // no copy, and the next alignment is a pointer comparison.
                self.slots = rules.names.clone();
            }
            return;
        }
        if rules.names.starts_with(&*self.slots) {
            // Rules added after the ones the standing knows.
            self.slots = rules.names.clone();
            self.points.resize(rules.len(), 0.0);
            return;
        }
        let model: Vec<&str> = rules.names.split_terminator('\0').collect();
        let mut points = vec![0.0; model.len()];
        let mut others = String::new();
        let mut other_points = Vec::new();
        for (name, part) in self.parts() {
            match model.iter().position(|rule| *rule == name) {
                Some(slot) => points[slot] = part,
                None => {
                    others.push_str(name);
                    others.push('\0');
                    other_points.push(part);
                }
            }
        }
        points.extend(other_points);
        self.slots = if others.is_empty() {
            rules.names.clone()
        } else {
            format!("{}{others}", rules.names).into()
        };
        self.points = points;
    }

    /// Sets slot `slot`'s part to `next(part)`, unless that is not finite;
    /// answers by how much the part changed. The slots must be aligned
    /// with the model the slot is from.
    pub fn change_slot(&mut self, slot: usize, next: impl FnOnce(f64) -> f64) -> f64 {
        let Some(part) = self.points.get_mut(slot) else {
            return 0.0;
        };
        let now = next(*part);
        if now == *part || !now.is_finite() {
            return 0.0;
        }
        let change = now - *part;
        *part = now;
        change
    }

    /// Sets a rule's part by its name (a rule without one has 0), as
    /// [`ModelScore::change_slot`] does; for parts outside the model's
    /// rules, such as a `score` action's.
    pub fn change_part(&mut self, rule: &str, next: impl FnOnce(f64) -> f64) -> f64 {
        let rule = slot_name(rule);
        if let Some(slot) = self.slots.split_terminator('\0').position(|n| n == rule) {
            return self.change_slot(slot, next);
        }
        let now = next(0.0);
        if now == 0.0 || !now.is_finite() {
            return 0.0;
        }
        self.slots = format!("{}{rule}\0", self.slots).into();
        self.points.push(now);
        now
    }

    /// Multiplies every part but the held ones by `factor`. The slots must
    /// be aligned with the model's ([`ModelScore::align`]).
    pub fn decay(&mut self, factor: f64, rules: &RuleSlots) {
        let model_slots = rules.len().min(self.points.len());
        let (model_parts, other_parts) = self.points.split_at_mut(model_slots);
        for (part, held) in model_parts.iter_mut().zip(&rules.held) {
            if !held {
                *part *= factor;
            }
        }
        for part in other_parts {
            *part *= factor;
        }
    }
}

/// Two standings are equal when they have the same score, time and parts,
/// however their slots are laid out.
impl PartialEq for ModelScore {
    fn eq(&self, other: &Self) -> bool {
        self.score == other.score
            && self.as_of == other.as_of
            && self.parts_by_name() == other.parts_by_name()
    }
}

// How standings are stored. In the store (a binary format) a record's
// `Scores` is one byte string in postcard, read with no per-value dispatch,
// which msgpack spent most of a scored record's reading on (issue 6). Each
// standing in it is the model, the score, the time as seconds and
// nanoseconds (exact, and cheap to read), the slots' names as one byte
// string and the points as one of little-endian `f64`s. Text formats get
// the same as a list of (model, [score, time, names, [points]]), which is
// also how `dealflow-5` stores kept them (with names as a list).

impl Serialize for Scores {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::Error;
        if s.is_human_readable() {
            return self.0.serialize(s);
        }
        let stored: Vec<_> = self
            .0
            .iter()
            .map(|(model, standing)| {
                (
                    model.as_str(),
                    standing.score,
                    standing.stored_time(),
                    Bytes(standing.slots.as_bytes()),
                    LittleEndian(&standing.points),
                )
            })
            .collect();
        let bytes = postcard::to_allocvec(&stored).map_err(S::Error::custom)?;
        s.serialize_bytes(&bytes)
    }
}

impl<'de> Deserialize<'de> for Scores {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Standings;
        impl<'de> de::Visitor<'de> for Standings {
            type Value = Vec<(CompactString, ModelScore)>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("scores")
            }
            fn visit_bytes<E: de::Error>(self, bytes: &[u8]) -> Result<Self::Value, E> {
                let stored: Vec<StoredStanding> = postcard::from_bytes(bytes).map_err(E::custom)?;
                stored
                    .into_iter()
                    .map(|s| {
                        let slots = std::str::from_utf8(s.slots).map_err(E::custom)?;
                        let points = points_from_le(s.points).map_err(E::custom)?;
                        let standing = ModelScore::stored(s.score, s.as_of, slots.into(), points);
                        Ok((s.model.into(), standing.map_err(E::custom)?))
                    })
                    .collect()
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut scores = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
                while let Some(standing) = seq.next_element()? {
                    scores.push(standing);
                }
                Ok(scores)
            }
        }
        let mut scores = d.deserialize_any(Standings)?;
        // Written in order; anything else is put in order, once per model.
        if !scores.is_sorted_by(|a, b| a.0 < b.0) {
            scores.sort_by(|a, b| a.0.cmp(&b.0));
            scores.dedup_by(|a, b| a.0 == b.0);
        }
        Ok(Scores(scores))
    }
}

/// A standing as `Scores` stores it in a binary format.
#[derive(Deserialize)]
struct StoredStanding<'a> {
    model: &'a str,
    score: f64,
    as_of: Option<(i64, u32)>,
    slots: &'a [u8],
    points: &'a [u8],
}

/// A byte string, which serde would otherwise write as a list of numbers.
struct Bytes<'a>(&'a [u8]);

impl Serialize for Bytes<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(self.0)
    }
}

/// Points as one byte string of little-endian `f64`s.
struct LittleEndian<'a>(&'a [f64]);

impl Serialize for LittleEndian<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let bytes: Vec<u8> = self.0.iter().flat_map(|p| p.to_le_bytes()).collect();
        s.serialize_bytes(&bytes)
    }
}

fn points_from_le(bytes: &[u8]) -> Result<Vec<f64>, String> {
    let (points, rest) = bytes.as_chunks::<8>();
    if !rest.is_empty() {
        return Err(format!(
            "points take 8 bytes each, not {} in all",
            bytes.len()
        ));
    }
    Ok(points.iter().map(|p| f64::from_le_bytes(*p)).collect())
}

impl ModelScore {
    /// A standing read from the store, checked to have a part for each name.
    fn stored(
        score: f64,
        as_of: Option<(i64, u32)>,
        slots: Arc<str>,
        points: Vec<f64>,
    ) -> Result<Self, String> {
        let names = bytecount::count(slots.as_bytes(), 0);
        if names != points.len() || !(slots.is_empty() || slots.ends_with('\0')) {
            return Err(format!(
                "a score has {names} rule names but {} points",
                points.len()
            ));
        }
        let as_of = as_of
            .map(|(secs, nanos)| {
                DateTime::from_timestamp(secs, nanos).ok_or("a score's time is out of range")
            })
            .transpose()?;
        Ok(ModelScore {
            score,
            as_of,
            slots,
            points,
        })
    }

    fn stored_time(&self) -> Option<(i64, u32)> {
        self.as_of
            .map(|t| (t.timestamp(), t.timestamp_subsec_nanos()))
    }
}

impl Serialize for ModelScore {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        (self.score, self.stored_time(), &*self.slots, &self.points).serialize(s)
    }
}

impl<'de> Deserialize<'de> for ModelScore {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let (score, as_of, StoredSlots(slots), points) =
            <(f64, Option<(i64, u32)>, StoredSlots, Vec<f64>)>::deserialize(d)?;
        ModelScore::stored(score, as_of, slots, points).map_err(D::Error::custom)
    }
}

/// Slot names in the list form: one string, or (`dealflow-5`) a list of
/// names.
struct StoredSlots(Arc<str>);

impl<'de> Deserialize<'de> for StoredSlots {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Names;
        impl<'de> de::Visitor<'de> for Names {
            type Value = StoredSlots;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("rule names")
            }
            fn visit_str<E: de::Error>(self, names: &str) -> Result<StoredSlots, E> {
                Ok(StoredSlots(names.into()))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<StoredSlots, A::Error> {
                let mut names = String::new();
                while let Some(name) = seq.next_element::<Cow<str>>()? {
                    names.push_str(&slot_name(&name));
                    names.push('\0');
                }
                Ok(StoredSlots(names.into()))
            }
        }
        d.deserialize_any(Names)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slots(rules: &[(&str, bool)]) -> RuleSlots {
        RuleSlots::new(rules.iter().copied()).0
    }

    #[test]
    fn parts_change_by_slot_and_held_parts_do_not_decay() {
        let model = slots(&[("a", true), ("b", false), ("c", true), ("d", false)]);
        let mut standing = ModelScore::default();
        standing.align(&model);
        for slot in 0..4 {
            assert_eq!(standing.change_slot(slot, |was| was + 8.0), 8.0);
        }
        assert_eq!(standing.change_slot(2, |_| f64::NAN), 0.0);
        assert_eq!(standing.change_slot(2, |_| f64::INFINITY), 0.0);
        assert_eq!(standing.change_slot(9, |_| 1.0), 0.0, "no such slot");
        assert_eq!(standing.change_part("e", |was| was), 0.0, "no part of 0");
        assert_eq!(standing.change_part("e", |was| was + 8.0), 8.0);
        standing.decay(0.5, &model);
        assert_eq!(
            standing.parts().collect::<Vec<_>>(),
            [("a", 8.0), ("b", 4.0), ("c", 8.0), ("d", 4.0), ("e", 4.0)]
        );
        assert_eq!(standing.change_part("b", |_| 0.0), -4.0);
        assert_eq!(standing.sum(), 24.0);
        assert!(
            standing.parts().all(|(rule, _)| rule != "b"),
            "a part of 0 is not shown"
        );
    }

    #[test]
    fn rules_of_one_name_share_a_slot() {
        let (model, slot_of_rule) =
            RuleSlots::new([("visit", false), ("fit", true), ("visit", false)]);
        assert_eq!(slot_of_rule, [0, 1, 0]);
        assert_eq!(&*model.names, "visit\0fit\0");
        let (model, _) = RuleSlots::new([("a\0b", false)]);
        assert_eq!(
            &*model.names, "a\u{FFFD}b\0",
            "a NUL cannot end a name early"
        );
    }

    #[test]
    fn a_reload_moves_each_part_to_its_rule_by_name() {
        let before = slots(&[("visit", false), ("form", false), ("title", true)]);
        let mut standing = ModelScore::default();
        standing.align(&before);
        standing.change_slot(0, |_| 10.0);
        standing.change_slot(2, |_| 20.0);

        // A rule added at the end: the standing's slots stay where they are.
        let added = slots(&[
            ("visit", false),
            ("form", false),
            ("title", true),
            ("x", false),
        ]);
        let mut grown = standing.clone();
        grown.align(&added);
        assert!(Arc::ptr_eq(&grown.slots, &added.names));
        grown.change_slot(3, |_| 1.0);
        let parts = [("visit", 10.0), ("title", 20.0), ("x", 1.0)];
        assert_eq!(grown.parts().collect::<Vec<_>>(), parts);

        standing.change_part("action bump", |_| 5.0);
        // Reordered, one removed: parts follow their names, the removed
        // rule's part and the action's are kept after the model's rules.
        let after = slots(&[("title", true), ("new", false), ("form", false)]);
        standing.align(&after);
        assert_eq!(
            standing.parts().collect::<Vec<_>>(),
            [("title", 20.0), ("visit", 10.0), ("action bump", 5.0)]
        );
        standing.change_slot(1, |_| 3.0);
        standing.decay(0.5, &after);
        assert_eq!(
            standing.parts().collect::<Vec<_>>(),
            [
                ("title", 20.0),
                ("new", 1.5),
                ("visit", 5.0),
                ("action bump", 2.5)
            ],
            "a removed rule's part is no longer held"
        );
        assert_eq!(standing.sum(), 29.0);
    }

    #[test]
    fn scores_read_back_as_written_in_binary_and_text_formats() {
        let model = slots(&[("visit", false), ("fit", true)]);
        let mut scores = Scores::default();
        let (standing, _) = scores.standing_mut("intent");
        standing.align(&model);
        standing.change_slot(1, |_| 2.5);
        standing.change_part("action x", |_| 0.5);
        standing.score = 3.0;
        standing.as_of = DateTime::from_timestamp(86_400, 7);
        scores.insert("fit", ModelScore::with_parts(1.0, None, [("visit", 1.0)]));

        let bytes = rmp_serde::to_vec(&scores).unwrap();
        let mut read: Scores = rmp_serde::from_slice(&bytes).unwrap();
        assert_eq!(read, scores);
        let intent = read.get("intent").unwrap();
        assert_eq!(&*intent.slots, "visit\0fit\0action x\0");
        assert_eq!(intent.points, [0.0, 2.5, 0.5]);
        let fit_model = slots(&[("visit", false)]);
        let fit = read.standing_mut("fit").0;
        fit.align(&fit_model);
        assert!(
            Arc::ptr_eq(&fit.slots, &fit_model.names),
            "names read equal to the model's are the model's"
        );

        let json = serde_json::to_value(&scores).unwrap();
        assert_eq!(json[1][0], "intent");
        assert_eq!(json[1][1][3], serde_json::json!([0.0, 2.5, 0.5]));
        assert_eq!(serde_json::from_value::<Scores>(json).unwrap(), scores);
    }

    #[test]
    fn a_dealflow_5_standing_reads_and_aligns_with_the_model() {
        let stored = (4.0, Some((86_400_i64, 0_u32)), ["fit", "visit"], [1.5, 2.5]);
        let bytes = rmp_serde::to_vec(&stored).unwrap();
        let mut standing: ModelScore = rmp_serde::from_slice(&bytes).unwrap();
        assert_eq!(standing.parts_by_name(), [("fit", 1.5), ("visit", 2.5)]);
        standing.align(&slots(&[("visit", false), ("fit", true)]));
        assert_eq!(
            standing.parts().collect::<Vec<_>>(),
            [("visit", 2.5), ("fit", 1.5)]
        );
    }

    #[test]
    fn a_broken_standing_is_an_error() {
        let read = |bytes: Vec<u8>| rmp_serde::from_slice::<ModelScore>(&bytes).map(|_| ());
        let names_and_points = (1.0, None::<(i64, u32)>, ["visit", "form"], [1.0]);
        let err = read(rmp_serde::to_vec(&names_and_points).unwrap()).unwrap_err();
        assert!(
            err.to_string().contains("2 rule names but 1 points"),
            "{err}"
        );
        let unended = (1.0, None::<(i64, u32)>, "visit", [1.0]);
        let err = read(rmp_serde::to_vec(&unended).unwrap()).unwrap_err();
        assert!(
            err.to_string().contains("0 rule names but 1 points"),
            "{err}"
        );
        let late = (1.0, Some((i64::MAX, 0)), "", [0.0; 0]);
        let err = read(rmp_serde::to_vec(&late).unwrap()).unwrap_err();
        assert!(err.to_string().contains("out of range"), "{err}");

        let read_stored = |slots: &[u8], points: &[u8]| {
            let standing = ("m", 1.0, None::<(i64, u32)>, Bytes(slots), Bytes(points));
            let blob = postcard::to_allocvec(&vec![standing]).unwrap();
            let bytes = rmp_serde::to_vec(&Bytes(&blob)).unwrap();
            rmp_serde::from_slice::<Scores>(&bytes).map(|_| ())
        };
        assert!(read_stored(b"visit\0", &[0; 8]).is_ok());
        let err = read_stored(b"visit\0", &[0; 7]).unwrap_err();
        assert!(err.to_string().contains("8 bytes each, not 7"), "{err}");
        let err = read_stored(b"\xff\0", &[0; 8]).unwrap_err();
        assert!(err.to_string().contains("invalid utf-8"), "{err}");
        let err = read_stored(b"visit", &[0; 8]).unwrap_err();
        assert!(
            err.to_string().contains("0 rule names but 1 points"),
            "{err}"
        );
        let truncated = rmp_serde::to_vec(&Bytes(&[1, 1, b'm'])).unwrap();
        assert!(rmp_serde::from_slice::<Scores>(&truncated).is_err());
    }

    #[test]
    fn scores_read_out_of_order_are_put_in_order_once_per_model() {
        let standing = |score| ModelScore::with_parts(score, None, []);
        let stored = [
            ("b", standing(1.0)),
            ("a", standing(2.0)),
            ("b", standing(3.0)),
        ];
        let bytes = rmp_serde::to_vec(&stored).unwrap();
        let scores: Scores = rmp_serde::from_slice(&bytes).unwrap();
        let read: Vec<_> = scores.iter().map(|(m, s)| (m, s.score)).collect();
        assert_eq!(read, [("a", 2.0), ("b", 1.0)]);
        assert_eq!(scores.get("b").map(|s| s.score), Some(1.0));
        assert!(scores.get("c").is_none());
    }
}
