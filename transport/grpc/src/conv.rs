//! Conversions between the wire messages and core's types. Decoding validates
//! everything it reads: a message that does not describe a valid tensor or graph gives a
//! [`WireError`], never a panic.

use bytes::Bytes;
use magpie_core::graph::{AttrValue, GraphDef, NodeDef};
use magpie_core::tensor::{DType, Shape, Storage, Tensor};

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

fn le_bytes<T: bytemuck::Pod, const N: usize>(v: &[T], f: impl Fn(T) -> [u8; N]) -> Bytes {
    if cfg!(target_endian = "little") {
        // The elements' memory is already the wire's layout: one memcpy.
        return Bytes::copy_from_slice(bytemuck::cast_slice(v));
    }
    let mut out = Vec::with_capacity(v.len() * N);
    for x in v {
        out.extend_from_slice(&f(*x));
    }
    Bytes::from(out)
}

/// Encodes a host tensor (one copy of its elements, into the message's buffer).
pub fn tensor_to_wire(t: &Tensor) -> Result<proto::TensorProto, WireError> {
    let content = match t.storage() {
        Storage::F32(v) => le_bytes(v, f32::to_le_bytes),
        Storage::F64(v) => le_bytes(v, f64::to_le_bytes),
        Storage::I32(v) => le_bytes(v, i32::to_le_bytes),
        Storage::I64(v) => le_bytes(v, i64::to_le_bytes),
        Storage::Bool(v) => Bytes::from(v.iter().map(|b| u8::from(*b)).collect::<Vec<u8>>()),
        Storage::Device(b) => return Err(WireError::NotOnHost(b.device().to_string())),
        _ => return Err(WireError::NotOnHost("an unknown storage".into())),
    };
    Ok(proto::TensorProto {
        dtype: dtype_to_wire(t.dtype()) as i32,
        dims: t.dims().iter().map(|d| *d as u64).collect(),
        content,
    })
}

fn from_le<T: bytemuck::Pod, const N: usize>(b: &[u8], f: impl Fn([u8; N]) -> T) -> Vec<T> {
    if cfg!(target_endian = "little") {
        // One copy into an aligned vector (the message's buffer may be unaligned).
        return bytemuck::pod_collect_to_vec(b);
    }
    b.chunks_exact(N)
        .map(|c| f(c.try_into().expect("chunks_exact yields N bytes")))
        .collect()
}

/// Decodes a tensor, checking that the content length matches the dtype and dims.
pub fn tensor_from_wire(p: &proto::TensorProto) -> Result<Tensor, WireError> {
    let dtype = dtype_from_wire(p.dtype, "tensor")?;
    let mut n: u64 = 1;
    let mut dims = Vec::with_capacity(p.dims.len());
    for d in &p.dims {
        n = n
            .checked_mul(*d)
            .ok_or_else(|| WireError::TooLarge(p.dims.clone()))?;
        dims.push(usize::try_from(*d).map_err(|_| WireError::TooLarge(p.dims.clone()))?);
    }
    let expected = n
        .checked_mul(dtype.size_of() as u64)
        .ok_or_else(|| WireError::TooLarge(p.dims.clone()))?;
    if p.content.len() as u64 != expected {
        return Err(WireError::ContentLength {
            dtype: dtype.to_string(),
            dims: p.dims.clone(),
            expected,
            got: p.content.len() as u64,
        });
    }
    let b = &p.content[..];
    let storage = match dtype {
        DType::F32 => Storage::F32(from_le(b, f32::from_le_bytes)),
        DType::F64 => Storage::F64(from_le(b, f64::from_le_bytes)),
        DType::I32 => Storage::I32(from_le(b, i32::from_le_bytes)),
        DType::I64 => Storage::I64(from_le(b, i64::from_le_bytes)),
        DType::Bool => Storage::Bool(b.iter().map(|x| *x != 0).collect()),
    };
    Tensor::from_storage(Shape::from(dims), storage)
        .map_err(|_| WireError::TooLarge(p.dims.clone()))
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
    fn graphs_round_trip() {
        let g = magpie_core::Graph::new();
        let a = g.with_name("a").constant(1.0f32).unwrap();
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
