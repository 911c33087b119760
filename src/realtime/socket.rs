//! A WebSocket connection's socket, owned by Vigil once the handshake is done.
//!
//! actix-http hands an upgraded connection over (its `upgrade` service) with the socket and
//! its two 8 KiB buffers; Vigil drops the buffers and runs the connection itself:
//!
//! - [`SocketReader`] decodes the client's frames and hands the session whole messages
//!   (fragments reassembled within the message limit, text checked as UTF-8, see
//!   [`assemble`](super::assemble)); a frame sequence that breaks RFC 6455 ends the stream
//!   with a [`Failure`] carrying its close code. It holds a read buffer only while bytes
//!   are arriving or a frame is incomplete, so an idle connection holds none;
//! - [`Connection`] runs the connection's writer (a cursor over the hospital's stream, see
//!   [`writer`](super::writer)) and writes what it queued in one `write` (`writev` for
//!   several frames) per wake-up, then frees the queue. An event's frame is queued by
//!   reference: it was encoded once, WebSocket header included, for all its recipients. It is woken by the writer's own signals (the hospital's head, the
//!   session's commands, kill and shutdown), not only by the socket, so a client that
//!   stopped reading is still closed when it is disconnected as a slow consumer: the socket
//!   is shut down, not left open until TCP gives up.
//!
//! This is what makes an idle authenticated connection cost a few KiB instead of the ~21 KiB
//! it cost inside actix-http's dispatcher (see BENCHMARKS.md).

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use actix_codec::{Decoder, Encoder};
use actix_http::ws::{CloseReason as WsCloseReason, Codec, Message};
use bytes::{Buf, Bytes, BytesMut};
use bytestring::ByteString;
use futures_util::Stream;
use tokio::net::TcpStream;

use super::assemble::{echo_close, Assembler, Failure};
use super::fanout::{self, FanOut, PassStats};
use super::hospital::HospitalFeed;
use super::protocol::CloseReason;
use super::window::WindowEvent;
use super::writer::{closing_frame, Closed, Lane, Sink, CLOSE_TIMEOUT};
use crate::stream::Position;

/// Most encoded bytes a connection's writer queues before it waits for the socket to take
/// them: what one connection can hold in memory beyond the kernel's socket buffer.
pub const OUTGOING_HIGH_WATER: usize = 64 * 1024;

/// Bytes read from the socket at a time.
const READ_CHUNK: usize = 4096;

/// What the reader and the writer of one connection share (and, while the writer sleeps
/// caught up, the thread's fan-out).
pub(super) struct Shared {
    io: TcpStream,
    /// Frames encoded by the writer and not yet written to the socket.
    out: RefCell<Outbox>,
    /// The writer, waiting for room in `out`.
    writer_waiting: RefCell<Option<Waker>>,
    /// Set when the writer has finished: the reader ends, so the session stops.
    finished: Cell<bool>,
    /// The reader, to be woken when the writer finishes.
    reader_waiting: RefCell<Option<Waker>>,
    /// Set when the reader is dropped (the session stopped).
    reader_gone: Cell<bool>,
    /// The writer task, to be woken when the reader is dropped.
    task_waiting: RefCell<Option<Waker>>,
    /// The peer's close frame, once received: the close that answers it echoes its code.
    peer_close: RefCell<Option<Option<WsCloseReason>>>,
    /// The direct lane: set while the writer sleeps caught up, so the thread's fan-out
    /// writes live events straight to the socket ([`super::fanout`]).
    lane: RefCell<Option<Armed>>,
    /// The writer's task, woken when the lane hands the stream back.
    lane_waker: RefCell<Option<Waker>>,
    /// The fan-out this connection is registered with (once it first armed its lane).
    fanout: RefCell<Option<Rc<FanOut>>>,
}

/// A lane handed over by a sleeping writer.
pub(super) struct Armed {
    lane: Lane,
    /// The fan-out gave the stream back: it writes nothing more until the writer re-arms.
    handed_back: bool,
}

impl Drop for Shared {
    fn drop(&mut self) {
        if let Some(fanout) = self.fanout.get_mut().take() {
            fanout.leave();
        }
    }
}

/// Most frames handed to one `writev`: a connection far behind writes its backlog in
/// chunks of this many frames (the kernel's limit, `IOV_MAX`, is 1024).
const MAX_SLICES: usize = 64;

/// What a connection has queued for the socket: whole encoded frames, in order, shared
/// with whoever else holds them (an event's frame is one buffer for all its recipients).
///
/// The first frame has its own slot, so the usual queue — one event, written at once —
/// allocates nothing; more frames wait in `rest` until they are written together.
struct Outbox {
    /// The frame being written (its unwritten part); `None` only when nothing is queued.
    first: Option<Bytes>,
    /// The frames after it.
    rest: VecDeque<Bytes>,
    /// Bytes queued in all, for the high-water mark.
    len: usize,
}

impl Outbox {
    fn starting_with(first: Bytes) -> Self {
        let mut outbox = Outbox {
            first: None,
            rest: VecDeque::new(),
            len: 0,
        };
        outbox.push(first);
        outbox
    }

    fn push(&mut self, frame: Bytes) {
        if frame.is_empty() {
            return;
        }
        self.len += frame.len();
        if self.first.is_none() {
            self.first = Some(frame);
        } else {
            self.rest.push_back(frame);
        }
    }

    /// Fills `slices` with the queued frames, in order; returns how many.
    fn slices<'a>(&'a self, slices: &mut [io::IoSlice<'a>]) -> usize {
        let frames = self.first.iter().chain(self.rest.iter());
        let mut n = 0;
        for (slot, frame) in slices.iter_mut().zip(frames) {
            *slot = io::IoSlice::new(frame);
            n += 1;
        }
        n
    }

    /// Drops the first `written` bytes: whole frames, then part of the next one.
    fn advance(&mut self, mut written: usize) {
        self.len -= written.min(self.len);
        while written > 0 {
            let Some(first) = self.first.as_mut() else {
                return;
            };
            if written < first.len() {
                first.advance(written);
                return;
            }
            written -= first.len();
            self.first = self.rest.pop_front();
        }
    }
}

/// The WebSocket frame carrying `json` as one text message from the server (unmasked, FIN
/// set, RFC 6455 §5.2): built once per event by `window::prepare`, so each delivery only
/// queues a reference to it.
pub fn text_frame(json: &str) -> Bytes {
    let payload = json.as_bytes();
    let mut frame = BytesMut::with_capacity(payload.len() + 10);
    frame.extend_from_slice(&[0x81]);
    match payload.len() {
        n if n < 126 => frame.extend_from_slice(&[n as u8]),
        n if n <= usize::from(u16::MAX) => {
            frame.extend_from_slice(&[126]);
            frame.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            frame.extend_from_slice(&[127]);
            frame.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    frame.extend_from_slice(payload);
    frame.freeze()
}

/// The `101 Switching Protocols` answering a checked WebSocket handshake whose
/// `Sec-WebSocket-Key` is `key`. No `Sec-WebSocket-Extensions`: extensions such as
/// `permessage-deflate` are declined (RFC 6455 §9.1), so every frame's reserved bits must
/// be clear.
pub fn switching_protocols(key: &[u8]) -> BytesMut {
    let accept = actix_http::ws::hash_key(key);
    let mut response = BytesMut::with_capacity(128);
    response.extend_from_slice(
        b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\n\
          connection: upgrade\r\nsec-websocket-accept: ",
    );
    response.extend_from_slice(&accept);
    response.extend_from_slice(b"\r\n\r\n");
    response
}

/// Splits an upgraded socket into its reader (frames in, for the session actor) and its
/// writer (frames out). `pending` holds bytes the client sent right after its handshake
/// (e.g. an `auth` frame), which the reader decodes first; `max_frame` is the largest
/// message, fragmented or not, accepted before the connection is closed (1009).
///
/// `first` is written before any frame: the handshake's `101` response, which then leaves
/// in the same `write` (and the same packet) as the first frames the session sends.
pub fn split(
    io: TcpStream,
    pending: BytesMut,
    max_frame: usize,
    first: BytesMut,
) -> (SocketReader, Outgoing) {
    // Events are small frames that must leave at once: no Nagle delay.
    let _ = io.set_nodelay(true);
    let shared = Rc::new(Shared {
        io,
        out: RefCell::new(Outbox::starting_with(first.freeze())),
        writer_waiting: RefCell::new(None),
        finished: Cell::new(false),
        reader_waiting: RefCell::new(None),
        reader_gone: Cell::new(false),
        task_waiting: RefCell::new(None),
        peer_close: RefCell::new(None),
        lane: RefCell::new(None),
        lane_waker: RefCell::new(None),
        fanout: RefCell::new(None),
    });
    let reader = SocketReader {
        shared: shared.clone(),
        buf: pending,
        codec: Codec::new().max_size(max_frame),
        assembler: Assembler::new(max_frame),
        eof: false,
        failed: false,
    };
    (reader, Outgoing { shared })
}

/// The client's messages, as the session's stream: whole messages (never a fragment), then
/// the end of the stream, or a [`Failure`] and the end of the stream.
pub struct SocketReader {
    shared: Rc<Shared>,
    /// Bytes read and not yet decoded; empty (and unallocated) between frames.
    buf: BytesMut,
    codec: Codec,
    /// Fragments of the message being received.
    assembler: Assembler,
    /// The client closed its side.
    eof: bool,
    /// A failure or the client's close frame was reported: nothing more is read.
    failed: bool,
}

impl SocketReader {
    /// The next whole message in what was read, if there is one.
    fn decode(&mut self) -> Option<Result<Message, Failure>> {
        loop {
            if self.buf.is_empty() {
                return None;
            }
            // Refuse a frame too large for the limit from its header, before reading it.
            if let Err(failure) = self.assembler.check_header(&self.buf) {
                self.buf = BytesMut::new();
                return Some(Err(failure));
            }
            let decoded = self.codec.decode(&mut self.buf);
            if self.buf.is_empty() {
                // Give the allocation back: an idle connection holds no read buffer.
                self.buf = BytesMut::new();
            }
            let frame = match decoded {
                Ok(None) => return None,
                Ok(Some(frame)) => frame,
                Err(error) => return Some(Err(Failure::from_codec(error, self.assembler.limit()))),
            };
            match self.assembler.push(frame) {
                // A fragment: the message goes on in the next frame.
                Ok(None) => {}
                Ok(Some(Message::Close(reason))) => {
                    *self.shared.peer_close.borrow_mut() = Some(reason.clone());
                    return Some(Ok(Message::Close(reason)));
                }
                Ok(Some(message)) => return Some(Ok(message)),
                Err(failure) => return Some(Err(failure)),
            }
        }
    }
}

impl Drop for SocketReader {
    fn drop(&mut self) {
        self.shared.reader_gone.set(true);
        if let Some(task) = self.shared.task_waiting.borrow_mut().take() {
            task.wake();
        }
    }
}

impl Stream for SocketReader {
    type Item = Result<Message, Failure>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.failed {
            return Poll::Ready(None);
        }
        loop {
            if let Some(item) = this.decode() {
                // Nothing follows a failure or a close frame (RFC 6455 §5.5.1).
                this.failed = matches!(item, Err(_) | Ok(Message::Close(_)));
                return Poll::Ready(Some(item));
            }
            if this.eof || this.shared.finished.get() {
                return Poll::Ready(None);
            }
            *this.shared.reader_waiting.borrow_mut() = Some(cx.waker().clone());
            match this.shared.io.poll_read_ready(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(error)) => {
                    this.failed = true;
                    return Poll::Ready(Some(Err(Failure::Io(error))));
                }
                Poll::Ready(Ok(())) => {}
            }
            this.buf.reserve(READ_CHUNK);
            match this.shared.io.try_read_buf(&mut this.buf) {
                Ok(0) => this.eof = true,
                Ok(_) => {}
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
                Err(error) => {
                    this.failed = true;
                    return Poll::Ready(Some(Err(Failure::Io(error))));
                }
            }
            if this.buf.is_empty() {
                this.buf = BytesMut::new();
            }
        }
    }
}

/// The writing half: the [`Sink`] the connection's writer encodes into, and the task that
/// runs that writer against the socket ([`Outgoing::run`]).
pub struct Outgoing {
    shared: Rc<Shared>,
}

impl Outgoing {
    /// The sink for the connection's writer.
    pub fn sink(&self) -> WsSink {
        WsSink {
            shared: self.shared.clone(),
            codec: Codec::new(),
        }
    }

    /// The connection's writer task: runs `writer` (which writes through
    /// [`Outgoing::sink`]) against the socket until the writer finishes, then closes the
    /// connection. See [`Connection`].
    pub fn run<W: Future<Output = ()>>(self, writer: W) -> Connection<W> {
        Connection {
            writer,
            writing: true,
            shared: self.shared,
            phase: Phase::Writing,
            abandon: None,
        }
    }
}

pin_project_lite::pin_project! {
    /// A connection's writer task.
    ///
    /// Each poll runs the writer until it waits, then writes every frame it encoded as one
    /// chunk: one `write` for all the events pending, no channel between the stream and the
    /// socket. When the writer has finished (close frame encoded), what is queued is flushed
    /// for at most [`CLOSE_TIMEOUT`] (a client that stopped reading does not keep its
    /// connection), the socket's sending side is shut down, the reader ends (and with it the
    /// session), and the task lingers until the client closes its side (at most
    /// [`CLOSE_TIMEOUT`]) so that closing the socket does not reset a connection whose
    /// client still has the close frame to read.
    ///
    /// Once the session has stopped (its reader dropped), the writer is given
    /// [`ABANDON_AFTER`] to finish; a writer still blocked then (on a client that half-closed
    /// its connection and reads nothing, so neither a write nor a kill can end it) is
    /// abandoned and the connection closed.
    ///
    /// A hand-written future rather than an `async fn`: an `async fn` would hold the writer
    /// twice (as its argument and as its pinned local), and this task lives as long as the
    /// connection.
    pub struct Connection<W> {
        #[pin]
        writer: W,
        writing: bool,
        shared: Rc<Shared>,
        phase: Phase,
        abandon: Option<Pin<Box<tokio::time::Sleep>>>,
    }
}

/// How long a connection's writer may go on after its session stopped.
pub const ABANDON_AFTER: Duration = Duration::from_secs(4);

enum Phase {
    /// The writer runs.
    Writing,
    /// The writer has finished; the rest is flushed until the deadline.
    Flushing(Pin<Box<tokio::time::Sleep>>),
    /// The sending side is shut down; waiting for the client's end until the deadline.
    Lingering(Pin<Box<tokio::time::Sleep>>),
}

impl<W: Future<Output = ()>> Future for Connection<W> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut this = self.project();
        loop {
            match this.phase {
                Phase::Writing => {
                    if *this.writing && this.writer.as_mut().poll(cx).is_ready() {
                        *this.writing = false;
                    }
                    if !*this.writing {
                        // A finished or abandoned writer's lane must not write after its
                        // close frame.
                        this.shared.lane.borrow_mut().take();
                    }
                    if *this.writing && this.shared.reader_gone.get() {
                        let abandon = this
                            .abandon
                            .get_or_insert_with(|| Box::pin(tokio::time::sleep(ABANDON_AFTER)));
                        if abandon.as_mut().poll(cx).is_ready() {
                            tracing::debug!("abandoning a writer blocked after its session ended");
                            *this.writing = false;
                        }
                    } else if *this.writing {
                        let mut task = this.shared.task_waiting.borrow_mut();
                        if !task.as_ref().is_some_and(|t| t.will_wake(cx.waker())) {
                            *task = Some(cx.waker().clone());
                        }
                    }
                    match this.shared.flush(cx) {
                        Flushed::Failed => {
                            this.shared.finish();
                            return Poll::Ready(());
                        }
                        _ if !*this.writing => {
                            *this.phase =
                                Phase::Flushing(Box::pin(tokio::time::sleep(CLOSE_TIMEOUT)));
                        }
                        Flushed::All | Flushed::Blocked => return Poll::Pending,
                    }
                }
                Phase::Flushing(deadline) => {
                    match this.shared.flush(cx) {
                        Flushed::Failed => {
                            this.shared.finish();
                            return Poll::Ready(());
                        }
                        Flushed::Blocked if deadline.as_mut().poll(cx).is_pending() => {
                            return Poll::Pending
                        }
                        Flushed::All | Flushed::Blocked => {}
                    }
                    this.shared.finish();
                    *this.phase = Phase::Lingering(Box::pin(tokio::time::sleep(CLOSE_TIMEOUT)));
                }
                Phase::Lingering(deadline) => {
                    if this.shared.drained(cx).is_ready() {
                        return Poll::Ready(());
                    }
                    return deadline.as_mut().poll(cx);
                }
            }
        }
    }
}

/// Writes to the WebSocket: encodes frames into the connection's outgoing buffer.
pub struct WsSink {
    shared: Rc<Shared>,
    codec: Codec,
}

impl WsSink {
    /// Waits until the socket has taken enough of what is queued.
    async fn room(&self) {
        std::future::poll_fn(|cx| {
            if self.shared.out.borrow().len < OUTGOING_HIGH_WATER {
                Poll::Ready(())
            } else {
                *self.shared.writer_waiting.borrow_mut() = Some(cx.waker().clone());
                Poll::Pending
            }
        })
        .await
    }

    async fn write(&mut self, message: Message) -> Result<(), Closed> {
        self.room().await;
        // Control frames and replies are rare: each is encoded into its own small buffer.
        let mut encoded = BytesMut::new();
        self.codec
            .encode(message, &mut encoded)
            .map_err(|_| Closed)?;
        self.shared.out.borrow_mut().push(encoded.freeze());
        Ok(())
    }

    /// Writes a binary message. Vigil's sessions send only text; this is for other
    /// sessions on the same socket layer (the echo server that Autobahn|Testsuite checks).
    pub async fn binary(&mut self, payload: Bytes) -> Result<(), Closed> {
        self.write(Message::Binary(payload)).await
    }

    /// Fails the connection with `code` and no `closing` frame: for sessions that do not
    /// speak Vigil's protocol (the echo server).
    pub async fn fail(mut self, code: u16) {
        let close = WsCloseReason {
            code: code.into(),
            description: None,
        };
        let _ = self.write(Message::Close(Some(close))).await;
    }
}

impl Sink for WsSink {
    async fn send(&mut self, frame: ByteString) -> Result<(), Closed> {
        self.write(Message::Text(frame)).await
    }

    async fn send_event(&mut self, event: &WindowEvent) -> Result<(), Closed> {
        // The WebSocket frame was encoded once for every recipient (`window::prepare`):
        // queuing it is a reference count, not an encoding, a copy or an allocation.
        self.room().await;
        self.shared.out.borrow_mut().push(event.wire.clone());
        Ok(())
    }

    async fn ping(&mut self) -> Result<(), Closed> {
        self.write(Message::Ping(Bytes::new())).await
    }

    async fn pong(&mut self, payload: Bytes) -> Result<(), Closed> {
        // A control frame carries at most 125 bytes.
        let payload = payload.slice(..payload.len().min(125));
        self.write(Message::Pong(payload)).await
    }

    fn arm(&mut self, lane: Lane) -> bool {
        if self.shared.finished.get() {
            return false;
        }
        let registered = self
            .shared
            .fanout
            .borrow()
            .as_ref()
            .is_some_and(|f| f.serves(&lane.feed));
        if !registered {
            let joined = fanout::join(&lane.feed, &lane.metrics, Rc::downgrade(&self.shared));
            if let Some(old) = self.shared.fanout.borrow_mut().replace(joined) {
                old.leave();
            }
        }
        *self.shared.lane.borrow_mut() = Some(Armed {
            lane,
            handed_back: false,
        });
        true
    }

    async fn handed_back(&self) {
        std::future::poll_fn(|cx| {
            let handed_back = self
                .shared
                .lane
                .borrow()
                .as_ref()
                .is_none_or(|armed| armed.handed_back);
            if handed_back {
                return Poll::Ready(());
            }
            let mut waker = self.shared.lane_waker.borrow_mut();
            if !waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                *waker = Some(cx.waker().clone());
            }
            Poll::Pending
        })
        .await
    }

    fn disarm(&mut self) -> Option<Position> {
        self.shared
            .lane
            .borrow_mut()
            .take()
            .map(|armed| armed.lane.cursor)
    }

    async fn close(mut self, reason: Option<CloseReason>) {
        let close = match reason {
            Some(reason) => {
                let _ = self.write(Message::Text(closing_frame(reason))).await;
                Some(actix_http::ws::CloseReason {
                    code: reason.code().into(),
                    description: Some(reason.as_str().to_owned()),
                })
            }
            // The client closed: answer with its code (RFC 6455 §5.5.1).
            None => self
                .shared
                .peer_close
                .borrow()
                .as_ref()
                .and_then(echo_close),
        };
        let _ = self.write(Message::Close(close)).await;
    }
}

/// Whether the socket took everything queued.
enum Flushed {
    All,
    /// The socket is full; the task is registered to be woken when it has room.
    Blocked,
    /// The connection is broken.
    Failed,
}

impl Shared {
    /// The fan-out's turn at this connection: queues the events of `events` (positions
    /// `from + 1 ..= last`, in order) that its armed lane is owed and wants, and writes them
    /// at once without blocking. Hands the stream back to the writer task (and wakes it)
    /// instead when the lane cannot go on by itself: the writer is behind this batch, a
    /// command is waiting, earlier bytes are still queued, or the socket did not take
    /// everything (the rest stays queued, in order, for the task to flush).
    ///
    /// Every event is queued once: the lane's cursor moves past exactly the events this
    /// call looked at, and the writer resumes from that cursor.
    pub(super) fn deliver(
        &self,
        feed: &Arc<HospitalFeed>,
        events: &[Arc<WindowEvent>],
        from: Position,
        last: Position,
        now: std::time::Instant,
        stats: &mut PassStats,
    ) {
        let mut lane = self.lane.borrow_mut();
        let Some(armed) = lane.as_mut() else {
            // The writer is awake: it follows the head itself.
            return;
        };
        if armed.handed_back || armed.lane.cursor >= last || !Arc::ptr_eq(&armed.lane.feed, feed) {
            return;
        }
        // An empty batch: the events are not in memory (or the fan-out is ending).
        let owed_elsewhere = events.is_empty()
            || armed.lane.cursor < from
            || self.finished.get()
            || armed.lane.progress.commands_sent() != armed.lane.taken
            || self.out.borrow().first.is_some();
        if owed_elsewhere {
            armed.handed_back = true;
            drop(lane);
            self.hand_back(stats);
            return;
        }
        let cursor = armed.lane.cursor;
        let mut queued = 0;
        {
            let mut out = self.out.borrow_mut();
            for (i, event) in events.iter().enumerate() {
                if event.position > cursor && armed.lane.filter.wants(event) {
                    out.push(event.wire.clone());
                    stats.recipients[i] += 1;
                    queued += 1;
                }
            }
        }
        armed.lane.cursor = last;
        armed.lane.progress.advance_at(last, last, now);
        if queued == 0 {
            return;
        }
        stats.delivered += queued;
        if self.write_now() {
            stats.direct += queued;
        } else {
            armed.handed_back = true;
            drop(lane);
            self.hand_back(stats);
        }
    }

    /// Wakes the writer task to take its stream back.
    fn hand_back(&self, stats: &mut PassStats) {
        stats.handed_back += 1;
        if let Some(waker) = self.lane_waker.borrow_mut().take() {
            waker.wake();
        }
    }

    /// Writes what is queued without waiting; true if the socket took all of it. What it
    /// did not take stays queued for the connection's task (which waits for the socket), as
    /// does a failure (the task's own write finds it and ends the connection).
    fn write_now(&self) -> bool {
        let mut out = self.out.borrow_mut();
        while let Some(first) = out.first.as_ref() {
            let written = if out.rest.is_empty() {
                self.io.try_write(first)
            } else {
                let mut slices = [io::IoSlice::new(&[]); MAX_SLICES];
                let n = out.slices(&mut slices);
                self.io.try_write_vectored(&slices[..n])
            };
            match written {
                Ok(n) if n > 0 => out.advance(n),
                _ => return false,
            }
        }
        if out.rest.capacity() > 0 {
            out.rest = VecDeque::new();
        }
        true
    }

    fn flush(&self, cx: &mut Context<'_>) -> Flushed {
        let mut out = self.out.borrow_mut();
        let mut wrote = false;
        let result = loop {
            let Some(first) = out.first.as_ref() else {
                break Flushed::All;
            };
            // One frame (the usual wake-up: one live event) is one `write`; several (a
            // connection that fell behind, or replies with events) are one `writev`.
            let written = if out.rest.is_empty() {
                self.io.try_write(first)
            } else {
                let mut slices = [io::IoSlice::new(&[]); MAX_SLICES];
                let n = out.slices(&mut slices);
                self.io.try_write_vectored(&slices[..n])
            };
            match written {
                Ok(0) => break Flushed::Failed,
                Ok(n) => {
                    out.advance(n);
                    wrote = true;
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                    match self.io.poll_write_ready(cx) {
                        Poll::Ready(Ok(())) => continue,
                        Poll::Ready(Err(_)) => break Flushed::Failed,
                        Poll::Pending => break Flushed::Blocked,
                    }
                }
                Err(_) => break Flushed::Failed,
            }
        };
        if out.first.is_none() && out.rest.capacity() > 0 {
            // Give the allocation back: an idle connection holds no write queue.
            out.rest = VecDeque::new();
        }
        drop(out);
        if wrote {
            if let Some(writer) = self.writer_waiting.borrow_mut().take() {
                writer.wake();
            }
        }
        result
    }

    /// Reads and discards what the client still sends; ready once it has closed its side
    /// (or the connection is broken).
    fn drained(&self, cx: &mut Context<'_>) -> Poll<()> {
        let mut scratch = [0u8; 512];
        loop {
            match self.io.poll_read_ready(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(_)) => return Poll::Ready(()),
                Poll::Ready(Ok(())) => match self.io.try_read(&mut scratch) {
                    Ok(0) => return Poll::Ready(()),
                    Ok(_) => {}
                    Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
                    Err(_) => return Poll::Ready(()),
                },
            }
        }
    }

    /// Ends the connection: the reader stops (and with it the session), the peer sees the
    /// end of the stream.
    fn finish(&self) {
        self.finished.set(true);
        let _ = socket2::SockRef::from(&self.io).shutdown(std::net::Shutdown::Write);
        if let Some(reader) = self.reader_waiting.borrow_mut().take() {
            reader.wake();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tokio::sync::{mpsc, watch};

    use super::*;
    use crate::realtime::hospital::SessionProgress;
    use crate::realtime::writer::{self, WriterCommand, WriterContext};

    #[test]
    fn a_text_frame_has_the_header_rfc_6455_gives_its_length() {
        for (len, header) in [
            (5usize, 2usize),
            (125, 2),
            (126, 4),
            (65_535, 4),
            (65_536, 10),
        ] {
            let json = "x".repeat(len);
            let frame = text_frame(&json);
            assert_eq!(frame.len(), len + header, "{len}");
            let mut decoded = BytesMut::from(&frame[..]);
            match actix_http::ws::Codec::new()
                .max_size(1 << 20)
                .client_mode()
                .decode(&mut decoded)
                .unwrap()
            {
                Some(actix_http::ws::Frame::Text(text)) => assert_eq!(text.len(), len),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn the_outbox_gives_back_every_byte_once_in_order_across_partial_writes() {
        let frames: Vec<Bytes> = (0..10u8)
            .map(|i| Bytes::from(vec![i; 3 + usize::from(i)]))
            .collect();
        let expected: Vec<u8> = frames.iter().flat_map(|f| f.iter().copied()).collect();
        let mut outbox = Outbox::starting_with(Bytes::new());
        for frame in &frames {
            outbox.push(frame.clone());
        }
        assert_eq!(outbox.len, expected.len());
        let mut written = Vec::new();
        // Writes of 1, 2, 3, ... bytes: they end inside frames and on their boundaries.
        let mut step = 1;
        while outbox.first.is_some() {
            let mut slices = [io::IoSlice::new(&[]); 4];
            let n = outbox.slices(&mut slices);
            let available: Vec<u8> = slices[..n].iter().flat_map(|s| s.iter().copied()).collect();
            let take = step.min(available.len());
            written.extend_from_slice(&available[..take]);
            outbox.advance(take);
            step += 1;
        }
        assert_eq!(written, expected);
        assert_eq!(outbox.len, 0);
        assert!(outbox.rest.is_empty());
    }

    /// What every idle connection holds for its whole life is budgeted (the ≤ 8 KiB goal
    /// in BENCHMARKS.md): its writer task, and the 32 command slots its channel allocates up
    /// front. A future that grows past these (a large state held across an `.await`) or a
    /// command variant that is not boxed shows up here, not only in a benchmark.
    #[tokio::test]
    async fn a_connections_writer_task_and_command_slots_stay_within_budget() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (_reader, outgoing) = split(client, BytesMut::new(), 1024, BytesMut::new());
        let (_commands, receiver) = mpsc::channel::<WriterCommand>(8);
        let (_kill, kill) = watch::channel(None);
        let (_shutdown, shutdown) = watch::channel(false);
        let context = WriterContext {
            pool: sqlx::PgPool::connect_lazy("postgres://budget@localhost/budget").unwrap(),
            progress: Arc::new(SessionProgress::default()),
            metrics: Default::default(),
            kill,
            shutdown,
        };
        let sink = outgoing.sink();
        let task = outgoing.run(writer::run(sink, receiver, context));

        assert!(
            std::mem::size_of_val(&task) <= 1280,
            "writer task is {} bytes",
            std::mem::size_of_val(&task)
        );
        assert!(
            std::mem::size_of::<WriterCommand>() <= 40,
            "a command is {} bytes",
            std::mem::size_of::<WriterCommand>()
        );
    }
}
