#![no_main]
//! Fuzz target `gms_state`: see `gscip_fuzz_harness::gms_state`.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| gscip_fuzz_harness::gms_state(data));
