//! `vulkan --figures`: the bench's short mode for a lent GPU machine. Checks every timed
//! MatMul against an f64 reference first, then times each case with a host clock around
//! whole steps, and prints one JSON object per line on stdout: `device`, `check`
//! (relative error ‖out − ref‖ / ‖ref‖ and whether it passed), `time` (seconds per step
//! and the rate, median and best), `chain` (submissions and µs per op, median and best).
//! A case whose check failed is not timed.
//!
//! Every timed case first runs its own step over and over for at least
//! `MAGPIE_VK_FIGURES_WARM_S` seconds (default 1, at least 3 steps): a GPU that idles
//! at a low clock (an H200 sits at 345 MHz) needs that long under load to reach its
//! working clock, and a case timed from a cold start reads low. Then at least 7 steps
//! are timed (more while under the case's budget, at most 50); `step_s` is their median,
//! `best_step_s` the fastest, `reps` how many.
//!
//! Operands are seeded pseudo-random numbers in [-1, 1), never zeros or constants.
//! Sizes: `MAGPIE_VK_FIGURES_CHECK` (default `1,7,129,1000,4096`; above 1024 the
//! reference is 4096 sampled entries, not the whole product), `MAGPIE_VK_FIGURES_MATMUL`
//! (default `1024,4096,8192`), `MAGPIE_VK_FIGURES_ADD` (default 16777216).

use std::sync::Arc;
use std::time::{Duration, Instant};

use magpie::vulkan::{MatMulPrecision, VulkanDevice};
use magpie::{DType, Device, Graph, Output, Session, SessionOptions, Tensor};

/// Bounds of the relative error: f32 products, and operands rounded to f16 (11-bit
/// significands: about 2^-11 per operand, summed as random walks).
const F32_BOUND: f64 = 1e-4;
const F16_BOUND: f64 = 5e-3;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f32 {
        // xorshift64*: plenty for operands.
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let r = self.0.wrapping_mul(0x2545_f491_4f6c_dd1d);
        ((r >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }

    fn matrix(&mut self, rows: usize, cols: usize) -> Tensor {
        let v: Vec<f32> = (0..rows * cols).map(|_| self.next()).collect();
        Tensor::from_vec([rows, cols], v).expect("count matches")
    }
}

fn list(var: &str, default: &str) -> Vec<usize> {
    std::env::var(var)
        .unwrap_or_else(|_| default.to_string())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect()
}

fn json_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push(' '),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn session(g: &Graph, gpu: &Arc<VulkanDevice>) -> Session {
    let gpu: Arc<dyn Device> = gpu.clone();
    let opts = SessionOptions::with_devices(vec![magpie::cpu::cpu_device(), gpu]).num_workers(2);
    Session::new(g, opts).expect("session")
}

/// Seconds of the warm-up before each timed case (`MAGPIE_VK_FIGURES_WARM_S`).
fn warm_up() -> Duration {
    let secs = std::env::var("MAGPIE_VK_FIGURES_WARM_S")
        .ok()
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|v| v.is_finite() && *v >= 0.0)
        .unwrap_or(1.0);
    Duration::from_secs_f64(secs)
}

/// The timed steps of one case.
struct Timing {
    /// Median seconds per step.
    median: f64,
    /// The fastest step's seconds.
    best: f64,
    /// How many steps were timed.
    reps: usize,
    /// How many warm-up steps ran before them.
    warm_steps: usize,
}

impl Timing {
    /// The JSON fields every timed case prints.
    fn json(&self) -> String {
        format!(
            "\"step_s\":{:e},\"best_step_s\":{:e},\"reps\":{},\"warm_steps\":{}",
            self.median, self.best, self.reps, self.warm_steps
        )
    }
}

/// Runs the step of `targets` for at least [`warm_up`] (and at least 3 times), then times
/// it: at least 7 steps, more while under `budget`, at most 50.
fn time_steps(s: &Session, targets: &[magpie::NodeId], budget: Duration) -> Timing {
    let warm = warm_up();
    let start = Instant::now();
    let mut warm_steps = 0;
    while warm_steps < 3 || start.elapsed() < warm {
        s.run(&[], &[], targets).expect("warm-up step");
        warm_steps += 1;
    }
    let start = Instant::now();
    let mut times = Vec::new();
    while times.len() < 7 || (start.elapsed() < budget && times.len() < 50) {
        let t = Instant::now();
        s.run(&[], &[], targets).expect("timed step");
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    Timing {
        median: times[times.len() / 2],
        best: times[0],
        reps: times.len(),
        warm_steps,
    }
}

fn precision_name(p: MatMulPrecision) -> &'static str {
    match p {
        MatMulPrecision::F16 => "f16",
        _ => "f32",
    }
}

/// ‖out − ref‖ / ‖ref‖ of `a · b` ([n, n] each): over every entry up to n = 1024, over
/// 4096 entries spread over the matrix (its corners and last row and column included)
/// above.
fn relative_error(a: &[f32], b: &[f32], out: &[f32], n: usize) -> f64 {
    // B transposed, so that each entry's dot product reads both operands in order.
    let mut bt = vec![0.0f32; n * n];
    for k in 0..n {
        for j in 0..n {
            bt[j * n + k] = b[k * n + j];
        }
    }
    let entry = |i: usize, j: usize| -> f64 {
        let (row, col) = (&a[i * n..(i + 1) * n], &bt[j * n..(j + 1) * n]);
        row.iter()
            .zip(col)
            .map(|(x, y)| f64::from(*x) * f64::from(*y))
            .sum()
    };
    let mut cells: Vec<(usize, usize)> = Vec::new();
    if n <= 1024 {
        for i in 0..n {
            for j in 0..n {
                cells.push((i, j));
            }
        }
    } else {
        let mut r = Rng(0x5eed);
        cells.extend([(0, 0), (0, n - 1), (n - 1, 0), (n - 1, n - 1)]);
        for t in 0..n {
            cells.push((n - 1, t));
            cells.push((t, n - 1));
            if cells.len() >= 2048 {
                break;
            }
        }
        while cells.len() < 4096 {
            let i = ((r.next() + 1.0) * 0.5 * n as f32) as usize;
            let j = ((r.next() + 1.0) * 0.5 * n as f32) as usize;
            cells.push((i.min(n - 1), j.min(n - 1)));
        }
    }
    let (mut num, mut den) = (0.0f64, 0.0f64);
    for (i, j) in cells {
        let r = entry(i, j);
        let d = f64::from(out[i * n + j]) - r;
        num += d * d;
        den += r * r;
    }
    if den == 0.0 {
        return if num == 0.0 { 0.0 } else { f64::INFINITY };
    }
    (num / den).sqrt()
}

/// Checks an n x n x n MatMul at `precision`; returns whether it passed.
fn check(gpu: &Arc<VulkanDevice>, n: usize, precision: MatMulPrecision) -> bool {
    gpu.set_matmul_precision(precision);
    let salt = if precision == MatMulPrecision::F16 {
        1u64 << 32
    } else {
        0
    };
    let mut rng = Rng(0x1234_5678 ^ n as u64 ^ salt);
    let (at, bt) = (rng.matrix(n, n), rng.matrix(n, n));
    let g = Graph::new();
    let xa = g.placeholder(DType::F32, None).unwrap();
    let xb = g.placeholder(DType::F32, None).unwrap();
    let prod = g
        .device(&gpu.name().to_string(), |g| g.matmul(xa, xb))
        .unwrap();
    let s = session(&g, gpu);
    let before = f16_count(gpu);
    let out = s
        .run(&[(xa, at.clone()), (xb, bt.clone())], &[prod], &[])
        .expect("checked step");
    let on_units = f16_count(gpu) - before;
    let err = relative_error(
        at.as_slice::<f32>().unwrap(),
        bt.as_slice::<f32>().unwrap(),
        out[0].as_slice::<f32>().unwrap(),
        n,
    );
    let bound = match precision {
        MatMulPrecision::F16 => F16_BOUND,
        _ => F32_BOUND,
    };
    let pass = err.is_finite() && err <= bound;
    println!(
        "{{\"kind\":\"check\",\"op\":\"matmul\",\"precision\":\"{}\",\"n\":{n},\"rel_err\":{err:e},\"bound\":{bound:e},\"pass\":{pass},\"f16_dispatches\":{on_units}}}",
        precision_name(precision)
    );
    pass
}

fn f16_count(gpu: &Arc<VulkanDevice>) -> u64 {
    gpu.counters()
        .iter()
        .find(|(name, _)| *name == "matmul_f16_dispatches")
        .map_or(0, |(_, v)| *v)
}

fn time_matmul(gpu: &Arc<VulkanDevice>, n: usize, precision: MatMulPrecision) {
    gpu.set_matmul_precision(precision);
    let mut rng = Rng(0xabcd ^ n as u64);
    let g = Graph::new();
    let spec = gpu.name().to_string();
    let prod = g
        .device(&spec, |g| {
            let a = g.constant(rng.matrix(n, n))?;
            let b = g.constant(rng.matrix(n, n))?;
            g.matmul(a, b)
        })
        .unwrap();
    let s = session(&g, gpu);
    let before = f16_count(gpu);
    let t = time_steps(&s, &[prod.node], Duration::from_secs(3));
    let f16 = f16_count(gpu) > before;
    let flop = 2.0 * (n as f64).powi(3);
    println!(
        "{{\"kind\":\"time\",\"op\":\"matmul\",\"precision\":\"{}\",\"on_matrix_units\":{f16},\"n\":{n},{},\"tflops\":{:.2},\"best_tflops\":{:.2}}}",
        precision_name(precision),
        t.json(),
        flop / t.median / 1e12,
        flop / t.best / 1e12
    );
}

/// One add of two resident n-float tensors per step, and `chain` dependent adds
/// (`y = y + a`) per step: the second divides the step's fixed cost among many adds.
fn time_add(gpu: &Arc<VulkanDevice>, n: usize, chain: usize) {
    let mut rng = Rng(0xadd ^ n as u64);
    let vector = |v: Vec<f32>| Tensor::from_vec([v.len()], v).expect("count matches");
    let spec = gpu.name().to_string();
    for steps in [1, chain] {
        let g = Graph::new();
        let y = g
            .device(&spec, |g| {
                let a = g.constant(vector((0..n).map(|_| rng.next()).collect()))?;
                let mut y = g.constant(vector((0..n).map(|_| rng.next()).collect()))?;
                for _ in 0..steps {
                    y = g.add(y, a)?;
                }
                Ok(y)
            })
            .unwrap();
        let s = session(&g, gpu);
        let t = time_steps(&s, &[y.node], Duration::from_secs(2));
        let (per_add, best_per_add) = (t.median / steps as f64, t.best / steps as f64);
        let bytes = 12.0 * n as f64;
        println!(
            "{{\"kind\":\"time\",\"op\":\"add\",\"n\":{n},\"adds_per_step\":{steps},{},\"per_add_s\":{per_add:e},\"tb_per_s\":{:.3},\"best_tb_per_s\":{:.3}}}",
            t.json(),
            bytes / per_add / 1e12,
            bytes / best_per_add / 1e12
        );
    }
    // The value of one add, checked: a + b element by element.
    let a: Vec<f32> = (0..n).map(|_| rng.next()).collect();
    let b: Vec<f32> = (0..n).map(|_| rng.next()).collect();
    let g = Graph::new();
    let sum = g
        .device(&spec, |g| {
            let a = g.constant(vector(a.clone()))?;
            let b = g.constant(vector(b.clone()))?;
            g.add(a, b)
        })
        .unwrap();
    let out = session(&g, gpu).run(&[], &[sum], &[]).expect("add step");
    let got = out[0].as_slice::<f32>().unwrap();
    let wrong = (0..n).filter(|&i| got[i] != a[i] + b[i]).count();
    println!(
        "{{\"kind\":\"check\",\"op\":\"add\",\"n\":{n},\"wrong\":{wrong},\"pass\":{}}}",
        wrong == 0
    );
}

/// 100 dependent elementwise ops on a resident 1024-float tensor (Neg, Add(y, y)).
fn time_chain(gpu: &Arc<VulkanDevice>) {
    let spec = gpu.name().to_string();
    let g = Graph::new();
    let y: Output = g
        .device(&spec, |g| {
            let mut y =
                g.constant(Tensor::from_vec([1024], vec![1.0f32; 1024]).expect("count matches"))?;
            for i in 0..100 {
                y = if i % 2 == 0 { g.neg(y)? } else { g.add(y, y)? };
            }
            Ok(y)
        })
        .unwrap();
    let s = session(&g, gpu);
    s.run(&[], &[], &[y.node]).expect("warm-up");
    let before = gpu.submissions();
    s.run(&[], &[], &[y.node]).expect("counted step");
    let submissions = gpu.submissions() - before;
    let t = time_steps(&s, &[y.node], Duration::from_secs(2));
    // (-1 * 2)^50 ... the value: 50 negations and 50 doublings of 1.
    let v = s.run(&[], &[y], &[]).expect("fetch")[0]
        .as_slice::<f32>()
        .unwrap()[0];
    println!(
        "{{\"kind\":\"chain\",\"ops\":100,\"submissions_per_step\":{submissions},{},\"us_per_op\":{:.3},\"best_us_per_op\":{:.3},\"value\":{v:e},\"pass\":{}}}",
        t.json(),
        t.median / 100.0 * 1e6,
        t.best / 100.0 * 1e6,
        v == 2f32.powi(50)
    );
}

/// The short mode: see the module docs.
pub(crate) fn run() {
    magpie::vulkan::register().expect("the Vulkan kernels register");
    magpie::cpu::register().expect("the CPU kernels register");
    let gpus = match magpie::vulkan::discover() {
        Ok(d) => d,
        Err(e) => {
            println!(
                "{{\"kind\":\"device\",\"error\":{}}}",
                json_str(&e.to_string())
            );
            return;
        }
    };
    for d in &gpus {
        println!(
            "{{\"kind\":\"device\",\"name\":{},\"description\":{},\"emulated\":{},\"f16_matrix_units\":{}}}",
            json_str(&d.name().to_string()),
            json_str(&d.description()),
            d.is_emulated(),
            json_str(match d.f16_matrix_units() {
                Ok(()) => "ok",
                Err(why) => why,
            })
        );
    }
    let gpu = gpus[0].clone();
    let mut ok = [true, true];
    for n in list("MAGPIE_VK_FIGURES_CHECK", "1,7,129,1000,4096") {
        ok[0] &= check(&gpu, n, MatMulPrecision::F32);
        ok[1] &= check(&gpu, n, MatMulPrecision::F16);
    }
    for n in list("MAGPIE_VK_FIGURES_MATMUL", "1024,4096,8192") {
        if ok[0] {
            time_matmul(&gpu, n, MatMulPrecision::F32);
        }
        if ok[1] && gpu.f16_matrix_units().is_ok() {
            time_matmul(&gpu, n, MatMulPrecision::F16);
        }
    }
    gpu.set_matmul_precision(MatMulPrecision::F32);
    for n in list("MAGPIE_VK_FIGURES_ADD", "16777216") {
        time_add(&gpu, n, 20);
    }
    time_chain(&gpu);
}
