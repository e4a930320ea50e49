//! A strict reader of the Prometheus text exposition format, for tests: it checks what
//! `promtool check metrics` checks about syntax and structure (names, label syntax and escaping,
//! one `# TYPE` per family before its samples, no duplicate series, well-formed histograms) and
//! returns the samples.

use std::collections::{BTreeMap, HashMap, HashSet};

/// One sample: metric name, labels, value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// Parses and checks a whole page; panics with the offending line on the first problem.
pub fn parse(page: &str) -> Vec<Sample> {
    let mut types: HashMap<String, String> = HashMap::new();
    let mut helped = HashSet::new();
    let mut series = HashSet::new();
    let mut samples = Vec::new();
    for (n, line) in page.lines().enumerate() {
        let at = |problem: &str| format!("line {}: {problem}: {line:?}", n + 1);
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split(' ').next().unwrap_or_default();
            assert!(valid_name(name), "{}", at("bad metric name"));
            assert!(helped.insert(name.to_owned()), "{}", at("second HELP"));
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split(' ');
            let (name, kind) = (
                parts.next().unwrap_or_default(),
                parts.next().unwrap_or_default(),
            );
            assert!(valid_name(name), "{}", at("bad metric name"));
            assert!(
                ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                "{}",
                at("bad type")
            );
            assert!(
                types.insert(name.to_owned(), kind.to_owned()).is_none(),
                "{}",
                at("second TYPE")
            );
        } else if line.starts_with('#') || line.is_empty() {
            continue;
        } else {
            let sample = parse_sample(line).unwrap_or_else(|| panic!("{}", at("bad sample")));
            let family = family_of(&sample.name, &types)
                .unwrap_or_else(|| panic!("{}", at("sample before its TYPE")));
            if types[&family] == "counter" {
                assert!(sample.value >= 0.0, "{}", at("negative counter"));
            }
            let key = format!("{}{:?}", sample.name, sample.labels);
            assert!(series.insert(key), "{}", at("duplicate series"));
            samples.push(sample);
        }
    }
    check_histograms(&samples, &types);
    samples
}

/// The family a sample belongs to: its own name, or a histogram's name for its parts.
fn family_of(name: &str, types: &HashMap<String, String>) -> Option<String> {
    if types.contains_key(name) {
        return Some(name.to_owned());
    }
    ["_bucket", "_sum", "_count"].iter().find_map(|suffix| {
        let base = name.strip_suffix(suffix)?;
        (types.get(base).map(String::as_str) == Some("histogram")).then(|| base.to_owned())
    })
}

/// Buckets ascend in `le`, counts never fall, the last is `+Inf` and equals `_count`.
fn check_histograms(samples: &[Sample], types: &HashMap<String, String>) {
    let mut buckets: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    let mut counts: HashMap<String, f64> = HashMap::new();
    for sample in samples {
        let mut labels = sample.labels.clone();
        if let Some(base) = sample.name.strip_suffix("_bucket")
            && types.get(base).map(String::as_str) == Some("histogram")
        {
            let le = labels.remove("le").expect("a bucket without le");
            let le = parse_value(&le).expect("a bucket's le is not a number");
            buckets
                .entry(format!("{base}{labels:?}"))
                .or_default()
                .push((le, sample.value));
        } else if let Some(base) = sample.name.strip_suffix("_count")
            && types.get(base).map(String::as_str) == Some("histogram")
        {
            counts.insert(format!("{base}{labels:?}"), sample.value);
        }
    }
    for (series, buckets) in &buckets {
        assert!(
            buckets
                .windows(2)
                .all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1),
            "{series}: buckets out of order or falling: {buckets:?}"
        );
        let last = buckets.last().expect("no buckets");
        assert!(last.0.is_infinite(), "{series}: no +Inf bucket");
        assert_eq!(
            counts.get(series),
            Some(&last.1),
            "{series}: _count differs from +Inf"
        );
    }
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn parse_value(text: &str) -> Option<f64> {
    match text {
        "+Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ => text.parse().ok(),
    }
}

/// `name{a="x",b="y"} value`, or `name value`.
fn parse_sample(line: &str) -> Option<Sample> {
    let (name, rest) = match line.find(['{', ' ']) {
        Some(i) => line.split_at(i),
        None => return None,
    };
    if !valid_name(name) {
        return None;
    }
    let mut labels = BTreeMap::new();
    let rest = if let Some(mut body) = rest.strip_prefix('{') {
        loop {
            if let Some(after) = body.strip_prefix('}') {
                break after;
            }
            let eq = body.find('=')?;
            let label = &body[..eq];
            let label_ok = label
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !label_ok {
                return None;
            }
            let (value, after) = quoted(body[eq + 1..].strip_prefix('"')?)?;
            labels.insert(label.to_owned(), value);
            body = after.strip_prefix(',').unwrap_or(after);
        }
    } else {
        rest
    };
    let value = parse_value(rest.strip_prefix(' ')?.split(' ').next()?)?;
    Some(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

/// A label value up to its closing quote, unescaped, and what follows the quote.
fn quoted(text: &str) -> Option<(String, &str)> {
    let mut value = String::new();
    let mut chars = text.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Some((value, &text[i + 1..])),
            '\\' => match chars.next()?.1 {
                'n' => value.push('\n'),
                '\\' => value.push('\\'),
                '"' => value.push('"'),
                _ => return None,
            },
            '\n' => return None,
            c => value.push(c),
        }
    }
    None
}
