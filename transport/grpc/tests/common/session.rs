//! A one-task server with a remote session on it that runs `y = TestPass(TestFour)`, and
//! steps of it checked: the setup of the tests that watch what a server and a client do
//! around plain steps (the warm window, busy polling).

use std::time::Duration;

use magpie_core::graph::Graph;
use magpie_grpc::{GrpcOptions, GrpcServer, RemoteSession};

use super::start_one_task;

/// A server of a new one-task cluster with `server`'s options, and a session on it with
/// `client`'s, over the graph `y = TestPass(TestFour)` (TestFour: `[1, 2, 3, 4]`).
pub fn pass_four_session(server: GrpcOptions, client: GrpcOptions) -> (GrpcServer, RemoteSession) {
    let s = start_one_task(server);
    let g = Graph::new();
    let x = g.with_name("x").op("TestFour").build_output().unwrap();
    g.with_name("y")
        .op("TestPass")
        .input(x)
        .build_output()
        .unwrap();
    let session = magpie_grpc::connect_with(&s.target(), &g, client).unwrap();
    (s, session)
}

/// `n` steps of a [`pass_four_session`] fetching `y`, `pause` apart, each checked.
pub fn pass_four_steps(session: &RemoteSession, n: usize, pause: Duration) {
    for _ in 0..n {
        let out = session.run_named(&[], &["y:0"], &[], None).unwrap();
        assert_eq!(
            out.tensors[0].as_slice::<f32>().unwrap(),
            &[1.0, 2.0, 3.0, 4.0]
        );
        if !pause.is_zero() {
            std::thread::sleep(pause);
        }
    }
}
