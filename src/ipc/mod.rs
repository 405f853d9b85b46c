//! IPC protocol v1: wire types, the framing, the daemon's fast codec, and a blocking client.

pub mod access;
pub mod client;
pub mod decode;
pub mod encode;
pub mod events;
pub mod frame;
pub mod protocol;

pub use decode::{decode_request, DecodeError, RawId};
pub use frame::{FrameDecoder, FrameError, FRAME_BYTES_MAX};
pub use protocol::{Code, Request, RequestEnvelope, ResponseEnvelope, Trigger, PROTOCOL_VERSION};
