//! Every shell example in README.md and docs/ is run, in page order, against a fresh embedded
//! default (`snapgate serve` started here on free ports, SQLite and the built-in emulator with
//! its local store in a temporary folder), and each answer is compared with the output the page
//! shows. The conventions (docs/testing.md):
//!
//! - ` ```sh ` runs with bash (`set -eo pipefail`) in the temporary folder, with `PATH` holding
//!   the built `snapgate`; it must exit 0. The variables it sets (`export` or not) are there for
//!   the next block, as in one terminal. `127.0.0.1:8080` (the API), `:8081` (the built-in
//!   store) and `:9090` (a standalone emulator) are the free ports of this run.
//! - ` ```json output ` right after it: the block's stdout, one or more JSON values, compared by
//!   shape: every key shown must be there with a value of the same type, and no other key unless
//!   the object shows `"...": "..."`; an array's elements are compared in order, and a last
//!   element `"..."` allows more. A string containing `...` stands for any string; a string of
//!   only `a-z`, `0-9`, `_`, `.` and `-` that starts with a letter (a state, a code) must be equal;
//!   other strings (ids, times, URLs) only have to be strings. `null` must be `null`.
//! - ` ```text output `: the stdout's lines; a line `...` stands for any number of lines, and
//!   `...` inside a line for any text.
//! - ` ```sh serve `: the one `snapgate serve` line (with its `VAR=value` settings) that this
//!   test runs itself before the first block, in the background.
//! - ` ```sh no-run `: cannot run here (real MPS or OSS, Docker, a build, a second terminal):
//!   parsed by `bash -n`, and every `snapgate …` command in it must name a real subcommand and
//!   real flags (checked against its `--help`).
//!
//! Other blocks (Python, TOML, JSON that is not an output) are not run.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common;
use crate::common::process::{free_port, BIN};

/// The pages, in the order a reader meets them (variables flow from one page to the next).
const PAGES: &[&str] = &[
    "README.md",
    "docs/api.md",
    "docs/uploads.md",
    "docs/webhooks.md",
    "docs/mps-endpoint.md",
    "docs/mns.md",
    "docs/emulator.md",
    "docs/configuration.md",
    "docs/operations.md",
    "docs/deployment.md",
    "docs/security.md",
    "docs/testing.md",
    "docs/benchmarks.md",
];

/// One block of a page that the test reads.
#[derive(Debug)]
enum Block {
    Run(String),
    Serve(String),
    NoRun(String),
    Json(String),
    Text(String),
}

#[derive(Debug)]
struct Example {
    page: String,
    line: usize,
    block: Block,
}

/// The fenced blocks of a page that the conventions above name.
fn examples(page: &str, text: &str) -> Vec<Example> {
    let mut out = Vec::new();
    let mut lines = text.lines().enumerate();
    while let Some((n, line)) = lines.next() {
        let Some(info) = line.trim_start().strip_prefix("```") else {
            continue;
        };
        let indent = line.len() - line.trim_start().len();
        let words: Vec<&str> = info.split_whitespace().collect();
        let mut body = String::new();
        for (_, l) in lines.by_ref() {
            if l.trim_start().starts_with("```") {
                break;
            }
            body.push_str(l.get(indent..).unwrap_or(l.trim_start()));
            body.push('\n');
        }
        let block = match words.as_slice() {
            ["sh" | "bash" | "console"] => Block::Run(body),
            ["sh", "serve"] => Block::Serve(body),
            ["sh", "no-run"] => Block::NoRun(body),
            ["json", "output"] => Block::Json(body),
            ["text", "output"] => Block::Text(body),
            [lang, ..] if ["sh", "bash", "console"].contains(lang) => {
                panic!("{page}:{}: unknown tag in ```{info}", n + 1)
            }
            _ => continue,
        };
        out.push(Example {
            page: page.into(),
            line: n + 1,
            block,
        });
    }
    out
}

/// The ports of this run in place of the documented ones.
struct Ports {
    api: u16,
    store: u16,
    emulator: u16,
}

impl Ports {
    fn apply(&self, s: &str) -> String {
        s.replace("127.0.0.1:8080", &format!("127.0.0.1:{}", self.api))
            .replace("127.0.0.1:8081", &format!("127.0.0.1:{}", self.store))
            .replace("127.0.0.1:9090", &format!("127.0.0.1:{}", self.emulator))
    }
}

/// Names bash sets itself: not carried from one block to the next.
const SHELL_OWN: &str = "BASH*|PIPESTATUS|FUNCNAME|GROUPS|_|EUID|UID|PPID|SHELLOPTS|BASHOPTS|LINENO|\
                         RANDOM|SRANDOM|SECONDS|EPOCH*|HISTCMD|COMP_*|DIRSTACK|OPTIND|OPTARG|OPTERR";

struct Runner {
    root: PathBuf,
    work: PathBuf,
    state: PathBuf,
    bin_dir: PathBuf,
    /// Process groups of the blocks (a block may leave a process running, `… &`).
    groups: Vec<i32>,
}

impl Drop for Runner {
    fn drop(&mut self) {
        for g in &self.groups {
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{g}")])
                .stderr(Stdio::null())
                .status();
        }
    }
}

struct Ran {
    status: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Runner {
    /// Runs one block as a script in the work folder; its variables are saved for the next.
    fn run(&mut self, script: &str, limit: Duration) -> Ran {
        let file = self.work.join(".example.sh");
        let out = self.work.join(".example.out");
        let err = self.work.join(".example.err");
        std::fs::write(
            &file,
            format!(
                "set -eo pipefail\ncd {work:?}\n. {state:?}\n\
                 trap 'for v in $(compgen -v); do case $v in {SHELL_OWN}) ;; *) declare -p \"$v\" 2>/dev/null;; esac; done > {state:?}.new; mv {state:?}.new {state:?}' EXIT\n\
                 {script}",
                work = self.work,
                state = self.state,
            ),
        )
        .unwrap();
        let mut child = {
            use std::os::unix::process::CommandExt;
            Command::new("bash")
                .arg(&file)
                .current_dir(&self.work)
                .stdin(Stdio::null())
                .stdout(std::fs::File::create(&out).unwrap())
                .stderr(std::fs::File::create(&err).unwrap())
                .process_group(0)
                .spawn()
                .unwrap()
        };
        self.groups.push(child.id() as i32);
        let start = Instant::now();
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s.code();
            }
            if start.elapsed() > limit {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        Ran {
            status,
            stdout: std::fs::read_to_string(&out).unwrap_or_default(),
            stderr: std::fs::read_to_string(&err).unwrap_or_default(),
        }
    }

    /// `bash -n`, and each `snapgate …` command's subcommand and flags against its `--help`.
    fn check(&self, script: &str) -> Result<(), String> {
        let parsed = Command::new("bash")
            .args(["-n", "-c", script])
            .output()
            .unwrap();
        if !parsed.status.success() {
            return Err(format!(
                "bash -n: {}",
                String::from_utf8_lossy(&parsed.stderr)
            ));
        }
        for line in script.lines() {
            let line = line.split(" #").next().unwrap_or_default();
            let words: Vec<&str> = line.split_whitespace().collect();
            let Some(at) = words
                .iter()
                .position(|w| *w == "snapgate" || w.ends_with("/snapgate"))
                .map(|i| i + 1)
                .or_else(|| {
                    words
                        .windows(3)
                        .position(|w| w == ["run", "--release", "--"])
                        .map(|i| i + 3)
                })
            else {
                continue;
            };
            let mut sub: Vec<&str> = Vec::new();
            for w in &words[at..] {
                if w.starts_with('-') || w.contains(['$', '"', '\'', '|', '>', '<', '&', ')']) {
                    break;
                }
                sub.push(w);
            }
            // The subcommand path: words while `--help` still names subcommands.
            let mut path: Vec<&str> = Vec::new();
            for w in sub {
                let help = self.help(&path);
                if help.contains("Commands:") {
                    if !help
                        .lines()
                        .any(|l| l.trim_start().starts_with(&format!("{w} ")))
                    {
                        return Err(format!(
                            "`snapgate {} {w}`: no such command",
                            path.join(" ")
                        ));
                    }
                    path.push(w);
                } else {
                    break;
                }
            }
            let help = self.help(&path);
            for w in &words[at..] {
                if let Some(flag) = w.strip_prefix("--") {
                    let flag = flag.split('=').next().unwrap_or_default();
                    if !flag.is_empty() && !help.contains(&format!("--{flag}")) {
                        return Err(format!(
                            "`snapgate {}` has no flag --{flag}",
                            path.join(" ")
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    fn help(&self, path: &[&str]) -> String {
        let out = Command::new(self.bin_dir.join("snapgate"))
            .args(path)
            .arg("--help")
            .env("SNAPGATE_CONFIG_DIR", self.root.join("config"))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// `VAR=value … snapgate serve` → its settings.
fn serve_settings(block: &str) -> Result<Vec<(String, String)>, String> {
    let lines: Vec<&str> = block
        .lines()
        .map(|l| l.split(" #").next().unwrap_or_default().trim())
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    let [line] = lines.as_slice() else {
        return Err(format!("one command expected, got {lines:?}"));
    };
    let words: Vec<&str> = line.split_whitespace().collect();
    let Some(at) = words.iter().position(|w| *w == "snapgate") else {
        return Err(format!("not a `snapgate serve` line: {line}"));
    };
    if words[at + 1..] != ["serve"] {
        return Err(format!("not a `snapgate serve` line: {line}"));
    }
    words[..at]
        .iter()
        .map(|w| match w.split_once('=') {
            Some((k, v)) => Ok((k.to_string(), v.trim_matches('\'').to_string())),
            None => Err(format!("not a VAR=value setting: {w}")),
        })
        .collect()
}

/// Whether `actual` has the shape of `expected` (see the module's conventions).
fn same_shape(expected: &Value, actual: &Value, at: &str, errors: &mut Vec<String>) {
    let mut fail = |why: String| errors.push(format!("{at}: {why}"));
    match (expected, actual) {
        (Value::Null, Value::Null) | (Value::Bool(_), Value::Bool(_)) => {}
        (Value::Number(_), Value::Number(_)) => {}
        (Value::String(e), Value::String(a)) => {
            let word = e.starts_with(|c: char| c.is_ascii_lowercase())
                && e.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_.-".contains(c));
            if !e.contains("...") && word && e != a {
                fail(format!("{a:?}, not {e:?}"));
            }
        }
        (Value::Array(e), Value::Array(a)) => {
            let open = e.last() == Some(&Value::String("...".into()));
            let shown = if open { &e[..e.len() - 1] } else { &e[..] };
            if a.len() < shown.len() || (!open && a.len() != shown.len()) {
                fail(format!("{} elements, the page shows {}", a.len(), e.len()));
                return;
            }
            for (i, (e, a)) in shown.iter().zip(a).enumerate() {
                same_shape(e, a, &format!("{at}[{i}]"), errors);
            }
        }
        (Value::Object(e), Value::Object(a)) => {
            let open = e.contains_key("...");
            for (k, ev) in e {
                if k == "..." {
                    continue;
                }
                match a.get(k) {
                    Some(av) => same_shape(ev, av, &format!("{at}.{k}"), errors),
                    None => errors.push(format!("{at}: no member {k:?} (the page shows it)")),
                }
            }
            if !open {
                for k in a.keys().filter(|k| !e.contains_key(*k)) {
                    errors.push(format!("{at}: member {k:?} is not on the page"));
                }
            }
        }
        (e, a) => fail(format!("{a}, the page shows {e}")),
    }
}

fn json_values(s: &str) -> Result<Vec<Value>, String> {
    serde_json::Deserializer::from_str(s)
        .into_iter::<Value>()
        .collect::<Result<_, _>>()
        .map_err(|e| format!("not JSON ({e}): {s}"))
}

/// A line pattern: `...` for any text.
fn line_matches(pattern: &str, line: &str) -> bool {
    let parts: Vec<&str> = pattern.split("...").collect();
    if parts.len() == 1 {
        return pattern == line;
    }
    let mut rest = line;
    for (i, p) in parts.iter().enumerate() {
        if i == 0 {
            let Some(r) = rest.strip_prefix(p) else {
                return false;
            };
            rest = r;
        } else if i == parts.len() - 1 {
            return rest.ends_with(p);
        } else {
            match rest.find(p) {
                Some(at) => rest = &rest[at + p.len()..],
                None => return false,
            }
        }
    }
    true
}

/// The lines against the pattern lines (a line `...`: any number of lines).
fn lines_match(pattern: &[&str], lines: &[&str]) -> bool {
    match pattern.split_first() {
        None => lines.is_empty(),
        Some((&"...", rest)) => (0..=lines.len()).any(|i| lines_match(rest, &lines[i..])),
        Some((p, rest)) => {
            !lines.is_empty() && line_matches(p, lines[0]) && lines_match(rest, &lines[1..])
        }
    }
}

/// Every example, in order; the first failure is reported with its page and line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_shell_example_in_the_readme_and_docs_answers_as_shown() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    // Every page of the manual is read (docs/mps/ is MPS's reference: no examples of ours).
    let mut listed: Vec<String> = std::fs::read_dir(root.join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .map(|p| format!("docs/{}", p.file_name().unwrap().to_string_lossy()))
        .filter(|p| p != "docs/architecture.md")
        .collect();
    listed.sort();
    let mut known: Vec<String> = PAGES.iter().skip(1).map(|p| p.to_string()).collect();
    known.sort();
    assert_eq!(
        listed, known,
        "every page of docs/ is in PAGES, in reading order"
    );

    let all: Vec<Example> = PAGES
        .iter()
        .flat_map(|p| examples(p, &std::fs::read_to_string(root.join(p)).unwrap()))
        .collect();
    let work = tempfile::tempdir().unwrap();
    let bin_dir = Path::new(BIN).parent().unwrap().to_path_buf();
    let ports = Ports {
        api: free_port(),
        store: free_port(),
        emulator: free_port(),
    };
    let state = work.path().join(".example.env");
    std::fs::write(
        &state,
        format!(
            "export PATH={:?}:\"$PATH\"\nexport SNAPGATE_CONFIG_DIR={:?}\n",
            bin_dir,
            root.join("config")
        ),
    )
    .unwrap();
    let mut runner = Runner {
        root: root.clone(),
        work: work.path().to_path_buf(),
        state,
        bin_dir: bin_dir.clone(),
        groups: Vec::new(),
    };

    // The service, as the page's `sh serve` block starts it.
    let serves: Vec<&Example> = all
        .iter()
        .filter(|e| matches!(e.block, Block::Serve(_)))
        .collect();
    assert_eq!(serves.len(), 1, "one ```sh serve block: {serves:?}");
    let Block::Serve(line) = &serves[0].block else {
        unreachable!()
    };
    let settings = serve_settings(line)
        .unwrap_or_else(|e| panic!("{}:{}: {e}", serves[0].page, serves[0].line));
    let mut serve = Command::new(BIN);
    serve
        .arg("serve")
        .current_dir(work.path())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", work.path())
        .env("SNAPGATE_CONFIG_DIR", root.join("config"))
        .env("SNAPGATE__HTTP__LISTEN", format!("127.0.0.1:{}", ports.api))
        .env(
            "SNAPGATE__EMULATOR__LISTEN",
            format!("127.0.0.1:{}", ports.store),
        )
        .envs(settings);
    let _serve = common::process::Proc::spawn("docs_examples", "serve", serve);
    let http = reqwest::Client::new();
    common::process::wait_ready(&http, &format!("http://127.0.0.1:{}/readyz", ports.api)).await;

    let mut last_run: Option<(&Example, Ran)> = None;
    let mut ran = 0;
    for ex in &all {
        let at = format!("{}:{}", ex.page, ex.line);
        match &ex.block {
            Block::Run(script) => {
                let out = runner.run(&ports.apply(script), Duration::from_secs(90));
                assert_eq!(
                    out.status,
                    Some(0),
                    "{at}: the example failed (exit {:?})\n--- script\n{script}--- stdout\n{}--- stderr\n{}",
                    out.status,
                    out.stdout,
                    out.stderr
                );
                ran += 1;
                last_run = Some((ex, out));
            }
            Block::Serve(_) => {}
            Block::NoRun(script) => {
                if let Err(e) = runner.check(script) {
                    panic!("{at}: a no-run example does not check: {e}\n{script}");
                }
            }
            Block::Json(shown) | Block::Text(shown) => {
                let Some((from, out)) = last_run.take() else {
                    panic!("{at}: an output block with no ```sh block before it");
                };
                let shown = ports.apply(shown);
                let problem = match &ex.block {
                    Block::Json(_) => {
                        let expected = json_values(&shown)
                            .unwrap_or_else(|e| panic!("{at}: the page's output: {e}"));
                        match json_values(&out.stdout) {
                            Err(e) => Some(e),
                            Ok(actual) if actual.len() != expected.len() => Some(format!(
                                "{} JSON values, the page shows {}",
                                actual.len(),
                                expected.len()
                            )),
                            Ok(actual) => {
                                let mut errors = Vec::new();
                                for (i, (e, a)) in expected.iter().zip(&actual).enumerate() {
                                    same_shape(e, a, &format!("[{i}]"), &mut errors);
                                }
                                (!errors.is_empty()).then(|| errors.join("\n"))
                            }
                        }
                    }
                    _ => {
                        let pattern: Vec<&str> = shown.lines().collect();
                        let lines: Vec<&str> = out.stdout.lines().collect();
                        (!lines_match(&pattern, &lines)).then(|| "the lines differ".to_string())
                    }
                };
                if let Some(problem) = problem {
                    panic!(
                        "{at}: the answer of {}:{} is not what the page shows:\n{problem}\n--- the page\n{shown}--- the answer\n{}--- stderr\n{}",
                        from.page, from.line, out.stdout, out.stderr
                    );
                }
            }
        }
    }
    assert!(ran >= 20, "only {ran} examples ran");
}

#[test]
fn the_conventions_compare_as_documented() {
    let shape = |e: &str, a: &str| {
        let mut errors = Vec::new();
        same_shape(
            &serde_json::from_str(e).unwrap(),
            &serde_json::from_str(a).unwrap(),
            "",
            &mut errors,
        );
        errors
    };
    assert!(shape(
        r#"{"id": "0193-a", "state": "succeeded"}"#,
        r#"{"id": "0194-b", "state": "succeeded"}"#
    )
    .is_empty());
    assert!(!shape(r#"{"state": "succeeded"}"#, r#"{"state": "failed"}"#).is_empty());
    assert!(!shape(r#"{"a": 1}"#, r#"{"a": 1, "b": 2}"#).is_empty());
    assert!(shape(r#"{"a": 1, "...": "..."}"#, r#"{"a": 1, "b": 2}"#).is_empty());
    assert!(!shape(
        r#"{"last_error": null}"#,
        r#"{"last_error": {"code": "x"}}"#
    )
    .is_empty());
    assert!(shape(r#"[1, "..."]"#, "[1, 2, 3]").is_empty());
    assert!(!shape("[1]", "[1, 2]").is_empty());
    assert!(lines_match(&["a", "...", "z..."], &["a", "b", "c", "zz"]));
    assert!(!lines_match(&["a", "z"], &["a", "b", "z"]));
    assert_eq!(
        serve_settings("SNAPGATE__UPLOADS__DEMO_PAGE=true snapgate serve   # comment\n").unwrap(),
        vec![("SNAPGATE__UPLOADS__DEMO_PAGE".into(), "true".into())]
    );
}
