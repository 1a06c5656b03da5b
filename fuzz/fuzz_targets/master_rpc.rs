//! Fuzz target: sequences of CreateSession / ExtendSession / RunStep / CloseSession calls
//! (structure-aware, and raw protobuf) on the master's gRPC handlers, in process.

#![no_main]

use libfuzzer_sys::fuzz_target;
use magpie_fuzz::harness::{run_calls, Call};

fuzz_target!(|calls: Vec<Call>| run_calls(&calls));
