#![no_main]
//! Fuzz target `datagram`: see `gscip_fuzz_harness::datagram`.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| gscip_fuzz_harness::datagram(data));
