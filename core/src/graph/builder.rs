//! The shared, append-only graph and the [`Graph`] handle that builds it.
//!
//! A `Graph` is a handle: clones share one graph, and each handle carries its own scope
//! (name prefix, device spec, control dependencies). Scoped handles come from
//! [`Graph::name_scope`], [`Graph::device`], [`Graph::control_dependencies`] and their
//! `with_*` forms. Nodes are immutable once added and the graph only grows, so a session
//! created earlier sees nodes added later, and a plan built for some fetches stays valid.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, LazyLock, Weak};

use parking_lot::{Mutex, RwLock};
use smallvec::SmallVec;

use super::attr::{AttrValue, Attrs};
use super::check_attrs;
use super::device_spec::DeviceSpec;
use super::error::{GraphError, OpDefError};
use super::name_index::NameIndex;
use super::node::{GraphId, Node, NodeId, Output};
use super::op_def::lookup_op_named;
use super::shape_inference::{output_shapes, PartialShape};

/// The attribute listing the resource pools a node needs (list of strings).
pub const POOLS_ATTR: &str = "_pools";
/// The attribute declaring the bytes of a node's outputs (int).
pub const OUTPUT_BYTES_ATTR: &str = "_output_bytes";
/// The attribute marking a node memory-heavy (bool).
pub const MEMORY_HEAVY_ATTR: &str = "_memory_heavy";
use crate::tensor::DType;

#[derive(Default)]
struct GraphInner {
    nodes: Vec<Arc<Node>>,
    /// The inferred shapes of each node's outputs, by node position: an index into
    /// `shape_lists`, or [`NO_SHAPES`] when no output's shape is known at all. A large
    /// graph has few distinct output shapes, so a node costs 4 bytes here.
    shapes: Vec<u32>,
    /// Every distinct list of output shapes with at least one known, once.
    shape_lists: Vec<Arc<[PartialShape]>>,
    /// The position of each list in `shape_lists`.
    distinct_shapes: HashMap<Arc<[PartialShape]>, u32>,
    /// Every distinct device spec the nodes request, once: nodes share them (most
    /// graphs request a handful of devices over many nodes).
    distinct_devices: HashSet<Arc<DeviceSpec>>,
    /// Node positions by name (the names themselves are the nodes').
    by_name: NameIndex,
    /// Next suffix to try for each automatically named base name.
    auto_names: HashMap<String, usize>,
}

/// [`GraphInner::shapes`]' "no output's shape is known".
const NO_SHAPES: u32 = u32::MAX;

impl GraphInner {
    /// The inferred shape of output `output` of the node at `index`, when anything of it
    /// is known.
    fn shape(&self, index: usize, output: u32) -> Option<&PartialShape> {
        let list = *self.shapes.get(index)?;
        if list == NO_SHAPES {
            return None;
        }
        self.shape_lists[list as usize].get(output as usize)
    }

    /// The position of the node named `name`.
    fn position(&self, name: &str) -> Option<u32> {
        self.by_name
            .get(name, |i| self.nodes[i as usize].name.as_str())
    }
}

struct GraphShared {
    /// Unique among the graphs alive in this process; carried by every handle.
    id: GraphId,
    inner: RwLock<GraphInner>,
}

/// The graphs alive in this process, by id: ids are drawn so that no two live graphs
/// share one, and an error about a foreign handle can name its node.
static GRAPHS: LazyLock<Mutex<Registry>> = LazyLock::new(Mutex::default);

#[derive(Default)]
struct Registry {
    next: u32,
    live: HashMap<u32, Weak<GraphShared>>,
}

impl GraphShared {
    fn new() -> Arc<GraphShared> {
        let mut reg = GRAPHS.lock();
        let mut id = reg.next;
        while reg.live.contains_key(&id) {
            id = id.wrapping_add(1);
        }
        reg.next = id.wrapping_add(1);
        Arc::new_cyclic(|weak| {
            reg.live.insert(id, weak.clone());
            GraphShared {
                id: GraphId(id),
                inner: RwLock::default(),
            }
        })
    }
}

impl Drop for GraphShared {
    fn drop(&mut self) {
        GRAPHS.lock().live.remove(&self.id.0);
    }
}

/// The name of a node of any live graph, for messages: `"#index"` when its graph is gone.
fn describe(id: NodeId) -> String {
    let graph = GRAPHS.lock().live.get(&id.graph.0).and_then(Weak::upgrade);
    graph
        .and_then(|g| g.inner.read().nodes.get(id.index()).map(|n| n.name.clone()))
        .unwrap_or_else(|| format!("#{}", id.index))
}

/// What a scoped handle adds to every node it creates.
#[derive(Clone, Default, Debug)]
struct Scope {
    /// `outer/inner/`, or empty.
    name_prefix: String,
    device: DeviceSpec,
    control_deps: Vec<NodeId>,
    /// The exact name for nodes made through this handle ([`Graph::with_name`]).
    exact_name: Option<String>,
    /// Resource pools every node made through this handle needs.
    pools: Vec<String>,
}

/// A handle to a dataflow graph with a building scope. Cheap to clone; clones share the
/// graph.
///
/// Each builder call ([`Graph::op`] or a typed helper such as [`Graph::add`]) adds one
/// node after checking it — the op exists, the inputs belong to this graph and have
/// dtypes the op accepts, its attributes fit the op's declarations, and shapes known so
/// far can work — and returns an [`Output`] (or a [`NodeId`]) that later nodes use.
/// Scopes ([`name_scope`](Graph::name_scope), [`device`](Graph::device),
/// [`control_dependencies`](Graph::control_dependencies)) are handles too: what a scoped
/// handle adds goes into the same graph. A graph is run by a
/// [`Session`](crate::session::Session); `magpie-core` itself has kernels for no
/// arithmetic op, so running `Add` needs a backend (`magpie-cpu`, or the `magpie` crate,
/// which registers it).
///
/// ```
/// use magpie_core::graph::{Graph, GraphError};
/// use magpie_core::tensor::{DType, Shape};
///
/// let g = Graph::new();
/// let x = g.placeholder(DType::F32, Some(&Shape::new(&[2, 3])?))?;
/// let y = g.name_scope("layer", |g| {
///     let w = g.constant(vec![1.0f32, 2.0, 3.0])?;
///     g.mul(x, w) // broadcasts [2, 3] by [3]
/// })?;
/// assert_eq!(g.name_of(y.node), "layer/Mul");
/// assert_eq!(g.shape_of(y)?.to_string(), "[2, 3]");
///
/// // A mistake fails when the node is added, naming it.
/// let err = g.matmul(x, x).unwrap_err();
/// assert!(matches!(err, GraphError::InvalidNode { .. }), "{err}");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct Graph {
    shared: Arc<GraphShared>,
    scope: Arc<Scope>,
}

impl Default for Graph {
    fn default() -> Self {
        Graph::new()
    }
}

impl fmt::Debug for Graph {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Graph")
            .field("nodes", &self.len())
            .field("scope", &self.scope)
            .finish()
    }
}

impl Graph {
    /// An empty graph with the root scope.
    pub fn new() -> Graph {
        Graph {
            shared: GraphShared::new(),
            scope: Arc::default(),
        }
    }

    /// The graph's identity, carried by every [`NodeId`] and [`Output`] it makes.
    pub fn id(&self) -> GraphId {
        self.shared.id
    }

    /// Whether `id` is a node handle of this graph (any position: this does not say the
    /// node exists).
    pub fn owns(&self, id: NodeId) -> bool {
        id.graph == self.shared.id
    }

    /// Checks that `id` is a handle of this graph; `role` says what used it (`fetch`,
    /// `input 0 of node "y"`).
    ///
    /// # Errors
    ///
    /// [`GraphError::ForeignNode`], naming the node in its own graph, if `id` was made by
    /// another graph.
    pub fn check_owned(&self, id: NodeId, role: &str) -> Result<(), GraphError> {
        if self.owns(id) {
            return Ok(());
        }
        Err(GraphError::ForeignNode {
            role: role.to_string(),
            node: describe(id),
            graph: id.graph,
            expected: self.shared.id,
        })
    }

    /// Whether two handles refer to the same graph.
    pub fn same_graph(&self, other: &Graph) -> bool {
        Arc::ptr_eq(&self.shared, &other.shared)
    }

    /// The number of nodes.
    pub fn len(&self) -> usize {
        self.shared.inner.read().nodes.len()
    }

    /// Whether the graph has no nodes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The node with this id (`None` for an id of another graph).
    pub fn node(&self, id: NodeId) -> Option<Arc<Node>> {
        if !self.owns(id) {
            return None;
        }
        self.shared.inner.read().nodes.get(id.index()).cloned()
    }

    /// The node with this name.
    pub fn node_by_name(&self, name: &str) -> Option<NodeId> {
        let inner = self.shared.inner.read();
        inner.position(name).map(|index| NodeId {
            graph: self.shared.id,
            index,
        })
    }

    /// A snapshot of every node, in creation order (which is a topological order).
    ///
    /// A copy of the node list (one reference count per node; the nodes themselves are
    /// shared), taken under the graph's lock so that nodes added meanwhile are not seen:
    /// for whole-graph walks (plans, partitions, exports). For one node, use
    /// [`Graph::node`] or [`Graph::node_by_name`], which copy nothing but that node's
    /// reference.
    pub fn nodes(&self) -> Vec<Arc<Node>> {
        self.shared.inner.read().nodes.clone()
    }

    /// The name of a node (its name in its own graph if the id is of another graph, or
    /// `"#id"` if that graph is gone or has no such node).
    pub fn name_of(&self, id: NodeId) -> String {
        self.node(id)
            .map(|n| n.name.clone())
            .unwrap_or_else(|| describe(id))
    }

    /// The dtype of an output.
    ///
    /// # Errors
    /// [`GraphError::ForeignNode`] for an output of another graph;
    /// [`GraphError::OutputOutOfRange`] for an index past the node's outputs.
    pub fn dtype(&self, output: Output) -> Result<DType, GraphError> {
        let node = self.check_output(output, "dtype query")?;
        Ok(node.output_dtypes[output.index as usize])
    }

    /// What is known of an output's shape, inferred when its node was added (TensorFlow's
    /// static shape): unknown dimensions, or an unknown rank, where the inputs or
    /// attributes do not tell.
    ///
    /// ```
    /// use magpie_core::graph::{Graph, PartialShape};
    /// use magpie_core::tensor::DType;
    ///
    /// let g = Graph::new();
    /// let x = g
    ///     .op("Placeholder")
    ///     .attr("dtype", DType::F32)
    ///     .attr("shape", vec![-1, 3])
    ///     .build_output()?;
    /// let w = g.constant(magpie_core::Tensor::from_vec([3, 2], vec![0f32; 6])?)?;
    /// let y = g.matmul(x, w)?;
    /// assert_eq!(g.shape_of(y)?, PartialShape::new(&[None, Some(2)]));
    /// assert_eq!(g.shape_of(y)?.to_string(), "[?, 2]");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// An output that is not in this graph.
    pub fn shape_of(&self, output: Output) -> Result<PartialShape, GraphError> {
        self.check_output(output, "shape query")?;
        let inner = self.shared.inner.read();
        Ok(inner
            .shape(output.node.index(), output.index)
            .cloned()
            .unwrap_or_default())
    }

    /// The node of `output`, checking that the output exists.
    pub(crate) fn check_output(&self, output: Output, role: &str) -> Result<Arc<Node>, GraphError> {
        self.check_owned(output.node, role)?;
        let node = self
            .node(output.node)
            .ok_or_else(|| GraphError::NodeNotFound {
                role: role.into(),
                name: format!("#{}", output.node.index),
            })?;
        if output.index as usize >= node.num_outputs() {
            return Err(GraphError::OutputOutOfRange {
                role: role.into(),
                node: node.name.clone(),
                op: node.op.to_string(),
                index: output.index,
                num_outputs: node.num_outputs(),
            });
        }
        Ok(node)
    }

    fn child(&self, f: impl FnOnce(&mut Scope)) -> Graph {
        let mut scope = (*self.scope).clone();
        scope.exact_name = None;
        f(&mut scope);
        Graph {
            shared: Arc::clone(&self.shared),
            scope: Arc::new(scope),
        }
    }

    /// A handle whose nodes get names under `name/`.
    pub fn with_name_scope(&self, name: &str) -> Graph {
        self.child(|s| {
            s.name_prefix.push_str(name);
            s.name_prefix.push('/');
        })
    }

    /// Runs `f` with a handle whose nodes get names under `name/`.
    pub fn name_scope<T>(&self, name: &str, f: impl FnOnce(&Graph) -> T) -> T {
        f(&self.with_name_scope(name))
    }

    /// A handle whose next node is named exactly `name` (inside the name scope); a second
    /// node made through it fails with [`GraphError::DuplicateName`].
    pub fn with_name(&self, name: &str) -> Graph {
        let mut scope = (*self.scope).clone();
        scope.exact_name = Some(name.to_string());
        Graph {
            shared: Arc::clone(&self.shared),
            scope: Arc::new(scope),
        }
    }

    /// A handle whose nodes request `spec`, merged over the current device scope (fields
    /// `spec` sets win).
    ///
    /// # Errors
    /// [`GraphError::BadDeviceSpec`] for a malformed spec.
    pub fn with_device(&self, spec: &str) -> Result<Graph, GraphError> {
        let parsed = DeviceSpec::parse(spec).map_err(|source| GraphError::BadDeviceSpec {
            node: format!("device scope in {:?}", self.scope.name_prefix),
            source,
        })?;
        Ok(self.child(|s| s.device = s.device.merged_with(&parsed)))
    }

    /// Runs `f` in a device scope; see [`Graph::with_device`].
    ///
    /// # Errors
    /// [`GraphError::BadDeviceSpec`] for a malformed spec; otherwise whatever `f` returns.
    pub fn device<T>(
        &self,
        spec: &str,
        f: impl FnOnce(&Graph) -> Result<T, GraphError>,
    ) -> Result<T, GraphError> {
        f(&self.with_device(spec)?)
    }

    /// A handle whose nodes wait for `deps` (added to any dependencies of enclosing scopes).
    pub fn with_control_dependencies<N: Into<NodeId>>(
        &self,
        deps: impl IntoIterator<Item = N>,
    ) -> Graph {
        let deps: Vec<NodeId> = deps.into_iter().map(Into::into).collect();
        self.child(|s| {
            for d in deps {
                if !s.control_deps.contains(&d) {
                    s.control_deps.push(d);
                }
            }
        })
    }

    /// Runs `f` with a handle whose nodes wait for `deps`: every op created inside starts
    /// only after every node in `deps` has finished. Nested scopes accumulate.
    pub fn control_dependencies<N: Into<NodeId>, T>(
        &self,
        deps: impl IntoIterator<Item = N>,
        f: impl FnOnce(&Graph) -> T,
    ) -> T {
        f(&self.with_control_dependencies(deps))
    }

    /// A handle whose nodes each need one slot of every pool in `pools` to run (I/O
    /// throttling: a pool's capacity, set in the session options, bounds how many of its
    /// ops run at once). Added to the pools of enclosing scopes.
    pub fn with_resource_pools(&self, pools: &[&str]) -> Graph {
        self.child(|s| {
            for p in pools {
                if !s.pools.iter().any(|q| q == p) {
                    s.pools.push((*p).to_string());
                }
            }
        })
    }

    /// Runs `f` with a handle whose nodes need `pools`; see [`Graph::with_resource_pools`].
    pub fn resource_pools<T>(&self, pools: &[&str], f: impl FnOnce(&Graph) -> T) -> T {
        f(&self.with_resource_pools(pools))
    }

    /// The device spec that nodes made through this handle request.
    pub fn current_device(&self) -> &DeviceSpec {
        &self.scope.device
    }

    /// Starts a node of op `op`.
    pub fn op(&self, op: &str) -> OpBuilder<'_> {
        OpBuilder {
            graph: self,
            op: op.to_string(),
            name: None,
            inputs: Vec::new(),
            control_inputs: Vec::new(),
            device: None,
            attrs: Attrs::new(),
        }
    }

    /// Adds a fully described node after validating it. Used by [`OpBuilder::build`] and
    /// graph import.
    pub(crate) fn add_node(
        &self,
        mut node: Node,
        explicit_name: bool,
    ) -> Result<NodeId, GraphError> {
        let (def, op) = lookup_op_named(&node.op).ok_or_else(|| GraphError::UnknownOp {
            node: node.name.clone(),
            op: node.op.to_string(),
        })?;
        // Every node of the op shares its name.
        node.op = op;
        if !def.arity.accepts(node.inputs.len()) {
            return Err(GraphError::Arity {
                node: node.name.clone(),
                op: node.op.to_string(),
                expected: def.arity.to_string(),
                got: node.inputs.len(),
            });
        }
        // Handles of another graph are refused before this graph's lock is taken (naming
        // a foreign node reads its graph).
        for (i, input) in node.inputs.iter().enumerate() {
            if !self.owns(input.node) {
                self.check_owned(input.node, &format!("input {i} of node {:?}", node.name))?;
            }
        }
        for dep in &node.control_inputs {
            if !self.owns(*dep) {
                self.check_owned(*dep, &format!("control input of node {:?}", node.name))?;
            }
        }
        let mut inner = self.shared.inner.write();
        let mut in_dtypes = Vec::with_capacity(node.inputs.len());
        let mut in_shapes = Vec::with_capacity(node.inputs.len());
        for (i, input) in node.inputs.iter().enumerate() {
            let producer =
                inner
                    .nodes
                    .get(input.node.index())
                    .ok_or_else(|| GraphError::NodeNotFound {
                        role: format!("input {i} of node {:?}", node.name),
                        name: format!("#{}", input.node.index),
                    })?;
            let dtype = producer
                .output_dtypes
                .get(input.index as usize)
                .ok_or_else(|| GraphError::OutputOutOfRange {
                    role: format!("input {i} of node {:?}", node.name),
                    node: producer.name.clone(),
                    op: producer.op.to_string(),
                    index: input.index,
                    num_outputs: producer.num_outputs(),
                })?;
            in_dtypes.push(*dtype);
            let shape = inner.shape(input.node.index(), input.index);
            in_shapes.push(shape.cloned().unwrap_or_default());
        }
        for dep in &node.control_inputs {
            if dep.index() >= inner.nodes.len() {
                return Err(GraphError::NodeNotFound {
                    role: format!("control input of node {:?}", node.name),
                    name: format!("#{}", dep.index),
                });
            }
        }
        // Named first, so that errors name the node as it would have been added.
        if explicit_name {
            if inner.position(&node.name).is_some() {
                return Err(GraphError::DuplicateName(node.name));
            }
        } else {
            node.name = unique_name(&mut inner, &node.name);
        }
        // Declared attributes: checked, defaults filled in, before anything reads them.
        check_attrs(&def.attrs, &mut node.attrs)
            .map_err(|e| node_error(&node, OpDefError::Attr(e)))?;
        let out = (def.infer)(&in_dtypes, &node.attrs).map_err(|e| node_error(&node, e))?;
        let shapes = output_shapes(&def, &in_shapes, &in_dtypes, &out, &node.attrs)
            .map_err(|e| node_error(&node, e))?;
        node.output_dtypes = SmallVec::from_vec(out);
        let index = u32::try_from(inner.nodes.len()).map_err(|_| GraphError::InvalidNode {
            node: node.name.clone(),
            op: node.op.to_string(),
            reason: OpDefError::Invalid("a graph holds at most 2^32 nodes".into()),
        })?;
        let id = NodeId {
            graph: self.shared.id,
            index,
        };
        let GraphInner {
            nodes,
            by_name,
            distinct_devices,
            ..
        } = &mut *inner;
        match distinct_devices.get(&node.device) {
            Some(same) => node.device = Arc::clone(same),
            None => {
                distinct_devices.insert(Arc::clone(&node.device));
            }
        }
        by_name.insert(&node.name, index, |i| nodes[i as usize].name.as_str());
        // A graph keeps every node's lists for its lifetime: no spare capacity.
        node.inputs.shrink_to_fit();
        node.control_inputs.shrink_to_fit();
        nodes.push(Arc::new(node));
        let known = shapes.iter().any(|s| *s != PartialShape::unknown());
        let list = if known {
            match inner.distinct_shapes.get(&shapes[..]) {
                Some(&same) => same,
                None => {
                    // At most one list per node, and a node's index fits a u32 (below
                    // `NO_SHAPES`, as `index` was checked to).
                    let list = inner.shape_lists.len() as u32;
                    let new: Arc<[PartialShape]> = shapes.into();
                    inner.shape_lists.push(Arc::clone(&new));
                    inner.distinct_shapes.insert(new, list);
                    list
                }
            }
        } else {
            NO_SHAPES
        };
        inner.shapes.push(list);
        Ok(id)
    }
}

/// An op definition's rejection of `node`, naming the node.
fn node_error(node: &Node, e: OpDefError) -> GraphError {
    match e {
        OpDefError::DType {
            input,
            expected,
            got,
        } => GraphError::DTypeMismatch {
            node: node.name.clone(),
            op: node.op.to_string(),
            input,
            expected,
            got,
        },
        reason => GraphError::InvalidNode {
            node: node.name.clone(),
            op: node.op.to_string(),
            reason,
        },
    }
}

fn unique_name(inner: &mut GraphInner, base: &str) -> String {
    if inner.position(base).is_none() {
        return base.to_string();
    }
    let mut next = inner.auto_names.get(base).copied().unwrap_or(1);
    loop {
        let candidate = format!("{base}_{next}");
        next += 1;
        if inner.position(&candidate).is_none() {
            inner.auto_names.insert(base.to_string(), next);
            return candidate;
        }
    }
}

/// Builds one node: inputs, attributes, name and device, then [`OpBuilder::build`].
#[derive(Debug)]
#[must_use = "a node is added only by build()"]
pub struct OpBuilder<'g> {
    graph: &'g Graph,
    op: String,
    name: Option<String>,
    inputs: Vec<Output>,
    control_inputs: Vec<NodeId>,
    device: Option<String>,
    attrs: Attrs,
}

impl OpBuilder<'_> {
    /// Appends a data input.
    pub fn input(mut self, input: Output) -> Self {
        self.inputs.push(input);
        self
    }

    /// Appends several data inputs.
    pub fn inputs(mut self, inputs: impl IntoIterator<Item = Output>) -> Self {
        self.inputs.extend(inputs);
        self
    }

    /// Adds a control input: this node starts only after `dep` has finished.
    pub fn control_input(mut self, dep: impl Into<NodeId>) -> Self {
        self.control_inputs.push(dep.into());
        self
    }

    /// Sets an attribute.
    pub fn attr(mut self, name: &str, value: impl Into<AttrValue>) -> Self {
        self.attrs.set(name, value);
        self
    }

    /// Requires one slot of resource pool `pool` while the node runs (see
    /// [`Graph::with_resource_pools`]); stored in the `_pools` attribute.
    pub fn resource_pool(mut self, pool: &str) -> Self {
        let mut pools = self.attrs.strings(POOLS_ATTR).unwrap_or_default();
        if !pools.iter().any(|p| p == pool) {
            pools.push(pool.to_string());
        }
        self.attrs.set(POOLS_ATTR, pools);
        self
    }

    /// Declares how many bytes the node's outputs will take, so a device memory budget can
    /// hold the node back until they fit; stored in the `_output_bytes` attribute.
    pub fn declare_output_bytes(mut self, bytes: u64) -> Self {
        self.attrs.set(OUTPUT_BYTES_ATTR, bytes as i64);
        self
    }

    /// Marks the node memory-heavy: under the memory-aware policy it starts only when its
    /// consumers' other inputs are ready; stored in the `_memory_heavy` attribute.
    pub fn memory_heavy(mut self) -> Self {
        self.attrs.set(MEMORY_HEAVY_ATTR, true);
        self
    }

    /// Names the node exactly `name` (inside the name scope).
    pub fn name(mut self, name: &str) -> Self {
        self.name = Some(name.to_string());
        self
    }

    /// Requests a device, merged over the handle's device scope.
    pub fn device(mut self, spec: &str) -> Self {
        self.device = Some(spec.to_string());
        self
    }

    /// Validates and adds the node.
    ///
    /// # Errors
    /// Every error names the node (as it would have been added) and its op:
    /// [`GraphError::UnknownOp`] for an op no definition has;
    /// [`GraphError::Arity`] for the wrong number of inputs;
    /// [`GraphError::ForeignNode`], [`GraphError::NodeNotFound`] or
    /// [`GraphError::OutputOutOfRange`] for an input or control input that is not an
    /// output of this graph; [`GraphError::DTypeMismatch`] for an input dtype the op
    /// refuses; [`GraphError::InvalidNode`] for an attribute that is missing, mistyped or
    /// not declared by the op ([`OpDefError::Attr`]) or known shapes that cannot work
    /// ([`OpDefError::Shape`]); [`GraphError::DuplicateName`] for an exact name already
    /// taken; [`GraphError::BadDeviceSpec`] for a malformed device spec.
    pub fn build(self) -> Result<NodeId, GraphError> {
        let scope = &self.graph.scope;
        let explicit = self.name.as_ref().or(scope.exact_name.as_ref());
        let name = format!("{}{}", scope.name_prefix, explicit.unwrap_or(&self.op));
        let device = match &self.device {
            Some(spec) => {
                let parsed =
                    DeviceSpec::parse(spec).map_err(|source| GraphError::BadDeviceSpec {
                        node: name.clone(),
                        source,
                    })?;
                scope.device.merged_with(&parsed)
            }
            None => scope.device.clone(),
        };
        let mut attrs = self.attrs;
        if !scope.pools.is_empty() {
            let mut pools = attrs.strings(POOLS_ATTR).unwrap_or_default();
            for p in &scope.pools {
                if !pools.contains(p) {
                    pools.push(p.clone());
                }
            }
            attrs.set(POOLS_ATTR, pools);
        }
        let mut control_inputs = scope.control_deps.clone();
        for c in self.control_inputs {
            if !control_inputs.contains(&c) {
                control_inputs.push(c);
            }
        }
        let node = Node {
            name,
            op: self.op.into(),
            inputs: self.inputs,
            control_inputs,
            device: device.into(),
            attrs,
            output_dtypes: SmallVec::new(),
        };
        self.graph.add_node(node, explicit.is_some())
    }

    /// Validates and adds the node, returning its first output.
    ///
    /// # Errors
    /// As [`build`](Self::build).
    pub fn build_output(self) -> Result<Output, GraphError> {
        self.build().map(|id| id.output(0))
    }
}
