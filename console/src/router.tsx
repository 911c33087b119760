/** A minimal path router under `/console/`: `history.pushState` and a `popstate` listener. */
import { useSyncExternalStore, type ReactNode } from 'react';

const BASE = '/console/';
const listeners = new Set<() => void>();
window.addEventListener('popstate', () => listeners.forEach((l) => l()));

function path(): string {
  return location.pathname.startsWith(BASE) ? location.pathname.slice(BASE.length) : '';
}

/** The route's segments, e.g. `['cases', '<id>']`. */
export function useRoute(): string[] {
  const p = useSyncExternalStore(
    (l) => {
      listeners.add(l);
      return () => listeners.delete(l);
    },
    path,
  );
  return p.split('/').filter(Boolean).map(decodeURIComponent);
}

/** Goes to a console path (`'cases/123'`). */
export function navigate(to: string, replace = false): void {
  const url = BASE + to;
  if (replace) history.replaceState(null, '', url);
  else history.pushState(null, '', url);
  listeners.forEach((l) => l());
}

/** A real link (middle-click, keyboard) that navigates in place. */
export function Link(props: { to: string; current?: boolean; children: ReactNode; className?: string }): ReactNode {
  return (
    <a
      href={BASE + props.to}
      className={props.className}
      aria-current={props.current ? 'page' : undefined}
      onClick={(e) => {
        if (e.metaKey || e.ctrlKey || e.shiftKey || e.button !== 0) return;
        e.preventDefault();
        navigate(props.to);
      }}
    >
      {props.children}
    </a>
  );
}
