//! What the listener serves beside poem: a boxed body and a boxed service, so the Socket.IO
//! service is mounted on the same listener without the two knowing each other.

use std::{convert::Infallible, io};

use hyper::{
    Request, Response,
    body::{Bytes, Incoming},
};

/// A response body from either side.
pub type Body = http_body_util::combinators::BoxBody<Bytes, io::Error>;
/// An HTTP service that shares the listener with poem.
pub type HttpService =
    tower::util::BoxCloneSyncService<Request<Incoming>, Response<Body>, Infallible>;
