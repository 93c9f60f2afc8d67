//! JSON answers with the headers every route sets.

use crate::error::ApiError;
use crate::logging::LogFields;
use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use serde::Serialize;

/// A JSON answer with `content-type` set. `x-request-id` is added by the platform layer.
pub fn json(status: StatusCode, body: &impl Serialize) -> Response<Bytes> {
    let bytes = serde_json::to_vec(body).unwrap_or_else(|_| b"{}".to_vec());
    let mut response = Response::new(Bytes::from(bytes));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
}

/// The `{"error": ...}` answer for an error, with `Allow` on a 405; the request's log line
/// gets the message and, for an outage, what failed below it.
pub fn error(err: &ApiError, log: &mut LogFields) -> Response<Bytes> {
    let message = err.to_string();
    let mut response = json(err.status(), &ErrorBody { error: &message });
    if let ApiError::MethodNotAllowed { allow } = err {
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static(allow));
    }
    log.detail = err.detail();
    log.error = Some(message);
    response
}
