/**
 * The REST edge: every request carries a bearer token from the application's `token()`, a
 * timeout (a request that never answers must not hold the outbox forever), and problem+json
 * errors become {@link VigilHttpError}s. A 401 asks `token()` once for a fresh token and retries
 * before giving up, because the token may simply have expired between two calls.
 */
import type { Problem } from './api-types.js';

/** The `fetch` signature the client needs (the platform's, or an injected one). */
export type FetchLike = (input: string, init?: RequestInit) => Promise<Response>;

/** An HTTP answer that was not 2xx, with its problem body when the server sent one. */
export class VigilHttpError extends Error {
  /** The problem's `code` (`idempotency_key_in_flight`, `outcome_unknown`, …), or `http_<status>`. */
  readonly code: string;
  /** Seconds the server asked to wait (`Retry-After`), if any. */
  readonly retryAfter: number | undefined;

  constructor(
    readonly status: number,
    readonly problem: Problem | undefined,
    retryAfterHeader: string | null,
  ) {
    super(problem ? `${status} ${problem.code}: ${problem.detail}` : `HTTP ${status}`);
    this.name = 'VigilHttpError';
    this.code = problem?.code ?? `http_${status}`;
    const header = retryAfterHeader === null ? NaN : Number(retryAfterHeader);
    this.retryAfter = Number.isFinite(header) ? header : (problem?.retry_after ?? undefined);
  }
}

/** The request never got an answer (connection refused or lost, timeout). Its outcome is unknown. */
export class VigilNetworkError extends Error {
  constructor(override readonly cause: unknown) {
    super(`network error: ${cause instanceof Error ? cause.message : String(cause)}`);
    this.name = 'VigilNetworkError';
  }
}

/** One REST request. */
export interface HttpRequest {
  readonly method: 'GET' | 'POST' | 'PUT';
  /** Path below `/api/hospitals/{hospital}/`, e.g. `alerts/42/acknowledge`. */
  readonly path: string;
  readonly query?: Readonly<Record<string, string | number | boolean | null | undefined>>;
  readonly body?: unknown;
  readonly headers?: Readonly<Record<string, string>>;
}

/** A 2xx answer. */
export interface HttpResponse<T> {
  readonly status: number;
  readonly body: T;
  readonly headers: Headers;
}

/** Everything the REST edge needs from its owner. */
export interface HttpOptions {
  readonly baseUrl: string;
  readonly hospital: string;
  readonly fetch: FetchLike;
  /** The current token (cached by the owner). */
  readonly currentToken: () => Promise<string>;
  /** Asks the application for a new token (after a 401). */
  readonly renewToken: () => Promise<string>;
  /** Abort a request with no answer after this many ms. */
  readonly timeout: number;
}

/** Builds `/api/hospitals/{hospital}/<path>?<query>` on the base URL. */
export function hospitalUrl(
  baseUrl: string,
  hospital: string,
  path: string,
  query?: HttpRequest['query'],
): string {
  const base = baseUrl.replace(/\/+$/, '');
  let url = `${base}/api/hospitals/${encodeURIComponent(hospital)}/${path}`;
  if (query) {
    const params = new URLSearchParams();
    for (const [k, v] of Object.entries(query)) if (v !== undefined && v !== null) params.set(k, String(v));
    const qs = params.toString();
    if (qs) url += `?${qs}`;
  }
  return url;
}

/** Sends `request`; on 401 renews the token once and sends it again. */
export async function request<T>(options: HttpOptions, req: HttpRequest): Promise<HttpResponse<T>> {
  let token = await options.currentToken();
  for (let tries = 0; ; tries += 1) {
    const response = await send(options, req, token);
    if (response.status === 401 && tries === 0) {
      token = await options.renewToken();
      continue;
    }
    if (!response.ok) {
      let problem: Problem | undefined;
      try {
        problem = (await response.json()) as Problem;
      } catch {
        problem = undefined;
      }
      throw new VigilHttpError(response.status, problem, response.headers.get('retry-after'));
    }
    let text: string;
    try {
      text = await response.text();
    } catch (error) {
      throw new VigilNetworkError(error);
    }
    return { status: response.status, body: (text ? JSON.parse(text) : undefined) as T, headers: response.headers };
  }
}

async function send(options: HttpOptions, req: HttpRequest, token: string): Promise<Response> {
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), options.timeout);
  const headers: Record<string, string> = { authorization: `Bearer ${token}`, ...req.headers };
  if (req.body !== undefined) headers['content-type'] = 'application/json';
  try {
    return await options.fetch(hospitalUrl(options.baseUrl, options.hospital, req.path, req.query), {
      method: req.method,
      headers,
      body: req.body === undefined ? null : JSON.stringify(req.body),
      signal: controller.signal,
    });
  } catch (error) {
    throw new VigilNetworkError(error);
  } finally {
    clearTimeout(timer);
  }
}
