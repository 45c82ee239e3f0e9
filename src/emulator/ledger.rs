//! The emulator's durable job ledger: with a state directory, every accepted job (and every
//! later change to it) is appended as one JSON line to `<state_dir>/jobs.jsonl`, and the file is
//! replayed at start, so jobs submitted before a restart are still known (and still finish: job
//! ages are wall-clock). Without a state directory the ledger lives in memory only.
//!
//! Append-only on purpose: a crash can at worst tear the last line, which the replay skips
//! (and the next append starts on a fresh line).

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

use super::jobs::Job;

/// One line of `jobs.jsonl`: a new job, or the new version of a known one.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Record {
    Job(Box<Job>),
}

pub struct LedgerFile {
    path: PathBuf,
    file: File,
}

impl LedgerFile {
    /// Opens (creating the directory and file if needed) and replays the ledger. Later records
    /// for the same job id replace earlier ones; the order of first appearance is kept.
    pub fn open(dir: &Path) -> anyhow::Result<(Self, Vec<Job>)> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create the emulator state directory {dir:?}"))?;
        let path = dir.join("jobs.jsonl");
        let mut file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("cannot open {path:?}"))?;
        let mut jobs: Vec<Job> = Vec::new();
        let mut index = std::collections::HashMap::new();
        let mut skipped = 0usize;
        for line in BufReader::new(&file).lines() {
            let line = line.with_context(|| format!("cannot read {path:?}"))?;
            if line.trim().is_empty() {
                continue;
            }
            match serde_json::from_str::<Record>(&line) {
                Ok(Record::Job(job)) => match index.get(&job.id) {
                    Some(&i) => jobs[i] = *job,
                    None => {
                        index.insert(job.id.clone(), jobs.len());
                        jobs.push(*job);
                    }
                },
                Err(_) => skipped += 1,
            }
        }
        if skipped > 0 {
            tracing::warn!(path = %path.display(), skipped, "unreadable lines in the emulator ledger were skipped (a torn write?)");
        }
        // A torn last line has no newline: start the next record on a line of its own.
        let len = file.metadata()?.len();
        if len > 0 {
            file.seek(SeekFrom::Start(len - 1))?;
            let mut last = [0u8; 1];
            file.read_exact(&mut last)?;
            if last[0] != b'\n' {
                file.write_all(b"\n")?;
            }
        }
        tracing::info!(path = %path.display(), jobs = jobs.len(), "emulator ledger loaded");
        Ok((Self { path, file }, jobs))
    }

    /// Appends the job's current version. A failed write is logged, not fatal: the job stays
    /// known until the emulator stops.
    pub fn append(&mut self, job: &Job) {
        let mut line = match serde_json::to_vec(&Record::Job(Box::new(job.clone()))) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, job = %job.id, "cannot serialize an emulator job");
                return;
            }
        };
        line.push(b'\n');
        if let Err(e) = self.file.write_all(&line) {
            tracing::error!(error = %e, path = %self.path.display(), job = %job.id, "cannot append to the emulator ledger");
        }
    }
}
