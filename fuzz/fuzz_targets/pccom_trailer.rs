#![no_main]
//! Fuzz target `pccom_trailer`: see `gscip_fuzz_harness::pccom_trailer`.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| gscip_fuzz_harness::pccom_trailer(data));
