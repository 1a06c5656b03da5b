//! Data-parallel linear regression with a parameter server: the weights are a variable on
//! the `ps` task; each of the two `worker` tasks computes the gradient on its half of the
//! data; the update is applied on `ps`. The loss printed per epoch falls, and the learned
//! weights match the ones that generated the data.
//!
//! `cargo run --example parameter_server`.

use magpie::cluster::{default_cluster, InProcessCluster};
use magpie::{DType, Graph, Tensor};

const FEATURES: usize = 3;
const TRUE_W: [f32; FEATURES] = [2.0, -3.0, 0.5];
const TRUE_B: f32 = 1.0;
const ROWS_PER_WORKER: usize = 64;
const LEARNING_RATE: f32 = 0.1;
const EPOCHS: usize = 60;

/// Rows `[x0, x1, x2, 1]` (the 1 carries the bias) and targets, from a fixed LCG.
fn data(seed: u64, rows: usize) -> (Tensor, Tensor) {
    let mut state = seed;
    let mut next = || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    };
    let mut x = Vec::with_capacity(rows * (FEATURES + 1));
    let mut y = Vec::with_capacity(rows);
    for _ in 0..rows {
        let mut t = TRUE_B;
        for w in TRUE_W {
            let v = next();
            x.push(v);
            t += w * v;
        }
        x.push(1.0);
        y.push(t);
    }
    (
        Tensor::from_vec([rows, FEATURES + 1], x).expect("shape fits"),
        Tensor::from_vec([rows, 1], y).expect("shape fits"),
    )
}

fn main() -> anyhow::Result<()> {
    let cluster = InProcessCluster::start(&default_cluster())?;
    let g = Graph::new();
    let ps = g.with_device("/job:ps/task:0")?;
    let w = ps.variable("weights", DType::F32)?;
    let init = w.assign(
        &ps,
        ps.constant(Tensor::zeros(DType::F32, [FEATURES + 1, 1])?)?,
    )?;

    let mut grads = Vec::new();
    let mut losses = Vec::new();
    for task in 0..2u32 {
        let wg = g.with_device(&format!("/job:worker/task:{task}"))?;
        let (x, y) = data(42 + u64::from(task), ROWS_PER_WORKER);
        let x = wg.constant(x)?;
        let y = wg.constant(y)?;
        let weights = w.read(&g)?;
        let err = wg.sub(wg.matmul(x, weights)?, y)?;
        losses.push(wg.mean(wg.square(err)?, None, false)?);
        grads.push(wg.matmul_t(x, err, true, false)?); // X^T (Xw - y)
    }
    // Average the two workers' gradients of the mean squared error, step on ps.
    let scale = -LEARNING_RATE * 2.0 / (2 * ROWS_PER_WORKER) as f32;
    let step = ps.mul(
        ps.add(grads[0], grads[1])?,
        ps.constant(Tensor::from_vec(
            [FEATURES + 1, 1],
            vec![scale; FEATURES + 1],
        )?)?,
    )?;
    let train = w.assign_add(&g, step)?;
    let loss = ps.mul(ps.add(losses[0], losses[1])?, ps.constant(0.5f32)?)?;

    let session = cluster.session("worker", 0, &g)?;
    session.run(&[], &[init], &[])?;
    let mut first = None;
    let mut last = 0.0;
    for epoch in 1..=EPOCHS {
        let out = session.run(&[], &[loss, train], &[])?;
        last = f32::try_from(&out[0])?;
        first.get_or_insert(last);
        if epoch % 10 == 0 || epoch == 1 {
            println!("epoch {epoch:>3}: loss {last:.6}");
        }
    }
    let learned = session.run(&[], &[w.read(&g)?], &[])?[0].to_vec::<f32>()?;
    println!("learned weights {:?}", &learned[..FEATURES]);
    println!("learned bias    {:.4}", learned[FEATURES]);
    println!("true weights    {TRUE_W:?}, bias {TRUE_B}");
    let close = learned[..FEATURES]
        .iter()
        .zip(TRUE_W)
        .all(|(l, t)| (l - t).abs() < 0.05)
        && (learned[FEATURES] - TRUE_B).abs() < 0.05;
    anyhow::ensure!(first.is_some_and(|f| last < f), "the loss should fall");
    anyhow::ensure!(
        close,
        "learned weights {learned:?} should match the true ones"
    );
    println!("learned weights match the generating ones");
    Ok(())
}
