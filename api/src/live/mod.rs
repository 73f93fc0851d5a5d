//! Events to browsers: the relay from the event bus, `/ws`, Socket.IO, and the AsyncAPI
//! document that describes them. Each event is serialised once for every socket
//! (`cache::frames`); who may open a socket is `abuse::live_gate`.

pub mod asyncapi;
pub mod relay;
pub mod socketio;
pub mod ws;
