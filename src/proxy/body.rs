//! Body types on the proxy path.

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use http_body_util::combinators::BoxBody;
use hyper::body::Incoming;
use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What flows through the proxy in both directions.
pub type ProxyBody = BoxBody<Bytes, BoxError>;

pub fn full(bytes: impl Into<Bytes>) -> ProxyBody {
    http_body_util::Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

pub fn empty() -> ProxyBody {
    http_body_util::Empty::new()
        .map_err(|never| match never {})
        .boxed()
}

pub fn incoming(body: Incoming) -> ProxyBody {
    body.map_err(BoxError::from).boxed()
}

/// Outcome of trying to buffer a request body for capture.
pub enum Buffered {
    /// The whole body, with its trailers if any, within the limit.
    Complete {
        data: Bytes,
        trailers: Option<http::HeaderMap>,
    },
    /// Over the limit: what was read so far, then the rest of the stream.
    Oversize(Prefixed),
}

/// Read a body up to `limit` bytes. Past the limit nothing more is read
/// here: the frames read so far are replayed ahead of the untouched rest,
/// so the upstream receives exactly the bytes the client sent.
pub async fn buffer(mut body: Incoming, limit: usize) -> Result<Buffered, hyper::Error> {
    let mut frames: VecDeque<Bytes> = VecDeque::new();
    let mut len = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame?;
        match frame.into_data() {
            Ok(data) => {
                len += data.len();
                frames.push_back(data);
                if len > limit {
                    return Ok(Buffered::Oversize(Prefixed {
                        prefix: frames,
                        rest: body,
                    }));
                }
            }
            Err(frame) => {
                // Trailers end the body.
                let trailers = frame.into_trailers().ok();
                return Ok(Buffered::Complete {
                    data: concat(frames, len),
                    trailers,
                });
            }
        }
    }
    Ok(Buffered::Complete {
        data: concat(frames, len),
        trailers: None,
    })
}

fn concat(frames: VecDeque<Bytes>, len: usize) -> Bytes {
    if frames.len() == 1 {
        return frames.into_iter().next().unwrap_or_default();
    }
    let mut out = Vec::with_capacity(len);
    for f in frames {
        out.extend_from_slice(&f);
    }
    out.into()
}

/// A complete buffered body, replayed with its trailers.
pub fn replay(data: Bytes, trailers: Option<http::HeaderMap>) -> ProxyBody {
    let mut frames: VecDeque<Frame<Bytes>> = VecDeque::new();
    if !data.is_empty() {
        frames.push_back(Frame::data(data));
    }
    if let Some(t) = trailers {
        frames.push_back(Frame::trailers(t));
    }
    http_body_util::StreamBody::new(futures_util::stream::iter(
        frames.into_iter().map(Ok::<_, BoxError>),
    ))
    .boxed()
}

pin_project_lite::pin_project! {
    /// Frames already read, then the rest of the incoming body.
    pub struct Prefixed {
        prefix: VecDeque<Bytes>,
        #[pin]
        rest: Incoming,
    }
}

impl Body for Prefixed {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        if let Some(b) = this.prefix.pop_front() {
            return Poll::Ready(Some(Ok(Frame::data(b))));
        }
        this.rest.poll_frame(cx).map_err(BoxError::from)
    }

    fn is_end_stream(&self) -> bool {
        self.prefix.is_empty() && self.rest.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let prefix: u64 = self.prefix.iter().map(|b| b.len() as u64).sum();
        let rest = self.rest.size_hint();
        let mut hint = SizeHint::new();
        hint.set_lower(rest.lower() + prefix);
        if let Some(u) = rest.upper() {
            hint.set_upper(u + prefix);
        }
        hint
    }
}
