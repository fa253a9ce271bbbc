#![no_main]
//! Fuzz target `dprp_message`: see `gscip_fuzz_harness::dprp_message`.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| gscip_fuzz_harness::dprp_message(data));
