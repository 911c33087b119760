//! The notification inbox: every notification with its recipient, kind, urgency and whether
//! it was read. Only its recipient ever reads a row (whatever their role).
//!
//! Table `notification_inbox` (migration `*_create_more_read_models.sql`), one row per
//! notification, keyed by (hospital, notification id), indexed by (hospital, recipient,
//! unread first, newest first): the inbox's order, its unread count and its unread-only page.
//! `unread` is a column PostgreSQL generates from `read_at`.

use aggregates::notification::{NotificationContent, NotificationEvent};
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::types::Json;
use sqlx::{PgConnection, Row};

use crate::engine::{ApplyFuture, ReadModel, Tables};
use crate::event::{DomainEvent, Envelope};

/// The notification inbox read model.
pub struct NotificationInbox;

/// Its code version: bump when `apply` changes, and the server rebuilds it at start.
pub const VERSION: i32 = 1;

/// The content's kind, equal to its serde tag (`lab_result`...), for filtering and display.
pub fn kind(content: &NotificationContent) -> &'static str {
    match content {
        NotificationContent::TaskAssigned { .. } => "task_assigned",
        NotificationContent::LabResult { .. } => "lab_result",
        NotificationContent::PriorAuthorization { .. } => "prior_authorization",
    }
}

/// Whether a notification needs action now: a lab result flagged urgent (a critical value).
pub fn urgent(content: &NotificationContent) -> bool {
    matches!(content, NotificationContent::LabResult { urgent: true, .. })
}

impl ReadModel for NotificationInbox {
    fn name(&self) -> &'static str {
        "notification_inbox"
    }

    fn version(&self) -> i32 {
        VERSION
    }

    fn tables(&self) -> &'static [&'static str] {
        &["notification_inbox"]
    }

    fn kinds(&self) -> Option<&'static [&'static str]> {
        Some(&[crate::event::kinds::NOTIFICATION])
    }

    fn apply<'a>(
        &'a self,
        tx: &'a mut PgConnection,
        tables: &'a Tables,
        e: &'a Envelope,
    ) -> ApplyFuture<'a> {
        Box::pin(async move {
            let DomainEvent::Notification(event) = &e.event else {
                return Ok(());
            };
            let table = tables.get("notification_inbox")?;
            match event {
                NotificationEvent::NotificationSent {
                    recipient,
                    content,
                    by,
                    at,
                } => {
                    sqlx::query(&format!(
                        "INSERT INTO {table} (hospital, notification_id, recipient, kind, urgent, \
                         patient, content, sent_by, sent_at) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
                         ON CONFLICT (hospital, notification_id) DO NOTHING"
                    ))
                    .bind(&e.hospital)
                    .bind(&e.aggregate_id)
                    .bind(recipient.as_str())
                    .bind(kind(content))
                    .bind(urgent(content))
                    .bind(content.patient().map(|p| p.as_str()))
                    .bind(Json(content))
                    .bind(by.as_str())
                    .bind(at)
                    .execute(&mut *tx)
                    .await?;
                }
                NotificationEvent::NotificationRead { at, .. } => {
                    sqlx::query(&format!(
                        "UPDATE {table} SET read_at = $3 \
                         WHERE hospital = $1 AND notification_id = $2 AND read_at IS NULL"
                    ))
                    .bind(&e.hospital)
                    .bind(&e.aggregate_id)
                    .bind(at)
                    .execute(&mut *tx)
                    .await?;
                }
            }
            Ok(())
        })
    }
}

/// One notification in its recipient's inbox.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct NotificationRow {
    pub notification_id: String,
    /// `task_assigned`, `lab_result` or `prior_authorization`.
    pub kind: String,
    pub urgent: bool,
    /// The patient it concerns, if any.
    pub patient: Option<String>,
    /// The content as sent, tagged by `kind`.
    pub content: serde_json::Value,
    pub sent_by: String,
    pub sent_at: DateTime<Utc>,
    /// When the recipient read it; `null` while unread.
    pub read_at: Option<DateTime<Utc>>,
}

/// Up to `limit` of `recipient`'s notifications after skipping `offset`: unread first, then
/// read, each newest first; only unread ones with `unread_only`.
pub async fn list(
    conn: &mut PgConnection,
    hospital: &str,
    recipient: &str,
    unread_only: bool,
    limit: i64,
    offset: i64,
) -> Result<Vec<NotificationRow>, sqlx::Error> {
    // Both the filter and the order are the index's keys (`unread` is a generated column), so
    // a page is read straight off the index.
    let unread_filter = if unread_only { " AND unread" } else { "" };
    let rows = sqlx::query(&format!(
        "SELECT notification_id, kind, urgent, patient, content, sent_by, sent_at, read_at \
         FROM notification_inbox WHERE hospital = $1 AND recipient = $2{unread_filter} \
         ORDER BY unread DESC, sent_at DESC, notification_id LIMIT $3 OFFSET $4"
    ))
    .bind(hospital)
    .bind(recipient)
    .bind(limit)
    .bind(offset)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(NotificationRow {
                notification_id: r.try_get("notification_id")?,
                kind: r.try_get("kind")?,
                urgent: r.try_get("urgent")?,
                patient: r.try_get("patient")?,
                content: r.try_get("content")?,
                sent_by: r.try_get("sent_by")?,
                sent_at: r.try_get("sent_at")?,
                read_at: r.try_get("read_at")?,
            })
        })
        .collect()
}

/// How many of `recipient`'s notifications are unread.
pub async fn unread_count(
    conn: &mut PgConnection,
    hospital: &str,
    recipient: &str,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT count(*) FROM notification_inbox \
         WHERE hospital = $1 AND recipient = $2 AND unread",
    )
    .bind(hospital)
    .bind(recipient)
    .fetch_one(&mut *conn)
    .await
}

#[cfg(test)]
mod tests {
    use aggregates::notification::PriorAuthStatus;

    use super::*;

    fn samples() -> Vec<NotificationContent> {
        vec![
            NotificationContent::TaskAssigned {
                title: "Review case".parse().unwrap(),
                case_id: None,
            },
            NotificationContent::LabResult {
                patient: "p-1".parse().unwrap(),
                test: "CBC".parse().unwrap(),
                summary: "Hb 7.1 g/dL".parse().unwrap(),
                urgent: true,
            },
            NotificationContent::PriorAuthorization {
                patient: "p-1".parse().unwrap(),
                request: "MRI".parse().unwrap(),
                status: PriorAuthStatus::Approved,
            },
        ]
    }

    #[test]
    fn the_kind_is_the_contents_serde_tag() {
        for content in samples() {
            let json = serde_json::to_value(&content).unwrap();
            assert_eq!(json["kind"], kind(&content));
        }
    }

    #[test]
    fn only_a_lab_result_flagged_urgent_is_urgent() {
        let urgency: Vec<bool> = samples().iter().map(urgent).collect();
        assert_eq!(urgency, [false, true, false]);
        let routine = NotificationContent::LabResult {
            patient: "p-1".parse().unwrap(),
            test: "CBC".parse().unwrap(),
            summary: "normal".parse().unwrap(),
            urgent: false,
        };
        assert!(!urgent(&routine));
    }
}
