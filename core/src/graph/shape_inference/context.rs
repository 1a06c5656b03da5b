//! What a shape function sees ([`InferenceContext`]: its node's input shapes, dtypes and
//! attributes) and what it returns ([`ShapeFn`], [`ShapeError`]).

use std::fmt;

use super::partial_shape::PartialShape;
use crate::graph::attr::Attrs;
use crate::graph::error::OpDefError;
use crate::tensor::DType;

/// Why shapes do not fit an op, in words that name the shapes involved
/// (`MatMul shapes [1, 2] and [3, 1] do not match ...`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ShapeError(String);

impl ShapeError {
    /// An error with this message.
    pub fn new(message: impl Into<String>) -> ShapeError {
        ShapeError(message.into())
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.0
    }
}

/// A shape function: the shapes of a node's outputs from what is known of its inputs'
/// shapes and its attributes, one per output. It must not fail because something is
/// unknown — only because what is known cannot work.
///
/// # Errors
/// [`OpDefError::Shape`] when the known shapes cannot work (the builder names the node);
/// [`OpDefError::Attr`] for a missing or mistyped attribute.
pub type ShapeFn =
    dyn Fn(&InferenceContext<'_>) -> Result<Vec<PartialShape>, OpDefError> + Send + Sync;

/// The inputs of one shape function call: the node's op, the inferred shapes and dtypes
/// of its data inputs, its attributes and its output dtypes.
pub struct InferenceContext<'a> {
    op: &'a str,
    inputs: &'a [PartialShape],
    input_dtypes: &'a [DType],
    output_dtypes: &'a [DType],
    attrs: &'a Attrs,
}

impl<'a> InferenceContext<'a> {
    /// A context for a node of `op`; `inputs` and `input_dtypes` are in input order.
    pub fn new(
        op: &'a str,
        inputs: &'a [PartialShape],
        input_dtypes: &'a [DType],
        output_dtypes: &'a [DType],
        attrs: &'a Attrs,
    ) -> InferenceContext<'a> {
        InferenceContext {
            op,
            inputs,
            input_dtypes,
            output_dtypes,
            attrs,
        }
    }

    /// The op name.
    pub fn op(&self) -> &str {
        self.op
    }

    /// The number of data inputs.
    pub fn num_inputs(&self) -> usize {
        self.inputs.len()
    }

    /// What is known of input `i`'s shape (unknown for an index past the inputs).
    pub fn input(&self, i: usize) -> PartialShape {
        self.inputs.get(i).cloned().unwrap_or_default()
    }

    /// Every input's shape, in order.
    pub fn inputs(&self) -> &[PartialShape] {
        self.inputs
    }

    /// The dtypes of the data inputs, in order.
    pub fn input_dtypes(&self) -> &[DType] {
        self.input_dtypes
    }

    /// The dtypes of the outputs (inferred before the shapes): how many shapes to return.
    pub fn output_dtypes(&self) -> &[DType] {
        self.output_dtypes
    }

    /// The number of outputs.
    pub fn num_outputs(&self) -> usize {
        self.output_dtypes.len()
    }

    /// The node's attributes.
    pub fn attrs(&self) -> &Attrs {
        self.attrs
    }

    /// Every output unknown: the shapes of an op without a shape function.
    pub fn unknown_outputs(&self) -> Vec<PartialShape> {
        vec![PartialShape::unknown(); self.num_outputs()]
    }
}

impl fmt::Debug for InferenceContext<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InferenceContext")
            .field("op", &self.op)
            .field("inputs", &self.inputs)
            .field("input_dtypes", &self.input_dtypes)
            .field("output_dtypes", &self.output_dtypes)
            .finish_non_exhaustive()
    }
}
