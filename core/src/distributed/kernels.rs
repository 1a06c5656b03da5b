//! Kernels of the distributed ops: `_Send`/`_Recv` (asynchronous; any device type) and
//! the variable ops (host kernels, registered for the `CPU` device type — they are
//! device-independent, so core registers them without depending on a CPU backend).
//!
//! They reach their task through the step's [`ResourceMgr`]: `_Recv` waits on the
//! task's [`Rendezvous`] service, `_Send` pushes through its [`TaskTransport`] service,
//! and the variable ops keep [`Variable`]s there.

use std::sync::{Arc, Once};

use futures::future::BoxFuture;
use futures::FutureExt;

use super::ops::{
    ensure_registered, DST_TASK_ATTR, EAGER_SEND_ATTR, EDGE_ATTR, RECV_OP, SEND_OP, SESSION_ATTR,
};
use super::outbox::{Outbox, PendingSend};
use super::rendezvous::Rendezvous;
use crate::kernel::{
    AsyncKernel, AsyncKernelContext, BoxedKernel, Kernel, KernelContext, KernelError, KernelInit,
    Outputs,
};
use crate::registry::{KernelKey, KernelRegistry, RegistryError, ANY_DEVICE};
use crate::resource::{ResourceMgr, Variable};
use crate::tensor::{DType, MemoryLimit, Tensor};
use crate::transport::{RendezvousKey, TaskName, Transport};

/// The service `_Send` pushes tensors through: the hosting task's transport.
#[derive(Debug)]
pub struct TaskTransport(pub Arc<dyn Transport>);

/// Registers the kernels (and op definitions) in the process-wide registry, once per
/// process. Workers call it; a local session that uses variables needs it too (the
/// facade calls it).
pub fn register_kernels() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if let Err(e) = register_kernels_into(&KernelRegistry::global()) {
            tracing::warn!(error = %e, "distributed kernels not all registered");
        }
    });
}

/// Registers `_Send`, `_Recv` (every device) and the variable ops (`CPU`; those of
/// [`training`](super::training) too) in `registry`, and their op definitions
/// (process-wide). Idempotent.
///
/// # Errors
/// [`RegistryError::AlreadyRegistered`] when `registry` has other kernels for these ops;
/// the others are registered still.
pub fn register_kernels_into(registry: &KernelRegistry) -> Result<(), RegistryError> {
    ensure_registered();
    let factories: [(&str, &str, Factory); 6] = [
        (SEND_OP, ANY_DEVICE, send_factory),
        (RECV_OP, ANY_DEVICE, recv_factory),
        ("VarHandleOp", "CPU", |i| var_factory(i, VarOp::Declare)),
        ("ReadVariableOp", "CPU", |i| var_factory(i, VarOp::Read)),
        ("AssignVariableOp", "CPU", |i| var_factory(i, VarOp::Assign)),
        ("AssignAddVariableOp", "CPU", |i| {
            var_factory(i, VarOp::AssignAdd)
        }),
    ];
    let mut first_error = super::training::register_kernels_into(registry).err();
    for (op, device_type, factory) in factories {
        if let Err(e) = registry.register(KernelKey::new(op, device_type), factory) {
            first_error.get_or_insert(e);
        }
    }
    first_error.map_or(Ok(()), Err)
}

type Factory = fn(&KernelInit<'_>) -> Result<BoxedKernel, KernelError>;

fn send_factory(init: &KernelInit<'_>) -> Result<BoxedKernel, KernelError> {
    let edge = init.node.attrs.string(EDGE_ATTR)?;
    let dst = init.node.attrs.string(DST_TASK_ATTR)?;
    let dst: TaskName = dst
        .parse()
        .map_err(|e| KernelError::InvalidArgument(format!("{e}")))?;
    // Set by the worker at registration; a partition without it is refused by the
    // receiving task.
    let session = if init.node.attrs.contains(SESSION_ATTR) {
        init.node.attrs.string(SESSION_ATTR)?
    } else {
        String::new()
    };
    let send = SendKernel { edge, dst, session };
    // Set by the worker when its transport sends eagerly (see `outbox.rs`).
    if init.node.attrs.bool_or(EAGER_SEND_ATTR, false)? {
        return Ok(BoxedKernel::Sync(Box::new(EagerSendKernel {
            send,
            device: init.device.name().to_string(),
        })));
    }
    Ok(BoxedKernel::Async(Box::new(send)))
}

fn recv_factory(init: &KernelInit<'_>) -> Result<BoxedKernel, KernelError> {
    Ok(BoxedKernel::Async(Box::new(RecvKernel {
        edge: init.node.attrs.string(EDGE_ATTR)?,
        dtype: init.node.attrs.dtype("dtype")?,
    })))
}

fn var_factory(init: &KernelInit<'_>, kind: VarOp) -> Result<BoxedKernel, KernelError> {
    let a = &init.node.attrs;
    let container = if a.contains("container") {
        a.string("container")?
    } else {
        String::new()
    };
    Ok(BoxedKernel::Sync(Box::new(VarKernel {
        kind,
        container,
        name: a.string("shared_name")?,
        dtype: a.dtype("dtype")?,
        memory: MemoryLimit::of(init.device.as_ref()),
    })))
}

fn resources(r: Option<&Arc<ResourceMgr>>) -> Result<&Arc<ResourceMgr>, KernelError> {
    r.ok_or_else(|| KernelError::Internal("no resource manager in this context".into()))
}

struct SendKernel {
    edge: String,
    dst: TaskName,
    session: String,
}

impl AsyncKernel for SendKernel {
    fn compute_async(
        &self,
        ctx: AsyncKernelContext,
    ) -> BoxFuture<'static, Result<Outputs, KernelError>> {
        let transport = match resources(ctx.resources()).map(|r| r.service::<TaskTransport>()) {
            Ok(Some(t)) => t,
            Ok(None) => {
                let e = KernelError::Internal(
                    "_Send runs only on a cluster task (no transport in this session)".into(),
                );
                return async move { Err(e) }.boxed();
            }
            Err(e) => return async move { Err(e) }.boxed(),
        };
        // A control carrier has no input: it sends an empty tensor.
        let step_id = ctx.step_id();
        let tensor = ctx
            .into_inputs()
            .pop()
            .unwrap_or_else(|| Tensor::empty(DType::Bool));
        let fut = transport
            .0
            .send(&self.dst, &self.session, self.key(step_id), tensor);
        async move {
            fut.await.map_err(send_error)?;
            Ok(Outputs::new())
        }
        .boxed()
    }
}

impl SendKernel {
    fn key(&self, step_id: crate::step_id::StepId) -> RendezvousKey {
        RendezvousKey {
            step_id,
            edge: self.edge.clone(),
        }
    }
}

fn send_error(e: crate::transport::TransportError) -> KernelError {
    match e.code() {
        crate::error::Code::ResourceExhausted => {
            KernelError::ResourceExhausted(format!("send failed: {e}"))
        }
        _ => KernelError::Device(format!("send failed: {e}")),
    }
}

/// The error of a `_Send` node whose answer came after its kernel completed (the
/// worker reports it as the step's, as the executor would have).
pub(crate) fn late_send_error(
    node: String,
    device: String,
    e: crate::transport::TransportError,
) -> crate::session::SessionError {
    crate::session::SessionError::Kernel {
        node,
        op: SEND_OP.into(),
        device,
        source: Box::new(send_error(e)),
    }
}

/// `_Send` over a transport that sends eagerly: starts the transfer and completes at
/// once; an answer not there yet goes to the task's [`Outbox`], which the worker awaits
/// at the end of the step.
struct EagerSendKernel {
    send: SendKernel,
    device: String,
}

impl Kernel for EagerSendKernel {
    fn compute(&self, ctx: &mut KernelContext<'_>) -> Result<(), KernelError> {
        let r = resources(ctx.resources())?;
        let (Some(transport), Some(outbox)) = (r.service::<TaskTransport>(), r.service::<Outbox>())
        else {
            return Err(KernelError::Internal(
                "_Send runs only on a cluster task (no transport in this session)".into(),
            ));
        };
        let tensor = if ctx.num_inputs() > 0 {
            ctx.take_input(0)
        } else {
            // A control carrier has no input: it sends an empty tensor.
            Tensor::empty(DType::Bool)
        };
        let step_id = ctx.step_id();
        let mut answer = transport.0.send(
            &self.send.dst,
            &self.send.session,
            self.send.key(step_id),
            tensor,
        );
        // A send within this process has answered already: no need to file it.
        let mut poll = std::task::Context::from_waker(futures::task::noop_waker_ref());
        match answer.poll_unpin(&mut poll) {
            std::task::Poll::Ready(r) => r.map_err(send_error),
            std::task::Poll::Pending => {
                outbox.file(
                    step_id,
                    PendingSend {
                        node: ctx.node().name.clone(),
                        device: self.device.clone(),
                        dst: self.send.dst.clone(),
                        session: self.send.session.clone(),
                        edge: self.send.edge.clone(),
                        answer,
                    },
                );
                Ok(())
            }
        }
    }
}

struct RecvKernel {
    edge: String,
    dtype: DType,
}

impl AsyncKernel for RecvKernel {
    fn compute_async(
        &self,
        ctx: AsyncKernelContext,
    ) -> BoxFuture<'static, Result<Outputs, KernelError>> {
        let rendezvous = match resources(ctx.resources()).map(|r| r.service::<Rendezvous>()) {
            Ok(Some(r)) => r,
            Ok(None) => {
                let e = KernelError::Internal(
                    "_Recv runs only on a cluster task (no rendezvous in this session)".into(),
                );
                return async move { Err(e) }.boxed();
            }
            Err(e) => return async move { Err(e) }.boxed(),
        };
        let fut = rendezvous.recv(RendezvousKey {
            step_id: ctx.step_id(),
            edge: self.edge.clone(),
        });
        let dtype = self.dtype;
        async move {
            let t = fut.await.map_err(recv_error)?;
            if t.dtype() != dtype {
                return Err(KernelError::Internal(format!(
                    "received a {} tensor, expected {dtype}",
                    t.dtype()
                )));
            }
            Ok(smallvec::smallvec![t])
        }
        .boxed()
    }
}

/// A receive awaited before its step started (see the worker's early receives) that
/// failed, as the step would report it from `_Recv`'s kernel.
pub(crate) fn recv_session_error(
    node: &str,
    device: &str,
    e: super::rendezvous::RendezvousError,
) -> crate::session::SessionError {
    crate::session::SessionError::Kernel {
        node: node.to_string(),
        op: RECV_OP.into(),
        device: device.to_string(),
        source: Box::new(recv_error(e)),
    }
}

fn recv_error(e: super::rendezvous::RendezvousError) -> KernelError {
    match e {
        super::rendezvous::RendezvousError::StepEnded { .. }
        | super::rendezvous::RendezvousError::AlreadyEnded { .. }
        | super::rendezvous::RendezvousError::Expired { .. } => {
            KernelError::Device(format!("receive aborted: {e}"))
        }
        other => KernelError::Internal(other.to_string()),
    }
}

#[derive(Clone, Copy)]
enum VarOp {
    Declare,
    Read,
    Assign,
    AssignAdd,
}

struct VarKernel {
    kind: VarOp,
    container: String,
    name: String,
    dtype: DType,
    /// The device's allocation: an update's new value is counted there and bounded by
    /// its limit.
    memory: MemoryLimit,
}

impl VarKernel {
    fn variable(&self, r: &ResourceMgr) -> Result<Arc<Variable>, KernelError> {
        let v = r
            .lookup_or_create(&self.container, &self.name, || Variable::new(self.dtype))
            .map_err(|e| KernelError::InvalidArgument(e.to_string()))?;
        if v.dtype() != self.dtype {
            return Err(KernelError::InvalidArgument(format!(
                "variable {:?}/{} holds {}, the op expects {}",
                self.container,
                self.name,
                v.dtype(),
                self.dtype
            )));
        }
        Ok(v)
    }

    fn uninitialised(&self) -> KernelError {
        KernelError::FailedPrecondition(format!(
            "variable {:?}/{} is not initialised (assign it first)",
            self.container, self.name
        ))
    }
}

impl Kernel for VarKernel {
    fn compute(&self, ctx: &mut KernelContext<'_>) -> Result<(), KernelError> {
        let v = self.variable(resources(ctx.resources())?)?;
        match self.kind {
            VarOp::Declare => {}
            VarOp::Read => {
                let t = v.read().ok_or_else(|| self.uninitialised())?;
                ctx.push_output(t);
            }
            VarOp::Assign => {
                let t = ctx.input(0).clone();
                v.assign(t.clone());
                ctx.push_output(t);
            }
            VarOp::AssignAdd => {
                let delta = ctx.input(0).clone();
                let new = v.update(|old| {
                    let old = old.ok_or_else(|| self.uninitialised())?;
                    add(old, &delta, &self.memory)
                })?;
                ctx.push_output(new);
            }
        }
        Ok(())
    }
}

/// An update a variable kernel applies elementwise: its new value is `old ∘ delta`.
#[derive(Debug, Clone, Copy)]
pub(super) enum Update {
    /// `old + delta` (`AssignAdd*`).
    Add,
    /// `old - delta` (`AssignSub*`).
    Sub,
}

/// Elementwise `a + b` of equal shapes (the update of `AssignAddVariableOp`), allocated
/// through `memory`.
fn add(a: &Tensor, b: &Tensor, memory: &MemoryLimit) -> Result<Tensor, KernelError> {
    apply_update(Update::Add, a, b, memory)
}

/// Elementwise `a ∘ b` of equal shapes and dtypes, allocated through `memory`; integers
/// wrap, as TensorFlow's integer arithmetic (never an overflow panic in a debug build of
/// a server).
pub(super) fn apply_update(
    op: Update,
    a: &Tensor,
    b: &Tensor,
    memory: &MemoryLimit,
) -> Result<Tensor, KernelError> {
    if a.shape() != b.shape() || a.dtype() != b.dtype() {
        let (verb, prep) = match op {
            Update::Add => ("add", "to"),
            Update::Sub => ("subtract", "from"),
        };
        return Err(KernelError::InvalidArgument(format!(
            "cannot {verb} a {} {} {prep} a {} {} variable",
            b.dtype(),
            b.shape(),
            a.dtype(),
            a.shape()
        )));
    }
    fn go<T: crate::tensor::StorageElement + Copy>(
        a: &Tensor,
        b: &Tensor,
        memory: &MemoryLimit,
        f: impl Fn(T, T) -> T,
    ) -> Result<Tensor, KernelError> {
        let x = a.as_slice::<T>()?;
        let y = b.as_slice::<T>()?;
        Ok(memory.collect(a.shape().clone(), x.iter().zip(y).map(|(&p, &q)| f(p, q)))?)
    }
    match (a.dtype(), op) {
        (DType::F32, Update::Add) => go::<f32>(a, b, memory, |p, q| p + q),
        (DType::F32, Update::Sub) => go::<f32>(a, b, memory, |p, q| p - q),
        (DType::F64, Update::Add) => go::<f64>(a, b, memory, |p, q| p + q),
        (DType::F64, Update::Sub) => go::<f64>(a, b, memory, |p, q| p - q),
        (DType::I32, Update::Add) => go::<i32>(a, b, memory, i32::wrapping_add),
        (DType::I32, Update::Sub) => go::<i32>(a, b, memory, i32::wrapping_sub),
        (DType::I64, Update::Add) => go::<i64>(a, b, memory, i64::wrapping_add),
        (DType::I64, Update::Sub) => go::<i64>(a, b, memory, i64::wrapping_sub),
        (DType::Bool, Update::Add) => {
            Err(KernelError::InvalidArgument("cannot add booleans".into()))
        }
        (DType::Bool, Update::Sub) => Err(KernelError::InvalidArgument(
            "cannot subtract booleans".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integer_variable_adds_wrap_as_tensorflows_do() {
        let memory = MemoryLimit::new("/device:CPU:0", None);
        let a = Tensor::from_vec([2], vec![i32::MAX, 1]).unwrap();
        let b = Tensor::from_vec([2], vec![1i32, 2]).unwrap();
        let sum = add(&a, &b, &memory).unwrap();
        assert_eq!(sum.as_slice::<i32>().unwrap(), &[i32::MIN, 3]);
        let a = Tensor::from_vec([1], vec![i64::MIN]).unwrap();
        let b = Tensor::from_vec([1], vec![-1i64]).unwrap();
        let sum = add(&a, &b, &memory).unwrap();
        assert_eq!(sum.as_slice::<i64>().unwrap(), &[i64::MAX]);
    }
}
