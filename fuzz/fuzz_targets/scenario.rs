#![no_main]
//! Fuzz target `scenario`: see `gscip_fuzz_harness::scenario`.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| gscip_fuzz_harness::scenario(data));
