//! Fuzz target: cluster specs as JSON, TOML and `TF_CONFIG`. Whatever parses must
//! round-trip through its own JSON and TOML to an equal spec.

#![no_main]

use libfuzzer_sys::fuzz_target;
use magpie_core::cluster::{ClusterSpec, TfConfig};

fuzz_target!(|text: &str| {
    for spec in [ClusterSpec::from_json(text), ClusterSpec::from_toml(text)]
        .into_iter()
        .flatten()
    {
        check(&spec);
    }
    if let Ok(config) = TfConfig::parse(text) {
        check(&config.cluster);
    }
});

fn check(spec: &ClusterSpec) {
    let json = ClusterSpec::from_json(&spec.to_json()).expect("a spec's JSON parses");
    assert_eq!(&json, spec, "JSON round trip");
    let toml = ClusterSpec::from_toml(&spec.to_toml()).expect("a spec's TOML parses");
    assert_eq!(&toml, spec, "TOML round trip");
    for task in spec.tasks() {
        let address = spec.address(&task).expect("a listed task has an address");
        assert!(spec.task_at(address).is_some(), "{task} is found at {address}");
    }
}
