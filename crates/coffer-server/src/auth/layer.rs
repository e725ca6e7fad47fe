//! The tower layer in front of the Coffer services: authenticate, check the role against the
//! method, count the request against the caller's rate limit, attach the [`Caller`]. A refused
//! request never reaches a handler. Health and reflection stay open.

use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::{Either, Ready, ready};
use tonic::Status;

use super::Caller;
use super::keys::{KEY_PREFIX, KeyRing};
use super::policy::{Method, allows};
use super::rate::RateLimits;
use super::tokens::TokenSigner;
use crate::error::ApiError;

/// Everything the layer needs to admit a request.
pub struct Gatekeeper {
    pub keys: KeyRing,
    pub tokens: TokenSigner,
    pub rate: RateLimits,
}

impl Gatekeeper {
    /// The caller a request's `authorization` header identifies.
    pub fn authenticate(&self, headers: &http::HeaderMap) -> Result<Caller, ApiError> {
        let Some(value) = headers.get(http::header::AUTHORIZATION) else {
            return Err(ApiError::Unauthenticated(
                "no credentials: send `authorization: Bearer <API key or player token>`".to_owned(),
            ));
        };
        let value = value.to_str().map_err(|_| {
            ApiError::Unauthenticated("the authorization header is not ASCII".to_owned())
        })?;
        let Some(credential) = value.strip_prefix("Bearer ") else {
            return Err(ApiError::Unauthenticated(
                "the authorization header must be `Bearer <credential>`".to_owned(),
            ));
        };
        let credential = credential.trim();
        if credential.starts_with(KEY_PREFIX) {
            let (id, role) = self
                .keys
                .verify(credential)
                .ok_or_else(|| ApiError::Unauthenticated("the API key is not valid".to_owned()))?;
            Ok(Caller::Key { id, role })
        } else {
            let player_id = self
                .tokens
                .verify(credential)
                .map_err(ApiError::Unauthenticated)?;
            Ok(Caller::Player { player_id })
        }
    }

    /// Authenticates, authorizes and rate-limits a call to `path`.
    pub fn admit(&self, path: &str, headers: &http::HeaderMap) -> Result<Caller, ApiError> {
        let caller = self.authenticate(headers)?;
        if let Some(method) = Method::from_path(path)
            && !allows(&caller, method)
        {
            let who = match &caller {
                Caller::Key { id, role } => format!("API key {id:?} (role {})", role.name()),
                Caller::Player { player_id } => format!("a player token (player {player_id:?})"),
            };
            return Err(ApiError::PermissionDenied(format!(
                "{who} may not call {method:?}"
            )));
        }
        self.rate.check(&caller)?;
        Ok(caller)
    }
}

/// Puts a [`Gatekeeper`] in front of every `coffer.v1` service.
#[derive(Clone)]
pub struct AuthLayer {
    gatekeeper: Arc<Gatekeeper>,
}

impl AuthLayer {
    /// A layer admitting requests with `gatekeeper`.
    pub fn new(gatekeeper: Arc<Gatekeeper>) -> Self {
        AuthLayer { gatekeeper }
    }
}

impl<S> tower::Layer<S> for AuthLayer {
    type Service = AuthService<S>;

    fn layer(&self, inner: S) -> AuthService<S> {
        AuthService {
            inner,
            gatekeeper: Arc::clone(&self.gatekeeper),
        }
    }
}

/// The service [`AuthLayer`] wraps around the router.
#[derive(Clone)]
pub struct AuthService<S> {
    inner: S,
    gatekeeper: Arc<Gatekeeper>,
}

type Refusal<E> = Ready<Result<http::Response<tonic::body::Body>, E>>;

impl<S, B> tower::Service<http::Request<B>> for AuthService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = Either<Refusal<S::Error>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        if !request.uri().path().starts_with("/coffer.") {
            return Either::Right(self.inner.call(request));
        }
        match self
            .gatekeeper
            .admit(request.uri().path(), request.headers())
        {
            Ok(caller) => {
                request.extensions_mut().insert(caller);
                Either::Right(self.inner.call(request))
            }
            Err(error) => Either::Left(ready(Ok(Status::from(error).into_http()))),
        }
    }
}
