//! The resource manager: where stateful kernels keep state that outlives a step.
//!
//! A [`ResourceMgr`] belongs to a local session (by default) or to a cluster task, where
//! every session of the task shares it — so a variable placed on the `ps` task keeps its
//! value across steps and sessions until the task [resets](ResourceMgr::reset) its
//! container. Kernels reach it through
//! [`KernelContext::resources`](crate::kernel::KernelContext::resources) and
//! [`AsyncKernelContext::resources`](crate::kernel::AsyncKernelContext::resources).
//!
//! Two kinds of entries:
//! - **resources**, keyed by (container, name), any `Send + Sync` type (variables are
//!   [`Variable`]s); [`reset`](ResourceMgr::reset) drops a container's;
//! - **services**, one per type, never reset: what the hosting task offers its kernels
//!   (the rendezvous and transport that Send/Recv use on a cluster task).

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};

use crate::tensor::{DType, Tensor};

/// The container used when a stateful op names none.
pub const DEFAULT_CONTAINER: &str = "";

type Entry = Arc<dyn Any + Send + Sync>;

/// Resources by (container, name), and services by type. Cheap to share (`Arc`).
///
/// Kernels of stateful ops (variables, queues, readers) keep their state here, reached
/// through [`KernelContext::resources`](crate::kernel::KernelContext::resources); it
/// outlives steps, and a session or task owns one.
///
/// ```
/// use magpie_core::resource::{ResourceMgr, Variable};
/// use magpie_core::tensor::{DType, Tensor};
///
/// let resources = ResourceMgr::new();
/// let v = resources.lookup_or_create("", "weights", || Variable::new(DType::F32))?;
/// v.assign(Tensor::scalar(1.5f32));
/// // The same resource by name, from anywhere holding the manager.
/// let again = resources.lookup::<Variable>("", "weights")?.expect("created above");
/// assert_eq!(again.read(), Some(Tensor::scalar(1.5f32)));
/// // Asking for it as another type is an error naming it.
/// assert!(resources.lookup::<String>("", "weights").is_err());
/// assert_eq!(resources.reset(""), 1);
/// # Ok::<(), magpie_core::resource::ResourceTypeError>(())
/// ```
#[derive(Default)]
pub struct ResourceMgr {
    containers: RwLock<HashMap<String, HashMap<String, Entry>>>,
    services: RwLock<HashMap<TypeId, Entry>>,
}

impl fmt::Debug for ResourceMgr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = self.containers.read();
        let mut names: Vec<String> = c
            .iter()
            .flat_map(|(k, v)| v.keys().map(move |n| format!("{k:?}/{n}")))
            .collect();
        names.sort();
        f.debug_struct("ResourceMgr")
            .field("resources", &names)
            .field("services", &self.services.read().len())
            .finish()
    }
}

/// A resource exists under this name with another type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("resource {container:?}/{name} exists with another type than {wanted}")]
pub struct ResourceTypeError {
    /// Container.
    pub container: String,
    /// Name.
    pub name: String,
    /// The type asked for.
    pub wanted: &'static str,
}

impl ResourceMgr {
    /// An empty manager.
    pub fn new() -> ResourceMgr {
        ResourceMgr::default()
    }

    /// The resource `container`/`name`, created by `make` when absent.
    ///
    /// # Errors
    /// [`ResourceTypeError`] when a resource of another type exists under that name.
    pub fn lookup_or_create<T: Any + Send + Sync>(
        &self,
        container: &str,
        name: &str,
        make: impl FnOnce() -> T,
    ) -> Result<Arc<T>, ResourceTypeError> {
        if let Some(found) = self.lookup::<T>(container, name)? {
            return Ok(found);
        }
        let mut c = self.containers.write();
        let entry = c
            .entry(container.to_string())
            .or_default()
            .entry(name.to_string())
            .or_insert_with(|| Arc::new(make()) as Entry)
            .clone();
        entry.downcast::<T>().map_err(|_| ResourceTypeError {
            container: container.to_string(),
            name: name.to_string(),
            wanted: std::any::type_name::<T>(),
        })
    }

    /// The resource `container`/`name`, if it exists.
    ///
    /// # Errors
    /// [`ResourceTypeError`] when it exists with another type than `T`.
    pub fn lookup<T: Any + Send + Sync>(
        &self,
        container: &str,
        name: &str,
    ) -> Result<Option<Arc<T>>, ResourceTypeError> {
        let c = self.containers.read();
        let Some(entry) = c.get(container).and_then(|m| m.get(name)) else {
            return Ok(None);
        };
        Arc::clone(entry)
            .downcast::<T>()
            .map(Some)
            .map_err(|_| ResourceTypeError {
                container: container.to_string(),
                name: name.to_string(),
                wanted: std::any::type_name::<T>(),
            })
    }

    /// Drops every resource of `container`; returns how many there were. Kernels still
    /// holding one keep their `Arc` until they finish, but nobody finds it any more.
    pub fn reset(&self, container: &str) -> usize {
        self.containers
            .write()
            .remove(container)
            .map_or(0, |m| m.len())
    }

    /// Drops every resource of every container (services stay).
    pub fn reset_all(&self) -> usize {
        let mut c = self.containers.write();
        let n = c.values().map(HashMap::len).sum();
        c.clear();
        n
    }

    /// The number of resources in `container`.
    pub fn len(&self, container: &str) -> usize {
        self.containers.read().get(container).map_or(0, |m| m.len())
    }

    /// Installs the service of type `T` (replacing any earlier one).
    pub fn set_service<T: Any + Send + Sync>(&self, service: Arc<T>) {
        self.services
            .write()
            .insert(TypeId::of::<T>(), service as Entry);
    }

    /// The service of type `T`, if the host installed one.
    pub fn service<T: Any + Send + Sync>(&self) -> Option<Arc<T>> {
        let s = self.services.read();
        s.get(&TypeId::of::<T>())
            .and_then(|e| Arc::clone(e).downcast::<T>().ok())
    }
}

/// A mutable tensor that lives in a [`ResourceMgr`]: the state behind the variable ops.
#[derive(Debug)]
pub struct Variable {
    dtype: DType,
    value: Mutex<Option<Tensor>>,
}

impl Variable {
    /// An uninitialised variable of `dtype`.
    pub fn new(dtype: DType) -> Variable {
        Variable {
            dtype,
            value: Mutex::new(None),
        }
    }

    /// Its dtype.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Its value (shared, not copied), or `None` before the first assignment.
    pub fn read(&self) -> Option<Tensor> {
        self.value.lock().clone()
    }

    /// Replaces the value.
    pub fn assign(&self, value: Tensor) {
        *self.value.lock() = Some(value);
    }

    /// Applies `f` to the value under the variable's lock (read-modify-write is atomic
    /// with respect to other updates), storing and returning what it gives.
    ///
    /// # Errors
    /// Whatever `f` returns; the value is then unchanged.
    pub fn update<E>(
        &self,
        f: impl FnOnce(Option<&Tensor>) -> Result<Tensor, E>,
    ) -> Result<Tensor, E> {
        let mut g = self.value.lock();
        let new = f(g.as_ref())?;
        *g = Some(new.clone());
        Ok(new)
    }
}

/// Applies `f` to the values of several variables under all their locks at once, storing
/// what it returns (one tensor per variable, in `vars`' order): a read-modify-write of a
/// variable and its optimizer slots that no other update interleaves with.
///
/// Locks are taken in address order, so two calls over overlapping sets cannot deadlock;
/// a variable listed twice is locked once (it sees one value, and the last of its results
/// is stored). `f` returning fewer tensors than `vars` stores only those.
///
/// # Errors
/// What `f` returns; then nothing is stored.
pub fn update_variables<E>(
    vars: &[&Variable],
    f: impl FnOnce(&[Option<Tensor>]) -> Result<Vec<Tensor>, E>,
) -> Result<Vec<Tensor>, E> {
    let addr = |v: &Variable| v as *const Variable as usize;
    let mut order: Vec<&Variable> = vars.to_vec();
    order.sort_by_key(|v| addr(v));
    order.dedup_by_key(|v| addr(v));
    // Lock protocol: every caller locks in ascending address order, holding each lock
    // until all are taken; no lock is taken twice.
    let mut guards: Vec<(usize, parking_lot::MutexGuard<'_, Option<Tensor>>)> =
        order.iter().map(|v| (addr(v), v.value.lock())).collect();
    let slot = |v: &Variable, guards: &[(usize, _)]| {
        guards.partition_point(|(a, _): &(usize, _)| *a < addr(v))
    };
    let current: Vec<Option<Tensor>> = vars
        .iter()
        .map(|v| guards[slot(v, &guards)].1.clone())
        .collect();
    let new = f(&current)?;
    for (v, t) in vars.iter().zip(&new) {
        let k = slot(v, &guards);
        *guards[k].1 = Some(t.clone());
    }
    Ok(new)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resources_by_container_and_reset() {
        let m = ResourceMgr::new();
        let v = m
            .lookup_or_create("c", "w", || Variable::new(DType::F32))
            .unwrap();
        v.assign(Tensor::scalar(1.0f32));
        let again = m
            .lookup_or_create("c", "w", || Variable::new(DType::F32))
            .unwrap();
        assert!(Arc::ptr_eq(&v, &again));
        assert!(m.lookup::<String>("c", "w").is_err());
        assert_eq!(m.len("c"), 1);
        assert_eq!(m.reset("c"), 1);
        assert!(m.lookup::<Variable>("c", "w").unwrap().is_none());
    }

    #[test]
    fn update_variables_is_one_read_modify_write_over_all() {
        let a = Variable::new(DType::F32);
        let b = Variable::new(DType::F32);
        a.assign(Tensor::scalar(1.0f32));
        // `a` twice: locked once, no deadlock; `b` uninitialised is seen as None.
        let out = update_variables(&[&a, &b, &a], |cur| {
            assert!(cur[1].is_none());
            let x = cur[0].as_ref().unwrap().scalar_value::<f32>().unwrap();
            Ok::<_, ()>(vec![
                Tensor::scalar(x + 1.0),
                Tensor::scalar(x * 10.0),
                Tensor::scalar(x + 2.0),
            ])
        })
        .unwrap();
        assert_eq!(out.len(), 3);
        assert_eq!(a.read().unwrap().scalar_value::<f32>().unwrap(), 3.0);
        assert_eq!(b.read().unwrap().scalar_value::<f32>().unwrap(), 10.0);
        // An error stores nothing.
        assert_eq!(
            update_variables(&[&a, &b], |_| Err::<Vec<Tensor>, _>(7)),
            Err(7)
        );
        assert_eq!(a.read().unwrap().scalar_value::<f32>().unwrap(), 3.0);
    }

    #[test]
    fn services_survive_reset() {
        let m = ResourceMgr::new();
        m.set_service(Arc::new(42u32));
        m.reset_all();
        assert_eq!(*m.service::<u32>().unwrap(), 42);
        assert!(m.service::<u64>().is_none());
    }
}
