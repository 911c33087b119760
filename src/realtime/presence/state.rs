//! The pure rules of presence, typing and viewing: what expires when, how connections fold
//! into users. No actors, clocks or I/O here — time is a parameter — so the rules are tested
//! with made-up instants instead of sleeps.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use aggregates::types::Role;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{MAX_TYPING_PER_TARGET, MAX_VIEWERS_PER_TARGET};
use crate::realtime::protocol::{Participant, PresenceEntry};
use crate::realtime::SessionId;

/// A connection anywhere in the cluster: session ids are unique per node only.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SessionKey {
    /// The node holding the connection.
    pub node: Uuid,
    /// The connection on that node.
    pub session: SessionId,
}

/// One session's typing or viewing, until `expires`.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Entry {
    who: Participant,
    expires: Instant,
}

/// Which of a target's lists (as frames show them: users, deduplicated) a change altered.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Changed {
    /// The users typing.
    pub typing: bool,
    /// The users viewing.
    pub viewers: bool,
}

impl Changed {
    /// Whether anything visible changed.
    #[cfg(test)]
    pub fn any(self) -> bool {
        self.typing || self.viewers
    }
}

/// Who is typing in and viewing one target (a case thread or a patient), per session.
///
/// Entries are kept per session so that one tab's `unview` or disconnect does not release
/// another tab's view; frames list users, each once.
#[derive(Clone, Debug)]
pub struct TargetState {
    typing_ttl: Duration,
    view_ttl: Duration,
    typing: BTreeMap<SessionKey, Entry>,
    viewers: BTreeMap<SessionKey, Entry>,
}

impl TargetState {
    /// An empty target whose typing lasts `typing_ttl` and views `view_ttl` after their last
    /// refresh.
    pub fn new(typing_ttl: Duration, view_ttl: Duration) -> Self {
        Self {
            typing_ttl,
            view_ttl,
            typing: BTreeMap::new(),
            viewers: BTreeMap::new(),
        }
    }

    /// `key` is typing as `who`, until `now + typing_ttl`. A new session beyond
    /// [`MAX_TYPING_PER_TARGET`] is ignored.
    pub fn typing(&mut self, key: SessionKey, who: Participant, now: Instant) -> Changed {
        let expires = now + self.typing_ttl;
        self.track(|s| upsert(&mut s.typing, MAX_TYPING_PER_TARGET, key, who, expires))
    }

    /// `key` views the target as `who`, until `now + view_ttl` (a repeat refreshes it). A new
    /// session beyond [`MAX_VIEWERS_PER_TARGET`] is ignored.
    pub fn view(&mut self, key: SessionKey, who: Participant, now: Instant) -> Changed {
        let expires = now + self.view_ttl;
        self.track(|s| upsert(&mut s.viewers, MAX_VIEWERS_PER_TARGET, key, who, expires))
    }

    /// `key` no longer views the target.
    pub fn unview(&mut self, key: SessionKey) -> Changed {
        self.track(|s| {
            s.viewers.remove(&key);
        })
    }

    /// `key` disconnected: it neither types nor views any more.
    pub fn remove_session(&mut self, key: SessionKey) -> Changed {
        self.track(|s| {
            s.typing.remove(&key);
            s.viewers.remove(&key);
        })
    }

    /// `node` died: none of its sessions types or views any more.
    pub fn remove_node(&mut self, node: Uuid) -> Changed {
        self.track(|s| {
            s.typing.retain(|k, _| k.node != node);
            s.viewers.retain(|k, _| k.node != node);
        })
    }

    /// Drops what expired at `now`.
    pub fn expire(&mut self, now: Instant) -> Changed {
        self.track(|s| {
            s.typing.retain(|_, e| e.expires > now);
            s.viewers.retain(|_, e| e.expires > now);
        })
    }

    /// Makes every entry of another node than `own` expire by `deadline` at the latest
    /// (after this node may have missed notifications: what is still true gets
    /// re-announced before then). Nothing visible changes now.
    pub fn cap_remote(&mut self, own: Uuid, deadline: Instant) {
        for (key, entry) in self.typing.iter_mut().chain(self.viewers.iter_mut()) {
            if key.node != own && entry.expires > deadline {
                entry.expires = deadline;
            }
        }
    }

    /// The users typing, each once, sorted.
    pub fn typing_users(&self) -> Vec<Participant> {
        users(&self.typing)
    }

    /// The users viewing, each once, sorted.
    pub fn viewers(&self) -> Vec<Participant> {
        users(&self.viewers)
    }

    /// When the next entry expires, if any.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.typing
            .values()
            .chain(self.viewers.values())
            .map(|e| e.expires)
            .min()
    }

    /// Whether nobody types or views.
    pub fn is_empty(&self) -> bool {
        self.typing.is_empty() && self.viewers.is_empty()
    }

    /// Runs `change` and reports which user lists it altered.
    fn track(&mut self, change: impl FnOnce(&mut Self)) -> Changed {
        let (typing, viewers) = (self.typing_users(), self.viewers());
        change(self);
        Changed {
            typing: typing != self.typing_users(),
            viewers: viewers != self.viewers(),
        }
    }
}

fn upsert(
    entries: &mut BTreeMap<SessionKey, Entry>,
    cap: usize,
    key: SessionKey,
    who: Participant,
    expires: Instant,
) {
    if entries.len() >= cap && !entries.contains_key(&key) {
        tracing::debug!(
            cap,
            "target is full; ignoring a new typing or viewing session"
        );
        return;
    }
    entries.insert(key, Entry { who, expires });
}

fn users(entries: &BTreeMap<SessionKey, Entry>) -> Vec<Participant> {
    let mut users: Vec<Participant> = entries.values().map(|e| e.who.clone()).collect();
    users.sort();
    users.dedup();
    users
}

/// One (user, role) group of a hospital's live sessions, as the presence query returns it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PresenceRow {
    /// The user.
    pub user: String,
    /// The role these sessions were opened with.
    pub role: Role,
    /// How many sessions.
    pub connections: u32,
    /// When the latest of them connected.
    pub last_connected: DateTime<Utc>,
}

/// A user online in a hospital, over all nodes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OnlineUser {
    /// The user.
    pub user: String,
    /// The role of their latest connection (a user whose role changed between two logins
    /// appears once, as they are now).
    pub role: Role,
    /// Their open connections.
    pub connections: u32,
}

/// Folds (user, role) groups into one entry per user, sorted by user.
pub fn aggregate_presence(rows: impl IntoIterator<Item = PresenceRow>) -> Vec<OnlineUser> {
    let mut by_user: BTreeMap<String, (OnlineUser, DateTime<Utc>)> = BTreeMap::new();
    for row in rows {
        let (online, latest) = by_user.entry(row.user.clone()).or_insert_with(|| {
            let first = OnlineUser {
                user: row.user.clone(),
                role: row.role,
                connections: 0,
            };
            (first, row.last_connected)
        });
        online.connections = online.connections.saturating_add(row.connections);
        if row.last_connected > *latest {
            *latest = row.last_connected;
            online.role = row.role;
        }
    }
    by_user.into_values().map(|(online, _)| online).collect()
}

/// The `presence` frame's entries.
pub fn presence_entries(online: &[OnlineUser]) -> Vec<PresenceEntry> {
    online
        .iter()
        .map(|o| PresenceEntry {
            user: o.user.clone(),
            role: o.role.as_str().to_owned(),
            connections: o.connections,
        })
        .collect()
}

/// Distinct users per role.
pub fn count_by_role(online: &[OnlineUser]) -> HashMap<Role, u32> {
    let mut counts = HashMap::new();
    for o in online {
        *counts.entry(o.role).or_insert(0) += 1;
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;

    const TYPING_TTL: Duration = Duration::from_secs(5);
    const VIEW_TTL: Duration = Duration::from_secs(60);

    fn state() -> TargetState {
        TargetState::new(TYPING_TTL, VIEW_TTL)
    }

    fn who(user: &str) -> Participant {
        Participant {
            user: user.to_owned(),
            role: "nurse".to_owned(),
        }
    }

    fn key(node: Uuid, session: SessionId) -> SessionKey {
        SessionKey { node, session }
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn typing_expires_after_the_ttl() {
        let (t0, node) = (Instant::now(), Uuid::new_v4());
        let mut target = state();

        assert!(target.typing(key(node, 1), who("ana"), t0).typing);
        assert_eq!(target.typing_users(), vec![who("ana")]);
        assert_eq!(target.next_deadline(), Some(t0 + TYPING_TTL));

        assert!(!target
            .expire(t0 + TYPING_TTL - Duration::from_millis(1))
            .any());
        assert_eq!(target.typing_users(), vec![who("ana")]);
        let changed = target.expire(t0 + TYPING_TTL);
        assert!(changed.typing && !changed.viewers);
        assert!(target.typing_users().is_empty());
        assert!(target.is_empty());
    }

    #[test]
    fn a_typing_refresh_extends_it_without_a_visible_change() {
        let (t0, node) = (Instant::now(), Uuid::new_v4());
        let mut target = state();
        target.typing(key(node, 1), who("ana"), t0);

        assert!(!target.typing(key(node, 1), who("ana"), t0 + secs(3)).any());
        assert!(!target.expire(t0 + secs(6)).any());
        assert_eq!(target.typing_users(), vec![who("ana")]);
        assert!(target.expire(t0 + secs(8)).typing);
    }

    #[test]
    fn a_user_typing_in_two_tabs_is_listed_once_until_both_expire() {
        let (t0, node) = (Instant::now(), Uuid::new_v4());
        let mut target = state();
        target.typing(key(node, 1), who("ana"), t0);
        assert!(!target.typing(key(node, 2), who("ana"), t0 + secs(2)).any());
        assert_eq!(target.typing_users(), vec![who("ana")]);

        assert!(!target.expire(t0 + secs(5)).any(), "tab 2 still types");
        assert!(target.expire(t0 + secs(7)).typing);
    }

    #[test]
    fn a_view_is_released_on_unview() {
        let (t0, node) = (Instant::now(), Uuid::new_v4());
        let mut target = state();
        assert!(target.view(key(node, 1), who("ana"), t0).viewers);
        assert_eq!(target.viewers(), vec![who("ana")]);

        let changed = target.unview(key(node, 1));
        assert!(changed.viewers && !changed.typing);
        assert!(target.viewers().is_empty());
        assert!(!target.unview(key(node, 1)).any(), "unview is idempotent");
    }

    #[test]
    fn a_view_not_refreshed_for_the_ttl_is_released_and_a_refresh_keeps_it() {
        let (t0, node) = (Instant::now(), Uuid::new_v4());
        let mut target = state();
        target.view(key(node, 1), who("ana"), t0);
        target.view(key(node, 2), who("ben"), t0);

        target.view(key(node, 1), who("ana"), t0 + secs(40));
        let changed = target.expire(t0 + VIEW_TTL);
        assert!(changed.viewers);
        assert_eq!(target.viewers(), vec![who("ana")]);
        assert!(target.expire(t0 + secs(100)).viewers);
        assert!(target.is_empty());
    }

    #[test]
    fn one_tab_unviewing_does_not_release_another_tabs_view() {
        let (t0, node) = (Instant::now(), Uuid::new_v4());
        let mut target = state();
        target.view(key(node, 1), who("ana"), t0);
        target.view(key(node, 2), who("ana"), t0);

        assert!(!target.unview(key(node, 1)).any());
        assert_eq!(target.viewers(), vec![who("ana")]);
    }

    #[test]
    fn a_disconnected_session_neither_types_nor_views() {
        let (t0, node) = (Instant::now(), Uuid::new_v4());
        let mut target = state();
        target.typing(key(node, 1), who("ana"), t0);
        target.view(key(node, 1), who("ana"), t0);
        target.view(key(node, 2), who("ben"), t0);

        let changed = target.remove_session(key(node, 1));
        assert!(changed.typing && changed.viewers);
        assert_eq!(target.viewers(), vec![who("ben")]);
        assert!(target.typing_users().is_empty());
    }

    #[test]
    fn a_dead_node_takes_its_sessions_typing_and_views_with_it() {
        let (t0, a, b) = (Instant::now(), Uuid::new_v4(), Uuid::new_v4());
        let mut target = state();
        target.typing(key(a, 1), who("ana"), t0);
        target.view(key(a, 1), who("ana"), t0);
        target.view(key(b, 1), who("ben"), t0);

        let changed = target.remove_node(a);
        assert!(changed.typing && changed.viewers);
        assert_eq!(target.viewers(), vec![who("ben")]);
    }

    #[test]
    fn after_a_resync_remote_entries_expire_by_the_deadline_unless_reannounced() {
        let (t0, own, other) = (Instant::now(), Uuid::new_v4(), Uuid::new_v4());
        let mut target = state();
        target.view(key(own, 1), who("ana"), t0);
        target.view(key(other, 1), who("ben"), t0);
        target.view(key(other, 2), who("cy"), t0);

        target.cap_remote(own, t0 + secs(2));
        assert_eq!(target.next_deadline(), Some(t0 + secs(2)));
        target.view(key(other, 2), who("cy"), t0 + secs(1));
        assert!(target.expire(t0 + secs(2)).viewers);
        assert_eq!(target.viewers(), vec![who("ana"), who("cy")]);
    }

    #[test]
    fn a_full_target_ignores_new_sessions_but_refreshes_known_ones() {
        let (t0, node) = (Instant::now(), Uuid::new_v4());
        let mut target = state();
        for session in 0..MAX_VIEWERS_PER_TARGET as SessionId {
            target.view(key(node, session), who(&format!("u{session}")), t0);
        }
        assert!(!target.view(key(node, 9_999), who("late"), t0).any());
        assert_eq!(target.viewers().len(), MAX_VIEWERS_PER_TARGET);
        target.view(key(node, 0), who("u0"), t0 + secs(50));
        target.expire(t0 + VIEW_TTL);
        assert_eq!(target.viewers(), vec![who("u0")]);
    }

    fn row(user: &str, role: Role, connections: u32, at_secs: i64) -> PresenceRow {
        PresenceRow {
            user: user.to_owned(),
            role,
            connections,
            last_connected: DateTime::from_timestamp(at_secs, 0).unwrap(),
        }
    }

    #[test]
    fn presence_lists_each_user_once_with_all_their_connections() {
        let online = aggregate_presence([
            row("ben", Role::Physician, 1, 10),
            row("ana", Role::Nurse, 2, 20),
            row("ana", Role::Admin, 1, 30),
        ]);
        assert_eq!(
            online,
            vec![
                OnlineUser {
                    user: "ana".to_owned(),
                    role: Role::Admin,
                    connections: 3
                },
                OnlineUser {
                    user: "ben".to_owned(),
                    role: Role::Physician,
                    connections: 1
                },
            ]
        );
        assert_eq!(
            presence_entries(&online)[0],
            PresenceEntry {
                user: "ana".to_owned(),
                role: "admin".to_owned(),
                connections: 3
            }
        );
    }

    #[test]
    fn online_users_are_counted_once_per_role() {
        let online = aggregate_presence([
            row("ana", Role::Nurse, 2, 20),
            row("ben", Role::Nurse, 1, 10),
            row("cy", Role::Physician, 4, 10),
        ]);
        let counts = count_by_role(&online);
        assert_eq!(counts.get(&Role::Nurse), Some(&2));
        assert_eq!(counts.get(&Role::Physician), Some(&1));
        assert_eq!(counts.get(&Role::Admin), None);
    }
}
