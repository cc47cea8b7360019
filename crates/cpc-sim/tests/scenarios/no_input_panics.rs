//! Whatever a scenario file holds, parsing it and generating its workload
//! never panics: random values of every type are put in every field, in
//! TOML and in JSON, and a scenario that parses is generated from.

use cpc_sim::{Scenario, MEMORY_BUDGET};
use proptest::prelude::*;
use serde_json::{json, Map, Value};

/// A value of any type, the nasty ones often.
fn any_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(json!(0)),
        Just(json!(1)),
        Just(json!(-1)),
        Just(json!(u64::MAX)),
        Just(json!(i64::MIN)),
        Just(json!(1_000_000_000_000u64)),
        any::<u32>().prop_map(|n| json!(n)),
        Just(json!(0.5)),
        Just(json!(1e-300)),
        Just(json!(1e300)),
        Just(json!(-0.5)),
        Just(json!("1h")),
        Just(json!("99999999h")),
        Just(json!("0s")),
        Just(json!("-5m")),
        Just(json!("+10m")),
        Just(json!("1e300h")),
        Just(json!("")),
        Just(json!("offline")),
        Just(json!("poisson")),
        Just(json!(true)),
    ];
    leaf.prop_recursive(2, 8, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec(("[a-z_]{1,8}", inner), 0..3)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

/// Paths of the fields a scenario has.
const PATHS: &[&str] = &[
    "seed",
    "duration",
    "devices",
    "epoch_ms",
    "clock_skew",
    "ops.per_device",
    "ops.entities",
    "ops.shared_entities",
    "ops.collections",
    "ops.priorities.critical",
    "ops.kinds.delete",
    "ops.payload.min",
    "ops.payload.max",
    "ops.arrival.process",
    "ops.arrival.rate",
    "ops.arrival.start",
    "ops.arrival.at",
    "ops.base_versions",
    "faults.drop",
    "faults.lost_ack",
    "faults.latency",
    "schedule.windows",
    "schedule.flapping",
    "crash.at",
    "crash.random",
    "crash.restart_after",
    "remote.admission",
    "remote.op_rate",
    "remote.admission.rate",
    "remote.op_rate.rate",
    "expect.max_drain_after_heal",
    "expect.max_retry_amplification",
];

fn set(doc: &mut Map<String, Value>, path: &str, value: Value) {
    let mut parts = path.split('.').peekable();
    let mut map = doc;
    while let Some(part) = parts.next() {
        if parts.peek().is_none() {
            map.insert(part.to_owned(), value);
            return;
        }
        let entry = map
            .entry(part.to_owned())
            .or_insert_with(|| Value::Object(Map::new()));
        if !entry.is_object() {
            *entry = Value::Object(Map::new());
        }
        map = match entry.as_object_mut() {
            Some(m) => m,
            None => return,
        };
    }
}

/// A scenario document with some fields set to random values; a valid
/// arrival and window now and then so that generation gets exercised.
fn document() -> impl Strategy<Value = Value> {
    let rate = prop_oneof![
        Just(1e-300),
        Just(1e-9),
        Just(0.001),
        Just(1.0),
        Just(50.0),
        Just(1e9),
        Just(1e300),
    ];
    (
        prop::collection::vec((prop::sample::select(PATHS), any_value()), 0..6),
        any::<bool>(),
        prop::sample::select(&["uniform", "poisson"][..]),
        rate,
        any::<u8>(),
    )
        .prop_map(|(fields, with_arrival, process, rate, n)| {
            let mut doc = Map::new();
            doc.insert("name".into(), json!("random"));
            if n % 3 == 0 {
                set(&mut doc, "ops.per_device", json!(u64::from(n % 40)));
                set(
                    &mut doc,
                    "remote.admission",
                    json!({"rate": rate, "burst": 1}),
                );
            }
            if with_arrival {
                set(&mut doc, "ops.per_device", json!(u64::from(n) * 7));
                set(
                    &mut doc,
                    "ops.arrival",
                    json!({"process": process, "rate": rate}),
                );
            }
            for (path, value) in fields {
                set(&mut doc, path, value);
            }
            Value::Object(doc)
        })
}

/// Parses `parse(text)`; on success, builds what a run builds first, and
/// runs a small one end to end with the reference client (the remote's
/// rate limits, the faults and the schedule then run too).
fn exercise(scenario: Result<Scenario, cpc_sim::ScenarioError>) {
    let Ok(mut s) = scenario else { return };
    if u64::from(s.devices) * s.ops.per_device <= 50 {
        s.crash = Default::default();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .unwrap();
        let _ = runtime.block_on(cpc_sim::run_reference(
            &s,
            &cpc_sim::ReferenceOptions::default(),
        ));
    }
    assert!(s.estimated_memory(false) <= MEMORY_BUDGET);
    let _ = s.crash_times();
    let _ = s.schedule.last_outage_end();
    for device in 0..s.devices.min(3) {
        let ops = s.workload_iter(device).unwrap();
        for op in ops.take(200) {
            let op = op.unwrap();
            assert!(op.at <= cpc_sim::MAX_DURATION);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_json_never_panics(doc in document()) {
        let text = serde_json::to_string_pretty(&doc).unwrap();
        exercise(Scenario::from_json_str(&text));
    }

    #[test]
    fn random_toml_never_panics(doc in document()) {
        // Values TOML cannot hold (huge unsigned integers) make no TOML.
        if let Ok(text) = toml::to_string(&doc) {
            exercise(Scenario::from_toml_str(&text));
        }
    }
}
