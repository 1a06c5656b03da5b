//! Conversions between the wire messages and core's types. Decoding validates
//! everything it reads: a message that does not describe a valid tensor or graph gives a
//! [`WireError`], never a panic.

use std::time::Duration;

use bytes::Bytes;
use magpie_core::distributed::{AlignedTimeline, ClusterTimeline};
use magpie_core::graph::{AttrValue, GraphDef, NodeDef};
use magpie_core::session::NodeStats;
use magpie_core::tensor::{DType, MemoryLimit, Shape, Storage, Tensor};
use magpie_core::transport::TaskTimeline;

use crate::error::WireError;
use crate::proto;

/// The wire code of a dtype.
pub fn dtype_to_wire(d: DType) -> proto::DataType {
    match d {
        DType::F32 => proto::DataType::F32,
        DType::F64 => proto::DataType::F64,
        DType::I32 => proto::DataType::I32,
        DType::I64 => proto::DataType::I64,
        DType::Bool => proto::DataType::Bool,
    }
}

/// The dtype of a wire code.
pub fn dtype_from_wire(code: i32, what: &str) -> Result<DType, WireError> {
    let err = || WireError::DType {
        what: what.to_string(),
        code,
    };
    match proto::DataType::try_from(code).map_err(|_| err())? {
        proto::DataType::F32 => Ok(DType::F32),
        proto::DataType::F64 => Ok(DType::F64),
        proto::DataType::I32 => Ok(DType::I32),
        proto::DataType::I64 => Ok(DType::I64),
        proto::DataType::Bool => Ok(DType::Bool),
        proto::DataType::Unspecified => Err(err()),
    }
}

/// A host tensor's elements as little-endian bytes, kept alive by a clone of the tensor
/// (an `Arc`): the wire content of a tensor without copying it.
struct HostBytes(Tensor);

impl AsRef<[u8]> for HostBytes {
    fn as_ref(&self) -> &[u8] {
        match self.0.storage() {
            Storage::F32(v) => bytemuck::cast_slice(v),
            Storage::F64(v) => bytemuck::cast_slice(v),
            Storage::I32(v) => bytemuck::cast_slice(v),
            Storage::I64(v) => bytemuck::cast_slice(v),
            // Only built for the storages above (see `content`).
            _ => &[],
        }
    }
}

fn le_bytes<T: bytemuck::Pod, const N: usize>(v: &[T], f: impl Fn(T) -> [u8; N]) -> Bytes {
    let mut out = Vec::with_capacity(v.len() * N);
    for x in v {
        out.extend_from_slice(&f(*x));
    }
    Bytes::from(out)
}

/// The wire content of a host tensor. On a little-endian host the elements' memory is
/// already the wire's layout: the bytes borrow the tensor's buffer (no copy; the buffer
/// lives until the bytes are dropped). Bools are copied, one byte each.
fn content(t: &Tensor) -> Result<Bytes, WireError> {
    let numeric = matches!(
        t.storage(),
        Storage::F32(_) | Storage::F64(_) | Storage::I32(_) | Storage::I64(_)
    );
    if numeric && cfg!(target_endian = "little") {
        return Ok(Bytes::from_owner(HostBytes(t.clone())));
    }
    Ok(match t.storage() {
        Storage::F32(v) => le_bytes(v, f32::to_le_bytes),
        Storage::F64(v) => le_bytes(v, f64::to_le_bytes),
        Storage::I32(v) => le_bytes(v, i32::to_le_bytes),
        Storage::I64(v) => le_bytes(v, i64::to_le_bytes),
        Storage::Bool(v) => Bytes::from(v.iter().map(|b| u8::from(*b)).collect::<Vec<u8>>()),
        Storage::Device(b) => return Err(WireError::NotOnHost(b.device().to_string())),
        _ => return Err(WireError::NotOnHost("an unknown storage".into())),
    })
}

/// Encodes a host tensor. The content shares the tensor's buffer (no copy of its
/// elements) on little-endian hosts, bools excepted.
pub fn tensor_to_wire(t: &Tensor) -> Result<proto::TensorProto, WireError> {
    Ok(proto::TensorProto {
        dtype: dtype_to_wire(t.dtype()) as i32,
        dims: t.dims().iter().map(|d| *d as u64).collect(),
        content: content(t)?,
    })
}

/// Decodes a tensor, checking that the content length matches the dtype and dims (one
/// copy of the content, into an aligned buffer of the dtype).
pub fn tensor_from_wire(p: &proto::TensorProto) -> Result<Tensor, WireError> {
    let mut a = TensorAssembler::new(p.dtype, &p.dims, p.content.len() as u64)?;
    a.push(&p.content)?;
    a.finish()
}

/// Where a tensor's elements are written as they arrive.
enum Elements {
    F32(Vec<f32>),
    F64(Vec<f64>),
    I32(Vec<i32>),
    I64(Vec<i64>),
    /// Bools, and every dtype on a big-endian host: converted in [`TensorAssembler::finish`].
    Raw(Vec<u8>),
}

impl Elements {
    fn bytes_mut(&mut self) -> &mut [u8] {
        match self {
            Elements::F32(v) => bytemuck::cast_slice_mut(v),
            Elements::F64(v) => bytemuck::cast_slice_mut(v),
            Elements::I32(v) => bytemuck::cast_slice_mut(v),
            Elements::I64(v) => bytemuck::cast_slice_mut(v),
            Elements::Raw(v) => v,
        }
    }
}

fn from_le<T: bytemuck::Pod, const N: usize>(b: &[u8], f: impl Fn([u8; N]) -> T) -> Vec<T> {
    b.chunks_exact(N)
        .map(|c| {
            let mut a = [0u8; N];
            a.copy_from_slice(c);
            f(a)
        })
        .collect()
}

/// A tensor received in pieces (the chunks of a streamed tensor, or one message's
/// content). The destination is allocated once, in the tensor's dtype, from the dtype,
/// dims and total byte length announced up front, and every piece is copied straight
/// into place: one copy of the content, no reallocation, no second buffer.
pub struct TensorAssembler {
    dtype: DType,
    dims: Vec<u64>,
    elements: Elements,
    filled: usize,
}

impl std::fmt::Debug for TensorAssembler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TensorAssembler")
            .field("dtype", &self.dtype)
            .field("dims", &self.dims)
            .field("filled", &self.filled)
            .finish()
    }
}

impl TensorAssembler {
    /// A destination for a tensor of dtype code `dtype` and `dims`, announced as
    /// `total_bytes` long; fails when the length does not match the dtype and dims.
    pub fn new(dtype: i32, dims: &[u64], total_bytes: u64) -> Result<TensorAssembler, WireError> {
        let dtype = dtype_from_wire(dtype, "tensor")?;
        let too_large = || WireError::TooLarge(dims.to_vec());
        let mut n: u64 = 1;
        for d in dims {
            n = n.checked_mul(*d).ok_or_else(too_large)?;
            usize::try_from(*d).map_err(|_| too_large())?;
        }
        let expected = n
            .checked_mul(dtype.size_of() as u64)
            .ok_or_else(too_large)?;
        if total_bytes != expected {
            return Err(WireError::ContentLength {
                dtype: dtype.to_string(),
                dims: dims.to_vec(),
                expected,
                got: total_bytes,
            });
        }
        let n = usize::try_from(n).map_err(|_| too_large())?;
        let bytes = usize::try_from(expected).map_err(|_| too_large())?;
        // The shape is checked (element count, strides) before anything is allocated, and
        // the allocation is fallible: a hostile header is an error, never an abort.
        let shape: Vec<usize> = dims.iter().map(|&d| d as usize).collect();
        Shape::new(&shape).map_err(|_| too_large())?;
        let host = MemoryLimit::host();
        // Zeroed allocations of this size come fresh from the OS, already zero: nothing
        // is written twice.
        let raw = || {
            let mut v = Vec::new();
            v.try_reserve_exact(bytes).map_err(|_| too_large())?;
            v.resize(bytes, 0u8);
            Ok::<_, WireError>(Elements::Raw(v))
        };
        let elements = if cfg!(target_endian = "big") || dtype == DType::Bool {
            raw()?
        } else {
            let zeros_error = |_| too_large();
            match dtype {
                DType::F32 => Elements::F32(host.zeros(n).map_err(zeros_error)?),
                DType::F64 => Elements::F64(host.zeros(n).map_err(zeros_error)?),
                DType::I32 => Elements::I32(host.zeros(n).map_err(zeros_error)?),
                DType::I64 => Elements::I64(host.zeros(n).map_err(zeros_error)?),
                DType::Bool => raw()?,
            }
        };
        let mut a = TensorAssembler {
            dtype,
            dims: dims.to_vec(),
            elements,
            filled: 0,
        };
        crate::hugepages::advise(a.elements.bytes_mut());
        Ok(a)
    }

    fn content_length(&self, got: u64) -> WireError {
        WireError::ContentLength {
            dtype: self.dtype.to_string(),
            dims: self.dims.clone(),
            expected: self.dims.iter().product::<u64>() * self.dtype.size_of() as u64,
            got,
        }
    }

    /// Copies the next piece of the content into place; fails when the pieces exceed the
    /// announced length.
    pub fn push(&mut self, piece: &[u8]) -> Result<(), WireError> {
        let dest = self.elements.bytes_mut();
        let end = self.filled + piece.len();
        if end > dest.len() {
            return Err(self.content_length(end as u64));
        }
        dest[self.filled..end].copy_from_slice(piece);
        self.filled = end;
        Ok(())
    }

    /// Bytes received so far.
    pub fn filled(&self) -> usize {
        self.filled
    }

    /// The tensor; fails when fewer bytes came than announced.
    pub fn finish(self) -> Result<Tensor, WireError> {
        if self.filled != self.elements_len() {
            return Err(self.content_length(self.filled as u64));
        }
        let dims: Vec<usize> = self.dims.iter().map(|d| *d as usize).collect();
        let storage = match self.elements {
            Elements::F32(v) => Storage::F32(v),
            Elements::F64(v) => Storage::F64(v),
            Elements::I32(v) => Storage::I32(v),
            Elements::I64(v) => Storage::I64(v),
            Elements::Raw(b) => match self.dtype {
                DType::F32 => Storage::F32(from_le(&b, f32::from_le_bytes)),
                DType::F64 => Storage::F64(from_le(&b, f64::from_le_bytes)),
                DType::I32 => Storage::I32(from_le(&b, i32::from_le_bytes)),
                DType::I64 => Storage::I64(from_le(&b, i64::from_le_bytes)),
                DType::Bool => {
                    if let Some(index) = b.iter().position(|x| *x > 1) {
                        return Err(WireError::BadBool {
                            index,
                            byte: b[index],
                        });
                    }
                    Storage::Bool(b.iter().map(|x| *x == 1).collect())
                }
            },
        };
        Tensor::from_storage(dims, storage).map_err(|_| WireError::TooLarge(self.dims.clone()))
    }

    fn elements_len(&self) -> usize {
        match &self.elements {
            Elements::F32(v) => v.len() * 4,
            Elements::F64(v) => v.len() * 8,
            Elements::I32(v) => v.len() * 4,
            Elements::I64(v) => v.len() * 8,
            Elements::Raw(v) => v.len(),
        }
    }
}

fn attr_to_wire(v: &AttrValue) -> Result<proto::AttrValue, WireError> {
    use proto::attr_value::Value;
    let value = match v {
        AttrValue::Int(i) => Value::Int(*i),
        AttrValue::Float(f) => Value::Float(*f),
        AttrValue::Bool(b) => Value::Bool(*b),
        AttrValue::Str(s) => Value::Str(s.clone()),
        AttrValue::DType(d) => Value::Dtype(dtype_to_wire(*d) as i32),
        AttrValue::Ints(v) => Value::Ints(proto::IntList { values: v.clone() }),
        AttrValue::Strs(v) => Value::Strs(proto::StringList { values: v.clone() }),
        AttrValue::Tensor(t) => Value::Tensor(tensor_to_wire(t)?),
    };
    Ok(proto::AttrValue { value: Some(value) })
}

fn attr_from_wire(node: &str, name: &str, v: &proto::AttrValue) -> Result<AttrValue, WireError> {
    use proto::attr_value::Value;
    Ok(match &v.value {
        Some(Value::Int(i)) => AttrValue::Int(*i),
        Some(Value::Float(f)) => AttrValue::Float(*f),
        Some(Value::Bool(b)) => AttrValue::Bool(*b),
        Some(Value::Str(s)) => AttrValue::Str(s.clone()),
        Some(Value::Dtype(d)) => AttrValue::DType(dtype_from_wire(*d, &format!("{node}.{name}"))?),
        Some(Value::Ints(l)) => AttrValue::Ints(l.values.clone()),
        Some(Value::Strs(l)) => AttrValue::Strs(l.values.clone()),
        Some(Value::Tensor(t)) => AttrValue::Tensor(tensor_from_wire(t)?),
        None => {
            return Err(WireError::EmptyAttr {
                node: node.to_string(),
                attr: name.to_string(),
            })
        }
    })
}

/// Encodes a graph definition.
pub fn graph_to_wire(g: &GraphDef) -> Result<proto::GraphDef, WireError> {
    let mut node = Vec::with_capacity(g.nodes.len());
    for n in &g.nodes {
        let mut attr = std::collections::HashMap::with_capacity(n.attrs.len());
        for (k, v) in &n.attrs {
            attr.insert(k.clone(), attr_to_wire(v)?);
        }
        node.push(proto::NodeDef {
            name: n.name.clone(),
            op: n.op.clone(),
            input: n.inputs.clone(),
            device: n.device.clone(),
            attr,
        });
    }
    Ok(proto::GraphDef { node })
}

/// Decodes a graph definition (attributes sorted by name, so decoding is deterministic).
/// The graph itself is validated when imported ([`magpie_core::Graph::import`]).
pub fn graph_from_wire(g: &proto::GraphDef) -> Result<GraphDef, WireError> {
    let mut nodes = Vec::with_capacity(g.node.len());
    for n in &g.node {
        let mut attrs = Vec::with_capacity(n.attr.len());
        for (k, v) in &n.attr {
            attrs.push((k.clone(), attr_from_wire(&n.name, k, v)?));
        }
        attrs.sort_by(|a, b| a.0.cmp(&b.0));
        nodes.push(NodeDef {
            name: n.name.clone(),
            op: n.op.clone(),
            inputs: n.input.clone(),
            device: n.device.clone(),
            attrs,
        });
    }
    Ok(GraphDef { nodes })
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

fn nodes_to_wire(nodes: &[NodeStats]) -> Vec<proto::NodeRecord> {
    nodes
        .iter()
        .map(|n| proto::NodeRecord {
            node: n.node.clone(),
            op: n.op.clone(),
            device: n.device.clone(),
            worker: u32::try_from(n.worker).unwrap_or(u32::MAX),
            start_ns: nanos(n.start),
            end_ns: nanos(n.end),
            output_bytes: n.output_bytes as u64,
        })
        .collect()
}

fn nodes_from_wire(nodes: &[proto::NodeRecord]) -> Result<Vec<NodeStats>, WireError> {
    nodes
        .iter()
        .map(|n| {
            if n.end_ns < n.start_ns {
                return Err(WireError::BadTimeline {
                    node: n.node.clone(),
                    reason: "it ends before it starts".into(),
                });
            }
            Ok(NodeStats {
                node: n.node.clone(),
                op: n.op.clone(),
                device: n.device.clone(),
                worker: n.worker as usize,
                start: Duration::from_nanos(n.start_ns),
                end: Duration::from_nanos(n.end_ns),
                output_bytes: usize::try_from(n.output_bytes).unwrap_or(usize::MAX),
            })
        })
        .collect()
}

/// A task's step timeline as its wire message.
pub fn timeline_to_wire(t: &TaskTimeline) -> proto::StepTimeline {
    proto::StepTimeline {
        start_unix_micros: t.start_unix_micros,
        nodes: nodes_to_wire(&t.nodes),
    }
}

/// A task's step timeline from its wire message; a record that ends before it starts is
/// refused.
///
/// # Errors
/// [`WireError::BadTimeline`] naming the record's node.
pub fn timeline_from_wire(t: &proto::StepTimeline) -> Result<TaskTimeline, WireError> {
    Ok(TaskTimeline {
        start_unix_micros: t.start_unix_micros,
        nodes: nodes_from_wire(&t.nodes)?,
    })
}

/// A traced step's timelines, as the master returns them to a client.
pub fn cluster_timeline_to_wire(t: &ClusterTimeline) -> Vec<proto::AlignedTimeline> {
    t.tasks
        .iter()
        .map(|a| proto::AlignedTimeline {
            task: a.task.to_string(),
            offset_ns: nanos(a.offset),
            nodes: nodes_to_wire(&a.nodes),
        })
        .collect()
}

/// A traced step's timelines from the master's answer.
///
/// # Errors
/// [`WireError::BadTimeline`] for a task name that does not parse or a record that ends
/// before it starts.
pub fn cluster_timeline_from_wire(
    tasks: &[proto::AlignedTimeline],
) -> Result<ClusterTimeline, WireError> {
    let tasks = tasks
        .iter()
        .map(|a| {
            let task = a.task.parse().map_err(|_| WireError::BadTimeline {
                node: String::new(),
                reason: format!("task {:?} is not /job:J/task:T", a.task),
            })?;
            Ok(AlignedTimeline {
                task,
                offset: Duration::from_nanos(a.offset_ns),
                nodes: nodes_from_wire(&a.nodes)?,
            })
        })
        .collect::<Result<Vec<_>, WireError>>()?;
    Ok(ClusterTimeline { tasks })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tensors_round_trip_in_every_dtype() {
        let cases = [
            Tensor::from_vec([2, 2], vec![1.5f32, -2.0, 0.0, 3.25]).unwrap(),
            Tensor::from_vec([3], vec![1e300f64, -0.5, 7.0]).unwrap(),
            Tensor::from_vec([1, 2], vec![i32::MIN, 42]).unwrap(),
            Tensor::scalar(i64::MAX),
            Tensor::from_vec([0, 4], Vec::<bool>::new()).unwrap(),
            Tensor::from(vec![true, false, true]),
        ];
        for t in cases {
            let back = tensor_from_wire(&tensor_to_wire(&t).unwrap()).unwrap();
            assert_eq!(back, t);
        }
    }

    #[test]
    fn a_content_length_that_does_not_match_is_named() {
        let mut p = tensor_to_wire(&Tensor::from(vec![1.0f32, 2.0])).unwrap();
        p.content = Bytes::from_static(&[0, 0, 0]);
        assert_eq!(
            tensor_from_wire(&p).unwrap_err().to_string(),
            "tensor of dtype f32 and shape [2] needs 8 bytes, got 3"
        );
        p.dtype = 99;
        assert!(matches!(
            tensor_from_wire(&p),
            Err(WireError::DType { code: 99, .. })
        ));
        p.dtype = proto::DataType::F32 as i32;
        p.dims = vec![u64::MAX, 4];
        assert!(matches!(tensor_from_wire(&p), Err(WireError::TooLarge(_))));
    }

    #[test]
    fn encoding_shares_the_tensors_buffer() {
        let t = Tensor::from(vec![1.0f32, 2.0, 3.0]);
        let p = tensor_to_wire(&t).unwrap();
        if cfg!(target_endian = "little") {
            let elems: &[u8] = bytemuck::cast_slice(t.as_slice::<f32>().unwrap());
            assert_eq!(p.content.as_ptr(), elems.as_ptr());
        }
        drop(t);
        // The bytes keep the buffer alive.
        assert_eq!(
            tensor_from_wire(&p).unwrap(),
            Tensor::from(vec![1.0f32, 2.0, 3.0])
        );
    }

    #[test]
    fn an_assembler_takes_pieces_and_checks_their_total() {
        let t = Tensor::from_vec([2, 3], vec![1i64, -2, 3, -4, 5, i64::MIN]).unwrap();
        let p = tensor_to_wire(&t).unwrap();
        let mut a = TensorAssembler::new(p.dtype, &p.dims, 48).unwrap();
        for piece in p.content.chunks(5) {
            a.push(piece).unwrap();
        }
        assert_eq!(a.filled(), 48);
        assert_eq!(a.finish().unwrap(), t);

        // Too few bytes, too many, a header that does not match the shape.
        let mut a = TensorAssembler::new(p.dtype, &p.dims, 48).unwrap();
        a.push(&p.content[..40]).unwrap();
        assert_eq!(
            a.finish().unwrap_err().to_string(),
            "tensor of dtype i64 and shape [2, 3] needs 48 bytes, got 40"
        );
        let mut a = TensorAssembler::new(p.dtype, &p.dims, 48).unwrap();
        a.push(&p.content).unwrap();
        assert_eq!(
            a.push(&[0]).unwrap_err().to_string(),
            "tensor of dtype i64 and shape [2, 3] needs 48 bytes, got 49"
        );
        assert!(matches!(
            TensorAssembler::new(p.dtype, &p.dims, 47),
            Err(WireError::ContentLength {
                expected: 48,
                got: 47,
                ..
            })
        ));
        assert!(matches!(
            TensorAssembler::new(p.dtype, &[u64::MAX, 2], 0),
            Err(WireError::TooLarge(_))
        ));

        // Bools travel one byte each.
        let b = Tensor::from(vec![true, false, true]);
        let p = tensor_to_wire(&b).unwrap();
        let mut a = TensorAssembler::new(p.dtype, &p.dims, 3).unwrap();
        a.push(&p.content[..1]).unwrap();
        a.push(&p.content[1..]).unwrap();
        assert_eq!(a.finish().unwrap(), b);
    }

    #[test]
    fn graphs_round_trip() {
        let g = magpie_core::Graph::new();
        let one = Tensor::from_vec([1, 1], vec![1.0f32]).unwrap();
        let a = g.with_name("a").constant(one).unwrap();
        let b = g
            .with_device("/job:ps/task:0")
            .unwrap()
            .with_name("b")
            .neg(a)
            .unwrap();
        g.control_dependencies([b], |g| g.with_name("c").matmul_t(a, a, true, false))
            .unwrap();
        let def = g.to_graph_def();
        let back = graph_from_wire(&graph_to_wire(&def).unwrap()).unwrap();
        assert_eq!(back, def);
        let imported = magpie_core::Graph::import(&back).unwrap();
        assert_eq!(imported.len(), 3);
    }
}
