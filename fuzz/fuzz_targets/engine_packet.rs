#![no_main]
//! Fuzz target `engine_packet`: see `gscip_fuzz_harness::engine_packet`.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| gscip_fuzz_harness::engine_packet(data));
