//! Flags onto a run configuration, by name: a flag `--weight-decay` sets the config field
//! `weight_decay` wherever it sits in the (nested) JSON form of the configuration (a
//! pre-training [`RunConfig`](crate::run::RunConfig), a GPT run's). One rule serves
//! fresh runs (flags over the method's defaults) and resumed ones (flags over the checkpoint's
//! config, where only [`RESUMABLE`] flags may differ), and no flag can be silently ignored.

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

/// Config flags that may take a new value on `--resume`: a longer (or shorter) schedule, and a
/// lower learning rate after a divergence.
pub const RESUMABLE: [&str; 2] = ["steps", "lr"];

/// Every leaf of `v` as (field name, value), depth first.
fn leaves<'a>(v: &'a Value, out: &mut Vec<(&'a str, &'a Value)>) {
    if let Value::Object(map) = v {
        for (k, child) in map {
            match child {
                Value::Object(_) => leaves(child, out),
                _ => out.push((k, child)),
            }
        }
    }
}

/// The leaf named `key`, wherever it is.
fn leaf_mut<'a>(v: &'a mut Value, key: &str) -> Option<&'a mut Value> {
    let Value::Object(map) = v else { return None };
    if map.get(key).is_some_and(|c| !c.is_object()) {
        return map.get_mut(key);
    }
    map.values_mut().find_map(|c| leaf_mut(c, key))
}

/// `raw` (what the user typed) as a value of the same JSON type as `like`.
fn parse_like(like: &Value, raw: &str, flag: &str) -> Result<Value, String> {
    let bad = |what: &str| format!("--{flag} must be {what}, got {raw:?}");
    Ok(match like {
        Value::Bool(_) => Value::Bool(raw.parse().map_err(|_| bad("true or false"))?),
        Value::Number(n) if n.is_u64() => {
            Value::from(raw.parse::<u64>().map_err(|_| bad("a whole number ≥ 0"))?)
        }
        Value::Number(_) => {
            let x: f64 = raw.parse().map_err(|_| bad("a number"))?;
            // JSON has no NaN or ∞: name the flag here rather than fail in serde.
            serde_json::Number::from_f64(x)
                .map(Value::Number)
                .ok_or_else(|| bad("a finite number"))?
        }
        _ => Value::String(raw.to_string()),
    })
}

/// `base` with each `(flag, raw value)` applied. `all_fields` is every config field of any
/// method, so a flag of another method (`--queue` for SimCLR) is an error naming `owner` (e.g.
/// `--method simclr`), not a no-op. With `resuming`, a flag outside [`RESUMABLE`] that changes a
/// value is an error.
pub fn apply<C: Serialize + DeserializeOwned>(
    base: &C,
    given: &[(String, String)],
    all_fields: &[String],
    resuming: bool,
    owner: &str,
) -> Result<C, String> {
    let mut v = serde_json::to_value(base).expect("a run config serialises");
    for (flag, raw) in given {
        let key = flag.replace('-', "_");
        let Some(slot) = leaf_mut(&mut v, &key) else {
            if all_fields.contains(&key) {
                return Err(format!("--{flag} does not apply to {owner}"));
            }
            continue;
        };
        let new = parse_like(slot, raw, flag)?;
        if resuming && *slot != new && !RESUMABLE.contains(&key.as_str()) {
            return Err(format!(
                "--{flag} {raw} differs from the checkpoint's {slot}; on --resume only {} may \
                 change (and --device, --out and the evaluation and logging cadence)",
                RESUMABLE.map(|f| format!("--{f}")).join(", ")
            ));
        }
        *slot = new;
        // A word outside a setting's choices (`--captions letters`) is named by its flag.
        if let Err(e) = serde_json::from_value::<C>(v.clone()) {
            return Err(format!("--{flag} {raw}: {e}"));
        }
    }
    serde_json::from_value(v).map_err(|e| format!("invalid settings: {e}"))
}

/// Every field name of a config, for [`apply`]'s `all_fields`.
pub fn field_names(config: &impl Serialize) -> Vec<String> {
    let v = serde_json::to_value(config).expect("a run config serialises");
    let mut out = Vec::new();
    leaves(&v, &mut out);
    out.into_iter().map(|(k, _)| k.to_string()).collect()
}

/// The flags among `config_flags` that were typed on the command line, as (flag, raw value).
pub fn given(matches: &clap::ArgMatches, config_flags: &[&str]) -> Vec<(String, String)> {
    config_flags
        .iter()
        .filter_map(|f| {
            let id = f.replace('-', "_");
            (matches.value_source(&id) == Some(clap::parser::ValueSource::CommandLine))
                .then(|| matches.get_one::<String>(&id))
                .flatten()
                .map(|v| (f.to_string(), v.clone()))
        })
        .collect()
}
