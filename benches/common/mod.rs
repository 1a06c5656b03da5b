//! What the Magpie sides of the same-run TensorFlow comparisons
//! (`benches/vs_tensorflow.rs`, `benches/remote_vs_tensorflow.rs`) share: their
//! `--name value` arguments and the timing of their steps, summarised as the JSON fields
//! their scripts read (`median_s`, `min_s`, `max_s`).

use std::time::Instant;

/// The value after `--name` in `args` as a number; `default` when it is absent or not a
/// number.
pub(crate) fn arg(args: &[String], name: &str, default: usize) -> usize {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Runs `step` `warmup` times untimed, then `reps` times (at least once) timed; the
/// timed runs' median, min and max as JSON fields, `"median_s":..,"min_s":..,"max_s":..`.
pub(crate) fn time_steps(warmup: usize, reps: usize, mut step: impl FnMut()) -> String {
    for _ in 0..warmup {
        step();
    }
    let mut times: Vec<f64> = (0..reps.max(1))
        .map(|_| {
            let t = Instant::now();
            step();
            t.elapsed().as_secs_f64()
        })
        .collect();
    times.sort_by(f64::total_cmp);
    format!(
        "\"median_s\":{:e},\"min_s\":{:e},\"max_s\":{:e}",
        times[times.len() / 2],
        times[0],
        times[times.len() - 1]
    )
}
