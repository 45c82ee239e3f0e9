//! The backend-neutral SQL layer: a statement is SQL text with `$n` placeholders (which both
//! Postgres and SQLite read) plus typed arguments, built once and run on either database. Row
//! types derive `sqlx::FromRow` once and decode from both (see `codec.rs`).

use std::sync::{Arc, Mutex, Once};
use std::time::{Duration, Instant};

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
use tokio::sync::Notify;
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
    /// The pool, and the connections kept warm for single statements ([`Warm`]).
    Postgres(PgPool, Arc<Warm>),
    Sqlite(SqlitePool),
}

/// A connection kept warm goes back to the pool after this long unused...
const KEEP_IDLE: Duration = Duration::from_millis(250);
/// ...and after this long out of the pool however busy it is, so the pool's own rules (its
/// connections' maximum lifetime, its check on release) still apply now and then.
const KEEP_AT_MOST: Duration = Duration::from_secs(30);

/// Postgres connections kept out of sqlx's pool between single statements.
///
/// sqlx 0.8 pings every connection given back to its pool before anyone else may have it
/// (`PoolConnection::return_to_pool` sends `Sync` and waits for the answer; it cannot be
/// turned off): every statement was two round trips and two wake-ups of a Postgres backend,
/// with the connection held for both. A single statement that ran to its end (its rows read,
/// outside any transaction) leaves its connection as clean as that check would, and sqlx
/// waits for any answer still due before the connection's next statement: the next statement
/// takes it as it is. A statement that failed, or whose caller went away mid-way, gives its
/// connection back through the pool's check (a broken one is closed there). At most a quarter
/// of the pool is kept (transactions and the listeners take theirs from the pool itself), and
/// none while every connection of the pool is out (callers may be queued for one: they get it
/// in their turn); each is given back after [`KEEP_IDLE`] unused, [`KEEP_AT_MOST`] out of the
/// pool, or when the pool closes. SQLite's pool has one connection, which nothing else could
/// use meanwhile: there nothing is kept.
pub struct Warm {
    pool: PgPool,
    max: usize,
    /// Most recently used last: (connection, taken from the pool at, last used at).
    conns: Mutex<Vec<(PoolConnection<Postgres>, Instant, Instant)>>,
    /// Wakes the task that gives unused connections back (which holds this, not the `Warm`).
    kept: Arc<Notify>,
    reaper: Once,
}

/// A connection out of the pool for one statement; [`WarmConn::keep`] once it ran to its end,
/// else dropping it gives it back through the pool's check.
struct WarmConn<'w> {
    conn: Option<(PoolConnection<Postgres>, Instant)>,
    warm: &'w Arc<Warm>,
}

impl Warm {
    /// How many connections are kept warm right now (tests: what [`WarmConn::keep`] did, at
    /// once, rather than inferred later from the pool's idle count).
    pub fn kept(&self) -> usize {
        self.conns.lock().expect("not poisoned").len()
    }

    fn new(pool: PgPool) -> Arc<Self> {
        let max = pool.options().get_max_connections() as usize / 4;
        Arc::new(Self {
            pool,
            max,
            conns: Mutex::new(Vec::new()),
            kept: Arc::default(),
            reaper: Once::new(),
        })
    }

    async fn take(self: &Arc<Self>) -> StoreResult<WarmConn<'_>> {
        let kept = self.conns.lock().expect("not poisoned").pop();
        let conn = match kept {
            Some((conn, taken, _)) => (conn, taken),
            None => (self.pool.acquire().await?, Instant::now()),
        };
        Ok(WarmConn {
            conn: Some(conn),
            warm: self,
        })
    }

    /// Gives every kept connection back to the pool, or (`idle`) those unused that long.
    fn give_back(&self, idle: Option<Duration>) {
        let given: Vec<_> = {
            let mut conns = self.conns.lock().expect("not poisoned");
            match idle {
                None => std::mem::take(&mut *conns),
                Some(idle) => {
                    // Least recently used first: those unused long enough are a prefix.
                    let stale = conns.iter().take_while(|c| c.2.elapsed() >= idle).count();
                    conns.drain(..stale).collect()
                }
            }
        };
        // Outside the lock: each goes back through the pool's check.
        drop(given);
    }
}

/// Gives kept connections back once unused for [`KEEP_IDLE`] (and all of them when the pool
/// closes); sleeps while none is kept; ends with the last handle of the pool.
async fn reap(warm: std::sync::Weak<Warm>, kept: Arc<Notify>) {
    loop {
        let Some(w) = warm.upgrade() else { return };
        if w.conns.lock().expect("not poisoned").is_empty() {
            drop(w);
            // A permit is stored if a connection was kept since the last look.
            kept.notified().await;
            continue;
        }
        let closed = w.pool.is_closed();
        drop(w);
        if !closed {
            tokio::time::sleep(KEEP_IDLE / 2).await;
        }
        let Some(w) = warm.upgrade() else { return };
        w.give_back((!w.pool.is_closed()).then_some(KEEP_IDLE));
    }
}

impl WarmConn<'_> {
    fn conn(&mut self) -> Conn<'_> {
        Conn::Postgres(&mut self.conn.as_mut().expect("until kept").0)
    }

    /// The statement ran to its end: the connection is kept warm for the next one.
    fn keep(mut self) {
        let (conn, taken) = self.conn.take().expect("kept once");
        let warm = self.warm;
        // Callers may be waiting for the pool (all its connections out, none idle): this one
        // goes to them, in their turn, rather than to whoever comes next (kept, it would let
        // newcomers pass the queue and leave the waiters the tail).
        let pool_full = warm.pool.size() >= warm.pool.options().get_max_connections()
            && warm.pool.num_idle() == 0;
        if pool_full || warm.pool.is_closed() || taken.elapsed() >= KEEP_AT_MOST {
            return;
        }
        {
            let mut conns = warm.conns.lock().expect("not poisoned");
            if conns.len() >= warm.max {
                return;
            }
            conns.push((conn, taken, Instant::now()));
        }
        warm.reaper.call_once(|| {
            tokio::spawn(reap(Arc::downgrade(warm), warm.kept.clone()));
        });
        warm.kept.notify_one();
    }
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
    pub fn postgres(pool: PgPool) -> Self {
        Pool::Postgres(pool.clone(), Warm::new(pool))
    }

    /// How many connections the pool may hold (SQLite's: one).
    pub fn max_connections(&self) -> u32 {
        match self {
            Pool::Postgres(p, _) => p.options().get_max_connections(),
            Pool::Sqlite(_) => 1,
        }
    }

    pub fn dialect(&self) -> Dialect {
        match self {
            Pool::Postgres(..) => Dialect::Postgres,
            Pool::Sqlite(_) => Dialect::Sqlite,
        }
    }

    /// A connection for several statements (or a transaction's): given back through the
    /// pool's check when dropped.
    pub async fn acquire(&self) -> StoreResult<PooledConn> {
        Ok(match self {
            Pool::Postgres(p, _) => PooledConn::Postgres(p.acquire().await?),
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
            Pool::Postgres(p, _) => {
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

    /// A connection for one statement: on Postgres one kept warm if there is one ([`Warm`]).
    async fn for_one(&self) -> StoreResult<OneConn<'_>> {
        Ok(match self {
            Pool::Postgres(_, warm) => OneConn::Warm(warm.take().await?),
            Pool::Sqlite(_) => OneConn::Pooled(self.acquire().await?),
        })
    }

    pub async fn execute(&self, s: Stmt) -> StoreResult<u64> {
        let mut c = self.for_one().await?;
        let done = c.conn().execute(s).await?;
        c.ran();
        Ok(done)
    }

    pub async fn fetch_all<T: AnyRow>(&self, s: Stmt) -> StoreResult<Vec<T>> {
        let mut c = self.for_one().await?;
        let rows = c.conn().fetch_all(s).await?;
        c.ran();
        Ok(rows)
    }

    pub async fn fetch_optional<T: AnyRow>(&self, s: Stmt) -> StoreResult<Option<T>> {
        let mut c = self.for_one().await?;
        let row = c.conn().fetch_optional(s).await?;
        c.ran();
        Ok(row)
    }

    pub async fn fetch_one<T: AnyRow>(&self, s: Stmt) -> StoreResult<T> {
        self.fetch_optional(s)
            .await?
            .ok_or(super::StoreError::Database(sqlx::Error::RowNotFound))
    }

    pub async fn close(&self) {
        match self {
            Pool::Postgres(p, warm) => {
                warm.give_back(None);
                p.close().await
            }
            Pool::Sqlite(p) => p.close().await,
        }
    }
}

/// The connection of one statement ([`Pool::for_one`]). Dropped without [`OneConn::ran`] (the
/// statement failed, or its caller went away mid-way), it goes back through the pool's check.
enum OneConn<'p> {
    Warm(WarmConn<'p>),
    Pooled(PooledConn),
}

impl OneConn<'_> {
    fn conn(&mut self) -> Conn<'_> {
        match self {
            OneConn::Warm(c) => c.conn(),
            OneConn::Pooled(c) => c.conn(),
        }
    }

    /// The statement ran to its end: a warm connection is kept for the next one.
    fn ran(self) {
        if let OneConn::Warm(c) = self {
            c.keep();
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
