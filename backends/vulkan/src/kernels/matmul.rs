//! MatMul of two f32 matrices with `transpose_a`/`transpose_b`: `matmul.comp`, tiled
//! through double-buffered, padded workgroup memory (128 x 128 output tiles, 8 x 8
//! outputs per invocation, vec4 loads and stores where the contiguous dimension is a
//! multiple of 4).
//!
//! Where the device's MatMul precision is [`MatMulPrecision::F16`](crate::MatMulPrecision)
//! and it has the matrix units for it (`VK_KHR_cooperative_matrix`), the same f32 tensors
//! go through `matmul_coop.wgsl` instead: operands rounded to f16, products summed in
//! f32 (128 x 128 tiles, 16 x 16 x 16 cooperative matrices). Elsewhere (Mesa's lavapipe
//! has no cooperative matrices) the f32 shader runs. Tensors stay f32 either way: the
//! graph has no f16 or bf16 dtype.

use std::sync::Arc;

use magpie_core::kernel::KernelInit;
use magpie_core::shape_fn::matmul_dims;
use magpie_core::{BoxedKernel, Device, KernelError, Shape, Tensor};

use super::support::{boxed, count32, f32_device, gpu, params, tensor, Factory, Launch, Launched};
use crate::device::{Shader, VulkanDevice};

pub(crate) const KERNELS: &[(&str, Factory)] = &[("MatMul", factory)];

/// Rows and columns of C per workgroup.
const TILE: usize = 128;

fn factory(init: &KernelInit<'_>) -> Result<BoxedKernel, KernelError> {
    let attrs = &init.node.attrs;
    boxed(MatMul {
        transpose_a: attrs.bool_or("transpose_a", false)?,
        transpose_b: attrs.bool_or("transpose_b", false)?,
        dev: f32_device(init)?,
    })
}

struct MatMul {
    dev: VulkanDevice,
    transpose_a: bool,
    transpose_b: bool,
}

impl Launch for MatMul {
    fn launch(&self, inputs: &[Tensor]) -> Result<Launched, KernelError> {
        let (a, b) = (&inputs[0], &inputs[1]);
        let (m, k, n) = matmul_dims(a.shape(), b.shape(), self.transpose_a, self.transpose_b)?;
        let (ga, gb) = (gpu("MatMul", a)?, gpu("MatMul", b)?);
        // The output's count is checked before anything is allocated or dispatched.
        let shape = Shape::new(&[m, n])?;
        let mn = shape.num_elements();
        count32("MatMul", mn)?;
        let out = self.dev.alloc("MatMul", mn)?;
        if mn == 0 {
            // Nothing to compute.
        } else if k == 0 {
            // An empty inner dimension: the product is all zeros.
            let o = Arc::clone(&out);
            self.dev.enqueue("MatMul", move |r| r.fill(&o, 0))?;
        } else {
            let [mx, my, _] = self.dev.limits().max_groups;
            let groups = [m.div_ceil(TILE), n.div_ceil(TILE)];
            if groups[1] > mx as usize || groups[0] > my as usize {
                return Err(KernelError::InvalidArgument(format!(
                    "MatMul f32 [{m}, {k}] x [{k}, {n}] needs {} x {} workgroups, more than {} \
                     can dispatch ({mx} x {my})",
                    groups[1],
                    groups[0],
                    self.dev.name()
                )));
            }
            let (ta, tb) = (self.transpose_a, self.transpose_b);
            if self.dev.take_f16_matmul() {
                let flags = u32::from(ta) | (u32::from(tb) << 1);
                let p = params(&[m as u32, n as u32, count32("MatMul", k)?, flags]);
                let grid = [groups[1] as u32, groups[0] as u32, 1];
                self.dev.enqueue("MatMul", |r| {
                    r.dispatch(Shader::MatMulCoop, &[ga, gb, &out], p, grid)
                })?;
                return Ok(Launched::Ready(tensor(shape, out)?));
            }
            // vec4 global access needs the contiguous dimension to be a multiple of 4
            // (so every row starts on a vec4) and buffers of whole vec4s.
            let whole = |g: &crate::device::GpuBuffer| g.capacity_elements() % 4 == 0;
            let a_vec = (if ta { m } else { k }) % 4 == 0 && whole(ga);
            let b_vec = (if tb { k } else { n }) % 4 == 0 && whole(gb);
            let c_vec = n % 4 == 0 && whole(&out);
            let flags = u32::from(ta)
                | (u32::from(tb) << 1)
                | (u32::from(a_vec) << 2)
                | (u32::from(b_vec) << 3)
                | (u32::from(c_vec) << 4);
            let p = params(&[m as u32, n as u32, count32("MatMul", k)?, flags]);
            let grid = [groups[1] as u32, groups[0] as u32, 1];
            self.dev.enqueue("MatMul", |r| {
                // Bindings 3-5 alias A, B and C as vec4 arrays.
                r.dispatch(Shader::MatMul, &[ga, gb, &out, ga, gb, &out], p, grid)
            })?;
        }
        Ok(Launched::Ready(tensor(shape, out)?))
    }
}
