//! Accepted connections that floodgate can end on its own terms: each one is cut when the
//! shutdown deadline passes, and an optional cap bounds how many are open at once. With TLS on,
//! the handshake happens here too (each in its own task, bounded in time), so the servers only
//! ever see connections that completed it.
//!
//! A graceful server stop waits for every connection to finish, and a client that connects and
//! sends nothing (or half a request) never finishes: without a cut, one such client keeps the
//! process alive after SIGTERM for as long as it likes. With it, every read and write on every
//! accepted connection fails once [`Cut::cut`] is called, the server's connection tasks end, and
//! the graceful stop completes.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_rustls::server::TlsStream;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

use crate::tls::{Listener, ServerTls};

/// Connections accepted and waiting to be picked up by the server: a short queue, so the cap
/// (not this buffer) decides how many are open.
const HANDOVER: usize = 16;

/// How long a client may take to complete the TLS handshake. A client that connects and says
/// nothing holds a place under the cap until then, as a slow request's headers do until the
/// header-read timeout.
pub(crate) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// TLS for one listener: the server's (reloadable) configuration and which listener this is.
#[derive(Debug, Clone)]
pub(crate) struct Tls {
    pub server: Arc<ServerTls>,
    pub listener: Listener,
}

/// The switch that ends every connection accepted through it; cheap to clone.
#[derive(Debug, Clone, Default)]
pub(crate) struct Cut {
    token: CancellationToken,
}

impl Cut {
    /// Ends every connection accepted through this switch, now and from now on.
    pub(crate) fn cut(&self) {
        self.token.cancel();
    }

    /// Accepts connections from `listener` until the returned stream is dropped or the switch is
    /// thrown. With `cap`, at most that many are open at once; more wait in the kernel's backlog.
    /// With `tls`, only connections that complete a TLS handshake come out; the others (plain
    /// text, an untrusted client certificate, silence) are closed.
    pub(crate) fn accept(
        &self,
        listener: TcpListener,
        cap: Option<usize>,
        tls: Option<Tls>,
    ) -> Incoming {
        let (tx, rx) = mpsc::channel(HANDOVER);
        let local_addr = listener.local_addr();
        let permits = cap.map(|cap| Arc::new(Semaphore::new(cap.max(1))));
        tokio::spawn(accept_loop(listener, permits, tls, self.token.clone(), tx));
        Incoming { rx, local_addr }
    }
}

async fn accept_loop(
    listener: TcpListener,
    permits: Option<Arc<Semaphore>>,
    tls: Option<Tls>,
    token: CancellationToken,
    tx: mpsc::Sender<(CutStream, SocketAddr)>,
) {
    loop {
        let permit = match &permits {
            Some(permits) => tokio::select! {
                permit = permits.clone().acquire_owned() => match permit {
                    Ok(permit) => Some(permit),
                    Err(_) => return, // closed: never happens, the semaphore is ours
                },
                _ = token.cancelled() => return,
                _ = tx.closed() => return,
            },
            None => None,
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = token.cancelled() => return,
            _ = tx.closed() => return,
        };
        match accepted {
            Ok((stream, peer)) => {
                // Small request/response exchanges: don't let Nagle hold them back.
                let _ = stream.set_nodelay(true);
                let Some(tls) = &tls else {
                    let stream = CutStream {
                        inner: Transport::Plain(stream),
                        cut: Box::pin(token.clone().cancelled_owned()),
                        _permit: permit,
                    };
                    if tx.send((stream, peer)).await.is_err() {
                        return;
                    }
                    continue;
                };
                // In its own task: one slow handshake must not hold up the connections behind it.
                let acceptor = tls.server.acceptor(tls.listener);
                let (token, tx) = (token.clone(), tx.clone());
                tokio::spawn(async move {
                    let handshake =
                        tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream));
                    let stream = tokio::select! {
                        done = handshake => match done {
                            Ok(Ok(stream)) => stream,
                            Ok(Err(err)) => {
                                tracing::debug!(%peer, error = %err, "TLS handshake failed");
                                return;
                            }
                            Err(_) => {
                                tracing::debug!(%peer, "TLS handshake timed out");
                                return;
                            }
                        },
                        _ = token.cancelled() => return,
                    };
                    let stream = CutStream {
                        inner: Transport::Tls(Box::new(stream)),
                        cut: Box::pin(token.cancelled_owned()),
                        _permit: permit,
                    };
                    let _ = tx.send((stream, peer)).await;
                });
            }
            Err(err) => {
                // Out of file descriptors and the like: wait a little instead of spinning.
                tracing::warn!(error = %err, "cannot accept a connection");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

/// The accepted connections, as a stream (for tonic) and as a listener (for the HTTP server).
#[derive(Debug)]
pub struct Incoming {
    rx: mpsc::Receiver<(CutStream, SocketAddr)>,
    local_addr: io::Result<SocketAddr>,
}

impl Incoming {
    /// The next connection; `None` once the switch is thrown.
    pub async fn next(&mut self) -> Option<(CutStream, SocketAddr)> {
        self.rx.recv().await
    }

    /// The address the listener is bound to.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        match &self.local_addr {
            Ok(addr) => Ok(*addr),
            Err(err) => Err(io::Error::new(err.kind(), err.to_string())),
        }
    }
}

impl tokio_stream::Stream for Incoming {
    type Item = io::Result<CutStream>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx
            .poll_recv(cx)
            .map(|next| next.map(|(stream, _)| Ok(stream)))
    }
}

/// A TCP connection, with TLS on top or not.
#[derive(Debug)]
enum Transport {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl Transport {
    fn tcp(&self) -> &TcpStream {
        match self {
            Transport::Plain(stream) => stream,
            Transport::Tls(stream) => stream.get_ref().0,
        }
    }
}

impl AsyncRead for Transport {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(stream) => Pin::new(stream).poll_read(cx, buf),
            Transport::Tls(stream) => Pin::new(stream.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Transport {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Transport::Plain(stream) => Pin::new(stream).poll_write(cx, buf),
            Transport::Tls(stream) => Pin::new(stream.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(stream) => Pin::new(stream).poll_flush(cx),
            Transport::Tls(stream) => Pin::new(stream.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(stream) => Pin::new(stream).poll_shutdown(cx),
            Transport::Tls(stream) => Pin::new(stream.as_mut()).poll_shutdown(cx),
        }
    }
}

/// A connection (TLS already set up, when on) that fails every read and write once its switch
/// is thrown, and frees its place under the cap when dropped.
#[derive(Debug)]
pub struct CutStream {
    inner: Transport,
    cut: Pin<Box<WaitForCancellationFutureOwned>>,
    _permit: Option<OwnedSemaphorePermit>,
}

impl CutStream {
    /// `Err` once the switch is thrown. Polling registers the waker, so a connection idle in a
    /// read is woken by the cut and fails at once.
    fn check(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        match self.cut.as_mut().poll(cx) {
            Poll::Ready(()) => Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "connection closed at the shutdown deadline",
            )),
            Poll::Pending => Ok(()),
        }
    }
}

impl AsyncRead for CutStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.check(cx)?;
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for CutStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.check(cx)?;
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.check(cx)?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl tonic::transport::server::Connected for CutStream {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.tcp().connect_info()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    async fn pair(cut: &Cut, cap: Option<usize>) -> (Incoming, SocketAddr) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        (cut.accept(listener, cap, None), addr)
    }

    #[tokio::test]
    async fn a_read_waiting_on_a_silent_client_fails_when_cut() {
        let cut = Cut::default();
        let (mut incoming, addr) = pair(&cut, None).await;
        let _client = TcpStream::connect(addr).await.unwrap();
        let (mut server_side, _) = incoming.next().await.unwrap();
        let reader = tokio::spawn(async move { server_side.read(&mut [0u8; 16]).await });
        cut.cut();
        let err = reader.await.unwrap().unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionAborted);
        assert!(incoming.next().await.is_none(), "no more connections");
    }

    #[tokio::test]
    async fn the_cap_holds_back_connections_until_one_closes() {
        let cut = Cut::default();
        let (mut incoming, addr) = pair(&cut, Some(1)).await;
        let mut first = TcpStream::connect(addr).await.unwrap();
        let _second = TcpStream::connect(addr).await.unwrap();
        let (held, _) = incoming.next().await.unwrap();
        let waiting = tokio::time::timeout(std::time::Duration::from_millis(200), incoming.next());
        assert!(
            waiting.await.is_err(),
            "second connection waits for a place"
        );
        drop(held);
        first.shutdown().await.unwrap();
        assert!(
            incoming.next().await.is_some(),
            "admitted once a place frees"
        );
    }
}
