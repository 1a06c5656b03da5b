//! Random graphs for the fuzz targets: [`FuzzGraph`] turns into a core
//! [`GraphDef`](magpie_core::graph::GraphDef) over the ops registered in this process.

use arbitrary::{Arbitrary, Result, Unstructured};
use magpie_core::graph::{AttrValue, GraphDef, NodeDef};
use magpie_core::tensor::{DType, Tensor};

/// Attribute names the standard ops read; a node's attribute names are drawn from these
/// (or, rarely, are arbitrary strings).
pub const ATTR_NAMES: &[&str] = &[
    "dtype",
    "shape",
    "value",
    "axis",
    "keep_dims",
    "transpose_a",
    "transpose_b",
    "seed",
    "container",
    "shared_name",
    "T",
];

/// Devices a node may ask for: existing, unknown, malformed and remote ones.
pub const DEVICES: &[&str] = &[
    "",
    "/device:CPU:0",
    "/cpu:0",
    "/device:CPU:7",
    "/device:GPU:0",
    "/job:worker/task:1",
    "/job:localhost/replica:0/task:0/device:CPU:0",
    "not a device",
];

/// A dimension or integer attribute: mostly small, often one of the values that break
/// unchecked arithmetic.
#[derive(Clone, Copy, Debug)]
pub struct Dim(pub i64);

const INTERESTING: &[i64] = &[
    0,
    1,
    2,
    3,
    -1,
    -2,
    1 << 31,
    1 << 32,
    1 << 62,
    (1 << 62) + 1,
    i64::MAX,
    i64::MIN,
];

impl<'a> Arbitrary<'a> for Dim {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        Ok(Dim(if u.ratio(1, 4)? {
            *u.choose(INTERESTING)?
        } else {
            i64::from(u.int_in_range(0u8..=8)?)
        }))
    }
}

/// A tensor attribute: a dtype, dims and raw element bytes (which may not match).
#[derive(Arbitrary, Debug)]
pub struct FuzzTensor {
    dtype: u8,
    dims: Vec<Dim>,
    data: Vec<u8>,
}

impl FuzzTensor {
    /// The tensor, when the dims and data describe one (`None` otherwise: the constructor
    /// must have said why, and must not have panicked).
    pub fn build(&self) -> Option<Tensor> {
        let dims: Vec<usize> = self
            .dims
            .iter()
            .map(|d| usize::try_from(d.0).ok())
            .collect::<Option<_>>()?;
        let d = &self.data;
        let t = match dtype(self.dtype) {
            DType::F32 => Tensor::from_vec(dims, chunks(d, f32::from_le_bytes)),
            DType::F64 => Tensor::from_vec(dims, chunks(d, f64::from_le_bytes)),
            DType::I32 => Tensor::from_vec(dims, chunks(d, i32::from_le_bytes)),
            DType::I64 => Tensor::from_vec(dims, chunks(d, i64::from_le_bytes)),
            DType::Bool => Tensor::from_vec(dims, d.iter().map(|b| b & 1 == 1).collect()),
        };
        t.ok()
    }
}

fn chunks<T, const N: usize>(d: &[u8], f: impl Fn([u8; N]) -> T) -> Vec<T> {
    d.chunks_exact(N)
        .map(|c| f(c.try_into().expect("chunks_exact gives N bytes")))
        .collect()
}

/// The dtype numbered `code` (modulo the number of dtypes).
pub fn dtype(code: u8) -> DType {
    const ALL: [DType; 5] = [DType::F32, DType::F64, DType::I32, DType::I64, DType::Bool];
    ALL[usize::from(code) % ALL.len()]
}

/// An attribute value.
#[derive(Arbitrary, Debug)]
pub enum FuzzValue {
    /// An integer.
    Int(Dim),
    /// A float.
    Float(f64),
    /// A bool.
    Bool(bool),
    /// A string.
    Str(String),
    /// A dtype.
    DType(u8),
    /// A shape or a list of axes.
    Ints(Vec<Dim>),
    /// A list of strings.
    Strs(Vec<String>),
    /// A tensor.
    Tensor(FuzzTensor),
}

impl FuzzValue {
    fn build(&self) -> Option<AttrValue> {
        Some(match self {
            FuzzValue::Int(d) => AttrValue::Int(d.0),
            FuzzValue::Float(f) => AttrValue::Float(*f),
            FuzzValue::Bool(b) => AttrValue::Bool(*b),
            FuzzValue::Str(s) => AttrValue::Str(s.clone()),
            FuzzValue::DType(c) => AttrValue::DType(dtype(*c)),
            FuzzValue::Ints(v) => AttrValue::Ints(v.iter().map(|d| d.0).collect()),
            FuzzValue::Strs(v) => AttrValue::Strs(v.clone()),
            FuzzValue::Tensor(t) => AttrValue::Tensor(t.build()?),
        })
    }
}

/// One of a node's inputs.
#[derive(Arbitrary, Debug)]
pub enum FuzzInput {
    /// `n<node>:<output>` (the node may not exist, or come later: a cycle).
    Data(u8, u8),
    /// `^n<node>`.
    Control(u8),
    /// Any string.
    Raw(String),
}

/// One node.
#[derive(Arbitrary, Debug)]
pub struct FuzzNode {
    op: u8,
    raw_op: Option<String>,
    inputs: Vec<FuzzInput>,
    attrs: Vec<(u8, FuzzValue)>,
    device: u8,
    raw_name: Option<String>,
}

/// A graph: nodes named `n0`, `n1`, ... (or arbitrary names), over the op names in
/// `ops`.
#[derive(Arbitrary, Debug)]
pub struct FuzzGraph {
    /// The nodes.
    pub nodes: Vec<FuzzNode>,
}

impl FuzzGraph {
    /// The graph as a `GraphDef`, picking op names from `ops`.
    pub fn to_graph_def(&self, ops: &[String]) -> GraphDef {
        let nodes = self
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let op = match (&n.raw_op, ops.is_empty()) {
                    (Some(raw), _) if n.op % 16 == 0 => raw.clone(),
                    (_, true) => "NoOp".to_string(),
                    (_, false) => ops[usize::from(n.op) % ops.len()].clone(),
                };
                let inputs = n
                    .inputs
                    .iter()
                    .map(|i| match i {
                        FuzzInput::Data(node, 0) => format!("n{node}"),
                        FuzzInput::Data(node, out) => format!("n{node}:{}", out % 4),
                        FuzzInput::Control(node) => format!("^n{node}"),
                        FuzzInput::Raw(s) => s.clone(),
                    })
                    .collect();
                let attrs = n
                    .attrs
                    .iter()
                    .filter_map(|(k, v)| {
                        let name = ATTR_NAMES[usize::from(*k) % ATTR_NAMES.len()];
                        Some((name.to_string(), v.build()?))
                    })
                    .collect();
                NodeDef {
                    name: match &n.raw_name {
                        Some(raw) if n.device % 32 == 31 => raw.clone(),
                        _ => format!("n{i}"),
                    },
                    op,
                    inputs,
                    device: DEVICES[usize::from(n.device) % DEVICES.len()].to_string(),
                    attrs,
                }
            })
            .collect();
        GraphDef { nodes }
    }
}
