//! The backend-neutral SQL layer: a statement is SQL text with `$n` placeholders (which both
//! Postgres and SQLite read) plus typed arguments, built once and run on either database. Row
//! types derive `sqlx::FromRow` once and decode from both (see `codec.rs`).

use chrono::{DateTime, Utc};
use serde_json::value::RawValue;
use serde_json::Value;
use sqlx::pool::PoolConnection;
use sqlx::postgres::PgRow;
use sqlx::sqlite::SqliteRow;
use sqlx::types::Json;
use sqlx::{
    Database, Encode, FromRow, PgConnection, PgPool, Postgres, Sqlite, SqliteConnection,
    SqlitePool, Transaction, Type,
};
use uuid::Uuid;

use super::codec::{DbId, DbTime};
use super::StoreResult;
use crate::domain::JobId;

/// One bound value.
#[derive(Debug, Clone)]
pub enum Arg {
    Text(Option<String>),
    Int(Option<i64>),
    Float(Option<f64>),
    Bool(Option<bool>),
    Id(Option<DbId>),
    Time(Option<DbTime>),
    /// Serialized once, when bound (a statement's arguments are cloned at each run).
    Json(Option<Json<Box<RawValue>>>),
}

/// A value that binds to one placeholder; `Option` binds NULL for `None`.
pub trait Bind {
    fn arg(self) -> Arg;
}

impl<T: Bind> From<T> for Arg {
    fn from(v: T) -> Self {
        v.arg()
    }
}

/// The value type of each [`Arg`] variant, and how to wrap it.
pub trait Scalar: Sized {
    fn wrap(v: Option<Self>) -> Arg;
}

impl Scalar for String {
    fn wrap(v: Option<Self>) -> Arg {
        Arg::Text(v)
    }
}
impl Scalar for i64 {
    fn wrap(v: Option<Self>) -> Arg {
        Arg::Int(v)
    }
}
impl Scalar for f64 {
    fn wrap(v: Option<Self>) -> Arg {
        Arg::Float(v)
    }
}
impl Scalar for bool {
    fn wrap(v: Option<Self>) -> Arg {
        Arg::Bool(v)
    }
}
impl Scalar for DbId {
    fn wrap(v: Option<Self>) -> Arg {
        Arg::Id(v)
    }
}
impl Scalar for DbTime {
    fn wrap(v: Option<Self>) -> Arg {
        Arg::Time(v)
    }
}
impl Scalar for Json<Box<RawValue>> {
    fn wrap(v: Option<Self>) -> Arg {
        Arg::Json(v)
    }
}

/// Any serializable value as a JSON column argument (serialized straight to its text).
pub fn json_arg<T: serde::Serialize + ?Sized>(v: &T) -> Json<Box<RawValue>> {
    Json(serde_json::value::to_raw_value(v).expect("serializable"))
}

/// Rust values and the column value they bind as.
pub trait ToColumn {
    type Column: Scalar;
    fn to_column(self) -> Self::Column;
}

impl ToColumn for String {
    type Column = String;
    fn to_column(self) -> String {
        self
    }
}
impl ToColumn for &str {
    type Column = String;
    fn to_column(self) -> String {
        self.to_string()
    }
}
impl ToColumn for &String {
    type Column = String;
    fn to_column(self) -> String {
        self.clone()
    }
}
impl ToColumn for i64 {
    type Column = i64;
    fn to_column(self) -> i64 {
        self
    }
}
impl ToColumn for u32 {
    type Column = i64;
    fn to_column(self) -> i64 {
        i64::from(self)
    }
}
impl ToColumn for f64 {
    type Column = f64;
    fn to_column(self) -> f64 {
        self
    }
}
impl ToColumn for bool {
    type Column = bool;
    fn to_column(self) -> bool {
        self
    }
}
impl ToColumn for Uuid {
    type Column = DbId;
    fn to_column(self) -> DbId {
        DbId(self)
    }
}
impl ToColumn for DbId {
    type Column = DbId;
    fn to_column(self) -> DbId {
        self
    }
}
impl ToColumn for JobId {
    type Column = DbId;
    fn to_column(self) -> DbId {
        DbId(self.0)
    }
}
impl ToColumn for DateTime<Utc> {
    type Column = DbTime;
    fn to_column(self) -> DbTime {
        DbTime(self)
    }
}
impl ToColumn for Value {
    type Column = Json<Box<RawValue>>;
    fn to_column(self) -> Json<Box<RawValue>> {
        json_arg(&self)
    }
}
impl ToColumn for &Value {
    type Column = Json<Box<RawValue>>;
    fn to_column(self) -> Json<Box<RawValue>> {
        json_arg(self)
    }
}
impl ToColumn for Json<Box<RawValue>> {
    type Column = Json<Box<RawValue>>;
    fn to_column(self) -> Json<Box<RawValue>> {
        self
    }
}

impl<T: ToColumn> Bind for T {
    fn arg(self) -> Arg {
        T::Column::wrap(Some(self.to_column()))
    }
}

impl<T: ToColumn> Bind for Option<T> {
    fn arg(self) -> Arg {
        T::Column::wrap(self.map(ToColumn::to_column))
    }
}

/// SQL text and its arguments. `push_bind` appends the next `$n` placeholder.
#[derive(Debug, Clone, Default)]
pub struct Stmt {
    sql: String,
    args: Vec<Arg>,
}

impl Stmt {
    pub fn new(sql: impl Into<String>) -> Self {
        Self {
            sql: sql.into(),
            args: Vec::new(),
        }
    }

    /// Binds the next placeholder already written in the SQL (`$1`, `$2`, … in order).
    pub fn bind(mut self, value: impl Into<Arg>) -> Self {
        self.args.push(value.into());
        self
    }

    /// The same arguments under other SQL (a statement that differs per database).
    pub fn with_sql(&self, sql: impl Into<String>) -> Self {
        Self {
            sql: sql.into(),
            args: self.args.clone(),
        }
    }

    pub fn sql(&self) -> &str {
        &self.sql
    }

    /// How many arguments are bound: the last one is `$args_len()`.
    pub fn args_len(&self) -> usize {
        self.args.len()
    }

    pub fn push(&mut self, sql: &str) -> &mut Self {
        self.sql.push_str(sql);
        self
    }

    /// Writes a new placeholder and binds it.
    pub fn push_bind(&mut self, value: impl Into<Arg>) -> &mut Self {
        self.args.push(value.into());
        let n = self.args.len();
        self.sql.push_str(&format!("${n}"));
        self
    }

    fn query<'q, DB: Database>(&'q self) -> sqlx::query::Query<'q, DB, DB::Arguments<'q>>
    where
        Option<String>: Encode<'q, DB> + Type<DB>,
        Option<i64>: Encode<'q, DB> + Type<DB>,
        Option<f64>: Encode<'q, DB> + Type<DB>,
        Option<bool>: Encode<'q, DB> + Type<DB>,
        Option<DbId>: Encode<'q, DB> + Type<DB>,
        Option<DbTime>: Encode<'q, DB> + Type<DB>,
        Option<Json<Box<RawValue>>>: Encode<'q, DB> + Type<DB>,
    {
        self.args
            .iter()
            .fold(sqlx::query::<DB>(&self.sql), |q, arg| match arg.clone() {
                Arg::Text(v) => q.bind(v),
                Arg::Int(v) => q.bind(v),
                Arg::Float(v) => q.bind(v),
                Arg::Bool(v) => q.bind(v),
                Arg::Id(v) => q.bind(v),
                Arg::Time(v) => q.bind(v),
                Arg::Json(v) => q.bind(v),
            })
    }
}

/// A row type that decodes from both databases.
pub trait AnyRow:
    for<'r> FromRow<'r, PgRow> + for<'r> FromRow<'r, SqliteRow> + Send + Unpin
{
}
impl<T> AnyRow for T where
    T: for<'r> FromRow<'r, PgRow> + for<'r> FromRow<'r, SqliteRow> + Send + Unpin
{
}

/// Which database: the few statements that truly differ ask this.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Postgres,
    Sqlite,
}

impl Dialect {
    /// The database's current time as an SQL expression (a time column's type).
    pub fn now(self) -> &'static str {
        match self {
            Dialect::Postgres => "clock_timestamp()",
            // Microseconds since the epoch, as SQLite's time columns hold them.
            Dialect::Sqlite => "CAST((julianday('now') - 2440587.5) * 86400000000.0 AS INTEGER)",
        }
    }
}

#[derive(Clone)]
pub enum Pool {
    Postgres(PgPool),
    Sqlite(SqlitePool),
}

/// One connection, from the pool or inside a transaction.
pub enum Conn<'c> {
    Postgres(&'c mut PgConnection),
    Sqlite(&'c mut SqliteConnection),
}

pub enum PooledConn {
    Postgres(PoolConnection<Postgres>),
    Sqlite(PoolConnection<Sqlite>),
}

pub enum Tx {
    Postgres(Transaction<'static, Postgres>),
    Sqlite(Transaction<'static, Sqlite>),
}

impl Pool {
    pub fn dialect(&self) -> Dialect {
        match self {
            Pool::Postgres(_) => Dialect::Postgres,
            Pool::Sqlite(_) => Dialect::Sqlite,
        }
    }

    pub async fn acquire(&self) -> StoreResult<PooledConn> {
        Ok(match self {
            Pool::Postgres(p) => PooledConn::Postgres(p.acquire().await?),
            Pool::Sqlite(p) => PooledConn::Sqlite(p.acquire().await?),
        })
    }

    /// Begins a transaction, safe to cancel at any await: a caller dropped (a client gone, a
    /// `select!`, a timeout) never leaves an open transaction on a pooled connection.
    ///
    /// sqlx 0.8's Postgres `begin` is not: cancelled between sending `BEGIN` and reading its
    /// answer, it queues no `ROLLBACK` (its depth count rises only after the answer) and the
    /// connection goes back to the pool inside a transaction nobody ends; the next borrower's
    /// statements then run in it, hold their row locks and are never committed
    /// (launchbadge/sqlx#4393). So the `BEGIN` runs in a task of its own: a caller that goes
    /// away leaves it to finish, and the transaction it then drops rolls back as usual (a
    /// dropped `Transaction` queues its `ROLLBACK`, which the pool sends before reuse).
    pub async fn begin(&self) -> StoreResult<Tx> {
        Ok(match self {
            Pool::Postgres(p) => {
                let p = p.clone();
                match tokio::spawn(async move { p.begin().await }).await {
                    Ok(tx) => Tx::Postgres(tx?),
                    Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                    // The runtime is shutting down.
                    Err(_) => return Err(sqlx::Error::PoolClosed.into()),
                }
            }
            Pool::Sqlite(p) => Tx::Sqlite(p.begin().await?),
        })
    }

    pub async fn execute(&self, s: Stmt) -> StoreResult<u64> {
        self.acquire().await?.conn().execute(s).await
    }

    pub async fn fetch_all<T: AnyRow>(&self, s: Stmt) -> StoreResult<Vec<T>> {
        self.acquire().await?.conn().fetch_all(s).await
    }

    pub async fn fetch_optional<T: AnyRow>(&self, s: Stmt) -> StoreResult<Option<T>> {
        self.acquire().await?.conn().fetch_optional(s).await
    }

    pub async fn fetch_one<T: AnyRow>(&self, s: Stmt) -> StoreResult<T> {
        self.acquire().await?.conn().fetch_one(s).await
    }

    pub async fn close(&self) {
        match self {
            Pool::Postgres(p) => p.close().await,
            Pool::Sqlite(p) => p.close().await,
        }
    }
}

impl PooledConn {
    pub fn conn(&mut self) -> Conn<'_> {
        match self {
            PooledConn::Postgres(c) => Conn::Postgres(c),
            PooledConn::Sqlite(c) => Conn::Sqlite(c),
        }
    }
}

impl Tx {
    pub fn conn(&mut self) -> Conn<'_> {
        match self {
            Tx::Postgres(t) => Conn::Postgres(t),
            Tx::Sqlite(t) => Conn::Sqlite(t),
        }
    }

    pub async fn rollback(self) -> StoreResult<()> {
        match self {
            Tx::Postgres(t) => t.rollback().await?,
            Tx::Sqlite(t) => t.rollback().await?,
        }
        Ok(())
    }

    pub async fn commit(self) -> StoreResult<()> {
        match self {
            Tx::Postgres(t) => t.commit().await?,
            Tx::Sqlite(t) => t.commit().await?,
        }
        Ok(())
    }
}

impl Conn<'_> {
    pub async fn execute(&mut self, s: Stmt) -> StoreResult<u64> {
        Ok(match self {
            Conn::Postgres(c) => s.query().execute(&mut **c).await?.rows_affected(),
            Conn::Sqlite(c) => s.query().execute(&mut **c).await?.rows_affected(),
        })
    }

    pub async fn fetch_all<T: AnyRow>(&mut self, s: Stmt) -> StoreResult<Vec<T>> {
        Ok(match self {
            Conn::Postgres(c) => {
                let rows = s.query().fetch_all(&mut **c).await?;
                rows.iter().map(T::from_row).collect::<Result<_, _>>()?
            }
            Conn::Sqlite(c) => {
                let rows = s.query().fetch_all(&mut **c).await?;
                rows.iter().map(T::from_row).collect::<Result<_, _>>()?
            }
        })
    }

    pub async fn fetch_optional<T: AnyRow>(&mut self, s: Stmt) -> StoreResult<Option<T>> {
        Ok(match self {
            Conn::Postgres(c) => match s.query().fetch_optional(&mut **c).await? {
                Some(r) => Some(T::from_row(&r)?),
                None => None,
            },
            Conn::Sqlite(c) => match s.query().fetch_optional(&mut **c).await? {
                Some(r) => Some(T::from_row(&r)?),
                None => None,
            },
        })
    }

    pub async fn fetch_one<T: AnyRow>(&mut self, s: Stmt) -> StoreResult<T> {
        self.fetch_optional(s)
            .await?
            .ok_or(super::StoreError::Database(sqlx::Error::RowNotFound))
    }
}
