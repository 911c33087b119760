/**
 * The three transports of docs/PROTOCOL.md behind one small interface. A transport only moves
 * frames: it opens from a position and an epoch, reports every frame, and reports its end once.
 * Positions, deduplication, fallback and reconnecting are the core's (vigil.ts), so switching
 * transports cannot lose or repeat a position.
 */
import type { ClientFrame, PolledEvent, ServerFrame } from './frames.js';
import { topicsOf } from './frames.js';
import { hospitalUrl, request, VigilHttpError, type HttpOptions } from './http.js';
import type { TransportName } from './state.js';

/** The platform's WebSocket constructor (browser, React Native, or `ws` in Node). */
export interface WebSocketLike {
  readonly readyState: number;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  onopen: ((ev: unknown) => void) | null;
  onmessage: ((ev: { data: unknown }) => void) | null;
  onclose: ((ev: { code: number; reason: string }) => void) | null;
  onerror: ((ev: unknown) => void) | null;
}
export type WebSocketConstructor = new (url: string) => WebSocketLike;

/** The platform's EventSource constructor (browser, or the `eventsource` package in Node). */
export interface EventSourceLike {
  readonly readyState: number;
  close(): void;
  onopen: ((ev: unknown) => void) | null;
  onmessage: ((ev: { data: string }) => void) | null;
  onerror: ((ev: unknown) => void) | null;
}
export type EventSourceConstructor = new (url: string) => EventSourceLike;

/** Close code the client reports for a transport that ended without one (RFC 6455's 1006). */
export const ABNORMAL_CLOSE = 1006;

/** Where a transport reports. */
export interface TransportHandlers {
  onFrame(frame: ServerFrame): void;
  /** Called once. `opened`: the transport got as far as a connection (not a refused handshake). */
  onClose(code: number, reason: string, opened: boolean): void;
}

/** An open (or opening) transport. */
export interface TransportConnection {
  readonly name: TransportName;
  /** Sends a frame; false when this transport cannot (SSE and polling are receive-only). */
  send(frame: ClientFrame): boolean;
  /** Ends it; no handler is called after this. */
  close(): void;
}

/** What the core passes to open a transport. */
export interface OpenParams {
  readonly http: HttpOptions;
  readonly token: string;
  readonly topics: readonly string[];
  readonly lastEventId: number | null;
  readonly epoch: string | null;
  readonly handlers: TransportHandlers;
  readonly WebSocket?: WebSocketConstructor | undefined;
  readonly EventSource?: EventSourceConstructor | undefined;
  /** Polling: ms between polls when caught up. */
  readonly pollInterval: number;
}

/** Guarantees a transport reports its end at most once, and nothing after `close()`. */
function once(handlers: TransportHandlers): TransportHandlers & { closed: boolean; detach(): void } {
  const state = {
    closed: false,
    onFrame(frame: ServerFrame) {
      if (!state.closed) handlers.onFrame(frame);
    },
    onClose(code: number, reason: string, opened: boolean) {
      if (state.closed) return;
      state.closed = true;
      handlers.onClose(code, reason, opened);
    },
    detach() {
      state.closed = true;
    },
  };
  return state;
}

/** The WebSocket URL of a hospital's stream. */
export function wsUrl(baseUrl: string, hospital: string): string {
  return hospitalUrl(baseUrl, hospital, 'ws').replace(/^http/, 'ws');
}

function subscribeFrame(params: OpenParams): ClientFrame {
  return {
    type: 'subscribe',
    id: 'vigil-sub',
    topics: params.topics,
    ...(params.lastEventId !== null ? { last_event_id: String(params.lastEventId) } : {}),
    ...(params.epoch !== null && params.lastEventId !== null ? { epoch: params.epoch } : {}),
  };
}

/** WebSocket: authenticates with an `auth` frame (browsers cannot set headers), then subscribes. */
export function openWebSocket(params: OpenParams): TransportConnection {
  const Ctor = params.WebSocket ?? (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
  if (!Ctor) throw new Error('no WebSocket implementation: pass `WebSocket` in the options');
  const h = once(params.handlers);
  let opened = false;
  let closing: { code: number; reason: string } | null = null;
  let subscribed = false;
  const socket = new Ctor(wsUrl(params.http.baseUrl, params.http.hospital));
  socket.onopen = () => {
    opened = true;
    socket.send(JSON.stringify({ type: 'auth', token: params.token } satisfies ClientFrame));
  };
  socket.onmessage = (ev) => {
    let frame: ServerFrame;
    try {
      frame = JSON.parse(String(ev.data)) as ServerFrame;
    } catch {
      return;
    }
    // Only the first `authenticated` answers `auth`; later ones answer `refresh`.
    if (frame.type === 'authenticated' && !subscribed && !h.closed) {
      subscribed = true;
      socket.send(JSON.stringify(subscribeFrame(params)));
    }
    if (frame.type === 'closing') closing = { code: frame.code, reason: frame.reason };
    h.onFrame(frame);
  };
  socket.onerror = () => {
    /* the close event follows and carries the code */
  };
  socket.onclose = (ev) => {
    const code = closing?.code ?? ev.code ?? ABNORMAL_CLOSE;
    h.onClose(code, closing?.reason ?? ev.reason ?? '', opened);
  };
  return {
    name: 'websocket',
    send(frame) {
      if (h.closed || socket.readyState !== 1) return false;
      socket.send(JSON.stringify(frame));
      return true;
    },
    close() {
      h.detach();
      socket.onopen = socket.onmessage = socket.onclose = socket.onerror = null;
      socket.onerror = () => undefined;
      try {
        socket.close(1000);
      } catch {
        /* already closing */
      }
    },
  };
}

/**
 * Server-Sent Events: a fresh single-use ticket for every (re)connect, `last_event_id` passed
 * explicitly, and the EventSource's own automatic reconnect disabled (closed on the first error),
 * because a reused ticket would be refused and the core decides when and from where to resume.
 */
export function openSse(params: OpenParams): TransportConnection {
  const Ctor = params.EventSource ?? (globalThis as { EventSource?: EventSourceConstructor }).EventSource;
  if (!Ctor) throw new Error('no EventSource implementation: pass `EventSource` in the options');
  const h = once(params.handlers);
  let source: EventSourceLike | null = null;
  let opened = false;
  const topics = params.topics.filter((t) => t !== 'presence');
  void (async () => {
    let ticket: string;
    try {
      const res = await request<{ ticket: string }>(params.http, { method: 'POST', path: 'events/stream/tickets' });
      ticket = res.body.ticket;
    } catch (error) {
      const code = error instanceof VigilHttpError && error.status === 401 ? 4001 : ABNORMAL_CLOSE;
      h.onClose(code, error instanceof Error ? error.message : 'ticket', false);
      return;
    }
    if (h.closed) return;
    const url = hospitalUrl(params.http.baseUrl, params.http.hospital, 'events/stream', {
      topics: topics.join(','),
      ticket,
      last_event_id: params.lastEventId ?? undefined,
      epoch: params.lastEventId !== null ? (params.epoch ?? undefined) : undefined,
    });
    const es = new Ctor(url);
    source = es;
    es.onopen = () => {
      opened = true;
    };
    es.onmessage = (ev) => {
      let frame: ServerFrame;
      try {
        frame = JSON.parse(ev.data) as ServerFrame;
      } catch {
        return;
      }
      h.onFrame(frame);
      if (frame.type === 'closing') {
        es.close();
        h.onClose(frame.code, frame.reason, true);
      }
    };
    es.onerror = () => {
      es.close();
      h.onClose(ABNORMAL_CLOSE, 'sse error', opened);
    };
  })();
  return {
    name: 'sse',
    send: () => false,
    close() {
      h.detach();
      source?.close();
    },
  };
}

interface EventsPage {
  readonly events: readonly PolledEvent[];
  readonly next_after: number;
  readonly head: number;
  readonly epoch: string | null;
}

/** The largest page the polling endpoint serves. */
const POLL_LIMIT = 1000;

/**
 * Polling `GET events?after=N`: the last resort when neither WebSocket nor SSE gets through.
 * Its first page stands in for `subscribed` (same recovered/reason rules), and events are
 * filtered to the subscribed topics so every transport delivers the same set.
 */
export function openPolling(params: OpenParams): TransportConnection {
  const h = once(params.handlers);
  const topics = new Set(params.topics);
  let timer: ReturnType<typeof setTimeout> | null = null;
  let after = params.lastEventId;
  let first = true;

  const poll = async (): Promise<void> => {
    timer = null;
    let page: EventsPage;
    try {
      const res = await request<EventsPage>(params.http, {
        method: 'GET',
        path: 'events',
        query: { after: after ?? 0, limit: after === null ? 1 : POLL_LIMIT },
      });
      page = res.body;
    } catch (error) {
      const code = error instanceof VigilHttpError && error.status === 401 ? 4001 : ABNORMAL_CLOSE;
      h.onClose(code, error instanceof Error ? error.message : 'poll failed', !first);
      return;
    }
    if (h.closed) return;
    if (first) {
      first = false;
      let frame: ServerFrame;
      if (after === null) {
        frame = { type: 'subscribed', topics: [...topics], recovered: false, position: String(page.head), epoch: page.epoch };
      } else if (params.epoch !== null && page.epoch !== null && page.epoch !== params.epoch) {
        frame = { type: 'subscribed', topics: [...topics], recovered: false, reason: 'epoch_changed', position: String(page.head), epoch: page.epoch };
      } else if (after > page.head) {
        frame = { type: 'subscribed', topics: [...topics], recovered: false, reason: 'unknown_position', position: String(page.head), epoch: page.epoch };
      } else {
        frame = { type: 'subscribed', topics: [...topics], recovered: true, position: String(after), epoch: page.epoch };
      }
      h.onFrame(frame);
      if (!frame.recovered) {
        after = page.head;
        timer = setTimeout(() => void poll(), 0);
        return;
      }
    }
    for (const e of page.events) {
      const eventTopics = topicsOf(e);
      if (!eventTopics.some((t) => topics.has(t))) continue;
      const { type, ...rest } = e;
      h.onFrame({ ...rest, type: 'event', event_type: type, topics: eventTopics });
      if (h.closed) return;
    }
    after = page.next_after;
    const caughtUp = page.next_after >= page.head;
    timer = setTimeout(() => void poll(), caughtUp ? params.pollInterval : 0);
  };
  timer = setTimeout(() => void poll(), 0);
  return {
    name: 'polling',
    send: () => false,
    close() {
      h.detach();
      if (timer) clearTimeout(timer);
    },
  };
}

/** Opens the named transport. */
export function openTransport(name: TransportName, params: OpenParams): TransportConnection {
  switch (name) {
    case 'websocket':
      return openWebSocket(params);
    case 'sse':
      return openSse(params);
    case 'polling':
      return openPolling(params);
  }
}
