//! The README's walk-through, "Five minutes with floodgate", run as written against this build, so
//! it cannot drift from the program. How the test reads README.md (keep to it when editing there):
//!
//! - The walk-through is every fenced ` ```sh ` block between the heading `## Five minutes with
//!   floodgate` and the next `## ` heading, in order. Other fences (a sample of what the receiver
//!   prints) are not run.
//! - In a block, a line starting with `$ ` is a command; a command line ending in `\` goes on on
//!   the next line. Every other line is what the command before it prints.
//! - A command whose last line ends with the comment `# runs until Ctrl-C` keeps its terminal busy
//!   (the server, the receiver). The test starts it in the background in a `bash` of its own, as a
//!   new terminal would be, and goes on once it has printed its fixed lines (below) and, for
//!   `serve`, once `/readyz` answers. Every other command runs, in order, in one
//!   `bash -euo pipefail` with stdin from /dev/null, so `export`, `unset` and shell variables carry
//!   over as they do for a person typing them, and a failing command stops the walk-through.
//! - `floodgate …` and `cargo run --release -- …` run this build's binary (shell functions).
//! - The working directory is a new temporary directory (so `floodgate-data` is new). The
//!   addresses are free ports given through the environment variables the README and docs/ name:
//!   `FLOODGATE_GRPC_ADDR` and `FLOODGATE_HTTP_ADDR` (serve), `FLOODGATE_SERVER` (the client
//!   subcommands), `FLOODGATE_RECEIVE_ADDR` (receive). Commands are never rewritten; in the
//!   README's sample output the default addresses (read from the program's own flags) stand for
//!   the test's.
//! - A sample line is fixed unless it carries a generated value (a token, secret or notification
//!   id) or a measured figure (a decimal number). Every fixed line must be printed by its command,
//!   spacing aside. `floodgate status` and `floodgate top` only read, so they are run again (for
//!   up to 30 s) until it is, as a person would run them again.
//!
//! Then the outcomes: `send` printed a notification id, `status` shows it DELIVERED, the receiver
//! printed it with a verified signature and the fields the README's sample shows, `top --once`
//! lists the customer, and the dashboard the server announces answers. Background processes are
//! killed when the test ends, pass or fail.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::process::free_addr;

/// The section the test runs; renaming it breaks the test on purpose.
const SECTION: &str = "## Five minutes with floodgate";
/// The comment that marks a command which keeps running in its own terminal.
const KEEPS_RUNNING: &str = "# runs until Ctrl-C";
/// What a generated value starts with: admin token, scoped token, signing secret, notification id.
const GENERATED: [&str; 4] = ["fgadm_", "fgt_", "whsec_", "ntf_"];
/// Longest wait for one command, a background command's output, or a re-run read to match.
const PATIENCE: Duration = Duration::from_secs(30);

/// `floodgate` and `cargo run --release --` as this build's binary, for every shell.
const PRELUDE: &str = r#"
floodgate() { "$README_TEST_FLOODGATE_BIN" "$@"; }
cargo() {
  if [ "${1-}" = run ] && [ "${2-}" = --release ] && [ "${3-}" = -- ]; then
    shift 3
    floodgate "$@"
  else
    echo "the walk-through may run cargo only as 'cargo run --release -- ARGS', not: cargo $*" >&2
    return 127
  fi
}
"#;

/// One `$ ` command of the walk-through and the lines the README shows it printing.
#[derive(Debug)]
struct Step {
    command: String,
    sample: Vec<String>,
}

impl Step {
    fn keeps_running(&self) -> bool {
        self.command.trim_end().ends_with(KEEPS_RUNNING)
    }

    /// Whether the command only reads, so running it again is what a person would do.
    fn rereadable(&self) -> bool {
        ["floodgate status ", "floodgate top "]
            .iter()
            .any(|read| self.command.starts_with(read))
    }
}

/// The walk-through section of README.md.
fn section(readme: &str) -> &str {
    let start = readme.find(&format!("\n{SECTION}\n")).unwrap_or_else(|| {
        panic!(
            "README.md has no section {SECTION:?}: tests/readme.rs runs the walk-through \
                 under that heading"
        )
    });
    let body = &readme[start + SECTION.len() + 2..];
    body.find("\n## ").map_or(body, |end| &body[..end])
}

/// The fenced blocks of `text` whose info string is `info`, as lists of lines.
fn fenced(text: &str, info: &str) -> Vec<Vec<String>> {
    let mut blocks = Vec::new();
    let mut open: Option<(bool, Vec<String>)> = None;
    for line in text.lines() {
        match (&mut open, line.trim_start().strip_prefix("```")) {
            (None, Some(tag)) => open = Some((tag.trim() == info, Vec::new())),
            (Some(_), Some(_)) => {
                if let Some((true, lines)) = open.take() {
                    blocks.push(lines);
                }
            }
            (Some((_, lines)), None) => lines.push(line.to_owned()),
            (None, None) => {}
        }
    }
    blocks
}

/// The commands of the section's `sh` blocks, with their sample output.
fn steps(section: &str) -> Vec<Step> {
    let mut steps: Vec<Step> = Vec::new();
    for block in fenced(section, "sh") {
        // Whether the line before was part of a command and ended in `\`.
        let mut continued = false;
        for line in block {
            let command_line = continued || line.starts_with("$ ");
            if continued {
                let step = steps.last_mut().expect("a continued command");
                step.command.push('\n');
                step.command.push_str(&line);
            } else if let Some(command) = line.strip_prefix("$ ") {
                steps.push(Step {
                    command: command.to_owned(),
                    sample: Vec::new(),
                });
            } else if let Some(step) = steps.last_mut() {
                step.sample.push(line.clone());
            } else {
                panic!("a `sh` block of {SECTION:?} starts with {line:?}, not a `$ ` command");
            }
            continued = command_line && line.ends_with('\\');
        }
    }
    steps
}

/// Spacing aside: columns and aligned labels compare by their words.
fn words(line: &str) -> String {
    line.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A sample line that must be printed as shown: no generated value, no measured figure.
fn fixed(line: &str) -> bool {
    let measured = |word: &str| {
        let number = word.trim_end_matches("ms").trim_end_matches('%');
        number.contains('.') && number.parse::<f64>().is_ok()
    };
    !line.trim().is_empty()
        && !GENERATED.iter().any(|prefix| line.contains(prefix))
        && !line.split_whitespace().any(measured)
}

/// The fixed lines of `sample` missing from `output`, with the default addresses read as `ours`.
fn missing(sample: &[String], output: &str, ours: &Addresses) -> Vec<String> {
    let printed: Vec<String> = output.lines().map(words).collect();
    sample
        .iter()
        .filter(|line| fixed(line))
        .map(|line| words(&ours.localise(line)))
        .filter(|line| !printed.contains(line))
        .collect()
}

/// The default of `floodgate SUBCOMMAND --FLAG`, as its `--help` shows it.
fn flag_default(subcommand: &str, flag: &str) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_floodgate"))
        .args([subcommand, "--help"])
        .output()
        .expect("the floodgate binary runs");
    let help = String::from_utf8_lossy(&output.stdout);
    let option = format!("--{flag} <");
    let mut lines = help
        .lines()
        .skip_while(|line| !line.trim_start().starts_with(&option));
    let first = lines
        .next()
        .unwrap_or_else(|| panic!("`floodgate {subcommand} --help` shows no --{flag}:\n{help}"));
    // The option's line and its description, up to the next option.
    std::iter::once(first)
        .chain(lines.take_while(|line| !line.trim_start().starts_with('-')))
        .find_map(|line| line.split_once("[default: ").map(|(_, rest)| rest))
        .and_then(|rest| rest.split_once(']'))
        .map(|(default, _)| default.to_owned())
        .unwrap_or_else(|| panic!("`floodgate {subcommand}` has no default for --{flag}"))
}

/// The addresses of this run and the defaults the README shows in their place.
struct Addresses {
    grpc: SocketAddr,
    http: SocketAddr,
    receive: SocketAddr,
    /// (default, ours), from the program's own flags.
    defaults: Vec<(String, String)>,
}

impl Addresses {
    fn new() -> Self {
        let (grpc, http, receive) = (free_addr(), free_addr(), free_addr());
        let defaults = vec![
            (flag_default("serve", "grpc-addr"), grpc.to_string()),
            (flag_default("serve", "http-addr"), http.to_string()),
            (flag_default("receive", "listen"), receive.to_string()),
        ];
        Self {
            grpc,
            http,
            receive,
            defaults,
        }
    }

    /// A sample line as this run prints it.
    fn localise(&self, line: &str) -> String {
        self.defaults
            .iter()
            .fold(line.to_owned(), |line, (default, ours)| {
                line.replace(default, ours)
            })
    }

    /// A line of this run as the README shows it.
    fn as_documented(&self, line: &str) -> String {
        self.defaults
            .iter()
            .fold(line.to_owned(), |line, (default, ours)| {
                line.replace(ours, default)
            })
    }

    /// The environment every shell of the walk-through gets, replacing any `FLOODGATE_…` of ours.
    fn environment(&self) -> Vec<(String, String)> {
        let mut env: Vec<(String, String)> = std::env::vars()
            .filter(|(name, _)| !name.starts_with("FLOODGATE_") && name != "RUST_LOG")
            .collect();
        env.extend([
            ("FLOODGATE_GRPC_ADDR".into(), self.grpc.to_string()),
            ("FLOODGATE_HTTP_ADDR".into(), self.http.to_string()),
            ("FLOODGATE_SERVER".into(), self.grpc.to_string()),
            ("FLOODGATE_RECEIVE_ADDR".into(), self.receive.to_string()),
            (
                "README_TEST_FLOODGATE_BIN".into(),
                env!("CARGO_BIN_EXE_floodgate").into(),
            ),
        ]);
        env
    }
}

/// A command started in a terminal of its own; its process group is killed when dropped.
struct Background {
    command: String,
    log: PathBuf,
    child: Child,
}

impl Background {
    fn start(step: &Step, dir: &Path, logs: &Path, n: usize, env: &[(String, String)]) -> Self {
        use std::os::unix::process::CommandExt as _;
        let log = logs.join(format!("background-{n}.log"));
        let file = std::fs::File::create(&log).expect("a log file");
        let child = Command::new("bash")
            .args(["--noprofile", "--norc", "-euo", "pipefail", "-c"])
            .arg(format!("{PRELUDE}\n{}", step.command))
            .current_dir(dir)
            .env_clear()
            .envs(env.iter().cloned())
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("the log file"))
            .stderr(file)
            .process_group(0)
            .spawn()
            .expect("bash starts");
        Self {
            command: step.command.clone(),
            log,
            child,
        }
    }

    fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until `ready` holds for the output, failing if the process ends first.
    fn wait_for(&mut self, what: &str, ready: impl Fn(&str) -> bool) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let output = self.output();
            if ready(&output) {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "`{}` exited ({status}) before {what}; it printed:\n{output}",
                    self.command
                );
            }
            assert!(
                Instant::now() < deadline,
                "`{}` did not get to {what} within {PATIENCE:?}; it printed:\n{output}",
                self.command
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Kills `child`'s whole process group (a bash started with `process_group(0)` and what it runs)
/// and reaps it.
fn kill_group(child: &mut Child) {
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{}", child.id())])
        .status();
    let _ = child.kill();
    let _ = child.wait();
}

impl Drop for Background {
    fn drop(&mut self) {
        kill_group(&mut self.child);
    }
}

/// The terminal the person types in: one bash, fed one command at a time.
struct Terminal {
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::Receiver<String>,
}

/// Printed after every command, so its output can be told from the next one's.
const DONE: &str = "\u{1e}readme-test: command done";

impl Terminal {
    fn start(dir: &Path, env: &[(String, String)]) -> Self {
        use std::os::unix::process::CommandExt as _;
        let mut child = Command::new("bash")
            .args(["--noprofile", "--norc", "-euo", "pipefail"])
            .current_dir(dir)
            .env_clear()
            .envs(env.iter().cloned())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("bash starts");
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = child.stdout.take().expect("piped stdout");
        let (sender, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        let mut terminal = Self {
            child,
            stdin,
            lines,
        };
        terminal.send(PRELUDE);
        terminal
    }

    fn send(&mut self, script: &str) {
        self.stdin
            .write_all(script.as_bytes())
            .and_then(|()| self.stdin.flush())
            .expect("bash reads its commands");
    }

    /// Runs one command (stdin from /dev/null, stderr with stdout) and returns what it printed.
    fn run(&mut self, command: &str) -> String {
        self.send(&format!(
            "{{ {command}\n}} </dev/null 2>&1\nprintf '\\n%s\\n' '{DONE}'\n"
        ));
        let mut output = String::new();
        let deadline = Instant::now() + PATIENCE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line == DONE => return output.trim_end().to_owned(),
                Ok(line) => {
                    output.push_str(&line);
                    output.push('\n');
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    panic!(
                        "`{command}` did not finish within {PATIENCE:?} (one that keeps running \
                         ends with `{KEEPS_RUNNING}` in the README); it printed:\n{output}"
                    )
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = self.child.wait().map(|s| s.to_string());
                    panic!(
                        "`{command}` failed, which ends `bash -euo pipefail` ({status:?}); \
                         it printed:\n{output}"
                    )
                }
            }
        }
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        kill_group(&mut self.child);
    }
}

/// `GET path` over HTTP/1.1: the status code and the body, or None when nothing answers.
fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    let mut stream = std::net::TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(PATIENCE)).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let code = response.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, response))
}

/// The first notification id in `text`.
fn notification_id(text: &str) -> Option<&str> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .find(|word| word.starts_with("ntf_") && word.len() == 26)
}

/// The JSON body of a receiver line `webhook ID (VERDICT): BODY`, by field.
fn webhook_body(line: &str) -> BTreeMap<String, serde_json::Value> {
    let (_, body) = line
        .split_once("): ")
        .unwrap_or_else(|| panic!("not a receiver line: {line}"));
    serde_json::from_str(body).unwrap_or_else(|err| panic!("{err}: {body}"))
}

#[test]
fn the_readme_walk_through_runs_as_written() {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("README.md");
    let section = section(&readme);
    let steps = steps(section);
    assert!(
        steps.len() >= 5,
        "{SECTION:?} has {} `$ ` commands in ```sh blocks; tests/readme.rs expects the whole \
         walk-through there",
        steps.len()
    );
    let addresses = Addresses::new();
    let env = addresses.environment();
    let dir = tempfile::tempdir().expect("a working directory");
    let logs = tempfile::tempdir().expect("a directory for logs");

    let mut terminal = Terminal::start(dir.path(), &env);
    let mut background: Vec<Background> = Vec::new();
    let mut printed: Vec<(&Step, String)> = Vec::new();
    for (n, step) in steps.iter().enumerate() {
        if step.keeps_running() {
            let mut started = Background::start(step, dir.path(), logs.path(), n, &env);
            started.wait_for("printing the fixed lines the README shows", |output| {
                missing(&step.sample, output, &addresses).is_empty()
            });
            if step.command.contains(" serve ") {
                let http = addresses.http.to_string();
                started.wait_for("/readyz answering 200", |_| {
                    matches!(http_get(&http, "/readyz"), Some((200, _)))
                });
            }
            background.push(started);
            continue;
        }
        let deadline = Instant::now() + PATIENCE;
        let output = loop {
            let output = terminal.run(&step.command);
            let absent = missing(&step.sample, &output, &addresses);
            if absent.is_empty() {
                break output;
            }
            assert!(
                step.rereadable() && Instant::now() < deadline,
                "`{}` printed:\n{output}\nbut the README shows lines it did not print:\n{}",
                step.command,
                absent.join("\n")
            );
            std::thread::sleep(Duration::from_millis(200));
        };
        printed.push((step, output));
    }
    let ran = |prefix: &str| {
        printed
            .iter()
            .find(|(step, _)| step.command.starts_with(prefix))
            .map(|(_, output)| output.as_str())
            .unwrap_or_else(|| panic!("the walk-through no longer runs `{prefix}…`"))
    };
    let started = |word: &str| {
        background
            .iter()
            .find(|b| b.command.contains(word))
            .unwrap_or_else(|| panic!("the walk-through no longer starts `{word}` to keep running"))
    };

    // `send` printed an id, and `status` shows that notification DELIVERED.
    let all: String = printed.iter().map(|(_, out)| out.as_str()).collect();
    let id = notification_id(&all)
        .unwrap_or_else(|| panic!("no notification id in the walk-through's output:\n{all}"));
    let status = ran("floodgate status ");
    assert!(status.contains(id), "{status}");
    assert!(
        status.lines().any(|l| words(l) == "state: DELIVERED"),
        "{status}"
    );

    // The receiver printed the delivery, signature verified, with the fields the README shows.
    let receiver = started(" receive ");
    let prefix = format!("webhook {id} (signature verified): ");
    let deadline = Instant::now() + PATIENCE;
    let received = loop {
        let output = receiver.output();
        if let Some(line) = output.lines().find(|l| l.starts_with(&prefix)) {
            break line.to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "the receiver did not print {prefix:?}:\n{output}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let samples = fenced(section, "");
    let sample = samples
        .iter()
        .flatten()
        .find(|line| line.starts_with("webhook "))
        .expect("the README shows what the receiver prints");
    let (shown, got) = (webhook_body(sample), webhook_body(&received));
    assert_eq!(
        shown.keys().collect::<Vec<_>>(),
        got.keys().collect::<Vec<_>>(),
        "the README shows the webhook as\n{sample}\nbut the receiver printed\n{received}"
    );
    for (field, value) in &shown {
        if !["id", "created_at_ms"].contains(&field.as_str()) {
            assert_eq!(
                &got[field], value,
                "the README shows {field} as {value}; the receiver printed {received}"
            );
        }
    }

    // `top --once` lists the customer.
    let top = ran("floodgate top --once");
    assert!(top.lines().any(|l| l.starts_with("acme ")), "{top}");

    // The dashboard the server announces answers, at the address the README gives.
    let server = started(" serve ").output();
    let url = server
        .split_whitespace()
        .find(|word| word.starts_with("http://") && word.ends_with("/dashboard"))
        .unwrap_or_else(|| panic!("the server announced no dashboard:\n{server}"));
    assert!(
        section.contains(&format!("`{}`", addresses.as_documented(url))),
        "the README does not send the reader to the dashboard at {}",
        addresses.as_documented(url)
    );
    let (host, path) = url
        .trim_start_matches("http://")
        .split_once('/')
        .expect("a path");
    let (code, page) = http_get(host, &format!("/{path}")).expect("the dashboard answers");
    assert_eq!(code, 200, "{page}");
    drop(terminal);
    drop(background);
}

#[test]
fn the_walk_through_is_read_as_documented() {
    let text = "intro\n## Five minutes with floodgate\n```sh\n$ a \\\n  b   # runs until Ctrl-C\n\
                out 1\n```\n```\nnot run\n```\n```sh\n$ c\n$ d\n```\n## Next\n```sh\n$ e\n```\n";
    let section = section(text);
    let steps = steps(section);
    let read: Vec<(&str, bool, &[String])> = steps
        .iter()
        .map(|s| (s.command.as_str(), s.keeps_running(), s.sample.as_slice()))
        .collect();
    let out = ["out 1".to_owned()];
    assert_eq!(
        read,
        [
            ("a \\\n  b   # runs until Ctrl-C", true, &out[..]),
            ("c", false, &[][..]),
            ("d", false, &[][..]),
        ]
    );
    assert_eq!(fenced(section, ""), [vec!["not run".to_owned()]]);
    assert!(fixed("state:     DELIVERED"));
    assert!(fixed("attempts:  1"));
    assert!(!fixed("signing secret: whsec_abc"));
    assert!(!fixed("acme   fast   1   10.0   0.1   12.3ms"));
    assert!(!fixed(""));
    assert_eq!(
        notification_id("id: ntf_1xJ4mW9qZbT0rYc7LkP2sA\n"),
        Some("ntf_1xJ4mW9qZbT0rYc7LkP2sA")
    );
}
