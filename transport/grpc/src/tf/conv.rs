//! Conversions between TensorFlow's wire messages (`proto/tensorflow/`) and core's types:
//! TensorFlow's `GraphDef` into core's [`GraphDef`] (which
//! [`Graph::import_tensorflow`](magpie_core::graph::Graph::import_tensorflow) then
//! translates), and `TensorProto` to and from core's [`Tensor`].
//!
//! Everything read is validated: a message that does not describe a tensor or graph
//! Magpie can hold gives a [`TfWireError`] naming the node, attribute, feed or fetch, and
//! never a panic. A tensor's size is checked against the server's limits
//! ([`DecodeLimits`]) before anything is allocated.
//!
//! # Tensors
//! A `TensorProto` holds its elements either in `tensor_content` (little-endian, packed)
//! or in the typed field of its dtype (`float_val`, `double_val`, `int_val`,
//! `int64_val`, `bool_val`), where fewer values than elements mean the last one repeats
//! (and none at all means zeros), as TensorFlow reads them. So a message of a few bytes
//! can describe gigabytes: each tensor is held to the server's tensor limit, and the
//! tensors one request decodes (a graph's constants, a step's feeds) to its message limit
//! together ([`DecodeLimits`]), as if they had come in `tensor_content`. Magpie answers
//! with `tensor_content`. Dtypes Magpie lacks (strings, resources, 8- and 16-bit types, ...)
//! are refused naming the dtype.
//!
//! # Attributes
//! | TensorFlow | core's [`AttrValue`] |
//! |---|---|
//! | `s` (UTF-8), `i`, `f`, `b` | `Str`, `Int`, `Float`, `Bool` |
//! | `type` | `DType` |
//! | `shape` | `Ints`, `-1` for an unknown dimension; an unknown rank drops the attribute |
//! | `tensor` | `Tensor` |
//! | `list(int)`, `list(string)` | `Ints`, `Strs` |
//! | `list(type)` | `Strs` of the dtypes' names (`"f32"`, ...) |
//! | `list(bool)` | `Ints` of 0 and 1 |
//! | an empty list | `Ints(vec![])` |
//!
//! A list of floats, shapes or tensors, a function and a placeholder are refused, naming
//! node and attribute. Attributes whose name starts with `_` are TensorFlow's private
//! ones: only `_class` (colocation) is kept, and the others are not read at all.

use magpie_core::graph::{AttrValue, GraphDef, NodeDef};
use magpie_core::tensor::{DType, Shape, Storage, Tensor};

use crate::conv::{dtype_to_wire, TensorAssembler};
use crate::tf::proto;

/// The private attribute kept by the conversion: colocation (`loc:@name`).
const CLASS_ATTR: &str = "_class";

/// A TensorFlow message Magpie cannot use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TfWireError {
    /// A dtype Magpie has no tensors of.
    #[error("{what}: dtype {dtype} is not supported (Magpie holds float32, float64, int32, int64 and bool)")]
    DType {
        /// The tensor or attribute.
        what: String,
        /// TensorFlow's name of the dtype, or its number.
        dtype: String,
    },
    /// A tensor that does not describe its elements.
    #[error("{what}: {detail}")]
    Tensor {
        /// The tensor.
        what: String,
        /// What is wrong.
        detail: String,
    },
    /// A tensor larger than the server accepts.
    #[error("{what}: {bytes} bytes exceed the server's limit of {max} bytes per tensor (--max-tensor-bytes)")]
    TooLarge {
        /// The tensor.
        what: String,
        /// Its size (saturated at `u64::MAX`).
        bytes: u64,
        /// The limit.
        max: u64,
    },
    /// The tensors of one request decode to more than the server's message limit (their
    /// typed values repeat to fill shapes far larger than the message).
    #[error("{what}: {bytes} bytes after {decoded} bytes of the request's other tensors exceed the server's limit of {max} bytes of tensors per request (--max-message-bytes)")]
    RequestTooLarge {
        /// The tensor that passed the limit.
        what: String,
        /// Its size.
        bytes: u64,
        /// Bytes the request's tensors before it decoded to.
        decoded: u64,
        /// The limit.
        max: u64,
    },
    /// An attribute Magpie cannot read.
    #[error("node {node:?}: attribute {attr:?}: {detail}")]
    Attr {
        /// Node name.
        node: String,
        /// Attribute name.
        attr: String,
        /// What is wrong.
        detail: String,
    },
    /// A graph that defines functions (Magpie runs none).
    #[error(
        "the graph defines a function library ({bytes} bytes); Magpie runs no TensorFlow functions"
    )]
    Functions {
        /// Size of the library.
        bytes: usize,
    },
}

impl TfWireError {
    /// The error's kind: what Magpie cannot do yet is `Unimplemented`, a tensor beyond
    /// the limit `ResourceExhausted`, everything else `InvalidArgument`.
    pub fn code(&self) -> magpie_core::Code {
        use magpie_core::Code;
        match self {
            TfWireError::DType { .. } | TfWireError::Functions { .. } => Code::Unimplemented,
            TfWireError::TooLarge { .. } | TfWireError::RequestTooLarge { .. } => {
                Code::ResourceExhausted
            }
            TfWireError::Attr { detail, .. } if detail.starts_with("unsupported") => {
                Code::Unimplemented
            }
            _ => Code::InvalidArgument,
        }
    }
}

/// TensorFlow's name of a dtype number (`DT_STRING`), or the number.
fn tf_dtype_name(code: i32) -> String {
    match proto::DataType::try_from(code) {
        Ok(d) => d.as_str_name().to_string(),
        Err(_) => format!("{code}"),
    }
}

/// The core dtype of TensorFlow's dtype number `code`; `what` names the tensor or
/// attribute in the error.
pub fn dtype_from_tf(code: i32, what: &str) -> Result<DType, TfWireError> {
    match proto::DataType::try_from(code) {
        Ok(proto::DataType::DtFloat) => Ok(DType::F32),
        Ok(proto::DataType::DtDouble) => Ok(DType::F64),
        Ok(proto::DataType::DtInt32) => Ok(DType::I32),
        Ok(proto::DataType::DtInt64) => Ok(DType::I64),
        Ok(proto::DataType::DtBool) => Ok(DType::Bool),
        _ => Err(TfWireError::DType {
            what: what.to_string(),
            dtype: tf_dtype_name(code),
        }),
    }
}

/// TensorFlow's number of a core dtype.
pub fn dtype_to_tf(d: DType) -> proto::DataType {
    match d {
        DType::F32 => proto::DataType::DtFloat,
        DType::F64 => proto::DataType::DtDouble,
        DType::I32 => proto::DataType::DtInt32,
        DType::I64 => proto::DataType::DtInt64,
        DType::Bool => proto::DataType::DtBool,
    }
}

/// The bounds on the tensors one request decodes (see the [module docs](self)): each at
/// most `max_tensor_bytes` (`--max-tensor-bytes`), all together at most
/// `max_request_bytes` (the server's message limit, `--max-message-bytes`), however few
/// bytes their typed values take in the message.
///
/// ```
/// use magpie_grpc::tf::conv::{tensor_from_tf, DecodeLimits};
/// use magpie_grpc::tf::proto;
/// // One value claiming 1,000 elements: 4,000 bytes once decoded.
/// let ones = proto::TensorProto {
///     dtype: proto::DataType::DtFloat as i32,
///     tensor_shape: Some(proto::TensorShapeProto {
///         dim: vec![proto::tensor_shape_proto::Dim { size: 1000, name: String::new() }],
///         unknown_rank: false,
///     }),
///     float_val: vec![1.0],
///     ..Default::default()
/// };
/// let mut limits = DecodeLimits::new(1 << 20, 6000);
/// assert!(tensor_from_tf(&ones, "feed \"a:0\"", &mut limits).is_ok());
/// assert_eq!(limits.decoded(), 4000);
/// let e = tensor_from_tf(&ones, "feed \"b:0\"", &mut limits).unwrap_err();
/// assert!(e.to_string().contains("--max-message-bytes"), "{e}");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecodeLimits {
    /// The most bytes one tensor may take.
    pub max_tensor_bytes: u64,
    /// The most bytes the request's tensors may take together.
    pub max_request_bytes: u64,
    decoded: u64,
}

impl DecodeLimits {
    /// Nothing decoded yet, under these limits.
    pub fn new(max_tensor_bytes: u64, max_request_bytes: u64) -> DecodeLimits {
        DecodeLimits {
            max_tensor_bytes,
            max_request_bytes,
            decoded: 0,
        }
    }

    /// Bytes the request's tensors took so far.
    pub fn decoded(&self) -> u64 {
        self.decoded
    }

    /// Counts a tensor of `bytes` named `what`, refusing it past either limit.
    fn take(&mut self, bytes: u64, what: &str) -> Result<(), TfWireError> {
        if bytes > self.max_tensor_bytes {
            return Err(TfWireError::TooLarge {
                what: what.to_string(),
                bytes,
                max: self.max_tensor_bytes,
            });
        }
        match self.decoded.checked_add(bytes) {
            Some(total) if total <= self.max_request_bytes => {
                self.decoded = total;
                Ok(())
            }
            _ => Err(TfWireError::RequestTooLarge {
                what: what.to_string(),
                bytes,
                decoded: self.decoded,
                max: self.max_request_bytes,
            }),
        }
    }
}

/// The dims of a tensor's shape: all known and non-negative.
fn tensor_dims(p: &proto::TensorProto, what: &str) -> Result<Vec<u64>, TfWireError> {
    let bad = |detail: String| TfWireError::Tensor {
        what: what.to_string(),
        detail,
    };
    let Some(shape) = &p.tensor_shape else {
        // No shape: a scalar, as TensorFlow reads it.
        return Ok(Vec::new());
    };
    if shape.unknown_rank {
        return Err(bad("a tensor's shape has an unknown rank".into()));
    }
    shape
        .dim
        .iter()
        .map(|d| {
            u64::try_from(d.size).map_err(|_| bad(format!("dimension {} is negative", d.size)))
        })
        .collect()
}

/// Decodes a tensor of a request (`what` names it in errors: `feed "x:0"`, `node "c"
/// attribute "value"`), counting it against the request's `limits` before anything is
/// allocated.
///
/// # Errors
/// [`TfWireError::TooLarge`] past `limits.max_tensor_bytes`,
/// [`TfWireError::RequestTooLarge`] when the request's tensors would pass
/// `limits.max_request_bytes`; others for a tensor that does not describe its elements.
pub fn tensor_from_tf(
    p: &proto::TensorProto,
    what: &str,
    limits: &mut DecodeLimits,
) -> Result<Tensor, TfWireError> {
    let dtype = dtype_from_tf(p.dtype, what)?;
    let dims = tensor_dims(p, what)?;
    let max_tensor_bytes = limits.max_tensor_bytes;
    let too_large = |bytes: u64| TfWireError::TooLarge {
        what: what.to_string(),
        bytes,
        max: max_tensor_bytes,
    };
    let n = dims
        .iter()
        .try_fold(1u64, |n, d| n.checked_mul(*d))
        .ok_or_else(|| too_large(u64::MAX))?;
    let bytes = n
        .checked_mul(dtype.size_of() as u64)
        .ok_or_else(|| too_large(u64::MAX))?;
    limits.take(bytes, what)?;
    let bad = |detail: String| TfWireError::Tensor {
        what: what.to_string(),
        detail,
    };
    if !p.tensor_content.is_empty() || n == 0 {
        let mut a = TensorAssembler::new(
            dtype_to_wire(dtype) as i32,
            &dims,
            p.tensor_content.len() as u64,
        )
        .map_err(|e| bad(e.to_string()))?;
        a.push(&p.tensor_content).map_err(|e| bad(e.to_string()))?;
        return a.finish().map_err(|e| bad(e.to_string()));
    }
    let shape: Vec<usize> = dims
        .iter()
        .map(|d| usize::try_from(*d).map_err(|_| too_large(bytes)))
        .collect::<Result<_, _>>()?;
    Shape::new(&shape).map_err(|e| bad(e.to_string()))?;
    let n = usize::try_from(n).map_err(|_| too_large(bytes))?;
    let storage = match dtype {
        DType::F32 => Storage::F32(repeat_last(&p.float_val, n, "float_val", &bad)?),
        DType::F64 => Storage::F64(repeat_last(&p.double_val, n, "double_val", &bad)?),
        DType::I32 => Storage::I32(repeat_last(&p.int_val, n, "int_val", &bad)?),
        DType::I64 => Storage::I64(repeat_last(&p.int64_val, n, "int64_val", &bad)?),
        DType::Bool => Storage::Bool(repeat_last(&p.bool_val, n, "bool_val", &bad)?),
    };
    Tensor::from_storage(shape, storage).map_err(|e| bad(e.to_string()))
}

/// `n` elements from TensorFlow's typed values: as many as given, then the last repeated
/// (zeros when none are given); more values than elements is an error.
fn repeat_last<T: Copy + Default>(
    vals: &[T],
    n: usize,
    field: &str,
    bad: &dyn Fn(String) -> TfWireError,
) -> Result<Vec<T>, TfWireError> {
    if vals.len() > n {
        return Err(bad(format!(
            "{} values in {field} for {n} elements",
            vals.len()
        )));
    }
    let mut out = Vec::new();
    out.try_reserve_exact(n)
        .map_err(|_| bad(format!("cannot allocate {n} elements")))?;
    out.extend_from_slice(vals);
    let last = vals.last().copied().unwrap_or_default();
    out.resize(n, last);
    Ok(out)
}

/// Encodes a host tensor with its elements in `tensor_content`.
pub fn tensor_to_tf(t: &Tensor) -> Result<proto::TensorProto, TfWireError> {
    let wire = crate::conv::tensor_to_wire(t).map_err(|e| TfWireError::Tensor {
        what: "a fetched tensor".into(),
        detail: e.to_string(),
    })?;
    Ok(proto::TensorProto {
        dtype: dtype_to_tf(t.dtype()) as i32,
        tensor_shape: Some(proto::TensorShapeProto {
            dim: t
                .dims()
                .iter()
                .map(|d| proto::tensor_shape_proto::Dim {
                    size: *d as i64,
                    name: String::new(),
                })
                .collect(),
            unknown_rank: false,
        }),
        tensor_content: wire.content,
        ..Default::default()
    })
}

/// A shape attribute: its dims (`-1` unknown), or `None` for an unknown rank.
fn shape_attr(s: &proto::TensorShapeProto) -> Option<Vec<i64>> {
    (!s.unknown_rank).then(|| s.dim.iter().map(|d| d.size.max(-1)).collect())
}

fn utf8(bytes: &[u8], node: &str, attr: &str) -> Result<String, TfWireError> {
    String::from_utf8(bytes.to_vec()).map_err(|_| TfWireError::Attr {
        node: node.to_string(),
        attr: attr.to_string(),
        detail: "a string that is not UTF-8".into(),
    })
}

/// One attribute as core's, or `None` when it carries nothing Magpie reads (a shape of
/// unknown rank).
fn attr_from_tf(
    node: &str,
    name: &str,
    v: &proto::AttrValue,
    limits: &mut DecodeLimits,
) -> Result<Option<AttrValue>, TfWireError> {
    use proto::attr_value::Value;
    let unsupported = |what: &str| TfWireError::Attr {
        node: node.to_string(),
        attr: name.to_string(),
        detail: format!("unsupported attribute kind: {what}"),
    };
    let what = || format!("node {node:?} attribute {name:?}");
    let Some(value) = &v.value else {
        return Err(TfWireError::Attr {
            node: node.to_string(),
            attr: name.to_string(),
            detail: "no value".into(),
        });
    };
    Ok(Some(match value {
        Value::S(s) => AttrValue::Str(utf8(s, node, name)?),
        Value::I(i) => AttrValue::Int(*i),
        Value::F(f) => AttrValue::Float(f64::from(*f)),
        Value::B(b) => AttrValue::Bool(*b),
        Value::Type(t) => AttrValue::DType(dtype_from_tf(*t, &what())?),
        Value::Shape(s) => match shape_attr(s) {
            Some(dims) => AttrValue::Ints(dims),
            None => return Ok(None),
        },
        Value::Tensor(t) => AttrValue::Tensor(tensor_from_tf(t, &what(), limits)?),
        Value::List(l) => {
            if !l.f.is_empty() {
                return Err(unsupported("a list of floats"));
            }
            if !l.shape.is_empty() {
                return Err(unsupported("a list of shapes"));
            }
            if !l.tensor.is_empty() {
                return Err(unsupported("a list of tensors"));
            }
            if !l.s.is_empty() {
                AttrValue::Strs(
                    l.s.iter()
                        .map(|s| utf8(s, node, name))
                        .collect::<Result<_, _>>()?,
                )
            } else if !l.r#type.is_empty() {
                AttrValue::Strs(
                    l.r#type
                        .iter()
                        .map(|t| dtype_from_tf(*t, &what()).map(|d| d.name().to_string()))
                        .collect::<Result<_, _>>()?,
                )
            } else if !l.b.is_empty() {
                AttrValue::Ints(l.b.iter().map(|b| i64::from(*b)).collect())
            } else {
                AttrValue::Ints(l.i.clone())
            }
        }
        Value::Placeholder(_) => return Err(unsupported("a function's placeholder")),
        Value::Func(_) => return Err(unsupported("a function")),
    }))
}

/// A TensorFlow graph as core's [`GraphDef`] (before translation: TensorFlow's op names
/// and attributes), with private attributes but `_class` dropped and attributes sorted
/// by name (protobuf maps have no order). Tensors in attributes count against `limits`
/// (the request's: one graph, or one extension).
///
/// # Errors
/// [`TfWireError`] naming the node and attribute that cannot be read, or
/// [`TfWireError::Functions`] for a graph with a function library.
pub fn graph_from_tf(
    g: &proto::GraphDef,
    limits: &mut DecodeLimits,
) -> Result<GraphDef, TfWireError> {
    if !g.library.is_empty() {
        return Err(TfWireError::Functions {
            bytes: g.library.len(),
        });
    }
    let nodes = g
        .node
        .iter()
        .map(|n| {
            let mut attrs = Vec::with_capacity(n.attr.len());
            for (name, v) in &n.attr {
                if name.starts_with('_') && name != CLASS_ATTR {
                    continue;
                }
                if let Some(a) = attr_from_tf(&n.name, name, v, limits)? {
                    attrs.push((name.clone(), a));
                }
            }
            attrs.sort_by(|a, b| a.0.cmp(&b.0));
            Ok(NodeDef {
                name: n.name.clone(),
                op: n.op.clone(),
                inputs: n.input.clone(),
                device: n.device.clone(),
                attrs,
            })
        })
        .collect::<Result<_, TfWireError>>()?;
    Ok(GraphDef { nodes })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    /// A request's limits of 1 GiB each: `&mut max()` in place of a request's.
    fn max() -> DecodeLimits {
        DecodeLimits::new(1 << 30, 1 << 30)
    }

    fn shape(dims: &[i64]) -> Option<proto::TensorShapeProto> {
        Some(proto::TensorShapeProto {
            dim: dims
                .iter()
                .map(|d| proto::tensor_shape_proto::Dim {
                    size: *d,
                    name: String::new(),
                })
                .collect(),
            unknown_rank: false,
        })
    }

    #[test]
    fn typed_values_repeat_the_last_and_content_is_little_endian() {
        let p = proto::TensorProto {
            dtype: proto::DataType::DtFloat as i32,
            tensor_shape: shape(&[5]),
            float_val: vec![7.0],
            ..Default::default()
        };
        let t = tensor_from_tf(&p, "c", &mut max()).unwrap();
        assert_eq!(t.to_vec::<f32>().unwrap(), vec![7.0; 5]);

        let p = proto::TensorProto {
            dtype: proto::DataType::DtInt64 as i32,
            tensor_shape: shape(&[2, 2]),
            int64_val: vec![1, 2],
            ..Default::default()
        };
        let t = tensor_from_tf(&p, "c", &mut max()).unwrap();
        assert_eq!(t.dims(), &[2, 2]);
        assert_eq!(t.to_vec::<i64>().unwrap(), vec![1, 2, 2, 2]);

        // No values at all: zeros; no shape: a scalar.
        let p = proto::TensorProto {
            dtype: proto::DataType::DtBool as i32,
            tensor_shape: shape(&[3]),
            ..Default::default()
        };
        assert_eq!(
            tensor_from_tf(&p, "c", &mut max())
                .unwrap()
                .to_vec::<bool>()
                .unwrap(),
            vec![false; 3]
        );
        let p = proto::TensorProto {
            dtype: proto::DataType::DtInt32 as i32,
            int_val: vec![9],
            ..Default::default()
        };
        let t = tensor_from_tf(&p, "c", &mut max()).unwrap();
        assert!(t.dims().is_empty());
        assert_eq!(t.scalar_value::<i32>().unwrap(), 9);

        let t = Tensor::from_vec([2usize, 3], vec![1.5f64, -2.0, 3.0, 4.0, 5.0, 6.25]).unwrap();
        let p = tensor_to_tf(&t).unwrap();
        assert_eq!(p.dtype, proto::DataType::DtDouble as i32);
        assert_eq!(p.tensor_content.len(), 48);
        assert_eq!(&p.tensor_content[..8], &1.5f64.to_le_bytes());
        let back = tensor_from_tf(&p, "round trip", &mut max()).unwrap();
        assert_eq!(back.dims(), &[2, 3]);
        assert_eq!(back.to_vec::<f64>().unwrap(), t.to_vec::<f64>().unwrap());
    }

    #[test]
    fn bad_tensors_are_errors_naming_them() {
        let too_many = proto::TensorProto {
            dtype: proto::DataType::DtFloat as i32,
            tensor_shape: shape(&[2]),
            float_val: vec![1.0, 2.0, 3.0],
            ..Default::default()
        };
        let e = tensor_from_tf(&too_many, "feed \"x:0\"", &mut max()).unwrap_err();
        assert!(e.to_string().contains("feed \"x:0\""), "{e}");
        assert_eq!(e.code(), magpie_core::Code::InvalidArgument);

        let short = proto::TensorProto {
            dtype: proto::DataType::DtFloat as i32,
            tensor_shape: shape(&[4]),
            tensor_content: Bytes::from_static(&[0u8; 12]),
            ..Default::default()
        };
        assert_eq!(
            tensor_from_tf(&short, "x", &mut max()).unwrap_err().code(),
            magpie_core::Code::InvalidArgument
        );

        let strings = proto::TensorProto {
            dtype: proto::DataType::DtString as i32,
            tensor_shape: shape(&[]),
            string_val: vec![Bytes::from_static(b"hi")],
            ..Default::default()
        };
        let e = tensor_from_tf(&strings, "feed \"s:0\"", &mut max()).unwrap_err();
        assert!(
            e.to_string().contains("DT_STRING") && e.to_string().contains("s:0"),
            "{e}"
        );

        // A single value claiming 2^40 elements is refused before any allocation.
        let huge = proto::TensorProto {
            dtype: proto::DataType::DtFloat as i32,
            tensor_shape: shape(&[1 << 20, 1 << 20]),
            float_val: vec![1.0],
            ..Default::default()
        };
        assert_eq!(
            tensor_from_tf(&huge, "x", &mut max()).unwrap_err().code(),
            magpie_core::Code::ResourceExhausted
        );
        let overflow = proto::TensorProto {
            dtype: proto::DataType::DtFloat as i32,
            tensor_shape: shape(&[i64::MAX, i64::MAX]),
            ..Default::default()
        };
        assert!(tensor_from_tf(&overflow, "x", &mut max()).is_err());
        let negative = proto::TensorProto {
            dtype: proto::DataType::DtFloat as i32,
            tensor_shape: shape(&[-1]),
            ..Default::default()
        };
        assert!(tensor_from_tf(&negative, "x", &mut max()).is_err());
    }

    #[test]
    fn a_requests_repeated_values_are_held_to_its_message_limit() {
        // A few bytes each, 4 MiB each once decoded: the third passes 10 MiB of the
        // request's, though each is within the tensor limit.
        let four_mib = proto::TensorProto {
            dtype: proto::DataType::DtFloat as i32,
            tensor_shape: shape(&[1 << 20]),
            float_val: vec![1.0],
            ..Default::default()
        };
        let mut limits = DecodeLimits::new(1 << 30, 10 << 20);
        for name in ["a", "b"] {
            tensor_from_tf(&four_mib, name, &mut limits).unwrap();
        }
        assert_eq!(limits.decoded(), 8 << 20);
        let e = tensor_from_tf(&four_mib, "feed \"c:0\"", &mut limits).unwrap_err();
        assert_eq!(e.code(), magpie_core::Code::ResourceExhausted);
        for w in [
            "feed \"c:0\"",
            "4194304 bytes",
            "8388608 bytes",
            "10485760",
            "--max-message-bytes",
        ] {
            assert!(e.to_string().contains(w), "{w:?} not in {e}");
        }
        // Nothing was counted for the refused one.
        assert_eq!(limits.decoded(), 8 << 20);

        // A graph of constants is one request: its `value`s count together.
        let mut node = proto::NodeDef {
            name: "big".into(),
            op: "Const".into(),
            ..Default::default()
        };
        node.attr.insert(
            "value".into(),
            attr(proto::attr_value::Value::Tensor(four_mib)),
        );
        let nodes = (0..3)
            .map(|k| proto::NodeDef {
                name: format!("big{k}"),
                ..node.clone()
            })
            .collect();
        let g = proto::GraphDef {
            node: nodes,
            ..Default::default()
        };
        let e = graph_from_tf(&g, &mut DecodeLimits::new(1 << 30, 10 << 20)).unwrap_err();
        assert_eq!(e.code(), magpie_core::Code::ResourceExhausted);
        assert!(
            e.to_string().contains("node \"big2\" attribute \"value\""),
            "{e}"
        );
        assert!(graph_from_tf(&g, &mut DecodeLimits::new(1 << 30, 12 << 20)).is_ok());
    }

    fn attr(v: proto::attr_value::Value) -> proto::AttrValue {
        proto::AttrValue { value: Some(v) }
    }

    #[test]
    fn attributes_convert_and_private_ones_are_dropped() {
        use proto::attr_value::{ListValue, Value};
        let mut node = proto::NodeDef {
            name: "x".into(),
            op: "Placeholder".into(),
            input: vec!["^a".into()],
            device: "/job:ps/task:0".into(),
            ..Default::default()
        };
        node.attr.insert(
            "dtype".into(),
            attr(Value::Type(proto::DataType::DtFloat as i32)),
        );
        node.attr
            .insert("shape".into(), attr(Value::Shape(shape(&[-1, 3]).unwrap())));
        node.attr.insert(
            "_class".into(),
            attr(Value::List(ListValue {
                s: vec![Bytes::from_static(b"loc:@v")],
                ..Default::default()
            })),
        );
        node.attr.insert(
            "_output_shapes".into(),
            attr(Value::List(ListValue {
                shape: vec![shape(&[1]).unwrap()],
                ..Default::default()
            })),
        );
        node.attr.insert(
            "Tlist".into(),
            attr(Value::List(ListValue {
                r#type: vec![proto::DataType::DtInt32 as i32],
                ..Default::default()
            })),
        );
        let mut unknown = proto::NodeDef {
            name: "y".into(),
            op: "Placeholder".into(),
            ..Default::default()
        };
        unknown.attr.insert(
            "shape".into(),
            attr(Value::Shape(proto::TensorShapeProto {
                dim: vec![],
                unknown_rank: true,
            })),
        );
        let g = proto::GraphDef {
            node: vec![node, unknown],
            ..Default::default()
        };
        let def = graph_from_tf(&g, &mut max()).unwrap();
        let x = &def.nodes[0];
        assert_eq!(x.inputs, vec!["^a".to_string()]);
        assert_eq!(x.device, "/job:ps/task:0");
        let names: Vec<&str> = x.attrs.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, vec!["Tlist", "_class", "dtype", "shape"]);
        assert_eq!(x.attrs[0].1, AttrValue::Strs(vec!["i32".into()]));
        assert_eq!(x.attrs[1].1, AttrValue::Strs(vec!["loc:@v".into()]));
        assert_eq!(x.attrs[2].1, AttrValue::DType(DType::F32));
        assert_eq!(x.attrs[3].1, AttrValue::Ints(vec![-1, 3]));
        // Unknown rank: no shape attribute at all.
        assert!(def.nodes[1].attrs.is_empty());
    }

    #[test]
    fn unreadable_attributes_name_node_and_attribute() {
        use proto::attr_value::{ListValue, Value};
        let mut n = proto::NodeDef {
            name: "b".into(),
            op: "Bucketize".into(),
            ..Default::default()
        };
        n.attr.insert(
            "boundaries".into(),
            attr(Value::List(ListValue {
                f: vec![1.0],
                ..Default::default()
            })),
        );
        let g = proto::GraphDef {
            node: vec![n],
            ..Default::default()
        };
        let e = graph_from_tf(&g, &mut max()).unwrap_err();
        assert_eq!(e.code(), magpie_core::Code::Unimplemented);
        let text = e.to_string();
        assert!(
            text.contains("\"b\"") && text.contains("boundaries"),
            "{text}"
        );

        let mut n = proto::NodeDef {
            name: "s".into(),
            op: "Const".into(),
            ..Default::default()
        };
        n.attr.insert(
            "dtype".into(),
            attr(Value::Type(proto::DataType::DtString as i32)),
        );
        let g = proto::GraphDef {
            node: vec![n],
            ..Default::default()
        };
        let text = graph_from_tf(&g, &mut max()).unwrap_err().to_string();
        assert!(
            text.contains("DT_STRING") && text.contains("\"s\""),
            "{text}"
        );

        let with_functions = proto::GraphDef {
            library: Bytes::from_static(&[10, 0]),
            ..Default::default()
        };
        assert_eq!(
            graph_from_tf(&with_functions, &mut max())
                .unwrap_err()
                .code(),
            magpie_core::Code::Unimplemented
        );
    }

    /// Arbitrary bytes, decoded as TensorFlow's messages and converted: errors, never a
    /// panic or an allocation beyond the limit.
    #[test]
    fn hostile_bytes_never_panic() {
        use prost::Message;
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        // Valid messages with their bytes flipped, and random bytes.
        let mut seed_graph = proto::GraphDef::default();
        let mut n = proto::NodeDef {
            name: "c".into(),
            op: "Const".into(),
            ..Default::default()
        };
        n.attr.insert(
            "value".into(),
            attr(proto::attr_value::Value::Tensor(proto::TensorProto {
                dtype: proto::DataType::DtFloat as i32,
                tensor_shape: shape(&[3, 2]),
                float_val: vec![1.0, 2.0],
                ..Default::default()
            })),
        );
        seed_graph.node.push(n);
        let seed = seed_graph.encode_to_vec();
        for round in 0..20_000 {
            let bytes: Vec<u8> = if round % 2 == 0 {
                let mut b = seed.clone();
                for _ in 0..1 + next() % 4 {
                    let i = (next() as usize) % b.len();
                    b[i] = next() as u8;
                }
                b
            } else {
                (0..next() % 64).map(|_| next() as u8).collect()
            };
            if let Ok(g) = proto::GraphDef::decode(bytes.as_slice()) {
                let _ = graph_from_tf(&g, &mut DecodeLimits::new(1 << 20, 1 << 20));
            }
            if let Ok(t) = proto::TensorProto::decode(bytes.as_slice()) {
                let _ = tensor_from_tf(&t, "fuzz", &mut DecodeLimits::new(1 << 20, 1 << 20));
            }
        }
    }
}
