//! Presence, typing and viewing across a cluster: two (or three) `PresenceHub`s, each with
//! its own pool and LISTEN connection, on one fresh database — the way two `vigil serve`
//! processes share a PostgreSQL. Sessions are stand-in actors that record the frames they
//! are pushed. Timers are shortened; every wait polls with a deadline (`helpers::eventually`)
//! instead of sleeping a fixed time, and "nothing else arrives" is asserted after a later
//! change (a marker) has arrived, never after a quiet window.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix::{Actor, Addr, Arbiter, Context, Handler, Recipient};
use aggregates::types::{HospitalId, PatientId, Role, UserId};
use sqlx::PgPool;
use uuid::Uuid;
use vigil::config::PresenceSettings;
use vigil::realtime::presence::{
    Connect, Disconnect, Leave, OnlineByRole, Peers, PresenceHub, Typing, Unview, View, ViewTarget,
    Watch, WatchTopic,
};
use vigil::realtime::protocol::{Participant, PresenceEntry, ServerFrame};
use vigil::realtime::{next_session_id, Push, SessionId};

use crate::helpers::{eventually, until, TestDatabase, WAIT};

/// Longest wait for something that should happen within a few database round trips.
const DEADLINE: Duration = Duration::from_secs(10);

fn settings() -> PresenceSettings {
    PresenceSettings {
        typing_ttl: Duration::from_millis(300),
        view_ttl: Duration::from_secs(30),
        node_heartbeat: Duration::from_millis(200),
        node_timeout: Duration::from_secs(1),
    }
}

fn hospital(id: &str) -> HospitalId {
    HospitalId::parse(id).unwrap()
}

fn patient(id: &str) -> ViewTarget {
    ViewTarget::Patient(PatientId::parse(id).unwrap())
}

fn who(user: &str, role: &str) -> Participant {
    Participant {
        user: user.to_owned(),
        role: role.to_owned(),
    }
}

fn online(user: &str, role: &str, connections: u32) -> PresenceEntry {
    PresenceEntry {
        user: user.to_owned(),
        role: role.to_owned(),
        connections,
    }
}

/// A node of the cluster on the test's arbiter.
async fn start_node(db: &TestDatabase) -> Addr<PresenceHub> {
    start_node_with(db, Uuid::new_v4(), settings(), Default::default()).await
}

/// A node with the given id and timers, counting its live peers into `peers`.
async fn start_node_with(
    db: &TestDatabase,
    node: Uuid,
    settings: PresenceSettings,
    peers: Arc<Peers>,
) -> Addr<PresenceHub> {
    let pool = PgPool::connect(&db.url).await.unwrap();
    let listen = vigil::store::listen_config_for(&db.url).unwrap();
    PresenceHub::start(pool, listen, node, settings, peers)
}

/// A node on an arbiter (thread) of its own, with its own pool: stopping the arbiter stops
/// its hub, writer and listener at once, like a killed process.
async fn start_node_on_own_arbiter(db: &TestDatabase) -> (Arbiter, Addr<PresenceHub>) {
    let arbiter = Arbiter::new();
    let (sender, receiver) = tokio::sync::oneshot::channel();
    let url = db.url.clone();
    arbiter.spawn(async move {
        let pool = PgPool::connect(&url).await.unwrap();
        let listen = vigil::store::listen_config_for(&url).unwrap();
        let hub = PresenceHub::start(pool, listen, Uuid::new_v4(), settings(), Default::default());
        let _ = sender.send(hub);
    });
    (arbiter, receiver.await.unwrap())
}

/// Waits until `count` nodes LISTEN on the presence channel, so that no test step's
/// notification is sent before a node can hear it.
async fn until_listening(db: &TestDatabase, count: i64) {
    let pool = PgPool::connect(&db.url).await.unwrap();
    let pool = &pool;
    until(
        DEADLINE,
        &format!("{count} nodes listening"),
        || async move {
            let listening: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_stat_activity \
             WHERE datname = current_database() AND query = 'LISTEN vigil_presence'",
            )
            .fetch_one(pool)
            .await
            .unwrap();
            listening >= count
        },
    )
    .await;
}

/// Records the frames pushed to a stand-in session.
struct Recorder {
    frames: Arc<Mutex<Vec<ServerFrame>>>,
}

impl Actor for Recorder {
    type Context = Context<Self>;
}

impl Handler<Push> for Recorder {
    type Result = ();

    fn handle(&mut self, msg: Push, _: &mut Context<Self>) {
        self.frames.lock().unwrap().push(msg.frame);
    }
}

/// A stand-in for a `SessionActor`: a session id and the frames it received.
struct Session {
    id: SessionId,
    frames: Arc<Mutex<Vec<ServerFrame>>>,
    recipient: Recipient<Push>,
}

impl Session {
    fn new() -> Self {
        let frames = Arc::new(Mutex::new(Vec::new()));
        let recorder = Recorder {
            frames: frames.clone(),
        }
        .start();
        Self {
            id: next_session_id(),
            frames,
            recipient: recorder.recipient(),
        }
    }

    /// A session connected to `hub` as `user` of `hospital`.
    async fn connect(
        hub: &Addr<PresenceHub>,
        hospital: &HospitalId,
        user: &str,
        role: Role,
    ) -> Self {
        let session = Self::new();
        hub.send(Connect {
            session: session.id,
            hospital: hospital.clone(),
            user: UserId::parse(user).unwrap(),
            role,
            recipient: session.recipient.clone(),
        })
        .await
        .unwrap();
        session
    }

    async fn watch(&self, hub: &Addr<PresenceHub>, topic: WatchTopic) {
        hub.send(Watch {
            session: self.id,
            topic,
            on: true,
        })
        .await
        .unwrap();
    }

    fn frames(&self) -> Vec<ServerFrame> {
        self.frames.lock().unwrap().clone()
    }

    /// Waits until the latest frame that `pick` extracts something from satisfies `check`;
    /// returns it.
    async fn until<T: std::fmt::Debug>(
        &self,
        what: &str,
        pick: impl Fn(&ServerFrame) -> Option<T>,
        check: impl Fn(&T) -> bool,
    ) -> T {
        let (pick, check) = (&pick, &check);
        let found = eventually(DEADLINE, what, || async move {
            self.frames()
                .iter()
                .rev()
                .find_map(pick)
                .filter(|value| check(value))
        })
        .await;
        found
    }

    async fn until_presence(&self, what: &str, check: impl Fn(&Vec<PresenceEntry>) -> bool) {
        self.until(what, presence_of, check).await;
    }

    async fn until_typing(&self, case: Uuid, check: impl Fn(&Vec<Participant>) -> bool) {
        let pick = |frame: &ServerFrame| match frame {
            ServerFrame::Typing { case: c, users } if *c == case => Some(users.clone()),
            _ => None,
        };
        self.until("typing", pick, check).await;
    }

    async fn until_viewers(&self, target: &ViewTarget, check: impl Fn(&Vec<Participant>) -> bool) {
        let name = target.to_string();
        let pick = |frame: &ServerFrame| match frame {
            ServerFrame::Viewing { target, viewers } if *target == name => Some(viewers.clone()),
            _ => None,
        };
        self.until("viewing", pick, check).await;
    }
}

fn presence_of(frame: &ServerFrame) -> Option<Vec<PresenceEntry>> {
    match frame {
        ServerFrame::Presence { online } => Some(online.clone()),
        _ => None,
    }
}

#[actix_web::test]
async fn a_connection_on_one_node_is_online_on_the_other_until_it_disconnects() {
    // Arrange
    let db = TestDatabase::create().await;
    let (a, b) = (start_node(&db).await, start_node(&db).await);
    until_listening(&db, 2).await;
    let h = hospital("st-marys");
    let watcher = Session::connect(&b, &h, "nurse-b", Role::Nurse).await;
    watcher.watch(&b, WatchTopic::Presence).await;
    watcher
        .until_presence("the watcher itself", |p| {
            *p == vec![online("nurse-b", "nurse", 1)]
        })
        .await;

    // Act: one user, two tabs, on the other node.
    let tab1 = Session::connect(&a, &h, "dr-a", Role::Physician).await;
    let tab2 = Session::connect(&a, &h, "dr-a", Role::Physician).await;

    // Assert: listed once, with both connections.
    watcher
        .until_presence("dr-a with two connections", |p| {
            *p == vec![
                online("dr-a", "physician", 2),
                online("nurse-b", "nurse", 1),
            ]
        })
        .await;

    a.send(Disconnect { session: tab1.id }).await.unwrap();
    watcher
        .until_presence("dr-a with one connection", |p| {
            p.contains(&online("dr-a", "physician", 1))
        })
        .await;
    a.send(Disconnect { session: tab2.id }).await.unwrap();
    watcher
        .until_presence("dr-a gone", |p| *p == vec![online("nurse-b", "nurse", 1)])
        .await;
}

#[actix_web::test]
async fn online_users_by_role_count_each_user_once_over_all_nodes() {
    let db = TestDatabase::create().await;
    let (a, b) = (start_node(&db).await, start_node(&db).await);
    let (h, other) = (hospital("st-marys"), hospital("general"));
    let _sessions = [
        Session::connect(&a, &h, "dr-a", Role::Physician).await,
        Session::connect(&b, &h, "dr-a", Role::Physician).await,
        Session::connect(&a, &h, "nurse-a", Role::Nurse).await,
        Session::connect(&b, &h, "nurse-b", Role::Nurse).await,
        Session::connect(&b, &other, "nurse-c", Role::Nurse).await,
    ];

    let (b, h) = (&b, &h);
    let counts = eventually(DEADLINE, "one physician and two nurses", || async move {
        let counts = b
            .send(OnlineByRole {
                hospital: h.clone(),
            })
            .await
            .unwrap()
            .unwrap();
        (counts.get(&Role::Physician) == Some(&1) && counts.get(&Role::Nurse) == Some(&2))
            .then_some(counts)
    })
    .await;
    assert_eq!(counts.len(), 2, "{counts:?}");
}

#[actix_web::test]
async fn typing_on_one_node_reaches_watchers_on_the_other_and_expires() {
    let db = TestDatabase::create().await;
    let (a, b) = (start_node(&db).await, start_node(&db).await);
    until_listening(&db, 2).await;
    let (h, case) = (hospital("st-marys"), Uuid::new_v4());
    let watcher = Session::connect(&b, &h, "nurse-b", Role::Nurse).await;
    watcher
        .watch(&b, WatchTopic::Target(ViewTarget::Case(case)))
        .await;
    watcher.until_typing(case, |users| users.is_empty()).await;
    let typist = Session::connect(&a, &h, "dr-a", Role::Physician).await;

    let typed_at = Instant::now();
    a.send(Typing {
        session: typist.id,
        case,
    })
    .await
    .unwrap();

    watcher
        .until_typing(case, |users| *users == vec![who("dr-a", "physician")])
        .await;
    watcher.until_typing(case, |users| users.is_empty()).await;
    // Each node starts the clock when it hears of the typing, so never before the TTL.
    assert!(typed_at.elapsed() >= settings().typing_ttl);
}

#[actix_web::test]
async fn a_view_on_one_node_is_seen_on_the_other_and_released_on_unview_and_disconnect() {
    let db = TestDatabase::create().await;
    let (a, b) = (start_node(&db).await, start_node(&db).await);
    until_listening(&db, 2).await;
    let (h, target) = (hospital("st-marys"), patient("MRN-0042"));
    let watcher = Session::connect(&b, &h, "nurse-b", Role::Nurse).await;
    watcher.watch(&b, WatchTopic::Target(target.clone())).await;
    watcher.until_viewers(&target, |v| v.is_empty()).await;
    let viewer = Session::connect(&a, &h, "dr-a", Role::Physician).await;
    let view = || View {
        session: viewer.id,
        target: target.clone(),
    };

    a.send(view()).await.unwrap();
    watcher
        .until_viewers(&target, |v| *v == vec![who("dr-a", "physician")])
        .await;

    a.send(Unview {
        session: viewer.id,
        target: target.clone(),
    })
    .await
    .unwrap();
    watcher.until_viewers(&target, |v| v.is_empty()).await;

    a.send(view()).await.unwrap();
    watcher.until_viewers(&target, |v| !v.is_empty()).await;
    a.send(Disconnect { session: viewer.id }).await.unwrap();
    watcher.until_viewers(&target, |v| v.is_empty()).await;
}

#[actix_web::test]
async fn a_new_watcher_and_a_node_started_later_see_the_current_viewers_at_once() {
    let db = TestDatabase::create().await;
    let (a, b) = (start_node(&db).await, start_node(&db).await);
    until_listening(&db, 2).await;
    let (h, target) = (hospital("st-marys"), patient("p-7"));
    let viewer = Session::connect(&a, &h, "dr-a", Role::Physician).await;
    a.send(View {
        session: viewer.id,
        target: target.clone(),
    })
    .await
    .unwrap();
    let first_watcher = Session::connect(&b, &h, "nurse-b", Role::Nurse).await;
    first_watcher
        .watch(&b, WatchTopic::Target(target.clone()))
        .await;
    first_watcher
        .until_viewers(&target, |v| !v.is_empty())
        .await;

    // B kept the remote view although nobody there watched it at first: a second watcher's
    // very first viewing frame already has it.
    let second_watcher = Session::connect(&b, &h, "nurse-c", Role::Nurse).await;
    second_watcher
        .watch(&b, WatchTopic::Target(target.clone()))
        .await;
    second_watcher.until_viewers(&target, |_| true).await;
    let first_frame = second_watcher
        .frames()
        .iter()
        .find_map(|f| match f {
            ServerFrame::Viewing { viewers, .. } => Some(viewers.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(first_frame, vec![who("dr-a", "physician")]);

    // A node started now hears of the view after its `hello`, long before A's periodic
    // re-announcement (view_ttl / 3 = 10 s, beyond the deadline).
    let c = start_node(&db).await;
    let late_watcher = Session::connect(&c, &h, "nurse-d", Role::Nurse).await;
    late_watcher
        .watch(&c, WatchTopic::Target(target.clone()))
        .await;
    late_watcher
        .until_viewers(&target, |v| *v == vec![who("dr-a", "physician")])
        .await;
}

#[actix_web::test]
async fn views_and_unviews_reach_other_nodes_in_the_order_they_were_made() {
    // Invariant: a node's changes are applied elsewhere in the order it made them, so a
    // burst of view/unview ends, on every node, in the state it ended in at the source.
    let db = TestDatabase::create().await;
    let (a, b) = (start_node(&db).await, start_node(&db).await);
    until_listening(&db, 2).await;
    let (h, target) = (hospital("st-marys"), patient("p-9"));
    let watcher = Session::connect(&b, &h, "nurse-b", Role::Nurse).await;
    watcher.watch(&b, WatchTopic::Target(target.clone())).await;
    let ana = Session::connect(&a, &h, "ana", Role::Nurse).await;
    let ben = Session::connect(&a, &h, "ben", Role::Physician).await;

    let (view, unview) = (
        |session: &Session| View {
            session: session.id,
            target: target.clone(),
        },
        |session: &Session| Unview {
            session: session.id,
            target: target.clone(),
        },
    );
    for _ in 0..25 {
        for session in [&ana, &ben] {
            a.do_send(view(session));
            a.do_send(unview(session));
        }
    }
    a.send(view(&ben)).await.unwrap();
    // A marker made after the burst, on the same node: once it is seen on B, every change
    // of the burst has been applied there (that order is the invariant under test).
    let marker = patient("p-marker");
    watcher.watch(&b, WatchTopic::Target(marker.clone())).await;
    a.send(View {
        session: ana.id,
        target: marker.clone(),
    })
    .await
    .unwrap();

    watcher
        .until_viewers(&marker, |v| *v == vec![who("ana", "nurse")])
        .await;
    let last_of_target = watcher.frames().iter().rev().find_map(|frame| match frame {
        ServerFrame::Viewing { target: t, viewers } if *t == target.to_string() => {
            Some(viewers.clone())
        }
        _ => None,
    });
    assert_eq!(
        last_of_target,
        Some(vec![who("ben", "physician")]),
        "the burst ends on B as it ended on A"
    );
}

/// `dr-a`, connected to node `a`, views `target`; `nurse-b`, on node `b`, watches presence
/// and `target`. Returns (nurse-b, dr-a) once nurse-b sees dr-a online and viewing.
async fn seen_viewing_from_the_other_node(
    a: &Addr<PresenceHub>,
    b: &Addr<PresenceHub>,
    target: &ViewTarget,
) -> (Session, Session) {
    let h = hospital("st-marys");
    let watcher = Session::connect(b, &h, "nurse-b", Role::Nurse).await;
    watcher.watch(b, WatchTopic::Presence).await;
    watcher.watch(b, WatchTopic::Target(target.clone())).await;
    let viewer = Session::connect(a, &h, "dr-a", Role::Physician).await;
    a.send(View {
        session: viewer.id,
        target: target.clone(),
    })
    .await
    .unwrap();
    watcher
        .until_presence("dr-a online", |p| p.iter().any(|e| e.user == "dr-a"))
        .await;
    watcher.until_viewers(target, |v| !v.is_empty()).await;
    (watcher, viewer)
}

#[actix_web::test]
async fn a_node_that_dies_takes_its_presence_and_views_with_it() {
    let db = TestDatabase::create().await;
    let (arbiter, a) = start_node_on_own_arbiter(&db).await;
    let b = start_node(&db).await;
    until_listening(&db, 2).await;
    let target = patient("p-3");
    let (watcher, _doomed) = seen_viewing_from_the_other_node(&a, &b, &target).await;

    // Act: the node stops without disconnecting anyone.
    let died_at = Instant::now();
    assert!(arbiter.stop());

    // Assert: gone from presence and from the viewers, within the node timeout plus a
    // heartbeat (the sweep) and a little delivery time.
    watcher
        .until_presence("dr-a gone", |p| *p == vec![online("nurse-b", "nurse", 1)])
        .await;
    watcher.until_viewers(&target, |v| v.is_empty()).await;
    let settings = settings();
    let bound = settings.node_timeout + settings.node_heartbeat + Duration::from_secs(2);
    assert!(
        died_at.elapsed() <= bound,
        "took {:?}, bound {bound:?}",
        died_at.elapsed()
    );
    assert!(died_at.elapsed() >= settings.node_timeout - settings.node_heartbeat);
}

#[actix_web::test]
async fn a_node_that_leaves_takes_its_presence_views_and_node_row_with_it_at_once() {
    // Arrange: the node that stays sweeps dead nodes only after a minute, so whatever
    // disappears sooner was removed by the leaving node itself.
    let db = TestDatabase::create().await;
    let pool = PgPool::connect(&db.url).await.unwrap();
    let patient_settings = PresenceSettings {
        node_timeout: Duration::from_secs(60),
        ..settings()
    };
    let leaving = Uuid::new_v4();
    let a = start_node_with(&db, leaving, settings(), Default::default()).await;
    let peers_of_b = Arc::new(Peers::default());
    let b = start_node_with(&db, Uuid::new_v4(), patient_settings, peers_of_b.clone()).await;
    until_listening(&db, 2).await;
    let target = patient("p-4");
    let (watcher, still_connected) = seen_viewing_from_the_other_node(&a, &b, &target).await;
    let peers = &peers_of_b;
    until(DEADLINE, "b to count a as a peer", || async move {
        peers.count() == 1
    })
    .await;

    // Act: the node leaves (graceful shutdown) while its session is still connected.
    a.send(Leave).await.unwrap();

    // Assert: its rows are gone when Leave is answered, the other node shows neither its
    // user nor its view and stops counting it, and its heartbeats never register it again.
    let rows: i64 = sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM presence_nodes WHERE node_id = $1) \
              + (SELECT count(*) FROM presence_sessions WHERE node_id = $1)",
    )
    .bind(leaving)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(rows, 0);
    watcher
        .until_presence("dr-a gone", |p| *p == vec![online("nurse-b", "nurse", 1)])
        .await;
    watcher.until_viewers(&target, |v| v.is_empty()).await;
    until(DEADLINE, "b to stop counting a", || async move {
        peers.count() == 0
    })
    .await;
    a.send(Disconnect {
        session: still_connected.id,
    })
    .await
    .unwrap();
    // A's heartbeat is a timer with no trace once it has left, so the wait is for time: three
    // of B's heartbeats (same interval, same runtime), seen as B's `last_seen` moving three
    // times, cover two whole intervals of A's timer after the leave.
    let pool_ref = &pool;
    let beats_of_b = std::cell::RefCell::new(Vec::new());
    let beats = &beats_of_b;
    until(DEADLINE, "three heartbeats of b", || async move {
        let seen: chrono::DateTime<chrono::Utc> =
            sqlx::query_scalar("SELECT max(last_seen) FROM presence_nodes")
                .fetch_one(pool_ref)
                .await
                .unwrap();
        let mut beats = beats.borrow_mut();
        if beats.last() != Some(&seen) {
            beats.push(seen);
        }
        beats.len() > 3
    })
    .await;
    let registered: i64 =
        sqlx::query_scalar("SELECT count(*) FROM presence_nodes WHERE node_id = $1")
            .bind(leaving)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(registered, 0, "a node that left registered itself again");
}

/// Invariant: a node leaving while its connections close does not first write each closing
/// connection to PostgreSQL (one delete and notification each, thousands on a busy node,
/// which made the leave time out): what was queued before the leave is skipped, and the
/// leave's one transaction removes every row.
#[actix_web::test]
async fn a_leaving_node_skips_the_writes_queued_before_its_leave() {
    // Arrange: 500 connections, all stored; a listener counting presence notifications.
    const CONNECTIONS: usize = 500;
    let db = TestDatabase::create().await;
    let pool = PgPool::connect(&db.url).await.unwrap();
    let node = Uuid::new_v4();
    let hub = start_node_with(&db, node, settings(), Default::default()).await;
    let h = hospital("st-marys");
    let mut sessions = Vec::new();
    for i in 0..CONNECTIONS {
        sessions.push(Session::connect(&hub, &h, &format!("nurse-{i}"), Role::Nurse).await);
    }
    let pool_ref = &pool;
    // 500 single-row writes: on a loaded machine they take longer than one round trip.
    until(WAIT, "every connection stored", || async move {
        let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM presence_sessions")
            .fetch_one(pool_ref)
            .await
            .unwrap();
        stored == CONNECTIONS as i64
    })
    .await;
    let mut listener = sqlx::postgres::PgListener::connect(&db.url).await.unwrap();
    listener.listen("vigil_presence").await.unwrap();

    // Act: every connection closes (as at shutdown), then the node leaves.
    for session in &sessions {
        hub.do_send(Disconnect {
            session: session.id,
        });
    }
    hub.send(Leave).await.unwrap();

    // Assert: no rows left, and only a handful of notifications (the leave's, plus the few
    // disconnects the writer may have reached before the leave was asked) instead of one
    // per connection.
    let (nodes, stored): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM presence_nodes), (SELECT count(*) FROM presence_sessions)",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!((nodes, stored), (0, 0));
    // A notification of ours, sent after the leave was answered: PostgreSQL delivers
    // notifications in commit order, so once it arrives every notification of the node has.
    sqlx::query("SELECT pg_notify('vigil_presence', 'end-of-test')")
        .execute(&pool)
        .await
        .unwrap();
    let mut notifications = 0;
    loop {
        let notification = tokio::time::timeout(DEADLINE, listener.recv())
            .await
            .expect("our notification arrives")
            .unwrap();
        if notification.payload() == "end-of-test" {
            break;
        }
        notifications += 1;
    }
    assert!(
        notifications < CONNECTIONS / 5,
        "{notifications} notifications for {CONNECTIONS} closing connections"
    );
}

#[actix_web::test]
async fn a_node_that_lost_its_listen_connection_catches_up_after_reconnecting() {
    let db = TestDatabase::create().await;
    let (a, b) = (start_node(&db).await, start_node(&db).await);
    until_listening(&db, 2).await;
    let (h, target) = (hospital("st-marys"), patient("p-5"));
    let watcher = Session::connect(&b, &h, "nurse-b", Role::Nurse).await;
    watcher.watch(&b, WatchTopic::Presence).await;
    watcher.watch(&b, WatchTopic::Target(target.clone())).await;
    let viewer = Session::connect(&a, &h, "dr-a", Role::Physician).await;
    a.send(View {
        session: viewer.id,
        target: target.clone(),
    })
    .await
    .unwrap();
    watcher.until_viewers(&target, |v| !v.is_empty()).await;

    // Act: every LISTEN connection is cut (as by a PostgreSQL restart or a network blip);
    // meanwhile the view is released and someone connects, notifications B may miss.
    let admin = PgPool::connect(&db.url).await.unwrap();
    let cut: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = current_database() AND query = 'LISTEN vigil_presence') AS t",
    )
    .fetch_one(&admin)
    .await
    .unwrap();
    assert_eq!(cut, 2);
    a.send(Unview {
        session: viewer.id,
        target: target.clone(),
    })
    .await
    .unwrap();
    let _late = Session::connect(&a, &h, "dr-late", Role::Physician).await;

    // Assert: B catches up — the stale view lapses, the new user appears.
    watcher.until_viewers(&target, |v| v.is_empty()).await;
    watcher
        .until_presence("dr-late online", |p| p.iter().any(|e| e.user == "dr-late"))
        .await;
    until_listening(&db, 2).await;
}

#[actix_web::test]
async fn no_frame_of_one_hospital_reaches_a_session_of_another() {
    let db = TestDatabase::create().await;
    let (a, b) = (start_node(&db).await, start_node(&db).await);
    until_listening(&db, 2).await;
    let (x, y) = (hospital("hospital-x"), hospital("hospital-y"));
    // The same case and patient ids in both hospitals.
    let (case, chart) = (Uuid::new_v4(), patient("p-1"));
    let topics = [
        WatchTopic::Presence,
        WatchTopic::Target(ViewTarget::Case(case)),
        WatchTopic::Target(chart.clone()),
    ];
    let mut outsiders = Vec::new();
    for hub in [&a, &b] {
        let outsider = Session::connect(hub, &y, "nurse-y", Role::Nurse).await;
        for topic in &topics {
            outsider.watch(hub, topic.clone()).await;
        }
        outsiders.push(outsider);
    }
    let insider = Session::connect(&b, &x, "nurse-x", Role::Nurse).await;
    for topic in &topics {
        insider.watch(&b, topic.clone()).await;
    }

    let actor = Session::connect(&a, &x, "dr-x", Role::Physician).await;
    a.send(Typing {
        session: actor.id,
        case,
    })
    .await
    .unwrap();
    a.send(View {
        session: actor.id,
        target: chart.clone(),
    })
    .await
    .unwrap();
    a.send(View {
        session: actor.id,
        target: ViewTarget::Case(case),
    })
    .await
    .unwrap();
    // Everything has reached hospital X's watcher on the other node...
    insider
        .until_presence("dr-x online", |p| p.iter().any(|e| e.user == "dr-x"))
        .await;
    insider.until_typing(case, |u| !u.is_empty()).await;
    insider.until_viewers(&chart, |v| !v.is_empty()).await;
    insider
        .until_viewers(&ViewTarget::Case(case), |v| !v.is_empty())
        .await;
    a.send(Disconnect { session: actor.id }).await.unwrap();
    insider
        .until_presence("dr-x gone", |p| p.iter().all(|e| e.user != "dr-x"))
        .await;

    // ...and none of it reached hospital Y's, on either node.
    for outsider in &outsiders {
        outsider
            .until_presence("hospital y's presence", |p| !p.is_empty())
            .await;
        for frame in outsider.frames() {
            let text = frame.to_text();
            assert!(!text.contains("-x"), "hospital Y received {text}");
            match frame {
                ServerFrame::Presence { online: users } => {
                    assert!(users.iter().all(|e| e.user == "nurse-y"), "{users:?}")
                }
                ServerFrame::Typing { users, .. } => assert!(users.is_empty()),
                ServerFrame::Viewing { viewers, .. } => assert!(viewers.is_empty()),
                other => panic!("unexpected frame {other:?}"),
            }
        }
    }
}

/// Invariant: the per-user connection count of other nodes is exact per (hospital, user),
/// leaves out the asking node and nodes not heard from for two heartbeats (a crashed node
/// not yet swept must not hold its users' reconnects out), and stays so when many requests
/// share one batched query.
#[actix_web::test]
async fn connections_elsewhere_are_counted_per_user_over_live_other_nodes_only() {
    // Arrange: this node, a live other node, and one silent for 12 s: within the node timeout
    // (15 s, still shown in presence) but past two heartbeats (10 s), as after a crash.
    let db = TestDatabase::create().await;
    let pool = PgPool::connect(&db.url).await.unwrap();
    let (me, live, dead) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    sqlx::query(
        "INSERT INTO presence_nodes (node_id, last_seen) VALUES \
         ($1, clock_timestamp()), ($2, clock_timestamp()), ($3, clock_timestamp() - interval '12 seconds')",
    )
    .bind(me)
    .bind(live)
    .bind(dead)
    .execute(&pool)
    .await
    .unwrap();
    let sessions = [
        (me, "st-marys", "nurse-amy"),
        (live, "st-marys", "nurse-amy"),
        (live, "st-marys", "nurse-amy"),
        (live, "st-marys", "dr-rao"),
        (live, "city", "nurse-amy"),
        (dead, "st-marys", "dr-rao"),
    ];
    for (i, (node, hospital, user)) in sessions.iter().enumerate() {
        sqlx::query(
            "INSERT INTO presence_sessions (node_id, session_id, hospital, user_id, role) \
             VALUES ($1, $2, $3, $4, 'nurse')",
        )
        .bind(node)
        .bind(i as i64)
        .bind(hospital)
        .bind(user)
        .execute(&pool)
        .await
        .unwrap();
    }
    let live_within = PresenceSettings::default().admission_liveness();
    let elsewhere = vigil::realtime::presence::Elsewhere::spawn(pool, me, live_within);

    // Act: 300 requests at once (they share a few batched queries).
    let keys = [
        ("st-marys", "nurse-amy", 2),
        ("st-marys", "dr-rao", 1),
        ("city", "nurse-amy", 1),
        ("city", "dr-rao", 0),
        ("st-marys", "nobody", 0),
    ];
    let asked = (0..300).map(|i| keys[i % keys.len()]);
    let counts = futures_util::future::join_all(
        asked
            .clone()
            .map(|(h, u, _)| elsewhere.count(hospital(h), UserId::parse(u).unwrap())),
    )
    .await;

    // Assert
    for ((h, u, expected), count) in asked.zip(counts) {
        assert_eq!(count, Some(expected), "{u} of {h}");
    }
}

/// Invariant: a count PostgreSQL cannot answer promptly (here its table is locked) is
/// unknown after a bounded wait, and each such query is cancelled on the server too, so the
/// pool it borrowed connections from is not drained while the database is stuck; once the
/// database answers again, so does the count.
#[actix_web::test]
async fn a_count_the_database_cannot_answer_in_time_is_unknown() {
    // Arrange: a live other node with one connection of the user; the count's own pool of two
    // connections; the table locked from elsewhere.
    let db = TestDatabase::create().await;
    let pool = PgPool::connect(&db.url).await.unwrap();
    let (me, other) = (Uuid::new_v4(), Uuid::new_v4());
    sqlx::query("INSERT INTO presence_nodes (node_id) VALUES ($1), ($2)")
        .bind(me)
        .bind(other)
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO presence_sessions (node_id, session_id, hospital, user_id, role) \
         VALUES ($1, 1, 'st-marys', 'nurse-amy', 'nurse')",
    )
    .bind(other)
    .execute(&pool)
    .await
    .unwrap();
    let small_pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect(&db.url)
        .await
        .unwrap();
    let elsewhere = vigil::realtime::presence::Elsewhere::spawn(
        small_pool.clone(),
        me,
        Duration::from_secs(10),
    );
    let mut lock = pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE presence_sessions IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *lock)
        .await
        .unwrap();

    // Act: three counts while the table stays locked.
    let mut waits = Vec::new();
    for _ in 0..3 {
        let started = Instant::now();
        let blocked = elsewhere
            .count(hospital("st-marys"), UserId::parse("nurse-amy").unwrap())
            .await;
        waits.push((blocked, started.elapsed()));
    }
    let free_connection = tokio::time::timeout(Duration::from_secs(2), small_pool.acquire()).await;
    let pool_had_room = free_connection.is_ok();
    drop(free_connection);
    lock.rollback().await.unwrap();

    // Assert: each unknown in about a second (below the 2 s a request may wait in all), the
    // pool not drained by the abandoned queries, then answered again.
    for (blocked, waited) in &waits {
        assert_eq!(*blocked, None);
        assert!(*waited < Duration::from_millis(1900), "waited {waited:?}");
    }
    assert!(
        pool_had_room,
        "the abandoned count queries still hold the pool's connections"
    );
    let elsewhere = &elsewhere;
    until(DEADLINE, "the count answered again", || async move {
        let count = elsewhere
            .count(hospital("st-marys"), UserId::parse("nurse-amy").unwrap())
            .await;
        count == Some(1)
    })
    .await;
}
