//! [`WireCodec`]: prost's codec for every service of this crate, except that a message
//! that does not decode is `INVALID_ARGUMENT` (the peer sent malformed bytes), not
//! `INTERNAL` as tonic-prost reports it. The generated services and clients use it
//! (`build.rs` sets it as their codec); on the calling side it means an undecodable
//! answer is reported as `INVALID_ARGUMENT` too. A `RunStep` answer that lists the
//! placement of at least [`TRIM_NODES`](crate::trim::TRIM_NODES) nodes (the first step of
//! a signature over a large graph: a string per node) trims the heap once it is encoded
//! and freed (`trim.rs`); nothing else would give those pages back before the session
//! closes.

use std::any::Any;

use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::{Code, Status};
use tonic_prost::{ProstCodec, ProstDecoder, ProstEncoder};

/// prost's codec with decode failures as `INVALID_ARGUMENT`.
#[derive(Debug, Clone)]
pub(crate) struct WireCodec<T, U>(ProstCodec<T, U>);

impl<T, U> Default for WireCodec<T, U> {
    fn default() -> Self {
        WireCodec(ProstCodec::default())
    }
}

impl<T, U> Codec for WireCodec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = WireEncoder<T>;
    type Decoder = WireDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        WireEncoder(self.0.encoder())
    }

    fn decoder(&mut self) -> Self::Decoder {
        WireDecoder(self.0.decoder())
    }
}

/// prost's encoder, trimming the heap after a large message (see the module docs).
#[derive(Debug, Clone)]
pub(crate) struct WireEncoder<T>(ProstEncoder<T>);

impl<T: prost::Message + 'static> Encoder for WireEncoder<T> {
    type Item = T;
    type Error = Status;

    fn encode(&mut self, item: T, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        let large = (&item as &dyn Any)
            .downcast_ref::<crate::proto::RunStepResponse>()
            .is_some_and(|r| r.placement.len() >= crate::trim::TRIM_NODES);
        // Consumes `item`: its strings and lists are freed by the time this returns.
        let encoded = self.0.encode(item, buf);
        if large {
            crate::trim::release_free_memory();
        }
        encoded
    }

    fn buffer_settings(&self) -> BufferSettings {
        self.0.buffer_settings()
    }
}

/// prost's decoder with decode failures as `INVALID_ARGUMENT`.
#[derive(Debug, Clone)]
pub(crate) struct WireDecoder<U>(ProstDecoder<U>);

impl<U: prost::Message + Default> Decoder for WireDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        self.0.decode(buf).map_err(|s| {
            if s.code() == Code::Internal {
                Status::invalid_argument(format!("malformed protobuf message: {}", s.message()))
            } else {
                s
            }
        })
    }

    fn buffer_settings(&self) -> BufferSettings {
        self.0.buffer_settings()
    }
}
