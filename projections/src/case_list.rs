//! The case list: every case thread of a hospital with its status, assignee, message count
//! and a preview of its last message; each thread's messages; and each reader's read
//! receipt, from which a user's unread count is computed.
//!
//! Tables (migration `*_create_more_read_models.sql`):
//! - `case_list`, one row per case, keyed by (hospital, case id), indexed for "a hospital's
//!   cases (by status, or by assignee), most recently updated first";
//! - `case_messages`, one row per message, keyed by (hospital, case id, message id), which
//!   is also the order messages are paginated in;
//! - `case_reads`, one row per (hospital, case id, reader): the last message read.
//!
//! A user's unread count in a case is `message_count - up_to` (0 when they have no receipt).

use aggregates::case_thread::{CaseEvent, CaseStatus};
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgConnection, Postgres, QueryBuilder, Row};

use crate::engine::{ApplyFuture, ReadModel, Tables};
use crate::event::{DomainEvent, Envelope};

/// The case list read model.
pub struct CaseList;

/// Its code version: bump when `apply` changes, and the server rebuilds it at start.
pub const VERSION: i32 = 1;

/// Longest preview of a case's last message, in characters: a line in a list, not the
/// message (the thread holds it whole).
pub const PREVIEW_CHARS: usize = 200;

/// The first [`PREVIEW_CHARS`] characters of `body`; a cut preview ends in `…` (within the
/// limit), so readers can tell it continues.
pub fn preview(body: &str) -> String {
    if body.chars().count() <= PREVIEW_CHARS {
        return body.to_owned();
    }
    let mut cut: String = body.chars().take(PREVIEW_CHARS - 1).collect();
    cut.push('…');
    cut
}

/// A message id or read position as stored. Ids count the messages of one thread, so they
/// are far below `i64::MAX`; saturating keeps a corrupt value from wrapping negative.
fn stored(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl ReadModel for CaseList {
    fn name(&self) -> &'static str {
        "case_list"
    }

    fn version(&self) -> i32 {
        VERSION
    }

    fn tables(&self) -> &'static [&'static str] {
        &["case_list", "case_messages", "case_reads"]
    }

    fn kinds(&self) -> Option<&'static [&'static str]> {
        Some(&[crate::event::kinds::CASE_THREAD])
    }

    // Long by design: one match arm per event type, each a statement or two, so the whole
    // model's reaction to the stream reads as one table; split, it would scatter.
    fn apply<'a>(
        &'a self,
        tx: &'a mut PgConnection,
        tables: &'a Tables,
        e: &'a Envelope,
    ) -> ApplyFuture<'a> {
        Box::pin(async move {
            let DomainEvent::Case(event) = &e.event else {
                return Ok(());
            };
            let list = tables.get("case_list")?;
            match event {
                CaseEvent::CaseOpened {
                    patient,
                    title,
                    assignee,
                    by,
                    at,
                } => {
                    sqlx::query(&format!(
                        "INSERT INTO {list} (hospital, case_id, patient, title, status, assignee, \
                         opened_by, opened_at, updated_at, last_position) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8, $9) \
                         ON CONFLICT (hospital, case_id) DO NOTHING"
                    ))
                    .bind(&e.hospital)
                    .bind(&e.aggregate_id)
                    .bind(patient.as_str())
                    .bind(title.as_str())
                    .bind(CaseStatus::Open.as_str())
                    .bind(assignee.as_ref().map(|a| a.as_str()))
                    .bind(by.as_str())
                    .bind(at)
                    .bind(e.position)
                    .execute(&mut *tx)
                    .await?;
                }
                CaseEvent::CaseAssigned { assignee, at, .. } => {
                    sqlx::query(&format!(
                        "UPDATE {list} SET assignee = $3, updated_at = $4, last_position = $5 \
                         WHERE hospital = $1 AND case_id = $2"
                    ))
                    .bind(&e.hospital)
                    .bind(&e.aggregate_id)
                    .bind(assignee.as_str())
                    .bind(at)
                    .bind(e.position)
                    .execute(&mut *tx)
                    .await?;
                }
                CaseEvent::CaseStatusChanged { to, at, .. } => {
                    sqlx::query(&format!(
                        "UPDATE {list} SET status = $3, updated_at = $4, last_position = $5 \
                         WHERE hospital = $1 AND case_id = $2"
                    ))
                    .bind(&e.hospital)
                    .bind(&e.aggregate_id)
                    .bind(to.as_str())
                    .bind(at)
                    .bind(e.position)
                    .execute(&mut *tx)
                    .await?;
                }
                CaseEvent::MessagePosted {
                    message_id,
                    body,
                    by,
                    at,
                    ..
                } => {
                    let messages = tables.get("case_messages")?;
                    sqlx::query(&format!(
                        "INSERT INTO {messages} (hospital, case_id, message_id, author, body, posted_at) \
                         VALUES ($1, $2, $3, $4, $5, $6) \
                         ON CONFLICT (hospital, case_id, message_id) DO NOTHING"
                    ))
                    .bind(&e.hospital)
                    .bind(&e.aggregate_id)
                    .bind(stored(*message_id))
                    .bind(by.as_str())
                    .bind(body.as_str())
                    .bind(at)
                    .execute(&mut *tx)
                    .await?;
                    sqlx::query(&format!(
                        "UPDATE {list} SET message_count = greatest(message_count, $3), \
                         last_message_id = $3, last_message_body = $4, last_message_by = $5, \
                         last_message_at = $6, updated_at = $6, last_position = $7 \
                         WHERE hospital = $1 AND case_id = $2"
                    ))
                    .bind(&e.hospital)
                    .bind(&e.aggregate_id)
                    .bind(stored(*message_id))
                    .bind(preview(body.as_str()))
                    .bind(by.as_str())
                    .bind(at)
                    .bind(e.position)
                    .execute(&mut *tx)
                    .await?;
                }
                CaseEvent::MessagesRead { up_to, by, at, .. } => {
                    let reads = tables.get("case_reads")?;
                    sqlx::query(&format!(
                        "INSERT INTO {reads} AS r (hospital, case_id, user_id, up_to, read_at) \
                         VALUES ($1, $2, $3, $4, $5) \
                         ON CONFLICT (hospital, case_id, user_id) DO UPDATE \
                         SET up_to = greatest(r.up_to, excluded.up_to), read_at = excluded.read_at"
                    ))
                    .bind(&e.hospital)
                    .bind(&e.aggregate_id)
                    .bind(by.as_str())
                    .bind(stored(*up_to))
                    .bind(at)
                    .execute(&mut *tx)
                    .await?;
                }
            }
            Ok(())
        })
    }
}

/// One case as a list shows it, with the reading user's unread count.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct CaseRow {
    pub case_id: String,
    pub patient: String,
    pub title: String,
    /// `open`, `in_review`, `accepted`, `referred`, `prescribed` or `completed`.
    pub status: String,
    pub assignee: Option<String>,
    pub opened_by: String,
    pub opened_at: DateTime<Utc>,
    /// Last open, assignment, status change or message.
    pub updated_at: DateTime<Utc>,
    /// Also the id of the last message.
    pub message_count: i64,
    pub last_message_id: Option<i64>,
    /// At most [`PREVIEW_CHARS`] characters of the last message.
    pub last_message_body: Option<String>,
    pub last_message_by: Option<String>,
    pub last_message_at: Option<DateTime<Utc>>,
    /// Messages the reading user has not read: `message_count - up_to` of their receipt.
    pub unread: i64,
}

/// One message of a thread.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct MessageRow {
    pub message_id: i64,
    pub author: String,
    pub body: String,
    pub posted_at: DateTime<Utc>,
}

/// How far one reader has read a thread.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct ReadReceipt {
    pub user: String,
    /// The last message they read.
    pub up_to: i64,
    pub read_at: DateTime<Utc>,
}

/// Which cases a list holds.
#[derive(Clone, Debug, Default)]
pub struct CaseFilter {
    /// Only cases with this status.
    pub status: Option<String>,
    /// Only cases assigned to this user.
    pub assignee: Option<String>,
    /// Only cases assigned to this user as well: the visibility of field workers, applied on
    /// top of `assignee` so that a filter can narrow what they see but never widen it.
    pub visible_to: Option<String>,
    /// Whose unread counts to compute.
    pub reader: String,
    pub limit: i64,
    pub offset: i64,
}

const CASE_COLUMNS: &str = "c.case_id, c.patient, c.title, c.status, c.assignee, c.opened_by, \
     c.opened_at, c.updated_at, c.message_count, c.last_message_id, c.last_message_body, \
     c.last_message_by, c.last_message_at, \
     greatest(c.message_count - coalesce(r.up_to, 0), 0) AS unread";

fn case_row(r: &sqlx::postgres::PgRow) -> Result<CaseRow, sqlx::Error> {
    Ok(CaseRow {
        case_id: r.try_get("case_id")?,
        patient: r.try_get("patient")?,
        title: r.try_get("title")?,
        status: r.try_get("status")?,
        assignee: r.try_get("assignee")?,
        opened_by: r.try_get("opened_by")?,
        opened_at: r.try_get("opened_at")?,
        updated_at: r.try_get("updated_at")?,
        message_count: r.try_get("message_count")?,
        last_message_id: r.try_get("last_message_id")?,
        last_message_body: r.try_get("last_message_body")?,
        last_message_by: r.try_get("last_message_by")?,
        last_message_at: r.try_get("last_message_at")?,
        unread: r.try_get("unread")?,
    })
}

/// A hospital's cases matching `filter`, most recently updated first.
pub async fn list(
    conn: &mut PgConnection,
    hospital: &str,
    filter: &CaseFilter,
) -> Result<Vec<CaseRow>, sqlx::Error> {
    let mut q: QueryBuilder<Postgres> = QueryBuilder::new(format!(
        "SELECT {CASE_COLUMNS} FROM case_list c LEFT JOIN case_reads r \
         ON r.hospital = c.hospital AND r.case_id = c.case_id AND r.user_id = "
    ));
    q.push_bind(&filter.reader)
        .push(" WHERE c.hospital = ")
        .push_bind(hospital);
    if let Some(status) = &filter.status {
        q.push(" AND c.status = ").push_bind(status);
    }
    if let Some(assignee) = &filter.assignee {
        q.push(" AND c.assignee = ").push_bind(assignee);
    }
    if let Some(user) = &filter.visible_to {
        q.push(" AND c.assignee = ").push_bind(user);
    }
    q.push(" ORDER BY c.updated_at DESC, c.case_id LIMIT ")
        .push_bind(filter.limit)
        .push(" OFFSET ")
        .push_bind(filter.offset);
    let rows = q.build().fetch_all(&mut *conn).await?;
    rows.iter().map(case_row).collect()
}

/// One case with `reader`'s unread count; `None` if it does not exist or, when `visible_to`
/// is given, is not assigned to that user.
pub async fn get(
    conn: &mut PgConnection,
    hospital: &str,
    case_id: &str,
    reader: &str,
    visible_to: Option<&str>,
) -> Result<Option<CaseRow>, sqlx::Error> {
    let row = sqlx::query(&format!(
        "SELECT {CASE_COLUMNS} FROM case_list c LEFT JOIN case_reads r \
         ON r.hospital = c.hospital AND r.case_id = c.case_id AND r.user_id = $3 \
         WHERE c.hospital = $1 AND c.case_id = $2 \
         AND ($4::text IS NULL OR c.assignee = $4)"
    ))
    .bind(hospital)
    .bind(case_id)
    .bind(reader)
    .bind(visible_to)
    .fetch_optional(&mut *conn)
    .await?;
    row.as_ref().map(case_row).transpose()
}

/// Up to `limit` messages of a case after message `after`, in order.
pub async fn messages(
    conn: &mut PgConnection,
    hospital: &str,
    case_id: &str,
    after: i64,
    limit: i64,
) -> Result<Vec<MessageRow>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT message_id, author, body, posted_at FROM case_messages \
         WHERE hospital = $1 AND case_id = $2 AND message_id > $3 \
         ORDER BY message_id LIMIT $4",
    )
    .bind(hospital)
    .bind(case_id)
    .bind(after)
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(MessageRow {
                message_id: r.try_get("message_id")?,
                author: r.try_get("author")?,
                body: r.try_get("body")?,
                posted_at: r.try_get("posted_at")?,
            })
        })
        .collect()
}

/// Every reader's receipt in a case, by user.
pub async fn read_receipts(
    conn: &mut PgConnection,
    hospital: &str,
    case_id: &str,
) -> Result<Vec<ReadReceipt>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT user_id, up_to, read_at FROM case_reads \
         WHERE hospital = $1 AND case_id = $2 ORDER BY user_id",
    )
    .bind(hospital)
    .bind(case_id)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(ReadReceipt {
                user: r.try_get("user_id")?,
                up_to: r.try_get("up_to")?,
                read_at: r.try_get("read_at")?,
            })
        })
        .collect()
}

/// Cases per status (every status present, 0 when none).
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct StatusCounts {
    pub open: i64,
    pub in_review: i64,
    pub accepted: i64,
    pub referred: i64,
    pub prescribed: i64,
    pub completed: i64,
}

impl StatusCounts {
    fn slot(&mut self, status: CaseStatus) -> &mut i64 {
        match status {
            CaseStatus::Open => &mut self.open,
            CaseStatus::InReview => &mut self.in_review,
            CaseStatus::Accepted => &mut self.accepted,
            CaseStatus::Referred => &mut self.referred,
            CaseStatus::Prescribed => &mut self.prescribed,
            CaseStatus::Completed => &mut self.completed,
        }
    }
}

/// A hospital's cases per status.
pub async fn counts_by_status(
    conn: &mut PgConnection,
    hospital: &str,
) -> Result<StatusCounts, sqlx::Error> {
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT status, count(*) FROM case_list WHERE hospital = $1 GROUP BY status",
    )
    .bind(hospital)
    .fetch_all(&mut *conn)
    .await?;
    let mut counts = StatusCounts::default();
    for (name, n) in rows {
        // Only `apply` writes statuses, always from `CaseStatus::as_str`.
        if let Some(status) = CaseStatus::ALL.into_iter().find(|s| s.as_str() == name) {
            *counts.slot(status) = n;
        }
    }
    Ok(counts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_short_message_is_its_own_preview() {
        assert_eq!(
            preview("BP 150/95, recheck in 1 h"),
            "BP 150/95, recheck in 1 h"
        );
        let exact = "é".repeat(PREVIEW_CHARS);
        assert_eq!(preview(&exact), exact);
    }

    #[test]
    fn a_long_message_is_cut_to_the_preview_limit_in_characters_with_an_ellipsis() {
        let long = "é".repeat(PREVIEW_CHARS + 50);
        let cut = preview(&long);
        assert_eq!(cut.chars().count(), PREVIEW_CHARS);
        assert!(cut.ends_with('…'));
        assert!(long.starts_with(cut.trim_end_matches('…')));
    }

    #[test]
    fn every_status_has_its_own_count() {
        let mut counts = StatusCounts::default();
        for (n, status) in CaseStatus::ALL.into_iter().enumerate() {
            *counts.slot(status) = n as i64 + 1;
        }
        let json = serde_json::to_value(&counts).unwrap();
        for (n, status) in CaseStatus::ALL.into_iter().enumerate() {
            assert_eq!(json[status.as_str()], n as i64 + 1, "{status}");
        }
    }
}
