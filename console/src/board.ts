/**
 * The whole alert board, live, however many alerts are open.
 *
 * The server answers the board in pages of at most {@link PAGE} rows (`limit`/`offset`), each
 * read with its `as_of`. The client's live query (`useLive('alerts')`) reads the first page and
 * re-reads it after every alert event (and after a resume or a reset): that keeps the first page
 * live and tells this hook *when* the board changed and at which position. When the first page
 * is full, every page is read again at that position (`min_position`), in parallel, and the
 * pages are joined only if they all answer from the same `as_of` — pages read at different
 * positions could repeat or skip a row that moved across a page boundary between reads. A
 * mismatch (the stream moved on between reads) re-reads them all at the newest position seen,
 * a few times; past that the rows are shown deduplicated and the next change reads again.
 *
 * Reads are coalesced: one full read at a time, and the changes that arrive meanwhile are
 * caught by one more read at the newest position, so a burst of events costs two full reads.
 *
 * This lives in the console rather than in `@vigil/client` (which owns live queries) because the
 * client's live query holds one page; a paged live query belongs there in time.
 */
import { useEffect, useMemo, useRef, useState } from 'react';
import { useLive, useVigil } from '@vigil/react';
import type { Vigil } from '@vigil/client';
import { rows, SEVERITIES, type AlertRow, type Severity } from './types';

/** The server's largest page (`limit`). */
export const PAGE = 500;
/** Full reads at one position before the rows are shown even though the pages disagree. */
const ATTEMPTS = 4;
/** Pages read at once (a browser opens about six connections per host anyway). */
const PARALLEL = 6;

type Counts = Partial<Record<Severity, number>>;

interface Page {
  as_of: number;
  counts: Counts;
  alerts: AlertRow[];
}

/** What the board shows. */
export interface Board {
  readonly status: 'loading' | 'ready' | 'error';
  readonly alerts: readonly AlertRow[];
  readonly counts: Counts;
  /** The stream position the rows reflect. */
  readonly position: number | null;
  /** A read for newer events, or of the pages after the first, is under way. */
  readonly refreshing: boolean;
  /** The first page is shown and the others are still being read. */
  readonly partial: boolean;
  readonly error: unknown;
  /** How long the last read of every page took, ms (null while one page holds the board). */
  readonly loadMs: number | null;
}

/** The open alerts a filter matches, by the server's counts. */
function openTotal(counts: Counts, severity: Severity | ''): number {
  return severity ? (counts[severity] ?? 0) : SEVERITIES.reduce((n, s) => n + (counts[s] ?? 0), 0);
}

/** Every page of the board at `position` or later, joined when they agree on `as_of`. */
async function readAll(
  vigil: Vigil,
  params: { severity?: Severity; limit: number },
  severity: Severity | '',
  position: number,
): Promise<Page> {
  let at = position;
  let joined: Page | null = null;
  for (let attempt = 0; attempt < ATTEMPTS; attempt += 1) {
    const read = (offset: number): Promise<Page> => vigil.read<Page>('alerts', { ...params, limit: PAGE, offset, min_position: at });
    const pages = [await read(0)];
    const full = (): boolean => (pages[pages.length - 1]?.alerts.length ?? 0) >= PAGE;
    // As many pages as the counts say, several at a time; then on while pages come back full
    // (alerts raised since, or a field worker's own-alerts filter, which the counts ignore).
    const expected = Math.ceil(openTotal(pages[0]?.counts ?? {}, severity) / PAGE);
    for (let next = 1; next < expected && full(); next += PARALLEL) {
      const offsets = Array.from({ length: Math.min(PARALLEL, expected - next) }, (_, i) => (next + i) * PAGE);
      pages.push(...(await Promise.all(offsets.map(read))));
    }
    while (full()) pages.push(await read(pages.length * PAGE));
    const [first] = pages as [Page, ...Page[]];
    const seen = new Set<string>();
    const alerts = pages.flatMap((p) => p.alerts).filter((a) => !seen.has(a.alert_id) && Boolean(seen.add(a.alert_id)));
    joined = { as_of: first.as_of, counts: first.counts, alerts };
    if (pages.every((p) => p.as_of === first.as_of)) return joined;
    at = Math.max(...pages.map((p) => p.as_of));
  }
  // The stream kept moving between reads: show the rows deduplicated; the next change reads again.
  return joined as Page;
}

/** The live board for a severity filter (`''`: every severity). */
export function useBoard(severity: Severity | ''): Board {
  const vigil = useVigil();
  const params = useMemo(() => (severity ? { severity, limit: PAGE } : { limit: PAGE }), [severity]);
  const first = useLive('alerts', params);
  const firstPage = first.data as unknown as Page | undefined;
  const more = (firstPage?.alerts.length ?? 0) >= PAGE;
  const [full, setFull] = useState<{ severity: Severity | ''; page: Page; ms: number } | null>(null);
  const [error, setError] = useState<unknown>(undefined);
  /** Bumped when a full read ends, so a change that arrived meanwhile is read next. */
  const [ended, setEnded] = useState(0);
  /** Whether a full read is running (one at a time). */
  const busy = useRef(false);
  /** The position whose full read failed: not retried until the board changes again. */
  const failed = useRef<number | null>(null);
  const done = full && full.severity === severity ? full.page.as_of : -1;
  const wanted = more ? first.position : null;

  useEffect(() => {
    if (wanted === null || wanted <= done || busy.current || failed.current === wanted) return;
    busy.current = true;
    const t0 = performance.now();
    readAll(vigil, params, severity, wanted)
      .then((page) => {
        setFull({ severity, page, ms: performance.now() - t0 });
        setError(undefined);
      }, (e: unknown) => {
        failed.current = wanted;
        setError(e);
      })
      .finally(() => {
        busy.current = false;
        setEnded((n) => n + 1);
      });
  }, [vigil, params, severity, wanted, done, ended]);

  if (more && full && full.severity === severity) {
    return {
      status: 'ready',
      alerts: full.page.alerts,
      counts: full.page.counts,
      position: full.page.as_of,
      refreshing: first.refreshing || busy.current,
      partial: false,
      error,
      loadMs: full.ms,
    };
  }
  return {
    status: first.status,
    alerts: rows<AlertRow>(firstPage?.alerts),
    counts: firstPage?.counts ?? {},
    position: first.position,
    refreshing: first.refreshing || busy.current,
    partial: more,
    error: first.error ?? error,
    loadMs: null,
  };
}
