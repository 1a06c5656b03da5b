//! Kernel registries: which factory builds the kernel of an op on a device.
//!
//! A [`KernelRegistry`] maps a [`KernelKey`] — (op, device type, backend) — to a
//! [`KernelFactory`]. Sessions and servers are built with one
//! ([`SessionOptions::kernels`](crate::session::SessionOptions::kernels),
//! [`ServerOptions::kernels`](crate::distributed::ServerOptions::kernels)); without one
//! they use the process-wide default, [`KernelRegistry::global`], which the free functions
//! ([`register_kernel`], [`lookup_kernel`], ...) and the backends' `register()` fill.
//!
//! # Choosing a kernel
//! For a node placed on a device `d`, the registry looks up, in order:
//! 1. (op, `d`'s type, [`d.backend()`](crate::device::Device::backend)): a kernel of the
//!    backend that made the device;
//! 2. (op, `d`'s type, [`GENERIC_BACKEND`]): a kernel for every device of the type;
//! 3. (op, [`ANY_DEVICE`], [`GENERIC_BACKEND`]): a kernel for every device (`NoOp`,
//!    `_Send`, `_Recv`).
//!
//! So two backends of one device type (two `GPU` backends) each register under their own
//! backend id and never collide; each device gets its own backend's kernels.
//!
//! # Registering twice
//! [`KernelRegistry::register`] of a key that already has a factory succeeds and changes
//! nothing when it is the *same* factory (the same `fn` item, or the same closure type when
//! it captures nothing), so a backend's `register()` may run any number of times; another
//! factory is [`RegistryError::AlreadyRegistered`]. [`KernelRegistry::replace`] overrides.
//!
//! ```
//! use magpie_core::kernel::{BoxedKernel, Kernel, KernelContext, KernelError, KernelInit};
//! use magpie_core::registry::{KernelKey, KernelRegistry, RegistryError};
//!
//! struct Nothing;
//! impl Kernel for Nothing {
//!     fn compute(&self, _: &mut KernelContext<'_>) -> Result<(), KernelError> {
//!         Ok(())
//!     }
//! }
//! fn factory(_: &KernelInit<'_>) -> Result<BoxedKernel, KernelError> {
//!     Ok(BoxedKernel::Sync(Box::new(Nothing)))
//! }
//!
//! let registry = KernelRegistry::new();
//! let key = KernelKey::new("Touch", "SIM").backend("my-sim");
//! registry.register(key.clone(), factory)?;
//! registry.register(key.clone(), factory)?; // the same factory again: nothing changes
//! let other = registry.register(key.clone(), |_: &KernelInit<'_>| factory_err());
//! assert!(matches!(other, Err(RegistryError::AlreadyRegistered { .. })));
//! assert_eq!(registry.kernels_for("SIM"), ["Touch"]);
//! # fn factory_err() -> Result<BoxedKernel, KernelError> { Err(KernelError::Cancelled) }
//! # Ok::<(), RegistryError>(())
//! ```

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, LazyLock};

use parking_lot::RwLock;

use crate::device::{Device, GENERIC_BACKEND};
use crate::kernel::{BoxedKernel, Kernel, KernelContext, KernelError, KernelFactory, KernelInit};

/// The device type that matches any device in the registry.
pub const ANY_DEVICE: &str = "*";

/// Registration errors.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// Another kernel for this (op, device type, backend) is already registered.
    #[error(
        "another kernel for op {op:?} on device type {device_type:?}{} is already registered \
         (register the same factory, use another backend id, or replace it)",
        backend_note(backend)
    )]
    AlreadyRegistered {
        /// Op name.
        op: String,
        /// Device type.
        device_type: String,
        /// Backend id ([`GENERIC_BACKEND`] for every device of the type).
        backend: String,
    },
    /// A key with an empty op name or device type.
    #[error("a kernel key needs an op name and a device type, got op {op:?} on {device_type:?}")]
    InvalidKey {
        /// Op name.
        op: String,
        /// Device type.
        device_type: String,
    },
}

fn backend_note(backend: &str) -> String {
    if backend.is_empty() {
        String::new()
    } else {
        format!(" of backend {backend:?}")
    }
}

/// What a kernel is registered under: op, device type (case-insensitive) and the backend
/// whose devices it serves ([`GENERIC_BACKEND`], the default: every device of the type).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct KernelKey {
    op: String,
    device_type: String,
    backend: String,
}

impl KernelKey {
    /// The key of `op` on every device of `device_type` ([`ANY_DEVICE`] for all devices).
    pub fn new(op: impl Into<String>, device_type: &str) -> KernelKey {
        KernelKey {
            op: op.into(),
            device_type: device_type.to_ascii_uppercase(),
            backend: GENERIC_BACKEND.to_string(),
        }
    }

    /// This key for the devices of backend `backend` only (see
    /// [`Device::backend`]).
    pub fn backend(mut self, backend: impl Into<String>) -> KernelKey {
        self.backend = backend.into();
        self
    }

    /// The op name.
    pub fn op(&self) -> &str {
        &self.op
    }

    /// The device type, upper case.
    pub fn device_type(&self) -> &str {
        &self.device_type
    }

    /// The backend id ([`GENERIC_BACKEND`] for every device of the type).
    pub fn backend_id(&self) -> &str {
        &self.backend
    }
}

impl fmt::Display for KernelKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} on {}", self.op, self.device_type)?;
        if !self.backend.is_empty() {
            write!(f, " ({})", self.backend)?;
        }
        Ok(())
    }
}

/// How two registrations are recognised as the same factory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Identity {
    /// A plain `fn` item or pointer, by address.
    FnPointer(usize),
    /// A closure (or other type) that captures nothing: every value of the type is the
    /// same function.
    ZeroSized(TypeId),
    /// A factory with state: only itself.
    Unique(u64),
}

/// The factory signature as a plain `fn` pointer.
type FactoryFn = fn(&KernelInit<'_>) -> Result<BoxedKernel, KernelError>;

fn identity_of<F: Any>(f: &F) -> Identity {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    if let Some(p) = (f as &dyn Any).downcast_ref::<FactoryFn>() {
        return Identity::FnPointer(*p as usize);
    }
    if std::mem::size_of::<F>() == 0 {
        return Identity::ZeroSized(TypeId::of::<F>());
    }
    Identity::Unique(NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
}

#[derive(Clone)]
struct Entry {
    factory: KernelFactory,
    identity: Identity,
}

/// Kernel factories by [`KernelKey`]: a cheap handle (clones share the table).
///
/// A new registry knows only `NoOp` (for every device); [`KernelRegistry::global`] is
/// the process-wide default that sessions use unless given another. The
/// [module docs](self) say how a device's kernel is chosen and show registering twice.
///
/// ```
/// use magpie_core::device::Device;
/// use magpie_core::graph::DeviceName;
/// use magpie_core::kernel::{BoxedKernel, KernelError, KernelInit};
/// use magpie_core::registry::{KernelKey, KernelRegistry};
///
/// #[derive(Debug)]
/// struct Gpu(DeviceName, &'static str);
/// impl Device for Gpu {
///     fn name(&self) -> &DeviceName { &self.0 }
///     fn backend(&self) -> &str { self.1 }
/// }
/// fn a(_: &KernelInit<'_>) -> Result<BoxedKernel, KernelError> { Err(KernelError::Cancelled) }
/// fn b(_: &KernelInit<'_>) -> Result<BoxedKernel, KernelError> { Err(KernelError::Cancelled) }
///
/// // Two backends of device type GPU, each with its own `MatMul`: no collision.
/// let registry = KernelRegistry::new();
/// registry.register(KernelKey::new("MatMul", "GPU").backend("vendor-a"), a)?;
/// registry.register(KernelKey::new("MatMul", "GPU").backend("vendor-b"), b)?;
/// let gpu_a = Gpu(DeviceName::local("GPU", 0), "vendor-a");
/// let gpu_c = Gpu(DeviceName::local("GPU", 1), "vendor-c");
/// assert!(registry.has_kernel("MatMul", &gpu_a));
/// assert!(!registry.has_kernel("MatMul", &gpu_c)); // its backend registered none
/// assert!(registry.has_kernel("NoOp", &gpu_c)); // every registry runs NoOp anywhere
/// # Ok::<(), magpie_core::registry::RegistryError>(())
/// ```
#[derive(Clone)]
pub struct KernelRegistry {
    table: Arc<RwLock<HashMap<KernelKey, Entry>>>,
}

impl fmt::Debug for KernelRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KernelRegistry")
            .field("kernels", &self.table.read().len())
            .finish()
    }
}

impl Default for KernelRegistry {
    fn default() -> Self {
        KernelRegistry::new()
    }
}

static GLOBAL: LazyLock<KernelRegistry> = LazyLock::new(KernelRegistry::new);

struct NoOpKernel;

impl Kernel for NoOpKernel {
    fn compute(&self, _: &mut KernelContext<'_>) -> Result<(), KernelError> {
        Ok(())
    }
}

fn noop(_: &KernelInit<'_>) -> Result<BoxedKernel, KernelError> {
    Ok(BoxedKernel::Sync(Box::new(NoOpKernel)))
}

impl KernelRegistry {
    /// A registry with only `NoOp` (for every device).
    pub fn new() -> KernelRegistry {
        let registry = KernelRegistry {
            table: Arc::new(RwLock::new(HashMap::new())),
        };
        registry.insert(KernelKey::new("NoOp", ANY_DEVICE), noop as FactoryFn);
        registry
    }

    /// The process-wide default registry (a handle to it): what the free functions of
    /// this module, the backends' `register()` and sessions without a registry of their
    /// own use.
    pub fn global() -> KernelRegistry {
        GLOBAL.clone()
    }

    /// Whether `self` and `other` are handles to the same table.
    pub fn same_as(&self, other: &KernelRegistry) -> bool {
        Arc::ptr_eq(&self.table, &other.table)
    }

    fn insert<F>(&self, key: KernelKey, factory: F) -> Option<KernelFactory>
    where
        F: Fn(&KernelInit<'_>) -> Result<BoxedKernel, KernelError> + Send + Sync + 'static,
    {
        let identity = identity_of(&factory);
        let entry = Entry {
            factory: Arc::new(factory),
            identity,
        };
        self.table.write().insert(key, entry).map(|e| e.factory)
    }

    /// Registers `factory` under `key` (see the [module docs](self) for how a device's
    /// kernel is chosen). Registering the same factory again under the same key succeeds
    /// and changes nothing.
    ///
    /// # Errors
    /// [`RegistryError::AlreadyRegistered`] when another factory has the key;
    /// [`RegistryError::InvalidKey`] for an empty op name or device type.
    pub fn register<F>(&self, key: KernelKey, factory: F) -> Result<(), RegistryError>
    where
        F: Fn(&KernelInit<'_>) -> Result<BoxedKernel, KernelError> + Send + Sync + 'static,
    {
        check_key(&key)?;
        let identity = identity_of(&factory);
        let mut table = self.table.write();
        if let Some(existing) = table.get(&key) {
            if existing.identity == identity {
                return Ok(());
            }
            return Err(RegistryError::AlreadyRegistered {
                op: key.op,
                device_type: key.device_type,
                backend: key.backend,
            });
        }
        table.insert(
            key,
            Entry {
                factory: Arc::new(factory),
                identity,
            },
        );
        Ok(())
    }

    /// Registers `factory` under `key`, replacing (and returning) any factory there: how a
    /// user overrides one kernel of a backend.
    ///
    /// # Errors
    /// [`RegistryError::InvalidKey`] for an empty op name or device type.
    pub fn replace<F>(
        &self,
        key: KernelKey,
        factory: F,
    ) -> Result<Option<KernelFactory>, RegistryError>
    where
        F: Fn(&KernelInit<'_>) -> Result<BoxedKernel, KernelError> + Send + Sync + 'static,
    {
        check_key(&key)?;
        Ok(self.insert(key, factory))
    }

    /// Removes the factory under `key`, returning it.
    pub fn remove(&self, key: &KernelKey) -> Option<KernelFactory> {
        self.table.write().remove(key).map(|e| e.factory)
    }

    /// The factory for `op` on `device`: its backend's, else its type's, else an
    /// [`ANY_DEVICE`] one.
    pub fn lookup(&self, op: &str, device: &dyn Device) -> Option<KernelFactory> {
        self.lookup_for(op, device.device_type(), device.backend())
    }

    /// The factory for `op` on a device of `device_type` made by `backend`, in the order
    /// of the [module docs](self).
    pub fn lookup_for(&self, op: &str, device_type: &str, backend: &str) -> Option<KernelFactory> {
        let table = self.table.read();
        let mut key = KernelKey::new(op, device_type).backend(backend);
        if !backend.is_empty() {
            if let Some(e) = table.get(&key) {
                return Some(e.factory.clone());
            }
            key.backend = GENERIC_BACKEND.to_string();
        }
        if let Some(e) = table.get(&key) {
            return Some(e.factory.clone());
        }
        key.device_type = ANY_DEVICE.to_string();
        table.get(&key).map(|e| e.factory.clone())
    }

    /// Whether `device` has a kernel for `op` (see [`lookup`](Self::lookup)).
    pub fn has_kernel(&self, op: &str, device: &dyn Device) -> bool {
        self.lookup(op, device).is_some()
    }

    /// Whether some backend has a kernel for `op` on devices of `device_type` (or every
    /// device): what a master knows of another task's device.
    pub fn has_kernel_for_type(&self, op: &str, device_type: &str) -> bool {
        let table = self.table.read();
        table.keys().any(|k| {
            k.op == op
                && (k.device_type.eq_ignore_ascii_case(device_type) || k.device_type == ANY_DEVICE)
        })
    }

    /// The ops with a kernel registered for exactly `device_type` (any backend), sorted
    /// and without repeats.
    pub fn kernels_for(&self, device_type: &str) -> Vec<String> {
        let mut ops: Vec<String> = self
            .table
            .read()
            .keys()
            .filter(|k| k.device_type.eq_ignore_ascii_case(device_type))
            .map(|k| k.op.clone())
            .collect();
        ops.sort();
        ops.dedup();
        ops
    }

    /// The ops `device` has a kernel of its own for — its backend's or its type's — sorted
    /// and without repeats.
    pub fn kernels_for_device(&self, device: &dyn Device) -> Vec<String> {
        let backend = device.backend();
        let mut ops: Vec<String> = self
            .table
            .read()
            .keys()
            .filter(|k| {
                k.device_type.eq_ignore_ascii_case(device.device_type())
                    && (k.backend.is_empty() || k.backend == backend)
            })
            .map(|k| k.op.clone())
            .collect();
        ops.sort();
        ops.dedup();
        ops
    }
}

fn check_key(key: &KernelKey) -> Result<(), RegistryError> {
    if key.op.is_empty() || key.device_type.is_empty() {
        return Err(RegistryError::InvalidKey {
            op: key.op.clone(),
            device_type: key.device_type.clone(),
        });
    }
    Ok(())
}

/// Registers `factory` for `op` on every device of `device_type` in the
/// [global](KernelRegistry::global) registry ([`ANY_DEVICE`]: every device). Sessions
/// built without a registry of their own use these kernels; a library that may share a
/// process with others prefers a [`KernelRegistry`] of its own.
///
/// ```
/// use magpie_core::kernel::{BoxedKernel, Kernel, KernelContext, KernelError, KernelInit};
/// use magpie_core::registry::{has_kernel, register_kernel};
///
/// struct Echo;
/// impl Kernel for Echo {
///     fn compute(&self, ctx: &mut KernelContext<'_>) -> Result<(), KernelError> {
///         let x = ctx.take_input(0);
///         ctx.push_output(x);
///         Ok(())
///     }
/// }
/// fn echo(_: &KernelInit<'_>) -> Result<BoxedKernel, KernelError> {
///     Ok(BoxedKernel::Sync(Box::new(Echo)))
/// }
/// register_kernel("Identity", "DOC_DEVICE", echo)?;
/// register_kernel("Identity", "DOC_DEVICE", echo)?; // the same factory: no change
/// assert!(has_kernel("Identity", "DOC_DEVICE"));
/// # Ok::<(), magpie_core::registry::RegistryError>(())
/// ```
///
/// # Errors
/// [`RegistryError::AlreadyRegistered`] when another factory is registered for the pair
/// (registering the same `fn` or capture-less closure again succeeds);
/// [`RegistryError::InvalidKey`] for an empty op or device type.
pub fn register_kernel(
    op: &str,
    device_type: &str,
    factory: impl Fn(&KernelInit<'_>) -> Result<BoxedKernel, KernelError> + Send + Sync + 'static,
) -> Result<(), RegistryError> {
    GLOBAL.register(KernelKey::new(op, device_type), factory)
}

/// The global registry's factory for `op` on devices of `device_type` in general, falling
/// back to an [`ANY_DEVICE`] one. [`KernelRegistry::lookup`] also finds a device's
/// backend's kernels.
pub fn lookup_kernel(op: &str, device_type: &str) -> Option<KernelFactory> {
    GLOBAL.lookup_for(op, device_type, GENERIC_BACKEND)
}

/// Whether the global registry has a kernel for `op` on `device_type` (from any backend,
/// or through [`ANY_DEVICE`]).
pub fn has_kernel(op: &str, device_type: &str) -> bool {
    GLOBAL.has_kernel_for_type(op, device_type)
}

/// The ops with a kernel registered for exactly `device_type` in the global registry
/// (any backend), sorted.
pub fn kernels_for(device_type: &str) -> Vec<String> {
    GLOBAL.kernels_for(device_type)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::DeviceName;

    #[derive(Debug)]
    struct Dev(DeviceName, &'static str);

    impl Device for Dev {
        fn name(&self) -> &DeviceName {
            &self.0
        }
        fn backend(&self) -> &str {
            self.1
        }
    }

    fn a(_: &KernelInit<'_>) -> Result<BoxedKernel, KernelError> {
        Err(KernelError::Internal("a".into()))
    }

    fn b(_: &KernelInit<'_>) -> Result<BoxedKernel, KernelError> {
        Err(KernelError::Internal("b".into()))
    }

    fn which(r: &KernelRegistry, op: &str, d: &Dev) -> Option<String> {
        let node = Arc::new(crate::graph::Node::new("n", op));
        let device: Arc<dyn Device> = Arc::new(Dev(d.0.clone(), d.1));
        let init = KernelInit {
            node: &node,
            input_dtypes: &[],
            device: &device,
        };
        match r.lookup(op, d)?(&init) {
            Err(KernelError::Internal(s)) => Some(s),
            Ok(_) => Some("ok".into()),
            Err(e) => Some(e.to_string()),
        }
    }

    #[test]
    fn same_factory_twice_is_idempotent_another_is_an_error() {
        let r = KernelRegistry::new();
        let key = KernelKey::new("X", "gpu");
        r.register(key.clone(), a).unwrap();
        r.register(key.clone(), a).unwrap();
        let closure = |_: &KernelInit<'_>| Err(KernelError::Cancelled);
        let e = r.register(key.clone(), b).unwrap_err();
        assert!(
            e.to_string().contains("\"X\" on device type \"GPU\""),
            "{e}"
        );
        r.register(KernelKey::new("Y", "GPU"), closure).unwrap();
        r.register(KernelKey::new("Y", "GPU"), closure).unwrap();
        let n = 3;
        let stateful = move |_: &KernelInit<'_>| Err(KernelError::Internal(n.to_string()));
        r.register(KernelKey::new("Z", "GPU"), stateful).unwrap();
        assert!(r.register(KernelKey::new("Z", "GPU"), stateful).is_err());
        assert!(r.replace(KernelKey::new("X", "GPU"), b).unwrap().is_some());
        assert!(matches!(
            r.register(KernelKey::new("", "GPU"), a),
            Err(RegistryError::InvalidKey { .. })
        ));
    }

    #[test]
    fn two_backends_of_one_type_do_not_collide() {
        let r = KernelRegistry::new();
        r.register(KernelKey::new("X", "GPU").backend("one"), a)
            .unwrap();
        r.register(KernelKey::new("X", "GPU").backend("two"), b)
            .unwrap();
        let gpu = |backend| Dev(DeviceName::local("GPU", 0), backend);
        assert_eq!(which(&r, "X", &gpu("one")).as_deref(), Some("a"));
        assert_eq!(which(&r, "X", &gpu("two")).as_deref(), Some("b"));
        assert_eq!(which(&r, "X", &gpu("")), None);
        r.register(KernelKey::new("X", "GPU"), a).unwrap();
        assert_eq!(which(&r, "X", &gpu("three")).as_deref(), Some("a"));
        assert_eq!(which(&r, "NoOp", &gpu("")).as_deref(), Some("ok"));
        assert_eq!(r.kernels_for("gpu"), ["X"]);
        assert!(r.has_kernel_for_type("X", "GPU"));
    }

    #[test]
    fn registries_are_separate() {
        let (r1, r2) = (KernelRegistry::new(), KernelRegistry::new());
        r1.register(KernelKey::new("X", "CPU"), a).unwrap();
        assert!(r2.lookup_for("X", "CPU", "").is_none());
        assert!(!r1.same_as(&r2));
        assert!(r1.same_as(&r1.clone()));
        assert!(KernelRegistry::global().same_as(&KernelRegistry::global()));
    }
}
