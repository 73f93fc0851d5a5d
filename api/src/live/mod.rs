//! Events to browsers: the relay from the event bus, the frames, `/ws`, Socket.IO, who may
//! open a socket, and the AsyncAPI document that describes them.

pub mod asyncapi;
pub mod frame;
pub mod gate;
pub mod relay;
pub mod socketio;
pub mod ws;
