//! JSON answers with the headers every route sets.

use crate::error::ApiError;
use crate::logging::LogFields;
use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use serde_json::{Value, json};

/// A JSON answer with `content-type` set. `x-request-id` is added by the platform layer.
pub fn json(status: StatusCode, body: &Value) -> Response<Bytes> {
    let bytes = serde_json::to_vec(body).unwrap_or_else(|_| b"{}".to_vec());
    let mut response = Response::new(Bytes::from(bytes));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// The `{"error": ...}` answer for an error, with `Allow` on a 405, and the message kept
/// for the request's log line.
pub fn error(err: &ApiError) -> Response<Bytes> {
    let message = err.to_string();
    let mut response = json(err.status(), &json!({ "error": message }));
    if let ApiError::MethodNotAllowed { allow } = err {
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static(allow));
    }
    response.extensions_mut().insert(LogFields {
        error: Some(message),
        ..LogFields::default()
    });
    response
}

/// Adds what the request's log line should say to a response.
pub fn with_log(mut response: Response<Bytes>, fields: LogFields) -> Response<Bytes> {
    let merged = match response.extensions_mut().remove::<LogFields>() {
        Some(existing) => fields.merge(existing),
        None => fields,
    };
    response.extensions_mut().insert(merged);
    response
}
