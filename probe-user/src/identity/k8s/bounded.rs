//! A bound on every line of every API response. kube's watch splits events
//! on newlines with an unbounded codec and a LIST is read whole: an API
//! server (or anything answering in its place) sending a line without end
//! would have the daemon hold all of it. A list page and a watch event are
//! each one line, so bounding lines bounds both; past the bound the
//! response fails and the watcher retries with its backoff. kube has no
//! such knob, hence this tower layer (docs/security.md).
use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll, ready},
};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tower::{BoxError, Layer, Service};

#[derive(Clone, Copy)]
pub struct BoundLines {
    pub max_line_bytes: usize,
}

impl<S> Layer<S> for BoundLines {
    type Service = Bounded<S>;

    fn layer(&self, inner: S) -> Bounded<S> {
        Bounded { inner, max: self.max_line_bytes }
    }
}

#[derive(Clone)]
pub struct Bounded<S> {
    inner: S,
    max: usize,
}

impl<S, Req, B> Service<Req> for Bounded<S>
where
    S: Service<Req, Response = http::Response<B>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<LineBounded<B>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let (future, max) = (self.inner.call(req), self.max);
        Box::pin(async move { Ok(future.await?.map(|inner| LineBounded { inner, max, since_newline: 0 })) })
    }
}

/// A body that fails once `max` bytes pass without a newline.
pub struct LineBounded<B> {
    inner: B,
    max: usize,
    since_newline: usize,
}

impl<B> Body for LineBounded<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let frame = match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
            Some(Ok(frame)) => frame,
            Some(Err(e)) => return Poll::Ready(Some(Err(e.into()))),
            None => return Poll::Ready(None),
        };
        if let Some(data) = frame.data_ref() {
            this.since_newline = match data.iter().rposition(|&b| b == b'\n') {
                Some(i) => data.len() - i - 1,
                None => this.since_newline.saturating_add(data.len()),
            };
            if this.since_newline > this.max {
                return Poll::Ready(Some(Err(format!("a response line longer than {} bytes", this.max).into())));
            }
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, StreamBody};

    fn body(chunks: &[&'static [u8]]) -> LineBounded<impl Body<Data = Bytes, Error = BoxError> + Unpin> {
        let frames: Vec<Result<Frame<Bytes>, BoxError>> =
            chunks.iter().map(|c| Ok(Frame::data(Bytes::from_static(c)))).collect();
        LineBounded { inner: StreamBody::new(futures_util::stream::iter(frames)), max: 8, since_newline: 0 }
    }

    fn read(b: LineBounded<impl Body<Data = Bytes, Error = BoxError> + Unpin>) -> Result<Bytes, String> {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(b.collect()).map(|c| c.to_bytes()).map_err(|e| e.to_string())
    }

    #[test]
    fn lines_up_to_the_bound_pass_longer_ones_fail() {
        assert_eq!(read(body(&[b"12345", b"678\n1234", b"5678\n"])).unwrap().len(), 18);
        assert!(read(body(&[b"12345", b"6789"])).unwrap_err().contains("longer than 8 bytes"));
        assert!(read(body(&[b"1\n2345678", b"9"])).is_ok(), "counts from the last newline");
        assert!(read(body(&[b"1\n2345678", b"9a"])).is_err());
    }
}
