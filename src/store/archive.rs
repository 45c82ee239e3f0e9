//! The archive side of [`RetentionStore`] for [`SqlStore`]: the rows of an archived purge class
//! read as archive lines (`archive_rows`), and deleted once archived (`delete_archived`).
//!
//! A line is the same JSON on both databases: every column of the row (Postgres `to_jsonb`,
//! SQLite `json_object` over the table's columns), times as RFC 3339 UTC with microseconds,
//! JSON columns as JSON. Rows are read oldest first by (time, id), a total order, so a run
//! that reads again after a crash reads the same rows: the archive objects it writes are the
//! same objects. The delete takes exactly the rows read, in one transaction, and only if each
//! still may go and none gained a related row meanwhile (a row deleted with it, unarchived):
//! then nothing is deleted and the caller reads again.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use sqlx::FromRow;

use super::codec::DbId;
use super::db::{Arg, Conn, Dialect, Stmt};
use super::retention::{push_where, table};
use super::sql::SqlStore;
use super::{ArchivedRow, PurgeClass, PurgeCutoffs, PurgedBatch, RowId, StoreError, StoreResult};

/// Columns that hold JSON (TEXT on SQLite, `JSONB` on Postgres): archived as JSON.
const JSON_COLUMNS: &[(&str, &str)] = &[
    ("jobs", "request"),
    ("jobs", "warnings"),
    ("jobs", "last_error"),
    ("jobs", "mps_response"),
    ("mps_responses", "body"),
    ("webhook_events", "data"),
];

#[derive(FromRow)]
struct Doc {
    doc: String,
}

#[derive(FromRow)]
struct Name {
    name: String,
}

#[derive(FromRow)]
struct N {
    n: i64,
}

impl From<&RowId> for Arg {
    fn from(id: &RowId) -> Arg {
        match id {
            RowId::Uuid(u) => DbId(*u).into(),
            RowId::Text(s) => s.clone().into(),
            RowId::Int(i) => (*i).into(),
        }
    }
}

/// Appends `(a, b, …)` of the ids.
fn push_ids(q: &mut Stmt, ids: &[&RowId]) {
    q.push("(");
    for (i, id) in ids.iter().enumerate() {
        q.push(if i == 0 { "" } else { ", " }).push_bind(*id);
    }
    q.push(")");
}

/// A time column: `…_at` and `…_since`.
fn is_time(column: &str) -> bool {
    column.ends_with("_at") || column.ends_with("_since")
}

/// One database's row JSON made the same on both: times as RFC 3339 UTC with microseconds
/// (SQLite keeps microseconds since the epoch, Postgres `to_jsonb` writes its own offset form).
fn normalise(mut row: Map<String, Value>) -> Map<String, Value> {
    for (k, v) in row.iter_mut() {
        if !is_time(k) {
            continue;
        }
        let t = match v {
            Value::Number(n) => n.as_i64().map(crate::clock::micros_to_time),
            Value::String(s) => DateTime::parse_from_rfc3339(s)
                .ok()
                .map(|t| t.with_timezone(&Utc)),
            _ => None,
        };
        if let Some(t) = t {
            *v = Value::String(t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true));
        }
    }
    row
}

fn parse_row(doc: &str) -> StoreResult<Map<String, Value>> {
    match serde_json::from_str(doc) {
        Ok(Value::Object(m)) => Ok(normalise(m)),
        _ => Err(StoreError::Corrupt(format!(
            "a row's JSON is not an object: {doc}"
        ))),
    }
}

/// The key of an archived row from its JSON, typed as its table keys it.
fn row_id(class: PurgeClass, row: &Map<String, Value>) -> StoreResult<RowId> {
    let v = row.get("id");
    let id = match (class, v) {
        (PurgeClass::WebhookAttempts, Some(Value::Number(n))) => n.as_i64().map(RowId::Int),
        (PurgeClass::WebhookEvents, Some(Value::String(s))) => Some(RowId::Text(s.clone())),
        (_, Some(Value::String(s))) => uuid::Uuid::parse_str(s).ok().map(RowId::Uuid),
        _ => None,
    };
    id.ok_or_else(|| StoreError::Corrupt(format!("{} row without an id: {v:?}", class.as_str())))
}

fn row_time(row: &Map<String, Value>, column: &str) -> StoreResult<DateTime<Utc>> {
    row.get(column)
        .and_then(Value::as_str)
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.with_timezone(&Utc))
        .ok_or_else(|| StoreError::Corrupt(format!("a row without its {column}")))
}

impl SqlStore {
    /// The SQL expression of a whole row of `t` as JSON text.
    async fn row_json(&self, t: &str) -> StoreResult<String> {
        if self.dialect() == Dialect::Postgres {
            return Ok(format!("to_jsonb({t})::text"));
        }
        let columns: Vec<Name> = self
            .pool()
            .fetch_all(Stmt::new("SELECT name FROM pragma_table_info($1) ORDER BY cid").bind(t))
            .await?;
        let pairs: Vec<String> = columns
            .iter()
            .map(|c| {
                let name = &c.name;
                if JSON_COLUMNS.contains(&(t, name.as_str())) {
                    format!("'{name}', json({name})")
                } else {
                    format!("'{name}', {name}")
                }
            })
            .collect();
        Ok(format!("json_object({})", pairs.join(", ")))
    }

    /// The rows of `t` whose `column` is one of `ids`, in `order`, as normalised JSON.
    async fn related_rows(
        &self,
        t: &str,
        column: &str,
        ids: &[&RowId],
        order: &str,
    ) -> StoreResult<Vec<Map<String, Value>>> {
        let mut q = Stmt::new(format!(
            "SELECT {} AS doc FROM {t} WHERE {column} IN ",
            self.row_json(t).await?
        ));
        push_ids(&mut q, ids);
        q.push(&format!(" ORDER BY {order}"));
        let docs: Vec<Doc> = self.pool().fetch_all(q).await?;
        docs.iter().map(|d| parse_row(&d.doc)).collect()
    }

    pub(super) async fn read_archive_rows(
        &self,
        class: PurgeClass,
        c: &PurgeCutoffs,
        limit: u32,
    ) -> StoreResult<Vec<ArchivedRow>> {
        let (t, time) = table(class);
        let mut q = Stmt::new(format!(
            "SELECT {} AS doc FROM {t}",
            self.row_json(t).await?
        ));
        push_where(&mut q, class, c);
        q.push(&format!(" ORDER BY {time}, id LIMIT "))
            .push_bind(limit);
        let docs: Vec<Doc> = self.pool().fetch_all(q).await?;
        let mut rows = Vec::with_capacity(docs.len());
        for d in &docs {
            let row = parse_row(&d.doc)?;
            rows.push((row_id(class, &row)?, row_time(&row, time)?, row));
        }
        let ids: Vec<&RowId> = rows.iter().map(|r| &r.0).collect();
        let mut related = match class {
            PurgeClass::Jobs if !ids.is_empty() => self.job_related(&ids).await?,
            PurgeClass::WebhookEvents if !ids.is_empty() => self.event_related(&ids).await?,
            _ => HashMap::new(),
        };
        let class_name = class.as_str();
        Ok(rows
            .into_iter()
            .map(|(id, at, row)| {
                let mut doc = Map::new();
                doc.insert("class".into(), class_name.into());
                doc.insert("row".into(), Value::Object(row));
                let (n, extra) = related.remove(&id.to_string()).unwrap_or_default();
                match class {
                    PurgeClass::Jobs => doc.insert("mps_responses".into(), Value::Array(extra)),
                    PurgeClass::WebhookEvents => {
                        doc.insert("deliveries".into(), Value::Array(extra))
                    }
                    _ => None,
                };
                ArchivedRow {
                    id,
                    at,
                    doc: Value::Object(doc),
                    related: n,
                }
            })
            .collect())
    }

    /// Each job's MPS responses (by id), with their count.
    async fn job_related(&self, ids: &[&RowId]) -> StoreResult<HashMap<String, (u64, Vec<Value>)>> {
        let mut out: HashMap<String, (u64, Vec<Value>)> = HashMap::new();
        for r in self
            .related_rows("mps_responses", "job_id", ids, "id")
            .await?
        {
            let job = r.get("job_id").and_then(Value::as_str).unwrap_or_default();
            let e = out.entry(job.to_string()).or_default();
            e.0 += 1;
            e.1.push(Value::Object(r));
        }
        Ok(out)
    }

    /// Each event's deliveries, each with its attempts under `attempts`; the count is of both.
    async fn event_related(
        &self,
        ids: &[&RowId],
    ) -> StoreResult<HashMap<String, (u64, Vec<Value>)>> {
        let deliveries = self
            .related_rows("webhook_deliveries", "event_id", ids, "created_at, id")
            .await?;
        let delivery_ids: Vec<RowId> = deliveries
            .iter()
            .filter_map(|d| d.get("id").and_then(Value::as_str))
            .filter_map(|s| uuid::Uuid::parse_str(s).ok())
            .map(RowId::Uuid)
            .collect();
        let mut attempts: HashMap<String, Vec<Value>> = HashMap::new();
        if !delivery_ids.is_empty() {
            let refs: Vec<&RowId> = delivery_ids.iter().collect();
            for a in self
                .related_rows("webhook_attempts", "delivery_id", &refs, "id")
                .await?
            {
                let d = a
                    .get("delivery_id")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                attempts
                    .entry(d.to_string())
                    .or_default()
                    .push(Value::Object(a));
            }
        }
        let mut out: HashMap<String, (u64, Vec<Value>)> = HashMap::new();
        for mut d in deliveries {
            let id = d
                .get("id")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            let event = d
                .get("event_id")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let tries = attempts.remove(&id).unwrap_or_default();
            let e = out.entry(event.to_string()).or_default();
            e.0 += 1 + tries.len() as u64;
            d.insert("attempts".into(), Value::Array(tries));
            e.1.push(Value::Object(d));
        }
        Ok(out)
    }

    pub(super) async fn delete_archived_rows(
        &self,
        class: PurgeClass,
        c: &PurgeCutoffs,
        rows: &[ArchivedRow],
    ) -> StoreResult<Option<PurgedBatch>> {
        if rows.is_empty() {
            return Ok(Some(PurgedBatch::default()));
        }
        let (t, _) = table(class);
        let ids: Vec<&RowId> = rows.iter().map(|r| &r.id).collect();
        let mut tx = self.pool().begin().await?;
        let unchanged = self
            .still_as_archived(&mut tx.conn(), class, c, rows, &ids)
            .await?;
        if !unchanged {
            tx.rollback().await?;
            return Ok(None);
        }
        let mut related = 0;
        if class == PurgeClass::Jobs {
            let mut q = Stmt::new("DELETE FROM mps_responses WHERE job_id IN ");
            push_ids(&mut q, &ids);
            related = tx.conn().execute(q).await?;
        }
        let mut q = Stmt::new(format!("DELETE FROM {t} WHERE id IN "));
        push_ids(&mut q, &ids);
        let deleted = tx.conn().execute(q).await?;
        if class == PurgeClass::WebhookEvents {
            // Deliveries and their attempts went with the events (ON DELETE CASCADE).
            related = rows.iter().map(|r| r.related).sum();
        }
        tx.commit().await?;
        Ok(Some(PurgedBatch {
            rows: deleted,
            related,
        }))
    }

    /// Inside the delete's transaction, first: each row still may go (locked on Postgres, the
    /// write lock taken first on SQLite) and holds as many related rows as its archive line.
    async fn still_as_archived(
        &self,
        conn: &mut Conn<'_>,
        class: PurgeClass,
        c: &PurgeCutoffs,
        rows: &[ArchivedRow],
        ids: &[&RowId],
    ) -> StoreResult<bool> {
        let (t, _) = table(class);
        let lock = match self.dialect() {
            Dialect::Postgres => " FOR UPDATE",
            Dialect::Sqlite => {
                // A write first: the transaction holds SQLite's write lock from here on, so no
                // other writer comes between this check and the delete.
                conn.execute(Stmt::new(format!("DELETE FROM {t} WHERE 0 = 1")))
                    .await?;
                ""
            }
        };
        let mut q = Stmt::new(format!("SELECT id FROM {t}"));
        push_where(&mut q, class, c);
        q.push(" AND id IN ");
        push_ids(&mut q, ids);
        q.push(lock);
        let live: Vec<IdOnly> = conn.fetch_all(q).await?;
        if live.len() != rows.len() {
            return Ok(false);
        }
        let mut q = Stmt::new("SELECT ");
        match class {
            PurgeClass::Jobs => {
                q.push("(SELECT count(*) FROM mps_responses WHERE job_id IN ");
                push_ids(&mut q, ids);
            }
            PurgeClass::WebhookEvents => {
                q.push("(SELECT count(*) FROM webhook_deliveries WHERE event_id IN ");
                push_ids(&mut q, ids);
                q.push(
                    ") + (SELECT count(*) FROM webhook_attempts a JOIN webhook_deliveries d \
                     ON d.id = a.delivery_id WHERE d.event_id IN ",
                );
                push_ids(&mut q, ids);
            }
            _ => return Ok(true),
        }
        q.push(") AS n");
        let n: N = conn.fetch_one(q).await?;
        Ok(n.n as u64 == rows.iter().map(|r| r.related).sum::<u64>())
    }
}

/// Any id column, read only to count the rows found.
struct IdOnly;

impl<'r, R: sqlx::Row> FromRow<'r, R> for IdOnly {
    fn from_row(_: &'r R) -> Result<Self, sqlx::Error> {
        Ok(IdOnly)
    }
}
