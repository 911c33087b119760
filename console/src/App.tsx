/**
 * The console's shell: sign-in from the URL fragment, one {@link Vigil} client for the tab, a
 * header with the always-visible connection indicator, navigation, and the screens. Routing is
 * by path under `/console/` (the server answers unknown paths there with index.html).
 */
import { useEffect, useMemo, useState, type ReactNode } from 'react';
import { Vigil, localStorageAdapter } from '@vigil/client';
import { VigilProvider } from '@vigil/react';
import { loadSession, saveToken, signOut, type Session } from './session';
import { ConnectionIndicator } from './screens/Connection';
import { AlertBoard } from './screens/AlertBoard';
import { Cases } from './screens/Cases';
import { Patient } from './screens/Patient';
import { Schedule } from './screens/Schedule';
import { Notifications } from './screens/Notifications';
import { Presence } from './screens/Presence';
import { Admin } from './screens/Admin';
import { navigate, useRoute, Link } from './router';

const SCREENS: readonly { path: string; label: string }[] = [
  { path: 'alerts', label: 'Alerts' },
  { path: 'cases', label: 'Cases' },
  { path: 'patients', label: 'Patient' },
  { path: 'schedule', label: 'Schedule' },
  { path: 'notifications', label: 'Notifications' },
  { path: 'presence', label: 'Presence' },
  { path: 'admin', label: 'Admin' },
];

/** Where each role starts: field workers on their cases, clinicians on the board. */
function home(role: string): string {
  if (role === 'chw' || role === 'asha') return 'cases';
  if (role === 'admin') return 'admin';
  return 'alerts';
}

export function App(): ReactNode {
  const [session, setSession] = useState<Session | null>(() => loadSession());
  if (!session) return <SignIn onSession={setSession} />;
  return <Workspace session={session} onSignOut={() => { signOut(); setSession(null); }} />;
}

function SignIn(props: { onSession: (s: Session) => void }): ReactNode {
  const [value, setValue] = useState('');
  const [error, setError] = useState('');
  return (
    <main id="main" className="signin">
      <h1>Vigil console</h1>
      <p>Open the link printed by <code>vigil serve --demo</code>, or paste a token from <code>vigil token</code>.</p>
      <form
        onSubmit={(e) => {
          e.preventDefault();
          const s = saveToken(value);
          if (s) props.onSession(s);
          else setError('That is not a Vigil token.');
        }}
      >
        <label htmlFor="token">Token</label>
        <textarea id="token" value={value} onChange={(e) => setValue(e.target.value)} rows={4} />
        {error && <p role="alert" className="error">{error}</p>}
        <button type="submit">Sign in</button>
      </form>
    </main>
  );
}

function Workspace(props: { session: Session; onSignOut: () => void }): ReactNode {
  const { session } = props;
  const vigil = useMemo(
    () =>
      new Vigil({
        baseUrl: location.origin,
        hospital: session.hospital,
        token: async () => session.token,
        // Position and outbox survive a reload: the board resumes, queued commands are sent once.
        storage: localStorageAdapter(localStorage),
        storageKey: `vigil-console:${session.hospital}:${session.user}`,
      }),
    [session],
  );
  useEffect(() => () => vigil.close(), [vigil]);
  const route = useRoute();
  const screen = route[0] || home(session.role);
  useEffect(() => {
    if (!route[0]) navigate(home(session.role), true);
  }, [route, session.role]);
  const label = SCREENS.find((s) => s.path === screen)?.label ?? 'Not found';
  useEffect(() => {
    document.title = `${label} · Vigil console`;
  }, [label]);

  return (
    <VigilProvider client={vigil}>
      <a className="skip" href="#main">Skip to content</a>
      <header className="top">
        <div className="brand">
          <span aria-hidden="true">◉</span> Vigil <span className="muted">· {session.hospital}</span>
        </div>
        <ConnectionIndicator />
        <div className="who">
          <span data-testid="who">{session.user} ({session.role})</span>
          <button type="button" className="link" onClick={props.onSignOut}>Sign out</button>
        </div>
      </header>
      <nav aria-label="Screens" className="nav">
        <ul>
          {SCREENS.map((s) => (
            <li key={s.path}>
              <Link to={s.path} current={screen === s.path}>{s.label}</Link>
            </li>
          ))}
        </ul>
      </nav>
      <main id="main" tabIndex={-1}>
        {screen === 'alerts' && <AlertBoard session={session} />}
        {screen === 'cases' && <Cases session={session} caseId={route[1] ?? null} />}
        {screen === 'patients' && <Patient patient={route[1] ?? 'p-1001'} me={session.user} />}
        {screen === 'schedule' && <Schedule />}
        {screen === 'notifications' && <Notifications />}
        {screen === 'presence' && <Presence />}
        {screen === 'admin' && <Admin session={session} />}
        {!SCREENS.some((s) => s.path === screen) && <h1>Not found</h1>}
      </main>
    </VigilProvider>
  );
}
