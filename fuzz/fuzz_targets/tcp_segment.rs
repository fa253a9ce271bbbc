#![no_main]
//! Fuzz target `tcp_segment`: see `gscip_fuzz_harness::tcp_segment`.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| gscip_fuzz_harness::tcp_segment(data));
