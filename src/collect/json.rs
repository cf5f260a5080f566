//! JSON records to [`Candidate`]s, the one mapping the JSON-speaking collectors share (MQTT
//! payloads, HTTP responses, WebSocket messages): the series id from a field (a dotted path)
//! or a default, the event time from a field or the time of receipt, values from listed
//! fields or every numeric top-level field, the unit each value is sent in, fixed tags.

use std::collections::BTreeMap;

use serde_json::Value;

use super::clean::{Candidate, RawTime, RawValue};

/// How the fields of a JSON object make a reading (borrowed from a collector's config).
#[derive(Debug, Clone, Copy)]
pub struct JsonMap<'a> {
    /// Field holding the series id; None: the default series the caller gives.
    pub series_field: Option<&'a str>,
    /// Field holding the event time; None: the time of receipt.
    pub time_field: Option<&'a str>,
    /// Fields taken as values; empty: every numeric top-level field but the series and time.
    pub value_fields: &'a [String],
    /// Unit each value is sent in.
    pub units: &'a BTreeMap<String, String>,
    /// Tags added to every reading.
    pub tags: &'a BTreeMap<String, String>,
}

/// The value at a dotted path (`device.id`; array elements by index, `items.0.v`).
pub fn get_path<'v>(json: &'v Value, path: &str) -> Option<&'v Value> {
    path.split('.').try_fold(json, |v, k| match v {
        Value::Array(a) => k.parse::<usize>().ok().and_then(|i| a.get(i)),
        _ => v.get(k),
    })
}

/// A JSON value as a raw value for the cleaner.
pub fn raw_value(v: &Value) -> RawValue {
    match v {
        Value::Number(n) => RawValue::Number(n.as_f64().unwrap_or(f64::NAN)),
        Value::String(s) => RawValue::Text(s.clone()),
        other => RawValue::Other(kind(other).to_string()),
    }
}

/// What a JSON value is, in words.
pub fn kind(v: &Value) -> &'static str {
    match v {
        Value::Bool(_) => "a boolean",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
        Value::Null => "null",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
    }
}

impl JsonMap<'_> {
    /// The candidate one JSON object makes (or why it cannot make one).
    pub fn candidate(
        &self,
        json: &Value,
        default_series: Option<&str>,
        received_ms: i64,
    ) -> Result<Candidate, String> {
        let obj = json
            .as_object()
            .ok_or_else(|| format!("the JSON record is {}, not an object", kind(json)))?;
        let series = match self.series_field {
            Some(f) => match get_path(json, f) {
                Some(Value::String(s)) => Some(s.clone()),
                Some(Value::Number(n)) => Some(n.to_string()),
                _ => None,
            },
            None => default_series.map(str::to_string),
        };
        let time = match self.time_field {
            Some(f) => match get_path(json, f) {
                Some(Value::Number(n)) => n.as_f64().map(RawTime::Number),
                Some(Value::String(s)) => Some(RawTime::Text(s.clone())),
                _ => None,
            },
            None => Some(RawTime::Received(received_ms)),
        };
        let unit = |name: &str| self.units.get(name).cloned();
        let mut values = Vec::new();
        if self.value_fields.is_empty() {
            for (k, v) in obj {
                let skip =
                    Some(k.as_str()) == self.series_field || Some(k.as_str()) == self.time_field;
                if !skip && v.is_number() {
                    values.push((k.clone(), raw_value(v), unit(k)));
                }
            }
        } else {
            for f in self.value_fields {
                let v = get_path(json, f).ok_or_else(|| format!("missing value field {f:?}"))?;
                values.push((f.clone(), raw_value(v), unit(f)));
            }
        }
        Ok(Candidate {
            series,
            time,
            values,
            tags: self
                .tags
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_paths_defaults_and_units() {
        let units = BTreeMap::from([("t".to_string(), "F".to_string())]);
        let tags = BTreeMap::from([("site".to_string(), "n".to_string())]);
        let m = JsonMap {
            series_field: Some("dev.id"),
            time_field: Some("ts"),
            value_fields: &[],
            units: &units,
            tags: &tags,
        };
        let j: Value =
            serde_json::from_str(r#"{"dev":{"id":7},"ts":1700000000,"t":70,"s":"x"}"#).unwrap();
        let c = m.candidate(&j, None, 0).unwrap();
        assert_eq!(c.series.as_deref(), Some("7"));
        assert_eq!(c.time, Some(RawTime::Number(1.7e9)));
        assert_eq!(
            c.values,
            [("t".into(), RawValue::Number(70.0), Some("F".into()))]
        );
        assert_eq!(c.tags, [("site".into(), "n".into())]);
        let arr: Value = serde_json::from_str(r#"{"a":[{"v":1},{"v":2}]}"#).unwrap();
        assert_eq!(get_path(&arr, "a.1.v"), Some(&Value::from(2)));
        assert!(m
            .candidate(&Value::from(3), None, 0)
            .unwrap_err()
            .contains("a number, not an object"));
    }
}
