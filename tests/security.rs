//! `magpie server` processes started with `--tls-cert`, `--tls-key`, `--tls-client-ca`
//! and `--auth-token-file` (certificates made at run time, free 127.0.0.1 ports): a
//! client with the CA and the token runs a step over both tasks, a client without the
//! token is `UNAUTHENTICATED`, a plaintext client is told to use `grpcs://`, a worker
//! call without a certificate the cluster CA signed is refused; and bad security flags
//! fail naming the flag and the file, never printing the token. In process, the seed's
//! three-task cluster runs a step over mutual TLS with a token (`GrpcCluster::start_with`).

mod common;
#[path = "../transport/grpc/tests/pki/mod.rs"]
mod pki;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use common::{free_port, ServerProcess};
use magpie::cluster::{loopback_cluster, GrpcCluster, Spec};
use magpie::grpc::proto::worker_service_client::WorkerServiceClient;
use magpie::grpc::tonic::transport::{Certificate, ClientTlsConfig, Endpoint};
use magpie::grpc::tonic::Code;
use magpie::grpc::{proto, AuthToken, GrpcError, GrpcOptions, TlsOptions};
use magpie::{ClientError, ClientSession, Graph};
use pki::{Ca, TempDir};

const TOKEN: &str = "process-cluster-token-0123456789abcdef";

/// Starts `/job:worker/task:<task>` of the cluster in `cluster` with `extra` flags and
/// waits for its "serving" line.
fn start(cluster: &Path, task: u32, extra: &[&std::ffi::OsStr]) -> ServerProcess {
    let mut command = common::magpie();
    command
        .args(["server", "--workers", "1", "--cluster"])
        .arg(cluster)
        .args(["--job", "worker", "--task", &task.to_string()])
        .args(extra)
        .stderr(Stdio::inherit());
    ServerProcess::start(command)
}

/// Two worker tasks on free ports, written to `cluster.json` in `dir`.
fn two_tasks(dir: &TempDir) -> (Spec, std::path::PathBuf) {
    let spec = Spec::builder()
        .job(
            "worker",
            [
                format!("127.0.0.1:{}", free_port()),
                format!("127.0.0.1:{}", free_port()),
            ],
        )
        .build()
        .unwrap();
    let file = dir.write("cluster.json", &spec.to_json());
    (spec, file)
}

/// 2 made on task 1, times 5 on task 0 (the master): 10.
fn graph() -> (Graph, magpie::Output) {
    let g = Graph::new();
    let two = g
        .with_device("/job:worker/task:1")
        .unwrap()
        .constant(2.0f32)
        .unwrap();
    let on0 = g.with_device("/job:worker/task:0").unwrap();
    let y = on0.mul(two, on0.constant(5.0f32).unwrap()).unwrap();
    (g, y)
}

#[test]
fn a_tls_cluster_of_server_processes_with_a_token_serves_only_clients_with_the_token() {
    let dir = TempDir::new("sec-process");
    let ca = Ca::new("magpie test cluster CA");
    let ca_file = dir.write("ca.pem", &ca.pem());
    let token_file = dir.write("token", &format!("{TOKEN}\n"));
    let (spec, cluster) = two_tasks(&dir);
    let mut servers = Vec::new();
    for task in 0..2 {
        let leaf = ca.leaf(&format!("worker {task}"));
        let cert = dir.write(&format!("w{task}.pem"), &leaf.cert);
        let key = dir.write(&format!("w{task}.key"), &leaf.key);
        let flags = [
            "--tls-cert".as_ref(),
            cert.as_os_str(),
            "--tls-key".as_ref(),
            key.as_os_str(),
            "--tls-client-ca".as_ref(),
            ca_file.as_os_str(),
            "--auth-token-file".as_ref(),
            token_file.as_os_str(),
        ];
        let p = start(&cluster, task, &flags);
        let line = p.line.clone();
        assert!(line.contains("grpcs://"), "{line}");
        assert!(
            line.contains("mutual TLS, cluster token required"),
            "{line}"
        );
        assert!(!line.contains(TOKEN), "{line}");
        servers.push(p);
    }
    let address = spec.tasks()[0].clone();
    let address = spec.address(&address).unwrap().to_string();
    let target = format!("grpcs://{address}");
    let (g, y) = graph();

    // The CA and the token: a step over both processes.
    let options = GrpcOptions {
        tls: Some(TlsOptions::new().with_ca_file(&ca_file).unwrap()),
        auth_token: Some(AuthToken::from_file(&token_file).unwrap()),
        ..GrpcOptions::default()
    };
    let s = ClientSession::connect_with(&target, &g, options.clone()).unwrap();
    for _ in 0..3 {
        assert_eq!(
            f32::try_from(&s.run(&[], &[y], &[]).unwrap()[0]).unwrap(),
            10.0
        );
    }
    drop(s);

    // No token: UNAUTHENTICATED.
    let no_token = GrpcOptions {
        auth_token: None,
        ..options.clone()
    };
    match ClientSession::connect_with(&target, &g, no_token) {
        Err(ClientError::Grpc(GrpcError::Status { code, message, .. })) => {
            assert_eq!(code, Code::Unauthenticated, "{message}")
        }
        other => panic!("a client without the token: {other:?}"),
    }
    // Plaintext: refused, with the hint.
    let plain = format!("grpc://{address}");
    match ClientSession::connect(&plain, &g) {
        Err(ClientError::Grpc(GrpcError::Status { message, .. })) => {
            assert!(message.contains("grpcs://"), "{message}")
        }
        other => panic!("a plaintext client: {other:?}"),
    }
    // The worker service without a client certificate: refused even with the token.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let refused = rt.block_on(async {
        let tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca.pem()));
        let channel = Endpoint::from_shared(format!("https://{address}"))
            .unwrap()
            .tls_config(tls)
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut req = magpie::grpc::tonic::Request::new(proto::AbortStepRequest {
            task: "/job:worker/task:0".into(),
            step_id: vec![0u8; 16].into(),
            session: String::new(),
            reason: String::new(),
            reason_code: 0,
        });
        req.metadata_mut()
            .insert("authorization", format!("Bearer {TOKEN}").parse().unwrap());
        WorkerServiceClient::new(channel).abort_step(req).await
    });
    assert_eq!(refused.unwrap_err().code(), Code::Unauthenticated);

    // Still serving the right client.
    let s = ClientSession::connect_with(&target, &g, options).unwrap();
    assert_eq!(
        f32::try_from(&s.run(&[], &[y], &[]).unwrap()[0]).unwrap(),
        10.0
    );
    drop(s);
    for p in servers {
        p.stop();
    }
}

#[test]
fn the_seeds_cluster_in_process_runs_over_mutual_tls_with_a_token() {
    let ca = Ca::new("magpie test cluster CA");
    let leaf = ca.leaf("every task");
    let grpc = GrpcOptions {
        tls: Some(
            TlsOptions::new()
                .with_ca_pem(ca.pem())
                .unwrap()
                .with_identity_pem(leaf.cert, leaf.key)
                .unwrap()
                .with_client_ca_pem(ca.pem())
                .unwrap(),
        ),
        auth_token: Some(AuthToken::new(TOKEN).unwrap()),
        ..GrpcOptions::default()
    };
    let c = GrpcCluster::start_with(&loopback_cluster().unwrap(), grpc).unwrap();
    let target = c.target("worker", 0).unwrap();
    assert!(target.starts_with("grpcs://"), "{target}");
    let g = Graph::new();
    let w = g
        .with_device("/job:ps/task:0")
        .unwrap()
        .constant(2.0f32)
        .unwrap();
    let on0 = g.with_device("/job:worker/task:0").unwrap();
    let x = on0.mul(w, on0.constant(5.0f32).unwrap()).unwrap();
    let y = g
        .with_device("/job:worker/task:1")
        .unwrap()
        .add(x, w)
        .unwrap();
    let client = GrpcOptions {
        tls: Some(TlsOptions::new().with_ca_pem(ca.pem()).unwrap()),
        auth_token: Some(AuthToken::new(TOKEN).unwrap()),
        ..GrpcOptions::default()
    };
    let s = ClientSession::connect_with(&target, &g, client).unwrap();
    assert_eq!(
        f32::try_from(&s.run(&[], &[y], &[]).unwrap()[0]).unwrap(),
        12.0
    );
    drop(s);
    c.stop(Duration::from_secs(1));
}

/// Runs `magpie server` with `flags` on a two-task cluster; it must fail. Its stderr.
fn fails(cluster: &Path, flags: &[&std::ffi::OsStr]) -> String {
    let out = common::magpie()
        .args(["server", "--cluster"])
        .arg(cluster)
        .args(["--job", "worker", "--task", "0"])
        .args(flags)
        .output()
        .unwrap();
    assert!(!out.status.success(), "{flags:?} started a server");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn bad_security_flags_fail_naming_the_flag_and_the_file() {
    let dir = TempDir::new("sec-flags");
    let (_, cluster) = two_tasks(&dir);
    let ca = Ca::new("magpie test cluster CA");
    let leaf = ca.leaf("worker 0");
    let cert = dir.write("w0.pem", &leaf.cert);
    let key = dir.write("w0.key", &leaf.key);
    let missing = dir.path().join("missing.token");
    let short = dir.write("short.token", "hunter2\n");

    let e = fails(&cluster, &["--tls-cert".as_ref(), cert.as_os_str()]);
    assert!(e.contains("--tls-key"), "{e}");
    let e = fails(
        &cluster,
        &["--auth-token-file".as_ref(), missing.as_os_str()],
    );
    assert!(
        e.contains("--auth-token-file") && e.contains("missing.token"),
        "{e}"
    );
    let e = fails(&cluster, &["--auth-token-file".as_ref(), short.as_os_str()]);
    assert!(e.contains("short.token") && !e.contains("hunter2"), "{e}");
    // A key where the certificate should be.
    let e = fails(
        &cluster,
        &[
            "--tls-cert".as_ref(),
            key.as_os_str(),
            "--tls-key".as_ref(),
            key.as_os_str(),
        ],
    );
    assert!(e.contains("--tls-cert") && e.contains("w0.key"), "{e}");
    // TLS in a cluster of two tasks needs a CA to verify the other one.
    let e = fails(
        &cluster,
        &[
            "--tls-cert".as_ref(),
            cert.as_os_str(),
            "--tls-key".as_ref(),
            key.as_os_str(),
        ],
    );
    assert!(e.contains("--tls-ca"), "{e}");
}
