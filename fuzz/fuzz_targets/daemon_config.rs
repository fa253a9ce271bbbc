#![no_main]
//! Fuzz target `daemon_config`: see `gscip_fuzz_harness::daemon_config`.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| gscip_fuzz_harness::daemon_config(data));
