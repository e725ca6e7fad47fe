//! Who is calling. A layer in front of every service puts a typed [`Caller`] into the request's
//! extensions; handlers read it from there and never parse credentials themselves.

use tonic::{Request, Status};

use crate::error::ApiError;

/// The identity a request runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// No credentials are configured: a development server where every call is allowed.
    Development,
}

impl Caller {
    /// How the caller is recorded in a transaction's metadata.
    pub fn label(&self) -> String {
        match self {
            Caller::Development => "development".to_owned(),
        }
    }
}

/// The interceptor that identifies callers. Until keys and player tokens exist, every caller is
/// the development caller.
pub fn identify(mut request: Request<()>) -> Result<Request<()>, Status> {
    request.extensions_mut().insert(Caller::Development);
    Ok(request)
}

/// The caller the layer attached to a request.
pub fn caller_of<T>(request: &Request<T>) -> Result<Caller, ApiError> {
    request
        .extensions()
        .get::<Caller>()
        .cloned()
        .ok_or_else(|| ApiError::Internal("request reached a handler without a caller".to_owned()))
}
