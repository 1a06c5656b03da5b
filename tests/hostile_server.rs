//! The hostile graphs of issue 10 against a real `magpie server` process on a free
//! 127.0.0.1 port: a fill of `[2^32, 2^32]` then a MatMul, a Reshape of 4 elements to
//! `[4, 2^62 + 1]` then a Sum and a MatMul, a Fill of 2^33 f32 and a RandomUniform of 2^33
//! f32. The first two are sent as raw GraphDefs (a client that skips the builder's
//! checks) and refused at CreateSession; the others fail at run time. Each gets a clear
//! error back over gRPC (naming the node and what was wrong), the
//! server process stays up, and a normal step on the same server then succeeds.

mod common;

use common::{free_address, ServerProcess};
use magpie::cluster::Spec;
use magpie::graph::{AttrValue, GraphDef, NodeDef};
use magpie::grpc::proto::master_service_client::MasterServiceClient;
use magpie::grpc::proto::CreateSessionRequest;
use magpie::grpc::tonic;
use magpie::{DType, Graph, Tensor};

fn node(name: &str, op: &str, inputs: &[&str], attrs: Vec<(&str, AttrValue)>) -> NodeDef {
    NodeDef {
        name: name.into(),
        op: op.into(),
        inputs: inputs.iter().map(|s| s.to_string()).collect(),
        device: String::new(),
        attrs: attrs.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
    }
}

/// CreateSession of a raw `GraphDef`, as a client that skips the builder would send it;
/// returns the status it is refused with.
async fn create_session(address: &str, def: &GraphDef) -> tonic::Status {
    let mut client = MasterServiceClient::connect(format!("http://{address}"))
        .await
        .unwrap();
    let graph = magpie::grpc::conv::graph_to_wire(def).unwrap();
    client
        .create_session(CreateSessionRequest {
            graph: Some(graph),
            ..Default::default()
        })
        .await
        .expect_err("a hostile graph is refused")
}

/// One tensor may take at most this much on the server's CPU (`--cpu-memory-limit`), so
/// the test means the same on a machine of any size.
const LIMIT: u64 = 1 << 30;

#[test]
fn hostile_graphs_get_clear_errors_and_the_server_keeps_serving() {
    let address = free_address();
    let spec = Spec::builder()
        .job("solo", [address.clone()])
        .build()
        .unwrap();
    let dir = std::env::temp_dir().join(format!("magpie-hostile-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("cluster.json");
    std::fs::write(&file, spec.to_json()).unwrap();
    let limit = LIMIT.to_string();
    let mut server = ServerProcess::server([
        "--cluster",
        file.to_str().unwrap(),
        "--job",
        "solo",
        "--task",
        "0",
        "--cpu-memory-limit",
        &limit,
        // The CPU's limit is what is tested: unpinned ops must not go to a GPU.
        "--no-gpus",
    ]);

    // A hostile client skips the builder's checks and sends GraphDefs straight to
    // CreateSession: shapes whose element count does not fit, a Reshape that cannot hold
    // its input. The server's import refuses them, naming the node.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let one = || {
        node(
            "one",
            "Const",
            &[],
            vec![("value", Tensor::scalar(1.0f32).into())],
        )
    };
    let four = || {
        node(
            "four",
            "Const",
            &[],
            vec![("value", Tensor::from_slice(&[1.0f32, 2.0, 3.0, 4.0]).into())],
        )
    };
    let big_fill = node(
        "big",
        "Fill",
        &["one"],
        vec![("shape", AttrValue::Ints(vec![1 << 32, 1 << 32]))],
    );
    let wrapped = node(
        "wrapped",
        "Reshape",
        &["four"],
        vec![("shape", AttrValue::Ints(vec![4, (1 << 62) + 1]))],
    );
    for (nodes, name, details) in [
        (
            vec![
                one(),
                big_fill,
                node("product", "MatMul", &["big", "big"], vec![]),
            ],
            "big",
            vec!["[4294967296, 4294967296]", "too large"],
        ),
        (
            vec![four(), wrapped, node("sum", "Sum", &["wrapped"], vec![])],
            "wrapped",
            vec!["cannot reshape", "4611686018427387905"],
        ),
    ] {
        let status = rt.block_on(create_session(&address, &GraphDef { nodes }));
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
        let message = status.message();
        assert!(
            message.contains(&format!("{name:?}")),
            "names {name}: {message}"
        );
        for detail in details {
            assert!(message.contains(detail), "says {detail:?}: {message}");
        }
        assert!(server.is_running(), "the server died");
    }

    // Shapes that are valid but too large for the device fail at run time, naming the
    // node, the device and the bytes.
    let g = Graph::new();
    let one = g.constant(1.0f32).unwrap();
    let huge = g.with_name("huge").fill(&[1 << 33], one).unwrap();
    let random = g
        .with_name("random")
        .random_uniform(&[1 << 33], DType::F32, 1)
        .unwrap();
    let m = g
        .constant(Tensor::from_vec([2, 2], vec![1.0f32, 2.0, 3.0, 4.0]).unwrap())
        .unwrap();
    let normal = g.matmul(m, m).unwrap();

    let session = magpie::grpc::connect(&format!("grpc://{address}"), &g).unwrap();
    let bytes_of_2_33_f32 = (4u64 << 33).to_string();
    for (fetch, node, details) in [
        (
            huge,
            "huge",
            vec!["resource exhausted", &bytes_of_2_33_f32, "memory limit"],
        ),
        (
            random,
            "random",
            vec!["resource exhausted", &bytes_of_2_33_f32, "memory limit"],
        ),
    ] {
        let e = session.run(&[], &[fetch], &[]).unwrap_err().to_string();
        assert!(
            e.contains(&format!("{node:?}")),
            "the error names {node}: {e}"
        );
        assert!(
            e.contains("/device:CPU:0"),
            "the error names the device: {e}"
        );
        for detail in details {
            assert!(e.contains(detail), "the error says {detail:?}: {e}");
        }
        assert!(server.is_running(), "the server died on {node}: {e}");
    }
    let got = session.run(&[], &[normal], &[]).unwrap();
    assert_eq!(got[0].to_vec::<f32>().unwrap(), vec![7.0, 10.0, 15.0, 22.0]);
    assert!(server.is_running());
    drop(session);
    server.stop();
    let _ = std::fs::remove_dir_all(&dir);
}
