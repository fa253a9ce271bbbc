#![no_main]
//! Fuzz target `nflog_message`: see `gscip_fuzz_harness::nflog_message`.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| gscip_fuzz_harness::nflog_message(data));
