//! Transport benches (placeholder).
fn main() {}
