//! Reading what an upstream service answers, never more than a stated amount: an answer
//! from PostgREST, Replicate's API or an error page is read into memory, and a broken or
//! hostile upstream must not be able to make that unbounded.

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
