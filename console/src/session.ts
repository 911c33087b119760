/**
 * The console's sign-in: a Vigil token arrives in the URL *fragment* (`/console#token=…`, as
 * `vigil serve --demo` prints it), which browsers never send to the server. It is moved to
 * sessionStorage (this tab only, gone when the tab closes) and the fragment is cleared with
 * `history.replaceState`, so it is not left in the address bar, the history or a bookmark.
 */
const KEY = 'vigil.console.token';

/** Who the token says the user is (read, not verified: the server verifies every request). */
export interface Session {
  readonly token: string;
  readonly user: string;
  readonly role: string;
  readonly hospital: string;
  readonly exp: number;
}

function decode(token: string): Session | null {
  const part = token.split('.')[1];
  if (!part) return null;
  try {
    const json = atob(part.replace(/-/g, '+').replace(/_/g, '/'));
    const claims = JSON.parse(json) as { sub?: unknown; role?: unknown; hospital?: unknown; exp?: unknown };
    if (typeof claims.sub !== 'string' || typeof claims.role !== 'string' || typeof claims.hospital !== 'string') return null;
    return { token, user: claims.sub, role: claims.role, hospital: claims.hospital, exp: Number(claims.exp ?? 0) };
  } catch {
    return null;
  }
}

/** Takes a token from the fragment (clearing it) or from sessionStorage. */
export function loadSession(): Session | null {
  const params = new URLSearchParams(location.hash.replace(/^#/, ''));
  const fromFragment = params.get('token');
  if (fromFragment !== null) {
    history.replaceState(history.state, '', location.pathname + location.search);
    const session = decode(fromFragment);
    if (session) sessionStorage.setItem(KEY, fromFragment);
    return session;
  }
  const stored = sessionStorage.getItem(KEY);
  return stored ? decode(stored) : null;
}

/** Signs in with a pasted token. */
export function saveToken(token: string): Session | null {
  const session = decode(token.trim());
  if (session) sessionStorage.setItem(KEY, session.token);
  return session;
}

/** Forgets the token. */
export function signOut(): void {
  sessionStorage.removeItem(KEY);
}
