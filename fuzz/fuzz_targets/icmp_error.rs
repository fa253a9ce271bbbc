#![no_main]
//! Fuzz target `icmp_error`: see `gscip_fuzz_harness::icmp_error`.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| gscip_fuzz_harness::icmp_error(data));
