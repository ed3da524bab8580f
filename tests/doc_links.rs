//! The documentation holds together: the README is an overview and the reference lives in
//! `docs/`, so every relative link in `README.md` and `docs/*.md` must resolve. A link's
//! file (or folder) must exist relative to the page that holds it, and a `#fragment` on a
//! Markdown page (or a bare `#fragment` on the same page) must name one of its headings,
//! slugged as GitHub does. Links in fenced code blocks and inline code are not links.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

/// The pages the README's overview hands its reference to.
const PAGES: &[&str] = &[
    "api.md",
    "models.md",
    "operating.md",
    "performance.md",
    "results.md",
    "security.md",
    "several-nodes.md",
    "testing.md",
];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `README.md` and every `docs/*.md`.
fn documents() -> Vec<PathBuf> {
    let mut docs: Vec<PathBuf> = fs::read_dir(root().join("docs"))
        .expect("docs/ exists")
        .map(|entry| entry.expect("docs/ is readable").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "md"))
        .collect();
    docs.sort();
    docs.insert(0, root().join("README.md"));
    docs
}

/// The lines outside fenced code blocks.
fn prose(text: &str) -> Vec<&str> {
    let mut fenced = false;
    let mut lines = Vec::new();
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
        } else if !fenced {
            lines.push(line);
        }
    }
    lines
}

/// A heading's anchor as GitHub makes it: lower case, spaces to `-`, every other
/// character that is not alphanumeric, `-` or `_` dropped.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

/// The anchors of a page's headings; a repeated heading gets `-1`, `-2`, ...
fn anchors(text: &str) -> Vec<String> {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut anchors = Vec::new();
    for line in prose(text) {
        let heading = line.trim_start_matches('#');
        if heading.len() == line.len() || !heading.starts_with(' ') {
            continue;
        }
        let slug = slug(heading);
        let count = seen.entry(slug.clone()).or_insert(0);
        anchors.push(match *count {
            0 => slug,
            n => format!("{slug}-{n}"),
        });
        *count += 1;
    }
    anchors
}

/// Every link target `](target)` outside code: fenced blocks are dropped, then inline
/// code spans (every other piece between backticks; a span may wrap a line).
fn links(text: &str) -> Vec<String> {
    let prose = prose(text).join("\n");
    let outside_code: String = prose.split('`').step_by(2).collect();
    let mut targets = Vec::new();
    let mut rest = outside_code.as_str();
    while let Some(start) = rest.find("](") {
        rest = &rest[start + 2..];
        let end = rest.find(')').unwrap_or(rest.len());
        let target = rest[..end].split_whitespace().next().unwrap_or("");
        targets.push(target.to_string());
        rest = &rest[end..];
    }
    targets
}

/// Why `target`, linked from `page`, does not resolve; `None` when it does or when it
/// leaves the repository.
fn problem(page: &Path, target: &str) -> Option<String> {
    if target.is_empty() {
        return Some("empty link".to_string());
    }
    if ["http:", "https:", "mailto:"]
        .iter()
        .any(|scheme| target.starts_with(scheme))
    {
        return None;
    }
    let (path, fragment) = target.split_once('#').unwrap_or((target, ""));
    let file = if path.is_empty() {
        page.to_path_buf()
    } else {
        page.parent().expect("a page is in a folder").join(path)
    };
    if !file.exists() {
        return Some(format!("{} does not exist", file.display()));
    }
    let markdown = file.extension().is_some_and(|ext| ext == "md");
    if !fragment.is_empty() && markdown && !anchors(&read(&file)).iter().any(|a| a == fragment) {
        return Some(format!("no heading #{fragment} in {}", file.display()));
    }
    None
}

#[test]
fn every_relative_link_resolves() {
    let mut checked = 0;
    let mut bad = Vec::new();
    for page in documents() {
        for target in links(&read(&page)) {
            checked += 1;
            if let Some(why) = problem(&page, &target) {
                bad.push(format!("{}: ({target}): {why}", page.display()));
            }
        }
    }
    assert!(
        checked > 50,
        "only {checked} links found: is the extraction broken?"
    );
    assert!(bad.is_empty(), "broken links:\n{}", bad.join("\n"));
}

#[test]
fn docs_holds_the_reference_pages_and_the_readme_links_every_one() {
    let docs = root().join("docs");
    for page in PAGES {
        assert!(docs.join(page).is_file(), "docs/{page} is missing");
    }
    let readme_links = links(&read(&root().join("README.md")));
    for page in &documents()[1..] {
        let name = page.file_name().unwrap().to_string_lossy();
        let wanted = format!("docs/{name}");
        assert!(
            readme_links
                .iter()
                .any(|t| t.split('#').next() == Some(wanted.as_str())),
            "README.md does not link {wanted}"
        );
    }
}

#[test]
fn the_checker_sees_what_it_should() {
    let text = "# A title, with `code`!\n\n## Same\n## Same\n\
                [x](a.md#b) `[y](not-a-link)` [z](c \"title\")\n```\n[w](fenced)\n# Not a heading\n```\n";
    assert_eq!(anchors(text), ["a-title-with-code", "same", "same-1"]);
    assert_eq!(links(text), ["a.md#b", "c"]);
}
