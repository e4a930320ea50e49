//! The documentation cannot drift from the repository: every link in README.md and docs/*.md
//! resolves to a file (and heading) inside the repository or is a public URL, and every server
//! option `floodgate serve --help` prints is in docs/configuration.md.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use clap::Args as _;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// README.md and every Markdown page under docs/.
fn pages() -> Vec<PathBuf> {
    let mut pages = vec![root().join("README.md")];
    let docs = std::fs::read_dir(root().join("docs")).expect("docs/ is readable");
    for entry in docs {
        let path = entry.expect("a docs/ entry").path();
        if path.extension().is_some_and(|ext| ext == "md") {
            pages.push(path);
        }
    }
    pages.sort();
    pages
}

/// The text outside fenced code blocks, where links are links.
fn prose(markdown: &str) -> String {
    let mut fenced = false;
    let mut out = String::new();
    for line in markdown.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if !fenced {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// Every `[text](target)` target, without inline code spans.
fn link_targets(markdown: &str) -> Vec<String> {
    let text: String = prose(markdown)
        .split('`')
        .enumerate()
        .filter(|(i, _)| i % 2 == 0)
        .map(|(_, part)| part)
        .collect::<Vec<_>>()
        .join("");
    let mut targets = Vec::new();
    let mut rest = text.as_str();
    while let Some(start) = rest.find("](") {
        rest = &rest[start + 2..];
        let end = rest.find(')').unwrap_or(rest.len());
        targets.push(rest[..end].trim().to_owned());
        rest = &rest[end..];
    }
    targets
}

/// GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

fn anchors(markdown: &str) -> HashSet<String> {
    prose(markdown)
        .lines()
        .filter(|line| line.starts_with('#'))
        .map(|line| slug(line.trim_start_matches('#')))
        .collect()
}

/// Checks one link of `page`; returns what is wrong with it.
fn check_link(page: &Path, target: &str) -> Result<(), String> {
    if let Some(url) = target
        .strip_prefix("https://")
        .or_else(|| target.strip_prefix("http://"))
    {
        let host = url.split(['/', ':']).next().unwrap_or_default();
        return match host {
            "localhost" | "127.0.0.1" | "0.0.0.0" | "" => Err("a link to a local address".into()),
            _ => Ok(()),
        };
    }
    if target.contains("://") || target.starts_with("mailto:") {
        return Err("not a public http(s) URL".into());
    }
    let (file, anchor) = target.split_once('#').unwrap_or((target, ""));
    let resolved = if file.is_empty() {
        page.to_path_buf()
    } else {
        page.parent().expect("a page has a directory").join(file)
    };
    let resolved = resolved
        .canonicalize()
        .map_err(|_| format!("{} does not exist", resolved.display()))?;
    let repository = root().canonicalize().expect("the repository root exists");
    if !resolved.starts_with(&repository) {
        return Err("leaves the repository".into());
    }
    if !anchor.is_empty() && resolved.extension().is_some_and(|ext| ext == "md") {
        let text = std::fs::read_to_string(&resolved).map_err(|e| e.to_string())?;
        if !anchors(&text).contains(anchor) {
            return Err(format!("no heading #{anchor} in {}", resolved.display()));
        }
    }
    Ok(())
}

#[test]
fn every_link_resolves_inside_the_repository_or_is_public() {
    let mut broken = Vec::new();
    let mut checked = 0;
    for page in pages() {
        let text = std::fs::read_to_string(&page).expect("a page is readable");
        for target in link_targets(&text) {
            checked += 1;
            if let Err(why) = check_link(&page, &target) {
                broken.push(format!("{}: ({target}): {why}", page.display()));
            }
        }
    }
    assert!(
        checked > 20,
        "only {checked} links found: is the parser broken?"
    );
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

#[test]
fn the_link_checker_catches_what_it_should() {
    let readme = root().join("README.md");
    assert!(check_link(&readme, "docs/guide.md").is_ok());
    assert!(check_link(&readme, "docs/no-such-page.md").is_err());
    assert!(check_link(&readme, "../outside-the-repository/notes.md").is_err());
    assert!(check_link(&readme, "docs/guide.md#no-such-heading").is_err());
    assert!(check_link(&readme, "http://127.0.0.1:8080/dashboard").is_err());
    assert!(check_link(&readme, "https://www.standardwebhooks.com/").is_ok());
    assert_eq!(
        link_targets("see [a](x.md) and `[b](y.md)`\n```\n[c](z.md)\n```\n"),
        ["x.md"]
    );
    assert_eq!(
        slug(" In the terminal: `floodgate top`"),
        "in-the-terminal-floodgate-top"
    );
}

#[test]
fn the_readme_fits_on_a_few_screens() {
    let readme = std::fs::read_to_string(root().join("README.md")).expect("README.md");
    let lines = readme.lines().count();
    assert!(
        lines <= 250,
        "README.md has {lines} lines; move detail into docs/"
    );
}

#[test]
fn every_serve_option_is_documented() {
    let page = std::fs::read_to_string(root().join("docs/configuration.md")).expect("the page");
    // `floodgate serve` takes exactly the library's ServeConfig.
    let serve = floodgate::ServeConfig::augment_args(clap::Command::new("serve"));
    let mut missing = Vec::new();
    for arg in serve.get_arguments() {
        let Some(long) = arg.get_long() else { continue };
        if long == "help" {
            continue;
        }
        if !page.contains(&format!("`--{long}`")) {
            missing.push(format!("--{long}"));
        }
        if let Some(env) = arg.get_env()
            && !page.contains(&format!("`{}`", env.to_string_lossy()))
        {
            missing.push(env.to_string_lossy().into_owned());
        }
    }
    assert!(
        missing.is_empty(),
        "docs/configuration.md lacks {missing:?}"
    );
}
