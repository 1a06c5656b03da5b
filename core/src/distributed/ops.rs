//! Definitions of the distributed ops — `_Send`/`_Recv` (inserted by the partitioner,
//! never written by users) and the variable ops — and the graph helpers for variables.
//!
//! Variables are named resources (container + shared name) in the
//! [`ResourceMgr`](crate::resource::ResourceMgr) of the task (or local session) where
//! they are placed:
//! - `VarHandleOp` declares one (attrs `container`, `shared_name`, `dtype`); no outputs,
//!   it anchors the variable's placement;
//! - `ReadVariableOp` outputs its value (an error before the first assignment);
//! - `AssignVariableOp(value)` replaces it and outputs the new value;
//! - `AssignAddVariableOp(delta)` adds to it and outputs the new value.
//!
//! The helpers ([`Graph::variable`], [`VariableRef`]) colocate every op of a variable
//! with its `VarHandleOp` (attribute [`COLOCATE_ATTR`]), so the master places them all
//! on the variable's device.

use std::sync::Once;

use crate::graph::{
    register_op, unchanged_shape, Arity, Graph, GraphError, NodeId, OpDef, OpDefError, Output,
};
use crate::resource::DEFAULT_CONTAINER;
use crate::tensor::DType;

/// The op that pushes a tensor to another task (inserted by the partitioner).
pub const SEND_OP: &str = "_Send";
/// The op that waits for a tensor from another task (inserted by the partitioner).
pub const RECV_OP: &str = "_Recv";
/// Attribute of `_Send`/`_Recv`: the rendezvous edge name, unique per plan.
pub const EDGE_ATTR: &str = "edge";
/// Attribute of `_Send`: the receiving task, `/job:j/task:i`.
pub const DST_TASK_ATTR: &str = "dst_task";
/// Attribute of `_Send` that the worker sets when it registers a partition: the master
/// session the partition belongs to (the receiving task checks it).
pub const SESSION_ATTR: &str = "_magpie_session";
/// Attribute of `_Send` that the worker sets when it registers a partition and its
/// transport sends eagerly: the kernel completes once the transfer started, and the
/// worker takes the answer at the end of the step (see `outbox.rs` and `unacked.rs`).
pub const EAGER_SEND_ATTR: &str = "_magpie_eager_send";
/// Attribute of `_Recv` that the master sets on a receive whose tensor depends, through
/// other tasks, on nothing the partition computes, when every receive of the partition
/// carries it or [`RECV_AFTER_FIRST_STAGE_ATTR`]: the worker awaits it before the step
/// starts and runs the step with its tensor as a feed (on the polling thread when it is
/// short).
pub const RECV_BEFORE_STEP_ATTR: &str = "_magpie_recv_before_step";
/// Attribute of `_Recv` that the master sets on a receive whose tensor depends on what
/// the partition's first stage computes (a path leaves the task and comes back once):
/// the worker runs the nodes no such receive reaches first, then awaits these receives,
/// then runs the rest (`early_recv.rs`, `stages.rs`).
pub const RECV_AFTER_FIRST_STAGE_ATTR: &str = "_magpie_recv_after_first_stage";
/// Attribute naming the node whose device a node must share (set by the variable
/// helpers; honoured by the master's placement).
pub const COLOCATE_ATTR: &str = "_colocate_with";

/// Registers the op definitions once per process (every function here calls it).
pub fn ensure_registered() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let var_dtype = |attrs: &crate::graph::Attrs| -> Result<DType, OpDefError> {
            attrs.string("shared_name")?;
            Ok(attrs.dtype("dtype")?)
        };
        let defs = [
            OpDef::new(SEND_OP, Arity::AtLeast(0), |ins, attrs| {
                if ins.len() > 1 {
                    return Err(OpDefError::Invalid("_Send takes at most one input".into()));
                }
                attrs.string(EDGE_ATTR)?;
                attrs.string(DST_TASK_ATTR)?;
                Ok(vec![])
            }),
            OpDef::new(RECV_OP, Arity::Exact(0), |_, attrs| {
                attrs.string(EDGE_ATTR)?;
                Ok(vec![attrs.dtype("dtype")?])
            }),
            OpDef::new("VarHandleOp", Arity::Exact(0), move |_, attrs| {
                var_dtype(attrs)?;
                Ok(vec![])
            }),
            OpDef::new("ReadVariableOp", Arity::Exact(0), move |_, attrs| {
                Ok(vec![var_dtype(attrs)?])
            }),
            OpDef::new("AssignVariableOp", Arity::Exact(1), move |ins, attrs| {
                let t = var_dtype(attrs)?;
                check_input(ins, t)?;
                Ok(vec![t])
            })
            .with_shape_fn(unchanged_shape),
            OpDef::new("AssignAddVariableOp", Arity::Exact(1), move |ins, attrs| {
                let t = var_dtype(attrs)?;
                if !t.is_numeric() {
                    return Err(OpDefError::Invalid(format!("cannot add to a {t} variable")));
                }
                check_input(ins, t)?;
                Ok(vec![t])
            })
            .with_shape_fn(unchanged_shape),
        ];
        for def in defs {
            // Already registered (by an earlier copy of this crate's state): keep it.
            let _ = register_op(def);
        }
    });
}

fn check_input(ins: &[DType], t: DType) -> Result<(), OpDefError> {
    if ins[0] != t {
        return Err(OpDefError::DType {
            input: 0,
            expected: t.to_string(),
            got: ins[0],
        });
    }
    Ok(())
}

/// A variable declared in a graph: build its reads and updates with these methods.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VariableRef {
    /// The `VarHandleOp` node (a target that just declares the variable).
    pub handle: NodeId,
    /// Its node name (what the other ops are colocated with).
    pub node_name: String,
    /// The resource container.
    pub container: String,
    /// The variable's name in the container.
    pub shared_name: String,
    /// Its dtype.
    pub dtype: DType,
}

impl VariableRef {
    fn build(&self, g: &Graph, op: &str, input: Option<Output>) -> Result<Output, GraphError> {
        let handle = g
            .node(self.handle)
            .ok_or_else(|| GraphError::NodeNotFound {
                role: "variable".into(),
                name: self.node_name.clone(),
            })?;
        let mut b = g
            .op(op)
            .attr("container", self.container.as_str())
            .attr("shared_name", self.shared_name.as_str())
            .attr("dtype", self.dtype)
            .attr(COLOCATE_ATTR, self.node_name.as_str());
        if !handle.device.is_empty() {
            b = b.device(&handle.device.to_string());
        }
        if let Some(i) = input {
            b = b.input(i);
        }
        b.build_output()
    }

    /// Reads the value.
    ///
    /// # Errors
    ///
    /// [`GraphError::NodeNotFound`] if the variable's handle is not a node of `g`;
    /// otherwise as [`OpBuilder::build`](crate::graph::OpBuilder::build).
    pub fn read(&self, g: &Graph) -> Result<Output, GraphError> {
        self.build(g, "ReadVariableOp", None)
    }

    /// Assigns `value`; outputs the new value.
    ///
    /// # Errors
    ///
    /// As [`VariableRef::read`]; [`GraphError::DTypeMismatch`] when `value` is not of the
    /// variable's dtype.
    pub fn assign(&self, g: &Graph, value: Output) -> Result<Output, GraphError> {
        self.build(g, "AssignVariableOp", Some(value))
    }

    /// Adds `delta`; outputs the new value.
    ///
    /// # Errors
    ///
    /// As [`VariableRef::assign`]; [`GraphError::InvalidNode`] for a variable whose
    /// dtype is not numeric.
    pub fn assign_add(&self, g: &Graph, delta: Output) -> Result<Output, GraphError> {
        self.build(g, "AssignAddVariableOp", Some(delta))
    }
}

impl Graph {
    /// Declares the variable `name` (in the default container) of `dtype`, placed by the
    /// handle's device scope. Its value lives in the resource manager of the task (or
    /// local session) that runs it, across steps and sessions, until reset.
    ///
    /// # Errors
    ///
    /// As [`OpBuilder::build`](crate::graph::OpBuilder::build): for one,
    /// [`GraphError::DuplicateName`] when the graph already has a node named `name`.
    pub fn variable(&self, name: &str, dtype: DType) -> Result<VariableRef, GraphError> {
        self.variable_in(DEFAULT_CONTAINER, name, dtype)
    }

    /// [`Graph::variable`] in a named container (reset on its own).
    ///
    /// # Errors
    ///
    /// As [`Graph::variable`].
    pub fn variable_in(
        &self,
        container: &str,
        name: &str,
        dtype: DType,
    ) -> Result<VariableRef, GraphError> {
        ensure_registered();
        let handle = self
            .op("VarHandleOp")
            .name(name)
            .attr("container", container)
            .attr("shared_name", name)
            .attr("dtype", dtype)
            .build()?;
        Ok(VariableRef {
            handle,
            node_name: self.name_of(handle),
            container: container.to_string(),
            shared_name: name.to_string(),
            dtype,
        })
    }
}
