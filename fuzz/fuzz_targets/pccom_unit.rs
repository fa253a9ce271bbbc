#![no_main]
//! Fuzz target `pccom_unit`: see `gscip_fuzz_harness::pccom_unit`.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| gscip_fuzz_harness::pccom_unit(data));
