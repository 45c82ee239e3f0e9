//! Architecture rules checked over the source tree, with the standard library only (no
//! `mod common;`: this file stands alone).
//!
//! `no_function_in_src_over_100_lines`: every `fn` in `src/**/*.rs`, measured from the line of
//! its `fn` keyword to the line of its matching `}`, is at most 100 lines long. Strings, byte
//! strings, raw strings, char literals and comments are blanked first (a `{` inside them does not
//! count), and `#[cfg(test)] mod … { … }` blocks are skipped. A nested fn is measured on its own
//! and also counts towards the fn around it; a closure is part of the fn it is written in.

use std::path::{Path, PathBuf};

const MAX_FN_LINES: usize = 100;

#[test]
fn no_function_in_src_over_100_lines() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    assert!(!files.is_empty(), "no .rs files under {}", src.display());

    let root = src.parent().unwrap_or(&src);
    let mut too_long = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).expect("read a source file");
        let shown = file
            .strip_prefix(root)
            .unwrap_or(file)
            .display()
            .to_string();
        for f in functions(&text) {
            if f.lines > MAX_FN_LINES {
                too_long.push((f.lines, format!("{shown}:{}", f.line), f.name));
            }
        }
    }
    too_long.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    let listing: Vec<String> = too_long
        .iter()
        .map(|(lines, at, name)| format!("  {at} `{name}`: {lines} lines"))
        .collect();
    assert!(
        too_long.is_empty(),
        "{} fn(s) in src are over {MAX_FN_LINES} lines (split them along what they do):\n{}",
        too_long.len(),
        listing.join("\n")
    );
}

/// The checker on small inputs: what it blanks, skips and measures.
#[test]
fn the_function_measure_sees_through_literals_comments_and_test_modules() {
    let text = r####"
impl<'a, T: Clone> Holder<'a, T> for Thing<'a> where T: Send {
    fn braces_in_literals(&self) -> &'a str {
        let _c = '{';
        let _e = '\'';
        let _u = '\u{7b}';
        let _b = b'{';
        let _s = "{ \" {";
        let _bs = b"{";
        let _r = r#"{ "{" }"#;
        let _br = br##"{"#"##;
        // {
        /* { /* nested { */ { */
        'outer: loop { break 'outer; }
        self.0
    }
}
fn outer() -> impl Fn() -> u8 {
    fn inner() -> u8 {
        let f = |x: u8| { x + 1 };
        f(1)
    }
    let _ = inner();
    inner
}
trait T { fn declared(&self) -> [u8; 4]; fn defaulted(&self) {} }
fn takes_pointer(f: fn(u8) -> u8, _: impl Sized) -> u8 { f(0) }
fn r#match() {}
#[cfg(test)]
pub(crate) mod tests {
    fn hidden() {}
}
fn after_tests() {}
"####;
    let found: Vec<(String, usize, usize)> = functions(text)
        .into_iter()
        .map(|f| (f.name, f.line, f.lines))
        .collect();
    let expected = [
        ("Thing::braces_in_literals", 3, 14),
        ("outer", 18, 8),
        ("inner", 19, 4),
        ("defaulted", 26, 1),
        ("takes_pointer", 27, 1),
        ("r#match", 28, 1),
        ("after_tests", 33, 1),
    ];
    let expected: Vec<(String, usize, usize)> = expected
        .iter()
        .map(|(n, l, len)| (n.to_string(), *l, *len))
        .collect();
    assert_eq!(found, expected);
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("read a directory under src")
        .map(|e| e.expect("a directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

struct Function {
    name: String,
    /// 1-based line of the `fn` keyword.
    line: usize,
    /// From the `fn` line to the line of the matching `}`, both included.
    lines: usize,
}

/// Every fn with a body in `text`, outside `#[cfg(test)]` modules, in source order.
fn functions(text: &str) -> Vec<Function> {
    let mut code = blank_literals_and_comments(text);
    blank_test_modules(&mut code);
    let impls = impl_blocks(&code);
    let line_of = |i: usize| code[..i].iter().filter(|&&c| c == '\n').count() + 1;

    let mut found = Vec::new();
    let mut i = 0;
    while let Some(at) = find_keyword(&code, "fn", i) {
        i = at + 2;
        let Some((name, after_name)) = ident_after(&code, at + 2) else {
            continue; // `fn(u8) -> u8`, a pointer type; or `fn $name` in a macro
        };
        let Some(open) = body_open(&code, after_name) else {
            continue; // a declaration without a body
        };
        let Some(close) = matching(&code, open, '{', '}') else {
            continue;
        };
        let owner = impls
            .iter()
            .filter(|b| b.open < at && at < b.close)
            .max_by_key(|b| b.open)
            .map(|b| format!("{}::", b.self_type))
            .unwrap_or_default();
        let line = line_of(at);
        found.push(Function {
            name: format!("{owner}{name}"),
            line,
            lines: line_of(close) - line + 1,
        });
    }
    found
}

/// `text` as chars, with the inside of every comment, string and char literal replaced by spaces
/// (newlines kept, so line numbers hold). Lifetimes and labels (`'a`) are left as they are.
fn blank_literals_and_comments(text: &str) -> Vec<char> {
    let mut c: Vec<char> = text.chars().collect();
    let n = c.len();
    let mut i = 0;
    while i < n {
        let starts_word = i == 0 || !is_ident(c[i - 1]);
        let end = if c[i] == '/' && c.get(i + 1) == Some(&'/') {
            c[i..].iter().position(|&x| x == '\n').map_or(n, |p| i + p)
        } else if c[i] == '/' && c.get(i + 1) == Some(&'*') {
            block_comment_end(&c, i)
        } else if c[i] == '"' {
            quoted_end(&c, i, '"')
        } else if c[i] == '\'' {
            match char_literal_end(&c, i) {
                Some(end) => end,
                None => {
                    i += 1; // a lifetime or a label
                    continue;
                }
            }
        } else if starts_word && (c[i] == 'r' || (c[i] == 'b' && c.get(i + 1) == Some(&'r'))) {
            match raw_string_end(&c, i) {
                Some(end) => end,
                None => {
                    i += 1;
                    continue;
                }
            }
        } else {
            i += 1;
            continue;
        };
        for x in &mut c[i..end] {
            if *x != '\n' {
                *x = ' ';
            }
        }
        i = end.max(i + 1);
    }
    c
}

/// The index just past the `*/` that closes the (nestable) block comment opening at `i`.
fn block_comment_end(c: &[char], i: usize) -> usize {
    let mut depth = 0;
    let mut j = i;
    while j + 1 < c.len() {
        if c[j] == '/' && c[j + 1] == '*' {
            depth += 1;
            j += 2;
        } else if c[j] == '*' && c[j + 1] == '/' {
            depth -= 1;
            j += 2;
            if depth == 0 {
                return j;
            }
        } else {
            j += 1;
        }
    }
    c.len()
}

/// The index just past the `quote` that closes the literal opening at `i` (backslash escapes).
fn quoted_end(c: &[char], i: usize, quote: char) -> usize {
    let mut j = i + 1;
    while j < c.len() {
        match c[j] {
            '\\' => j += 2,
            x if x == quote => return j + 1,
            _ => j += 1,
        }
    }
    c.len()
}

/// The end of the char literal opening at `i` (`'x'`, `'\n'`, `'\u{7b}'`, `b'x'`), or `None`
/// for a lifetime or a label (`'a`, `'outer:`).
fn char_literal_end(c: &[char], i: usize) -> Option<usize> {
    match c.get(i + 1)? {
        '\\' => Some(quoted_end(c, i, '\'')),
        _ if c.get(i + 2) == Some(&'\'') => Some(i + 3),
        _ => None,
    }
}

/// The end of the raw string starting at `i` (`r"…"`, `r#"…"#`, `br##"…"##`), or `None` when
/// the `r` starts something else (an identifier, or a raw identifier like `r#match`).
fn raw_string_end(c: &[char], i: usize) -> Option<usize> {
    let mut j = if c[i] == 'b' { i + 2 } else { i + 1 };
    let hashes = c[j..].iter().take_while(|&&x| x == '#').count();
    j += hashes;
    if c.get(j) != Some(&'"') {
        return None;
    }
    j += 1;
    while j < c.len() {
        if c[j] == '"'
            && c[j + 1..]
                .iter()
                .take(hashes)
                .filter(|&&x| x == '#')
                .count()
                == hashes
        {
            return Some(j + 1 + hashes);
        }
        j += 1;
    }
    Some(c.len())
}

/// Blanks every `#[cfg(test)] mod name { … }` (any visibility, other attributes between).
fn blank_test_modules(code: &mut [char]) {
    let attr: Vec<char> = "#[cfg(test)]".chars().collect();
    let mut i = 0;
    while i + attr.len() <= code.len() {
        if code[i..i + attr.len()] != attr[..] {
            i += 1;
            continue;
        }
        let mut j = i + attr.len();
        // Skip whitespace, further attributes and a visibility up to the item's keyword.
        loop {
            while j < code.len() && code[j].is_whitespace() {
                j += 1;
            }
            if code.get(j) == Some(&'#') && code.get(j + 1) == Some(&'[') {
                j = matching(code, j + 1, '[', ']').map_or(code.len(), |e| e + 1);
            } else if starts_with(code, j, "pub") {
                j += 3;
                if code.get(j) == Some(&'(') {
                    j = matching(code, j, '(', ')').map_or(code.len(), |e| e + 1);
                }
            } else {
                break;
            }
        }
        let is_mod = starts_with(code, j, "mod") && code.get(j + 3).is_some_and(|c| !is_ident(*c));
        let open = is_mod
            .then(|| code[j..].iter().position(|&c| c == '{' || c == ';'))
            .flatten()
            .map(|p| j + p)
            .filter(|&p| code[p] == '{');
        match open.and_then(|o| matching(code, o, '{', '}')) {
            Some(close) => {
                for c in &mut code[i..=close] {
                    if *c != '\n' {
                        *c = ' ';
                    }
                }
                i = close + 1;
            }
            None => i += attr.len(),
        }
    }
}

struct ImplBlock {
    self_type: String,
    open: usize,
    close: usize,
}

/// Every `impl … { … }` with the last path segment of its self type (`impl<T> Tr for a::B<T>`
/// gives `B`).
fn impl_blocks(code: &[char]) -> Vec<ImplBlock> {
    let mut blocks = Vec::new();
    let mut i = 0;
    while let Some(at) = find_keyword(code, "impl", i) {
        i = at + 4;
        if !at_item_start(code, at) {
            continue; // `impl Trait` in a signature
        }
        let Some(open) = body_open(code, at + 4) else {
            continue;
        };
        let Some(close) = matching(code, open, '{', '}') else {
            continue;
        };
        let header = strip_generics(&code[at + 4..open]);
        let header = header.split(" where ").next().unwrap_or_default();
        let ty = match header.rsplit_once(" for ") {
            Some((_, ty)) => ty,
            None => header,
        };
        let ty = ty.trim().rsplit("::").next().unwrap_or_default().trim();
        blocks.push(ImplBlock {
            self_type: ty.to_string(),
            open,
            close,
        });
    }
    blocks
}

/// Whether the word at `at` begins an item: after `{`, `}`, `;`, an attribute's `]`, `unsafe`,
/// or at the start of the file.
fn at_item_start(code: &[char], at: usize) -> bool {
    let skip_space = |mut k: usize| {
        while k > 0 && code[k - 1].is_whitespace() {
            k -= 1;
        }
        k
    };
    let mut k = skip_space(at);
    if k >= 6 && code[k - 6..k].iter().collect::<String>() == "unsafe" {
        k = skip_space(k - 6);
    }
    k == 0 || matches!(code[k - 1], '{' | '}' | ';' | ']')
}

/// `chars` as a string without anything inside `<…>` (`->` is not a bracket).
fn strip_generics(chars: &[char]) -> String {
    let mut out = String::new();
    let mut depth = 0usize;
    for (k, &c) in chars.iter().enumerate() {
        match c {
            '<' => depth += 1,
            '>' if k > 0 && chars[k - 1] == '-' => {}
            '>' => depth = depth.saturating_sub(1),
            '\n' | '\t' => out.push(' '),
            _ if depth == 0 => out.push(c),
            _ => {}
        }
    }
    format!(" {out} ")
}

/// The next `keyword` at or after `from` that stands as a whole word.
fn find_keyword(code: &[char], keyword: &str, from: usize) -> Option<usize> {
    let k: Vec<char> = keyword.chars().collect();
    let mut i = from;
    while i + k.len() <= code.len() {
        if code[i..i + k.len()] == k[..]
            && (i == 0 || !is_ident(code[i - 1]) && code[i - 1] != '#')
            && code.get(i + k.len()).is_none_or(|c| !is_ident(*c))
        {
            return Some(i);
        }
        i += 1;
    }
    None
}

/// The identifier after the whitespace at `from` (a raw `r#name` too) and the index past it.
fn ident_after(code: &[char], from: usize) -> Option<(String, usize)> {
    let mut j = from;
    while j < code.len() && code[j].is_whitespace() {
        j += 1;
    }
    let start = j;
    if starts_with(code, j, "r#") {
        j += 2;
    }
    if !code.get(j).is_some_and(|c| c.is_alphabetic() || *c == '_') {
        return None;
    }
    while j < code.len() && is_ident(code[j]) {
        j += 1;
    }
    Some((code[start..j].iter().collect(), j))
}

/// The `{` opening the body of the item whose header starts at `from`: the first `{` outside
/// parentheses and brackets, or `None` if a `;` ends the item first.
fn body_open(code: &[char], from: usize) -> Option<usize> {
    let mut depth = 0i32;
    for (k, &c) in code.iter().enumerate().skip(from) {
        match c {
            '(' | '[' => depth += 1,
            ')' | ']' => depth -= 1,
            '{' if depth == 0 => return Some(k),
            ';' if depth == 0 => return None,
            _ => {}
        }
    }
    None
}

/// The index of the bracket closing the one at `open`.
fn matching(code: &[char], open: usize, left: char, right: char) -> Option<usize> {
    let mut depth = 0usize;
    for (k, &c) in code.iter().enumerate().skip(open) {
        if c == left {
            depth += 1;
        } else if c == right {
            depth -= 1;
            if depth == 0 {
                return Some(k);
            }
        }
    }
    None
}

fn starts_with(code: &[char], at: usize, s: &str) -> bool {
    let s: Vec<char> = s.chars().collect();
    code.get(at..at + s.len()) == Some(&s[..])
}

fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

// ---- Data flows one way: the layers of `src` and the imports between them. ----

/// The top-level modules of `src`, lowest layer first. A module may import a module of a lower
/// layer, never one of its own layer or above (docs/architecture.md draws this):
/// - foundations: no snapgate imports but each other's lower layers;
/// - `store`, then the clients of the outside (`mps`, `oss`, `webhooks`);
/// - the services (the rules, called by every entry point), the worker (claims and sends) and
///   the emulator (a stand-in MPS and OSS) side by side: none imports another;
/// - `http`, the adapters; then the composition root (`app`, `cli`, `lib`) that wires it all.
const LAYERS: &[&[&str]] = &[
    &[
        "clock", "secret", "cache", "shutdown", "metrics", "domain", "listener",
    ],
    &["config"],
    &["crypto", "telemetry", "signals"],
    &["credentials"],
    &["store"],
    &["mps", "oss", "webhooks"],
    &["services", "worker", "emulator"],
    &["http"],
    &["app", "cli", "lib"],
];

/// Imports a lower layer may not make either, with the reason.
const FORBIDDEN: &[(&str, &str, &str)] = &[
    (
        "emulator",
        "store",
        "the emulator is an independent MPS and OSS: no gateway state",
    ),
    (
        "emulator",
        "webhooks",
        "the emulator is an independent MPS and OSS",
    ),
    (
        "http",
        "emulator",
        "a test double is wired in only by the composition root (app.rs)",
    ),
];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
}

/// Every top-level module (a file or folder of `src`) has a layer, and every import between
/// two of them goes downward and is not forbidden.
#[test]
fn imports_flow_one_way() {
    let tree = SourceTree::read();
    for module in tree.top_level_modules() {
        assert!(
            layer_of(&module).is_some(),
            "src/{module} is in no layer of tests/it/architecture.rs LAYERS: place it (and draw it in docs/architecture.md)"
        );
    }
    let mut wrong = Vec::new();
    for (from, uses) in &tree.uses {
        let from_top = from.first().map(String::as_str).unwrap_or("lib");
        for u in uses {
            let Some(to_top) = u.path.first().map(String::as_str) else {
                continue;
            };
            if to_top == from_top || layer_of(to_top).is_none() {
                continue;
            }
            let (lf, lt) = (layer_of(from_top).unwrap(), layer_of(to_top).unwrap());
            let why = if let Some((_, _, why)) = FORBIDDEN
                .iter()
                .find(|(a, b, _)| *a == from_top && *b == to_top)
            {
                Some(why.to_string())
            } else if lt >= lf {
                Some(format!("`{to_top}` is not below `{from_top}`"))
            } else {
                None
            };
            if let Some(why) = why {
                wrong.push(format!(
                    "  {}:{} imports crate::{}: {why}",
                    tree.files[from],
                    u.line,
                    u.path.join("::")
                ));
            }
        }
    }
    wrong.sort();
    wrong.dedup();
    assert!(
        wrong.is_empty(),
        "{} import(s) against the flow:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}

/// No two files of `src` import each other, directly or around a circle (a `pub use` is
/// followed to the file that defines the name; declaring a child `mod` is not an import).
#[test]
fn no_import_circle_between_files() {
    let tree = SourceTree::read();
    let circles = tree.circles();
    let listing: Vec<String> = circles
        .iter()
        .map(|c| {
            let names: Vec<&str> = c.iter().map(|m| tree.files[m].as_str()).collect();
            format!("  {}", names.join(" <-> "))
        })
        .collect();
    assert!(
        circles.is_empty(),
        "{} import circle(s) between files:\n{}",
        circles.len(),
        listing.join("\n")
    );
}

/// The checkers on a tree made up here: a wrong-way import and a circle are found.
#[test]
fn the_import_checks_find_a_circle_and_resolve_reexports() {
    let mut tree = SourceTree::default();
    tree.add(
        &["a"],
        "src/a.rs",
        "use crate::b::Thing;\nfn f() { crate::c::g(); }\n",
    );
    tree.add(
        &["b"],
        "src/b/mod.rs",
        "mod inner;\npub use inner::Thing;\n",
    );
    tree.add(
        &["b", "inner"],
        "src/b/inner.rs",
        "use super::super::a::X;\n",
    );
    tree.add(
        &["c"],
        "src/c.rs",
        "// use crate::a;\nconst S: &str = \"crate::a::x\";\n",
    );
    tree.resolve_reexports();
    let circles = tree.circles();
    assert_eq!(circles.len(), 1, "{circles:?}");
    let mut names: Vec<&str> = circles[0].iter().map(|m| tree.files[m].as_str()).collect();
    names.sort();
    assert_eq!(names, ["src/a.rs", "src/b/inner.rs"]);
}

type ModPath = Vec<String>;

struct Use {
    /// Absolute, without `crate`.
    path: ModPath,
    line: usize,
    public: bool,
}

#[derive(Default)]
struct SourceTree {
    /// Module path → file shown (`src/http/jobs.rs`).
    files: std::collections::BTreeMap<ModPath, String>,
    uses: std::collections::BTreeMap<ModPath, Vec<Use>>,
    /// Per module: a name it re-exports (`pub use`) → the path it stands for.
    reexports: std::collections::BTreeMap<ModPath, std::collections::BTreeMap<String, ModPath>>,
}

impl SourceTree {
    fn read() -> Self {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = Vec::new();
        rust_files(&src, &mut files);
        let mut tree = SourceTree::default();
        for file in files {
            let rel = file
                .strip_prefix(&src)
                .unwrap()
                .to_string_lossy()
                .replace('\\', "/");
            if rel == "main.rs" {
                continue;
            }
            let mut module: ModPath = rel
                .trim_end_matches(".rs")
                .split('/')
                .map(String::from)
                .collect();
            if module.last().is_some_and(|l| l == "mod") || module == ["lib"] {
                module.pop();
            }
            let text = std::fs::read_to_string(&file).unwrap();
            tree.add_module(module, format!("src/{rel}"), &text);
        }
        tree.resolve_reexports();
        tree
    }

    fn add(&mut self, module: &[&str], shown: &str, text: &str) {
        self.add_module(
            module.iter().map(|s| s.to_string()).collect(),
            shown.into(),
            text,
        );
    }

    fn add_module(&mut self, module: ModPath, shown: String, text: &str) {
        let mut code = blank_literals_and_comments(text);
        blank_test_modules(&mut code);
        let code: String = code.into_iter().collect();
        self.files.insert(module.clone(), shown);
        self.uses.insert(module.clone(), parse_uses(&module, &code));
    }

    fn top_level_modules(&self) -> Vec<String> {
        let mut tops: Vec<String> = self
            .files
            .keys()
            .filter_map(|m| m.first().cloned())
            .collect();
        tops.dedup();
        tops
    }

    /// Child-relative `use x::…` (2018 paths) become absolute once every file is known; `pub
    /// use` lines are recorded as re-exports.
    fn resolve_reexports(&mut self) {
        let known: std::collections::BTreeSet<ModPath> = self.files.keys().cloned().collect();
        for (module, uses) in self.uses.iter_mut() {
            for u in uses.iter_mut() {
                if u.path.first().is_some_and(|f| f.starts_with("\u{0}rel:")) {
                    let first = u.path[0].trim_start_matches("\u{0}rel:").to_string();
                    let mut child = module.clone();
                    child.push(first);
                    if known.contains(&child) {
                        let mut abs = child;
                        abs.extend(u.path[1..].iter().cloned());
                        u.path = abs;
                    } else {
                        u.path.clear();
                    }
                }
            }
            uses.retain(|u| !u.path.is_empty());
            for u in uses.iter().filter(|u| u.public) {
                if let Some(name) = u.path.last() {
                    self.reexports
                        .entry(module.clone())
                        .or_default()
                        .insert(name.clone(), u.path.clone());
                }
            }
        }
    }

    /// The file a path lands in: its longest prefix that is a module file, following that
    /// file's re-export of the next name.
    fn file_of(&self, path: &[String], depth: usize) -> Option<ModPath> {
        for k in (0..=path.len()).rev() {
            let prefix = path[..k].to_vec();
            if self.files.contains_key(&prefix) {
                if let (Some(next), true) = (path.get(k), depth < 16) {
                    if let Some(target) = self.reexports.get(&prefix).and_then(|r| r.get(next)) {
                        return self.file_of(target, depth + 1);
                    }
                }
                return Some(prefix);
            }
        }
        None
    }

    /// Strongly connected components of more than one file (Tarjan).
    fn circles(&self) -> Vec<Vec<ModPath>> {
        let nodes: Vec<&ModPath> = self.files.keys().collect();
        let index_of = |m: &ModPath| nodes.iter().position(|n| *n == m);
        let mut edges: Vec<Vec<usize>> = vec![Vec::new(); nodes.len()];
        for (from, uses) in &self.uses {
            let f = index_of(from).unwrap();
            for u in uses.iter().filter(|u| !u.public) {
                if let Some(to) = self.file_of(&u.path, 0).and_then(|t| index_of(&t)) {
                    if to != f && !edges[f].contains(&to) {
                        edges[f].push(to);
                    }
                }
            }
        }
        let mut t = Tarjan {
            edges: &edges,
            index: vec![None; nodes.len()],
            low: vec![0; nodes.len()],
            stack: Vec::new(),
            on_stack: vec![false; nodes.len()],
            next: 0,
            out: Vec::new(),
        };
        for v in 0..nodes.len() {
            if t.index[v].is_none() {
                t.visit(v);
            }
        }
        t.out
            .into_iter()
            .map(|c| c.into_iter().map(|i| nodes[i].clone()).collect())
            .collect()
    }
}

struct Tarjan<'a> {
    edges: &'a [Vec<usize>],
    index: Vec<Option<usize>>,
    low: Vec<usize>,
    stack: Vec<usize>,
    on_stack: Vec<bool>,
    next: usize,
    out: Vec<Vec<usize>>,
}

impl Tarjan<'_> {
    fn visit(&mut self, v: usize) {
        self.index[v] = Some(self.next);
        self.low[v] = self.next;
        self.next += 1;
        self.stack.push(v);
        self.on_stack[v] = true;
        for &w in &self.edges[v] {
            match self.index[w] {
                None => {
                    self.visit(w);
                    self.low[v] = self.low[v].min(self.low[w]);
                }
                Some(iw) if self.on_stack[w] => self.low[v] = self.low[v].min(iw),
                _ => {}
            }
        }
        if Some(self.low[v]) == self.index[v] {
            let mut component = Vec::new();
            while let Some(w) = self.stack.pop() {
                self.on_stack[w] = false;
                component.push(w);
                if w == v {
                    break;
                }
            }
            if component.len() > 1 {
                self.out.push(component);
            }
        }
    }
}

/// Every `use` item (groups expanded) and every inline `crate::…`/`super::…` path of a file, as
/// absolute paths (child-relative ones marked for [`SourceTree::resolve_reexports`]).
fn parse_uses(module: &ModPath, code: &str) -> Vec<Use> {
    let line_of = |at: usize| code[..at].matches('\n').count() + 1;
    let mut out = Vec::new();
    let bytes = code.as_bytes();
    let is_ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let mut i = 0;
    while let Some(found) = code[i..].find("use ") {
        let at = i + found;
        i = at + 4;
        if at > 0 && (is_ident(bytes[at - 1]) || bytes[at - 1] == b':') {
            continue;
        }
        let Some(end) = code[at..].find(';') else {
            break;
        };
        let before = code[..at].trim_end();
        let public = before.ends_with("pub") || before.ends_with(')') && before.contains("pub(");
        let tree: String = code[at + 4..at + end]
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        for path in expand_use(&tree) {
            if let Some(abs) = absolute(module, &path) {
                out.push(Use {
                    path: abs,
                    line: line_of(at),
                    public,
                });
            }
        }
        i = at + end;
    }
    for start in ["crate::", "super::"] {
        let mut j = 0;
        while let Some(found) = code[j..].find(start) {
            let at = j + found;
            j = at + start.len();
            if at > 0 && (is_ident(bytes[at - 1]) || bytes[at - 1] == b':') {
                continue;
            }
            let len = code[at..]
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
                .unwrap_or(code.len() - at);
            let path: Vec<String> = code[at..at + len]
                .split("::")
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect();
            // A `use` line was read above, whole.
            let line_start = code[..at].rfind('\n').map_or(0, |n| n + 1);
            if code[line_start..at].trim_start().starts_with("use ")
                || code[line_start..at].trim_start().starts_with("pub use ")
            {
                continue;
            }
            if let Some(abs) = absolute(module, &path) {
                out.push(Use {
                    path: abs,
                    line: line_of(at),
                    public: false,
                });
            }
        }
    }
    out
}

/// `a::{b, c::{d, e}}` → `a::b`, `a::c::d`, `a::c::e`.
fn expand_use(tree: &str) -> Vec<Vec<String>> {
    let tree = tree.trim();
    if let Some(inner) = tree.strip_prefix('{').and_then(|t| t.strip_suffix('}')) {
        let mut out = Vec::new();
        let (mut depth, mut start) = (0, 0);
        for (k, ch) in inner.char_indices() {
            match ch {
                '{' => depth += 1,
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    out.extend(expand_use(&inner[start..k]));
                    start = k + 1;
                }
                _ => {}
            }
        }
        out.extend(expand_use(&inner[start..]));
        return out;
    }
    if tree.is_empty() {
        return Vec::new();
    }
    match tree.split_once("::") {
        Some((head, rest)) => expand_use(rest)
            .into_iter()
            .map(|mut p| {
                p.insert(0, head.trim().to_string());
                p
            })
            .collect(),
        None => {
            let name = tree.split(" as ").next().unwrap_or(tree).trim();
            match name {
                "self" | "*" => vec![Vec::new()],
                _ => vec![vec![name.to_string()]],
            }
        }
    }
}

/// A path made absolute (without `crate`) from `module`; `None` for another crate's path.
fn absolute(module: &ModPath, path: &[String]) -> Option<ModPath> {
    let first = path.first()?;
    if first == "crate" {
        return Some(path[1..].to_vec());
    }
    let mut base = module.clone();
    let mut k = 0;
    while let Some(seg) = path.get(k) {
        match seg.as_str() {
            "super" => {
                base.pop();
            }
            "self" => {}
            _ => break,
        }
        k += 1;
    }
    if k == 0 {
        // Maybe a child module (`use state::AppState;` in http/mod.rs): decided once every
        // file is known.
        let mut p = path.to_vec();
        p[0] = format!("\u{0}rel:{}", p[0]);
        return Some(p);
    }
    base.extend(path[k..].iter().cloned());
    Some(base)
}
