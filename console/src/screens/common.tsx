/** Small pieces shared by the screens: severity shown by word and icon (never colour alone), clocks. */
import { useEffect, useState, type ReactNode } from 'react';
import type { UserRef } from '@vigil/client';
import type { Severity } from '../types';

const ICONS: Record<Severity, string> = { critical: '‼', high: '▲', medium: '●', low: '○' };

/** A severity as icon + word; the colour only repeats what the text says. */
export function SeverityBadge(props: { severity: Severity; count?: number }): ReactNode {
  return (
    <span className={`sev sev-${props.severity}`}>
      <span aria-hidden="true">{ICONS[props.severity] ?? '•'} </span>
      {props.severity.toUpperCase()}
      {props.count !== undefined && <> <strong>{props.count}</strong></>}
    </span>
  );
}

/** The current time, re-rendered every `ms`. */
export function useNow(ms = 1000): number {
  const [now, setNow] = useState(() => Date.now());
  useEffect(() => {
    const t = setInterval(() => setNow(Date.now()), ms);
    return () => clearInterval(t);
  }, [ms]);
  return now;
}

/** `3m 05s`, `42s`, `1h 02m`. */
export function duration(seconds: number): string {
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${String(s % 60).padStart(2, '0')}s`;
  return `${Math.floor(s / 3600)}h ${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
}

export function time(iso: string | null | undefined): string {
  if (!iso) return '';
  return new Date(iso).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
}

/**
 * "Dr Rao is viewing": the soft lock of a patient or case. The server's viewer list includes
 * the viewer herself (every session that announced the view), so she is filtered out by user —
 * her other tabs and devices included. Once the list has arrived with only her in it, a quiet
 * line says so: the lock is hers, and "no banner" is not mistaken for "not known yet".
 */
export function ViewingBanner(props: { viewers: readonly UserRef[]; me: string; what: string }): ReactNode {
  const others = props.viewers.filter((v) => v.user !== props.me);
  if (others.length === 0) {
    if (!props.viewers.some((v) => v.user === props.me)) return null;
    return <p className="muted small" data-testid="viewing-alone">No one else is viewing this {props.what}</p>;
  }
  const names = others.map((v) => `${v.user} (${v.role})`).join(', ');
  return (
    <p className="banner" role="status" data-testid="viewing">
      <span aria-hidden="true">◎ </span>
      {names} {others.length === 1 ? 'is' : 'are'} viewing this {props.what}
    </p>
  );
}

/** A command's rejection, readable. */
export function problemText(error: unknown): string {
  const p = (error as { problem?: { detail?: string; title?: string } } | null)?.problem;
  return p?.detail ?? p?.title ?? String(error);
}
