//! `docs/design.md` walks one `SET` from the socket to a replica ("One SET, from the socket to
//! a replica"), naming each function on the way as `` `src/file.rs: Type::function` `` (or
//! `module::function`, or a bare function of that file). Every name must still be there: a
//! function renamed or moved fails this test instead of leaving the map wrong for the next
//! reader.

use std::path::{Path, PathBuf};

const HEADING: &str = "## One SET, from the socket to a replica";
/// Fewer references than this means the extraction broke, not that the walk got shorter.
const REFERENCES_MIN: usize = 30;
/// Fewer numbered steps than this likewise.
const STEPS_MIN: usize = 15;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn design() -> String {
    let path = root().join("docs/design.md");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// The walkthrough: from its heading to the next second-level heading.
fn section(doc: &str) -> &str {
    let start = doc
        .find(&format!("\n{HEADING}\n"))
        .unwrap_or_else(|| panic!("docs/design.md has no section {HEADING:?}"));
    let body = &doc[start + 1..];
    let end = body[HEADING.len()..]
        .find("\n## ")
        .map_or(body.len(), |at| HEADING.len() + at);
    &body[..end]
}

/// The contents of the Markdown code spans in `text` (a run of N backticks up to the next run
/// of exactly N), trimmed.
fn code_spans(text: &str) -> Vec<&str> {
    let bytes = text.as_bytes();
    let run_at = |at: usize| bytes[at..].iter().take_while(|&&b| b == b'`').count();
    let mut spans = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        if bytes[at] != b'`' {
            at += 1;
            continue;
        }
        let opening = run_at(at);
        let content = at + opening;
        let mut end = content;
        let mut closed = None;
        while end < bytes.len() {
            if bytes[end] == b'`' {
                let run = run_at(end);
                if run == opening {
                    closed = Some(end);
                    break;
                }
                end += run;
            } else {
                end += 1;
            }
        }
        let Some(close) = closed else {
            break;
        };
        spans.push(text[content..close].trim());
        at = close + opening;
    }
    spans
}

/// A function named by the walkthrough.
#[derive(Debug)]
struct Reference {
    file: String,
    qualifier: Option<String>,
    function: String,
}

fn is_identifier(s: &str) -> bool {
    s.chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// `src/…/file.rs: name`, `…: Type::name` or `…: module::name`; `None` for a span that is not a
/// reference at all, an error for one that looks like a reference but is malformed.
fn parse_reference(span: &str) -> Option<Result<Reference, String>> {
    if !span.starts_with("src/") || !span.contains(".rs") {
        return None;
    }
    let Some((file, name)) = span.split_once(".rs: ") else {
        return Some(Err(format!(
            "`{span}`: a reference is `src/path/file.rs: Type::function`"
        )));
    };
    let parts: Vec<&str> = name.split("::").collect();
    let (qualifier, function) = match parts.as_slice() {
        [function] => (None, *function),
        [qualifier, function] => (Some((*qualifier).to_owned()), *function),
        _ => {
            return Some(Err(format!(
                "`{span}`: name one function, at most `Type::name`"
            )));
        }
    };
    if !parts.iter().all(|p| is_identifier(p)) {
        return Some(Err(format!(
            "`{span}`: `{name}` is not a path of identifiers"
        )));
    }
    Some(Ok(Reference {
        file: format!("{file}.rs"),
        qualifier,
        function: function.to_owned(),
    }))
}

/// Whether `word` occurs in `line` as a whole identifier.
fn has_word(line: &str, word: &str) -> bool {
    let identifier = |c: char| c.is_ascii_alphanumeric() || c == '_';
    line.match_indices(word).any(|(at, _)| {
        let before = line[..at].chars().next_back();
        let after = line[at + word.len()..].chars().next();
        !before.is_some_and(identifier) && !after.is_some_and(identifier)
    })
}

/// Checks that the file exists and defines the function (in an `impl` of the type, when a
/// type is named; in that module, when a module is).
fn check(root: &Path, reference: &Reference) -> Result<(), String> {
    let path = root.join(&reference.file);
    let source = std::fs::read_to_string(&path)
        .map_err(|e| format!("{}: cannot be read ({e})", reference.file))?;
    let function = &reference.function;
    if !source.contains(&format!("fn {function}(")) && !source.contains(&format!("fn {function}<"))
    {
        return Err(format!("{}: has no `fn {function}`", reference.file));
    }
    match &reference.qualifier {
        None => Ok(()),
        Some(ty) if ty.starts_with(|c: char| c.is_ascii_uppercase()) => {
            let implemented = source
                .lines()
                .any(|line| line.trim_start().starts_with("impl") && has_word(line, ty));
            if implemented {
                Ok(())
            } else {
                Err(format!("{}: has no `impl` of `{ty}`", reference.file))
            }
        }
        Some(module) => {
            let path = Path::new(&reference.file);
            let stem = path.file_stem().and_then(|s| s.to_str());
            let named = if stem == Some("mod") {
                path.parent()
                    .and_then(Path::file_name)
                    .and_then(|s| s.to_str())
            } else {
                stem
            };
            if named == Some(module.as_str()) {
                Ok(())
            } else {
                Err(format!("{}: is not module `{module}`", reference.file))
            }
        }
    }
}

#[test]
fn every_function_the_walkthrough_names_exists() {
    let doc = design();
    let root = root();
    let mut checked = 0;
    let mut stale = Vec::new();
    for span in code_spans(section(&doc)) {
        match parse_reference(span) {
            None => {}
            Some(Err(malformed)) => stale.push(malformed),
            Some(Ok(reference)) => {
                checked += 1;
                if let Err(e) = check(&root, &reference) {
                    stale.push(format!("`{span}`: {e}"));
                }
            }
        }
    }
    assert!(
        stale.is_empty(),
        "the walkthrough in docs/design.md names functions that are not there:\n{}",
        stale.join("\n")
    );
    assert!(
        checked >= REFERENCES_MIN,
        "only {checked} references found in the walkthrough: has their format changed?"
    );
}

#[test]
fn every_step_starts_with_the_function_it_happens_in() {
    let doc = design();
    let mut steps = 0;
    for line in section(&doc).lines() {
        let Some((number, rest)) = line.split_once(". ") else {
            continue;
        };
        if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        steps += 1;
        assert_eq!(number, steps.to_string(), "steps are numbered in order");
        let first = code_spans(rest).into_iter().next().unwrap_or_default();
        assert!(
            rest.starts_with('`') && matches!(parse_reference(first), Some(Ok(_))),
            "step {number} does not start with a `src/…/file.rs: function` reference: {line}"
        );
    }
    assert!(
        steps >= STEPS_MIN,
        "only {steps} numbered steps found in the walkthrough"
    );
}

/// GitHub's anchor of a heading: lower case, punctuation dropped, spaces as hyphens.
fn anchor(heading: &str) -> String {
    heading
        .trim_start_matches('#')
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

#[test]
fn the_walkthrough_links_reach_sections_of_the_document() {
    let doc = design();
    let anchors: Vec<String> = doc
        .lines()
        .filter(|line| line.starts_with('#'))
        .map(anchor)
        .collect();
    let links: Vec<&str> = section(&doc)
        .split("](#")
        .skip(1)
        .filter_map(|rest| rest.split_once(')').map(|(target, _)| target))
        .collect();
    assert!(
        !links.is_empty(),
        "the walkthrough links to the longer sections"
    );
    for link in links {
        assert!(
            anchors.iter().any(|a| a == link),
            "the walkthrough links to #{link}, which no heading of docs/design.md has"
        );
    }
}

#[test]
fn a_stale_reference_is_caught() {
    let root = root();
    let verdict = |span: &str| match parse_reference(span) {
        Some(Ok(reference)) => check(&root, &reference).is_ok(),
        Some(Err(_)) => false,
        None => panic!("`{span}` is a reference"),
    };
    assert!(verdict("src/wal/append.rs: enqueue"));
    assert!(verdict("src/wal/append.rs: append::enqueue"));
    assert!(verdict("src/wal/mod.rs: wal::queue_batch"));
    assert!(verdict("src/server/connection.rs: Connection::turn"));
    assert!(!verdict(
        "src/server/connection.rs: Connection::no_such_function"
    ));
    assert!(!verdict("src/server/no_such_file.rs: turn"));
    assert!(!verdict("src/server/connection.rs: Keyspace::turn"));
    assert!(!verdict("src/wal/append.rs: writer::enqueue"));
    assert!(!verdict("src/wal/append.rs:enqueue"));
    assert!(!verdict("src/wal/append.rs: a::b::enqueue"));
}
