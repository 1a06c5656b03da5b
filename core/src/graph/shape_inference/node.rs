//! Running an op's shape function on one node, as the builder does for every node it
//! adds: unknown outputs for an op without one, and a check that it gave one shape per
//! output.

use super::context::InferenceContext;
use super::partial_shape::PartialShape;
use crate::graph::attr::Attrs;
use crate::graph::error::OpDefError;
use crate::graph::op_def::OpDef;
use crate::tensor::DType;

/// The output shapes of a node of `def` with these inputs, attributes and output dtypes.
pub(crate) fn output_shapes(
    def: &OpDef,
    inputs: &[PartialShape],
    input_dtypes: &[DType],
    output_dtypes: &[DType],
    attrs: &Attrs,
) -> Result<Vec<PartialShape>, OpDefError> {
    let ctx = InferenceContext::new(&def.name, inputs, input_dtypes, output_dtypes, attrs);
    let Some(shape_fn) = &def.shape_fn else {
        return Ok(ctx.unknown_outputs());
    };
    let shapes = shape_fn(&ctx)?;
    if shapes.len() != output_dtypes.len() {
        return Err(OpDefError::Invalid(format!(
            "the shape function of {} gave {} shapes for {} outputs",
            def.name,
            shapes.len(),
            output_dtypes.len()
        )));
    }
    Ok(shapes)
}
