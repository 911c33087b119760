/**
 * Cases: the user's cases (the server decides which: a CHW or ASHA sees her own), with unread
 * counts; a case's thread with messages, read receipts, who is typing, who else is viewing, and
 * status changes (the server's state machine accepts or rejects them).
 */
import { useEffect, useRef, useState, type ReactNode } from 'react';
import { useLive, useTyping, useViewing, useVigil } from '@vigil/react';
import type { Session } from '../session';
import { rows, type CaseRow, type MessageRow, type ReceiptRow } from '../types';
import { problemText, time, ViewingBanner } from './common';
import { Link } from '../router';

const STATUSES = ['open', 'in_review', 'accepted', 'referred', 'prescribed', 'completed'] as const;
type CaseStatus = (typeof STATUSES)[number];

export function Cases(props: { session: Session; caseId: string | null }): ReactNode {
  const list = useLive('cases', {});
  const cases = rows<CaseRow>(list.data?.cases);
  return (
    <section aria-labelledby="cases-title" className="split">
      <div>
        <h1 id="cases-title">Cases</h1>
        <p className="muted">{props.session.role === 'chw' || props.session.role === 'asha' ? `Cases of ${props.session.user}` : 'All cases'}</p>
        {list.status === 'loading' && <p>Loading…</p>}
        {list.status === 'error' && <p role="alert" className="error">{problemText(list.error)}</p>}
        <ul className="cards" data-testid="case-list">
          {cases.map((c) => (
            <li key={c.case_id} data-testid="case" data-case-id={c.case_id}>
              <Link to={`cases/${c.case_id}`} current={props.caseId === c.case_id} className="card-link">
                <strong>{c.title}</strong>
                <span className="muted"> · {c.patient} · {c.status.replace('_', ' ')}{c.assignee ? ` · ${c.assignee}` : ''}</span>
                {c.unread > 0 && <span className="badge" data-testid="unread"> {c.unread} unread</span>}
              </Link>
            </li>
          ))}
          {list.status === 'ready' && cases.length === 0 && <li className="empty">No cases.</li>}
        </ul>
        <OpenCase />
      </div>
      {props.caseId && <Thread key={props.caseId} id={props.caseId} session={props.session} />}
    </section>
  );
}

function Thread(props: { id: string; session: Session }): ReactNode {
  const vigil = useVigil();
  const detail = useLive('case', { id: props.id });
  const typing = useTyping(props.id);
  const viewers = useViewing(`case:${props.id}`);
  const [draft, setDraft] = useState('');
  const [status, setStatus] = useState<CaseStatus | ''>('');
  const [error, setError] = useState('');
  const c = detail.data?.case as unknown as CaseRow | undefined;
  const messages = rows<MessageRow>(detail.data?.messages);
  const receipts = rows<ReceiptRow>(detail.data?.read_receipts);
  const lastId = messages.at(-1)?.message_id ?? 0;
  const mine = receipts.find((r) => r.user === props.session.user)?.up_to ?? 0;
  const marked = useRef(0);
  useEffect(() => {
    if (lastId > mine && marked.current < lastId) {
      marked.current = lastId;
      vigil.cases.markRead(props.id, { up_to: lastId });
    }
  }, [vigil, props.id, lastId, mine]);
  const others = typing.users.filter((u) => u.user !== props.session.user);
  if (detail.status === 'error') return <div role="alert" className="error">Cannot open this case: {problemText(detail.error)}</div>;
  if (!c) return <p>Loading…</p>;
  return (
    <article className="thread" aria-labelledby="thread-title" data-testid="thread">
      <h2 id="thread-title">{c.title}</h2>
      <ViewingBanner viewers={viewers} me={props.session.user} what="case" />
      <p>
        Patient <Link to={`patients/${c.patient}`}>{c.patient}</Link> · status <strong data-testid="case-status">{c.status.replace('_', ' ')}</strong>
        {c.assignee && <> · assigned to {c.assignee}</>}
      </p>
      <form
        className="row"
        onSubmit={(e) => {
          e.preventDefault();
          if (!status) return;
          setError('');
          vigil.cases.changeStatus(props.id, { status }).result.catch((err: unknown) => setError(problemText(err)));
        }}
      >
        <label>
          Move to{' '}
          <select value={status} onChange={(e) => setStatus(e.target.value as CaseStatus | '')} data-testid="status-select">
            <option value="">choose…</option>
            {STATUSES.filter((s) => s !== c.status).map((s) => <option key={s} value={s}>{s.replace('_', ' ')}</option>)}
          </select>
        </label>
        <button type="submit">Change status</button>
        {error && <span role="alert" className="error"> {error}</span>}
      </form>
      <ol className="messages" aria-label="Messages" data-testid="messages">
        {messages.map((m) => (
          <li key={m.message_id}>
            <strong>{m.author}</strong> <span className="muted">{time(m.posted_at)}</span>
            <p>{m.body}</p>
            {m.message_id === lastId && receipts.some((r) => r.up_to >= lastId) && (
              <p className="muted small">Seen by {receipts.filter((r) => r.up_to >= lastId).map((r) => r.user).join(', ')}</p>
            )}
          </li>
        ))}
        {messages.length === 0 && <li className="empty">No messages yet.</li>}
      </ol>
      <p className="typing" aria-live="polite" data-testid="typing">
        {others.length > 0 ? `${others.map((u) => u.user).join(', ')} ${others.length === 1 ? 'is' : 'are'} typing…` : ''}
      </p>
      <form
        className="row"
        onSubmit={(e) => {
          e.preventDefault();
          const body = draft.trim();
          if (!body) return;
          vigil.cases.postMessage(props.id, { body }).result.catch((err: unknown) => setError(problemText(err)));
          setDraft('');
        }}
      >
        <label htmlFor="composer" className="sr-only">Message</label>
        <input
          id="composer"
          value={draft}
          onChange={(e) => {
            setDraft(e.target.value);
            typing.notify();
          }}
          placeholder="Write a message"
          data-testid="composer"
          maxLength={4000}
        />
        <button type="submit">Send</button>
      </form>
    </article>
  );
}

function OpenCase(): ReactNode {
  const vigil = useVigil();
  const [title, setTitle] = useState('');
  const [patient, setPatient] = useState('');
  const [note, setNote] = useState('');
  return (
    <details className="raise">
      <summary>Open a case</summary>
      <form
        onSubmit={(e) => {
          e.preventDefault();
          vigil.cases.open({ title: title.trim(), patient: patient.trim() }).result.then(
            () => setNote('Opened.'),
            (err: unknown) => setNote(`Rejected: ${problemText(err)}`),
          );
          setTitle('');
        }}
      >
        <label>Title <input value={title} onChange={(e) => setTitle(e.target.value)} required /></label>
        <label>Patient <input value={patient} onChange={(e) => setPatient(e.target.value)} required placeholder="p-1002" /></label>
        <button type="submit">Open</button>
        <span role="status" className="muted">{note}</span>
      </form>
    </details>
  );
}
