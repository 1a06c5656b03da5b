//! Fuzz target: tensors, feeds and graphs from the wire. A tensor announced with any
//! dtype, dims and length, streamed in any pieces, is a tensor or an error (never an
//! abort on a huge announcement); what decodes re-encodes to the same bytes. Raw bytes
//! decode as the RunStep and CreateSession requests the master reads.

#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use magpie_fuzz::graph_gen::Dim;
use magpie_grpc::conv::{graph_from_wire, tensor_from_wire, tensor_to_wire, TensorAssembler};
use magpie_grpc::proto;
use prost::Message;

#[derive(Arbitrary, Debug)]
enum Input {
    /// A tensor announced up front, then streamed in pieces.
    Streamed {
        dtype: i8,
        dims: Vec<Dim>,
        announced: u64,
        pieces: Vec<Vec<u8>>,
    },
    /// A whole `TensorProto`.
    Tensor {
        dtype: i8,
        dims: Vec<Dim>,
        content: Vec<u8>,
    },
    /// Raw bytes as the master's requests.
    Raw(Vec<u8>),
}

fn dims(d: &[Dim]) -> Vec<u64> {
    d.iter().map(|d| d.0 as u64).collect()
}

fuzz_target!(|input: Input| match input {
    Input::Streamed {
        dtype,
        dims: d,
        announced,
        pieces,
    } => {
        let announced = if announced % 4 == 0 {
            announced
        } else {
            pieces.iter().map(|p| p.len() as u64).sum()
        };
        if let Ok(mut a) = TensorAssembler::new(i32::from(dtype), &dims(&d), announced) {
            for p in &pieces {
                if a.push(p).is_err() {
                    return;
                }
            }
            let _ = a.finish();
        }
    }
    Input::Tensor {
        dtype,
        dims: d,
        content,
    } => {
        let p = proto::TensorProto {
            dtype: i32::from(dtype),
            dims: dims(&d),
            content: content.into(),
        };
        if let Ok(t) = tensor_from_wire(&p) {
            let back = tensor_to_wire(&t).expect("a decoded tensor encodes");
            assert_eq!(back.dims, p.dims);
            assert_eq!(back.content, p.content);
        }
    }
    Input::Raw(bytes) => {
        if let Ok(r) = proto::RunStepRequest::decode(bytes.as_slice()) {
            for f in &r.feeds {
                if let Some(t) = &f.tensor {
                    let _ = tensor_from_wire(t);
                }
            }
        }
        if let Ok(r) = proto::CreateSessionRequest::decode(bytes.as_slice()) {
            if let Some(g) = &r.graph {
                if let Ok(def) = graph_from_wire(g) {
                    let _ = magpie_core::Graph::import(&def);
                }
            }
        }
    }
});
