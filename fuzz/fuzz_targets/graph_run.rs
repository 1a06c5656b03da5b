//! Fuzz target: a structure-aware graph -> `GraphDef` import -> plan -> one step on the
//! CPU under a memory budget and a deadline. Never a panic, an abort or a hang.

#![no_main]

use libfuzzer_sys::fuzz_target;
use magpie_fuzz::harness::{run_graph, GraphRun};

fuzz_target!(|input: GraphRun| run_graph(&input));
