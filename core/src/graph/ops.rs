//! Typed helpers for the standard op set, so `g.add(a, b)?` reads like the math.

use super::builder::Graph;
use super::error::GraphError;
use super::node::{NodeId, Output};
use crate::tensor::{DType, Shape, Tensor};

fn dims_attr(shape: &[usize]) -> Vec<i64> {
    // Saturating: a dimension beyond `i64::MAX` stays absurdly large (and fails the shape
    // checks) instead of wrapping to a negative or "unknown" (-1) dimension.
    shape
        .iter()
        .map(|&d| i64::try_from(d).unwrap_or(i64::MAX))
        .collect()
}

impl Graph {
    /// A constant. Accepts anything that converts into a [`Tensor`] (`1.0f32`, `vec![..]`).
    ///
    /// # Errors
    /// As [`OpBuilder::build`](super::OpBuilder::build): the node is checked when added.
    pub fn constant(&self, value: impl Into<Tensor>) -> Result<Output, GraphError> {
        self.op("Const").attr("value", value.into()).build_output()
    }

    /// A placeholder that a step must feed, of `dtype` and optionally a fixed shape.
    ///
    /// # Errors
    /// As [`OpBuilder::build`](super::OpBuilder::build): the node is checked when added.
    pub fn placeholder(&self, dtype: DType, shape: Option<&Shape>) -> Result<Output, GraphError> {
        let mut b = self.op("Placeholder").attr("dtype", dtype);
        if let Some(s) = shape {
            b = b.attr("shape", dims_attr(s.dims()));
        }
        b.build_output()
    }

    /// A placeholder that takes `default`'s value when not fed.
    ///
    /// # Errors
    /// As [`OpBuilder::build`](super::OpBuilder::build): the node is checked when added.
    pub fn placeholder_with_default(&self, default: Output) -> Result<Output, GraphError> {
        self.op("PlaceholderWithDefault")
            .input(default)
            .build_output()
    }

    /// Passes its input through.
    ///
    /// # Errors
    /// As [`OpBuilder::build`](super::OpBuilder::build): the node is checked when added.
    pub fn identity(&self, x: Output) -> Result<Output, GraphError> {
        self.op("Identity").input(x).build_output()
    }

    /// A node that does nothing; with control inputs, a synchronisation point.
    ///
    /// # Errors
    /// As [`OpBuilder::build`](super::OpBuilder::build): the node is checked when added.
    pub fn no_op(&self) -> Result<NodeId, GraphError> {
        self.op("NoOp").build()
    }

    /// A `NoOp` that finishes after every node in `deps` (TensorFlow's `tf.group`).
    ///
    /// # Errors
    /// As [`OpBuilder::build`](super::OpBuilder::build): the node is checked when added.
    pub fn group<N: Into<NodeId>>(
        &self,
        deps: impl IntoIterator<Item = N>,
    ) -> Result<NodeId, GraphError> {
        let mut b = self.op("NoOp");
        for d in deps {
            b = b.control_input(d);
        }
        b.build()
    }

    /// `x + y` with numpy broadcasting.
    ///
    /// # Errors
    /// As [`OpBuilder::build`](super::OpBuilder::build): the node is checked when added.
    pub fn add(&self, x: Output, y: Output) -> Result<Output, GraphError> {
        self.op("Add").input(x).input(y).build_output()
    }

    /// `x - y` with numpy broadcasting.
    ///
    /// # Errors
    /// As [`OpBuilder::build`](super::OpBuilder::build): the node is checked when added.
    pub fn sub(&self, x: Output, y: Output) -> Result<Output, GraphError> {
        self.op("Sub").input(x).input(y).build_output()
    }

    /// `x * y` with numpy broadcasting.
    ///
    /// # Errors
    /// As [`OpBuilder::build`](super::OpBuilder::build): the node is checked when added.
    pub fn mul(&self, x: Output, y: Output) -> Result<Output, GraphError> {
        self.op("Mul").input(x).input(y).build_output()
    }

    /// `x / y` with numpy broadcasting (integer division truncates; division by zero is an
    /// error for integers).
    ///
    /// # Errors
    /// As [`OpBuilder::build`](super::OpBuilder::build): the node is checked when added.
    pub fn div(&self, x: Output, y: Output) -> Result<Output, GraphError> {
        self.op("Div").input(x).input(y).build_output()
    }

    /// `-x`.
    ///
    /// # Errors
    /// As [`OpBuilder::build`](super::OpBuilder::build): the node is checked when added.
    pub fn neg(&self, x: Output) -> Result<Output, GraphError> {
        self.op("Neg").input(x).build_output()
    }

    /// `x * x`.
    ///
    /// # Errors
    /// As [`OpBuilder::build`](super::OpBuilder::build): the node is checked when added.
    pub fn square(&self, x: Output) -> Result<Output, GraphError> {
        self.op("Square").input(x).build_output()
    }

    /// Square root (floats).
    ///
    /// # Errors
    /// As [`OpBuilder::build`](super::OpBuilder::build): the node is checked when added.
    pub fn sqrt(&self, x: Output) -> Result<Output, GraphError> {
        self.op("Sqrt").input(x).build_output()
    }

    /// `e^x` (floats).
    ///
    /// # Errors
    /// As [`OpBuilder::build`](super::OpBuilder::build): the node is checked when added.
    pub fn exp(&self, x: Output) -> Result<Output, GraphError> {
        self.op("Exp").input(x).build_output()
    }

    /// `max(x, 0)`, as TensorFlow computes it: `0` where `x < 0`, else `x` (NaN stays NaN).
    ///
    /// # Errors
    /// As [`OpBuilder::build`](super::OpBuilder::build): the node is checked when added.
    pub fn relu(&self, x: Output) -> Result<Output, GraphError> {
        self.op("Relu").input(x).build_output()
    }

    /// Matrix product of two rank-2 tensors.
    ///
    /// # Errors
    /// As [`OpBuilder::build`](super::OpBuilder::build): the node is checked when added.
    pub fn matmul(&self, a: Output, b: Output) -> Result<Output, GraphError> {
        self.matmul_t(a, b, false, false)
    }

    /// Matrix product with either operand transposed first.
    ///
    /// # Errors
    /// As [`OpBuilder::build`](super::OpBuilder::build): the node is checked when added.
    pub fn matmul_t(
        &self,
        a: Output,
        b: Output,
        transpose_a: bool,
        transpose_b: bool,
    ) -> Result<Output, GraphError> {
        self.op("MatMul")
            .input(a)
            .input(b)
            .attr("transpose_a", transpose_a)
            .attr("transpose_b", transpose_b)
            .build_output()
    }

    fn reduction(
        &self,
        op: &str,
        x: Output,
        axis: Option<i64>,
        keep_dims: bool,
    ) -> Result<Output, GraphError> {
        let mut b = self.op(op).input(x).attr("keep_dims", keep_dims);
        if let Some(a) = axis {
            b = b.attr("axis", a);
        }
        b.build_output()
    }

    /// Sum over all axes (`axis = None`) or one axis (negative counts from the end).
    ///
    /// # Errors
    /// As [`OpBuilder::build`](super::OpBuilder::build): the node is checked when added.
    pub fn sum(&self, x: Output, axis: Option<i64>, keep_dims: bool) -> Result<Output, GraphError> {
        self.reduction("Sum", x, axis, keep_dims)
    }

    /// Mean over all axes or one axis (an integer mean over no elements is 0).
    ///
    /// # Errors
    /// As [`OpBuilder::build`](super::OpBuilder::build): the node is checked when added.
    pub fn mean(
        &self,
        x: Output,
        axis: Option<i64>,
        keep_dims: bool,
    ) -> Result<Output, GraphError> {
        self.reduction("Mean", x, axis, keep_dims)
    }

    /// The same elements under a new shape; one dimension may be -1 (inferred).
    ///
    /// # Errors
    /// As [`OpBuilder::build`](super::OpBuilder::build): the node is checked when added.
    pub fn reshape(&self, x: Output, shape: &[i64]) -> Result<Output, GraphError> {
        self.op("Reshape")
            .input(x)
            .attr("shape", shape.to_vec())
            .build_output()
    }

    /// Converts elements to `dtype` (floats to integers saturate; NaN becomes 0).
    ///
    /// # Errors
    /// As [`OpBuilder::build`](super::OpBuilder::build): the node is checked when added.
    pub fn cast(&self, x: Output, dtype: DType) -> Result<Output, GraphError> {
        self.op("Cast").input(x).attr("dtype", dtype).build_output()
    }

    /// A tensor of `shape` filled with the scalar `value`.
    ///
    /// # Errors
    /// As [`OpBuilder::build`](super::OpBuilder::build): the node is checked when added.
    pub fn fill(&self, shape: &[usize], value: Output) -> Result<Output, GraphError> {
        self.op("Fill")
            .input(value)
            .attr("shape", dims_attr(shape))
            .build_output()
    }

    /// Zeros of `x`'s shape and dtype.
    ///
    /// # Errors
    /// As [`OpBuilder::build`](super::OpBuilder::build): the node is checked when added.
    pub fn zeros_like(&self, x: Output) -> Result<Output, GraphError> {
        self.op("ZerosLike").input(x).build_output()
    }

    /// Uniform floats in `[0, 1)`, reproducible for a given `seed`.
    ///
    /// # Errors
    /// As [`OpBuilder::build`](super::OpBuilder::build): the node is checked when added.
    pub fn random_uniform(
        &self,
        shape: &[usize],
        dtype: DType,
        seed: u64,
    ) -> Result<Output, GraphError> {
        self.op("RandomUniform")
            .attr("shape", dims_attr(shape))
            .attr("dtype", dtype)
            .attr("seed", seed as i64)
            .build_output()
    }
}
