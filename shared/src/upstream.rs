//! Reading what an upstream service answers, never more than a stated amount: an answer
//! from PostgREST, Replicate's API or an error page is read into memory, and a broken or
//! hostile upstream must not be able to make that unbounded. Also why a call got no answer,
//! in words that name no URL.

use bytes::{Bytes, BytesMut};

/// Why an upstream answer was not read whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    /// It was longer than the limit.
    #[error("the answer was larger than {0} bytes")]
    TooLarge(usize),
    /// The connection broke mid-answer.
    #[error("the answer was interrupted")]
    Interrupted,
}

/// Why a request got no answer: timed out, could not connect, or failed otherwise. Only the
/// kind is kept, since reqwest's own message names the URL.
pub fn no_answer(error: &reqwest::Error) -> &'static str {
    if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "connection refused or failed"
    } else {
        "request failed"
    }
}

/// The body of `response`, if it is at most `limit` bytes.
pub async fn read_at_most(
    mut response: reqwest::Response,
    limit: usize,
) -> Result<Bytes, ReadError> {
    if response
        .content_length()
        .is_some_and(|declared| declared > limit as u64)
    {
        return Err(ReadError::TooLarge(limit));
    }
    let mut body = BytesMut::new();
    while let Some(chunk) = response.chunk().await.map_err(|_| ReadError::Interrupted)? {
        if body.len() + chunk.len() > limit {
            return Err(ReadError::TooLarge(limit));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}
