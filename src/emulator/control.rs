//! The emulator's own endpoints under `/_emulator/`, for tests and benchmarks (not MPS's API):
//! the job ledger (`jobs`, `jobs/{id}`), call and fault counters (`stats`), the runtime faults
//! (`faults`, whose fields `faults.rs` describes) and the clock (`clock`: read it, and move a
//! manual one).

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::faults::{Faults, FaultsUpdate};
use super::state::EmulatorState;

/// Any `/_emulator/…` path while the control routes are off.
pub async fn off() -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(json!({
            "error": "the emulator's control routes are off (emulator.control_routes for `snapgate serve`; `snapgate emulator` without --no-control-routes)"
        })),
    )
        .into_response()
}

/// `GET /_emulator/jobs`: every job accepted (also those whose answer was dropped, and those
/// not yet listed), oldest first.
pub async fn list_ledger(State(state): State<Arc<EmulatorState>>) -> Json<Value> {
    let now = state.clock.now_ms();
    let inner = state.lock();
    let jobs: Vec<Value> = inner
        .jobs
        .iter()
        .map(|j| {
            let mut v = j.to_json(now, state.timing);
            v["Emulator"] = j.ledger_view(now, state.timing);
            v
        })
        .collect();
    Json(json!({ "jobs": jobs }))
}

/// `GET /_emulator/jobs/{id}`: one job, MPS's fields plus `Emulator` (its output manifest).
pub async fn get_ledger_job(
    State(state): State<Arc<EmulatorState>>,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Response {
    let inner = state.lock();
    match inner.by_id.get(&id).map(|&i| &inner.jobs[i]) {
        Some(j) => {
            let now = state.clock.now_ms();
            let mut v = j.to_json(now, state.timing);
            v["Emulator"] = j.ledger_view(now, state.timing);
            Json(v).into_response()
        }
        None => (StatusCode::NOT_FOUND, Json(json!({"error": "no such job"}))).into_response(),
    }
}

/// `GET /_emulator/stats`: calls by action and outcome (`Success`, MPS's error code, `Dropped`:
/// the emulator closed the connection unanswered, `Abandoned`: the client stopped waiting for a
/// slow answer), `signatures`: authenticated calls by action and signature (`v1`, `acs3`),
/// `slow`: answers a slow fault held back, by action, and the number of jobs.
pub async fn stats(State(state): State<Arc<EmulatorState>>) -> Json<Value> {
    let inner = state.lock();
    Json(json!({
        "calls": inner.calls,
        "signatures": inner.signatures,
        "slow": inner.slow,
        "jobs": inner.jobs.len(),
        "oss": {"upload_part": state.store.part_puts.load(std::sync::atomic::Ordering::Relaxed)},
    }))
}

/// `GET /_emulator/faults`.
pub async fn get_faults(State(state): State<Arc<EmulatorState>>) -> Json<Faults> {
    Json(state.faults())
}

/// `POST /_emulator/faults`: sets the fields given, answers the new settings.
pub async fn set_faults(
    State(state): State<Arc<EmulatorState>>,
    body: Result<Json<FaultsUpdate>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let update = match body {
        Ok(Json(u)) => u,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                Json(json!({"error": e.body_text()})),
            )
                .into_response()
        }
    };
    match state.update_faults(|f| f.apply(update)) {
        Ok(f) => {
            tracing::info!(faults = ?f, "emulator faults changed");
            Json(f).into_response()
        }
        Err(e) => (StatusCode::BAD_REQUEST, Json(json!({"error": e}))).into_response(),
    }
}

/// What `POST /_emulator/clock` takes.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClockAdvance {
    pub advance_ms: u64,
}

fn clock_view(state: &EmulatorState) -> Value {
    json!({"manual": state.clock.is_manual(), "now_ms": state.clock.now_ms()})
}

/// `GET /_emulator/clock`: `{"manual": bool, "now_ms": N}`, the time jobs' ages are measured
/// against.
pub async fn get_clock(State(state): State<Arc<EmulatorState>>) -> Json<Value> {
    Json(clock_view(&state))
}

/// `POST /_emulator/clock` `{"advance_ms": N}`: moves the manual clock (`--manual-clock`) N ms
/// forward and answers it as `GET` does; `409` on the wall clock, which nobody moves.
pub async fn advance_clock(
    State(state): State<Arc<EmulatorState>>,
    body: Result<Json<ClockAdvance>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let advance = match body {
        Ok(Json(a)) => a,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                Json(json!({"error": e.body_text()})),
            )
                .into_response()
        }
    };
    match state.clock.advance(advance.advance_ms) {
        Some(now_ms) => {
            tracing::info!(advance_ms = advance.advance_ms, now_ms, "emulator clock moved");
            Json(clock_view(&state)).into_response()
        }
        None => (
            StatusCode::CONFLICT,
            Json(json!({"error": "the emulator runs on the wall clock: start it with --manual-clock to move its clock"})),
        )
            .into_response(),
    }
}
