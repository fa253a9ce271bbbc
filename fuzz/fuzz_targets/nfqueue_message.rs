#![no_main]
//! Fuzz target `nfqueue_message`: see `gscip_fuzz_harness::nfqueue_message`.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| gscip_fuzz_harness::nfqueue_message(data));
