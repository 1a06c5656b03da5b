//! The compute pipelines, one per shader in `shaders/`, built once per device.
//!
//! Every shader takes 64 bytes of push constants (sixteen `u32`s; see each shader's
//! header for their meaning) and binds its buffers at set 0, bindings 0.. in order.

use std::sync::Arc;

use vulkano::device::Device;
use vulkano::pipeline::compute::ComputePipelineCreateInfo;
use vulkano::pipeline::layout::PipelineDescriptorSetLayoutCreateInfo;
use vulkano::pipeline::{ComputePipeline, PipelineLayout, PipelineShaderStageCreateInfo};
use vulkano::shader::{ShaderModule, ShaderModuleCreateInfo};

use crate::shaders;

/// A compute shader of this backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Shader {
    /// `c = a OP b`, broadcasting (`binary.comp`).
    Binary,
    /// `c = a OP b` over vec4s, same shapes or scalars (`binary4.comp`).
    Binary4,
    /// `y = f(x)` (`unary.comp`).
    Unary,
    /// `y = f(x)` over vec4s (`unary4.comp`).
    Unary4,
    /// `y[i] = value[0]` (`fill.comp`).
    Fill,
    /// Sum or mean over one axis of an `[outer, r, inner]` view (`reduce.comp`).
    Reduce,
    /// Tiled matrix product with transpose flags (`matmul.comp`).
    MatMul,
    /// Softmax, LogSoftmax or softmax cross-entropy along rows (`softmax.comp`).
    Softmax,
    /// `y[i] = x[sum (c_d mod m_d) s_d]`: Tile and Transpose (`strided.comp`).
    Strided,
    /// Row copies between `[outer, len, inner]` views: GatherV2, ConcatV2 (`rows.comp`).
    Rows,
    /// f32 matrix product multiplied as f16 on cooperative matrices, accumulated in f32
    /// (`matmul_coop.wgsl`); only where [`Pipelines::f16_matmul`] is `Ok`.
    MatMulCoop,
}

/// The parameters every shader reads from its push constants.
pub(crate) type Params = [u32; 16];

/// The pipelines of one device.
pub(super) struct Pipelines {
    binary: Arc<ComputePipeline>,
    binary4: Arc<ComputePipeline>,
    unary: Arc<ComputePipeline>,
    unary4: Arc<ComputePipeline>,
    fill: Arc<ComputePipeline>,
    reduce: Arc<ComputePipeline>,
    matmul: Arc<ComputePipeline>,
    softmax: Arc<ComputePipeline>,
    strided: Arc<ComputePipeline>,
    rows: Arc<ComputePipeline>,
    /// `matmul_coop.wgsl`, or why the device cannot run it.
    matmul_coop: Result<Arc<ComputePipeline>, String>,
}

impl Pipelines {
    /// Builds every pipeline of `device`; `f16` says whether the device was opened with
    /// what `matmul_coop.wgsl` needs (or why not). A cooperative-matrix pipeline the
    /// driver refuses leaves the device without it, not unusable.
    pub(super) fn new(device: &Arc<Device>, f16: Result<(), String>) -> Result<Pipelines, String> {
        let matmul_coop = f16.and_then(|()| build(device, "matmul_coop", shaders::MATMUL_COOP));
        Ok(Pipelines {
            matmul_coop,
            binary: build(device, "binary", shaders::BINARY)?,
            binary4: build(device, "binary4", shaders::BINARY4)?,
            unary: build(device, "unary", shaders::UNARY)?,
            unary4: build(device, "unary4", shaders::UNARY4)?,
            fill: build(device, "fill", shaders::FILL)?,
            reduce: build(device, "reduce", shaders::REDUCE)?,
            matmul: build(device, "matmul", shaders::MATMUL)?,
            softmax: build(device, "softmax", shaders::SOFTMAX)?,
            strided: build(device, "strided", shaders::STRIDED)?,
            rows: build(device, "rows", shaders::ROWS)?,
        })
    }

    /// The pipeline of `shader`; `Err` with the reason only for [`Shader::MatMulCoop`] on
    /// a device without it.
    pub(super) fn get(&self, shader: Shader) -> Result<&Arc<ComputePipeline>, &str> {
        Ok(match shader {
            Shader::Binary => &self.binary,
            Shader::Binary4 => &self.binary4,
            Shader::Unary => &self.unary,
            Shader::Unary4 => &self.unary4,
            Shader::Fill => &self.fill,
            Shader::Reduce => &self.reduce,
            Shader::MatMul => &self.matmul,
            Shader::Softmax => &self.softmax,
            Shader::Strided => &self.strided,
            Shader::Rows => &self.rows,
            Shader::MatMulCoop => self.matmul_coop.as_ref().map_err(String::as_str)?,
        })
    }

    /// `Ok` where `matmul_coop.wgsl` runs on this device, else why not.
    pub(super) fn f16_matmul(&self) -> Result<(), &str> {
        self.matmul_coop
            .as_ref()
            .map(|_| ())
            .map_err(String::as_str)
    }
}

fn build(device: &Arc<Device>, name: &str, words: &[u32]) -> Result<Arc<ComputePipeline>, String> {
    let err = |e: &dyn std::fmt::Display| format!("shader {name}: {e}");
    // SAFETY: the words are SPIR-V that naga generated from `shaders/{name}.comp` (or
    // `.wgsl`) and validated in build.rs; a shader that needs extensions or features
    // (`matmul_coop`) is built only on a device opened with them.
    let module = unsafe { ShaderModule::new(device.clone(), ShaderModuleCreateInfo::new(words)) }
        .map_err(|e| err(&e))?;
    let entry = module
        .entry_point("main")
        .ok_or_else(|| err(&"no entry point `main`"))?;
    let stage = PipelineShaderStageCreateInfo::new(entry);
    let layout_info = PipelineDescriptorSetLayoutCreateInfo::from_stages([&stage])
        .into_pipeline_layout_create_info(device.clone())
        .map_err(|e| err(&e))?;
    let layout = PipelineLayout::new(device.clone(), layout_info).map_err(|e| err(&e))?;
    ComputePipeline::new(
        device.clone(),
        None,
        ComputePipelineCreateInfo::stage_layout(stage, layout),
    )
    .map_err(|e| err(&e))
}
