//! What TensorFlow's master service asks of the whole cluster: its devices as
//! TensorFlow describes them (`ListDevices`), and clearing resource containers on every
//! task (`Reset`: TensorFlow's master clears them on all its workers).
//!
//! Every device's `memory_limit` is what its own task reports (Magpie's worker
//! `ListDevices` carries it; 0 when the device does not know its memory). A
//! device's `incarnation` is a hash of its name and a number the master draws when it
//! starts: stable while the master runs, different after it restarts.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::time::Duration;

use futures::future::join_all;
use magpie_core::distributed::TaskServer;
use magpie_core::transport::DeviceInfo;
use tonic::{Code, Status};

use crate::auth::Credentials;
use crate::options::GrpcOptions;
use crate::proto as magpie_proto;
use crate::status::status;
use crate::tf::proto;
use crate::transport::endpoint;

/// A device as TensorFlow's `DeviceAttributes`; `seed` is the master's incarnation
/// number.
pub(crate) fn device_attributes(d: &DeviceInfo, seed: u64) -> proto::DeviceAttributes {
    let memory_limit = d
        .memory_limit
        .map_or(0, |m| i64::try_from(m).unwrap_or(i64::MAX));
    let mut h = DefaultHasher::new();
    seed.hash(&mut h);
    d.name.to_string().hash(&mut h);
    proto::DeviceAttributes {
        name: d.name.to_string(),
        device_type: d.name.device_type.clone(),
        memory_limit,
        // Never 0: TensorFlow reads 0 as "unknown".
        incarnation: h.finish().max(1),
        physical_device_desc: d.description.clone(),
    }
}

/// Clears `containers` (the default container `""` when empty) on every task of the
/// cluster: this task directly, the others through Magpie's own master service, each
/// within `options.request_timeout`. Returns how many resources were dropped.
///
/// # Errors
/// `UNAVAILABLE` naming the first task that could not be reset (the others are reset
/// all the same).
pub(crate) async fn reset_cluster(
    server: &TaskServer,
    options: &GrpcOptions,
    containers: &[String],
) -> Result<usize, Status> {
    let containers: Vec<String> = if containers.is_empty() {
        vec![magpie_core::resource::DEFAULT_CONTAINER.to_string()]
    } else {
        containers.to_vec()
    };
    let mut cleared: usize = containers.iter().map(|c| server.reset(c)).sum();
    let cluster = server.cluster();
    let others: Vec<_> = cluster
        .tasks()
        .into_iter()
        .filter(|t| t != server.task())
        .collect();
    let resets = others.iter().map(|task| {
        let containers = containers.clone();
        let address = cluster.address(task).map(str::to_string);
        async move {
            let fail = |detail: String| {
                status(
                    Code::Unavailable,
                    format!("Reset: task {task} could not be reset: {detail}"),
                )
            };
            let address = address.map_err(|e| fail(e.to_string()))?;
            let run = async {
                let channel = endpoint(&address, options, options.tls.as_ref())
                    .map_err(&fail)?
                    .connect()
                    .await
                    .map_err(|e| fail(crate::tls::error_chain(&e)))?;
                let mut client =
                    magpie_proto::master_service_client::MasterServiceClient::with_interceptor(
                        channel,
                        Credentials::new(options.auth_token.clone()),
                    );
                let mut n = 0usize;
                for container in containers {
                    let r = client
                        .reset(magpie_proto::ResetRequest { container })
                        .await
                        .map_err(|s| fail(format!("{:?}: {}", s.code(), s.message())))?;
                    n += usize::try_from(r.into_inner().cleared).unwrap_or(usize::MAX);
                }
                Ok::<usize, Status>(n)
            };
            let deadline: Duration = options.request_timeout;
            tokio::time::timeout(deadline, run)
                .await
                .map_err(|_| fail(format!("no answer within {deadline:?}")))?
        }
    });
    let mut first_error = None;
    for r in join_all(resets).await {
        match r {
            Ok(n) => cleared = cleared.saturating_add(n),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(cleared),
    }
}
