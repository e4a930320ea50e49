//! A fake SMTP server: greets, answers EHLO (with AUTH PLAIN), checks the credentials, and takes
//! MAIL / RCPT / DATA / RSET / NOOP / QUIT. The reply to the end of DATA can be scripted per
//! recipient (4xx or 5xx); a 421 closes the connection, as real servers do.

use std::sync::Arc;

use base64::Engine as _;
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::{TcpListener, TcpStream};

use super::{Recorded, Script};

pub const USERNAME: &str = "mailer";
pub const PASSWORD: &str = "mail-secret";
pub const FROM: &str = "Acme <no-reply@acme.example>";

/// A scripted reply: code and text, e.g. (451, "4.3.0 try again later").
#[derive(Debug, Clone)]
pub struct SmtpReply {
    pub code: u16,
    pub text: &'static str,
}

/// One message the server accepted.
#[derive(Debug, Clone)]
pub struct Mail {
    pub from: String,
    pub to: Vec<String>,
    /// The message as sent (headers and body, dot-unstuffed).
    pub data: String,
}

impl Mail {
    /// The value of header `name` (first occurrence, unfolded lines only).
    pub fn header(&self, name: &str) -> Option<String> {
        let prefix = format!("{}:", name.to_ascii_lowercase());
        self.data
            .lines()
            .take_while(|line| !line.is_empty())
            .find(|line| line.to_ascii_lowercase().starts_with(&prefix))
            .map(|line| line[prefix.len()..].trim().to_owned())
    }
}

struct SmtpState {
    script: Script<SmtpReply>,
    sent: Recorded<Mail>,
}

pub struct SmtpFake {
    pub port: u16,
    state: Arc<SmtpState>,
    task: tokio::task::JoinHandle<()>,
}

impl SmtpFake {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(SmtpState {
            script: Script::default(),
            sent: Recorded::default(),
        });
        let shared = state.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(session(stream, shared.clone()));
            }
        });
        Self { port, state, task }
    }

    pub fn script(&self) -> &Script<SmtpReply> {
        &self.state.script
    }

    pub fn sent(&self) -> &Recorded<Mail> {
        &self.state.sent
    }
}

impl Drop for SmtpFake {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The address inside `MAIL FROM:<a>` / `RCPT TO:<a>`.
fn address(argument: &str) -> String {
    let start = argument.find('<').map_or(0, |i| i + 1);
    let end = argument[start..]
        .find('>')
        .map_or(argument.len(), |i| start + i);
    argument[start..end].to_owned()
}

async fn session(stream: TcpStream, state: Arc<SmtpState>) {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    let mut reply = async |text: &str| write.write_all(format!("{text}\r\n").as_bytes()).await;
    if reply("220 fake.smtp ESMTP ready").await.is_err() {
        return;
    }
    let mut authed = false;
    let (mut from, mut to) = (String::new(), Vec::new());
    while let Ok(Some(line)) = lines.next_line().await {
        let upper = line.to_ascii_uppercase();
        let answer = if upper.starts_with("EHLO") || upper.starts_with("HELO") {
            "250-fake.smtp\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n250 AUTH PLAIN".to_owned()
        } else if let Some(initial) = upper.strip_prefix("AUTH PLAIN ") {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(line[line.len() - initial.len()..].trim())
                .unwrap_or_default();
            authed = decoded == format!("\0{USERNAME}\0{PASSWORD}").into_bytes();
            if authed {
                "235 2.7.0 accepted"
            } else {
                "535 5.7.8 bad credentials"
            }
            .to_owned()
        } else if upper.starts_with("MAIL FROM:") {
            if authed {
                from = address(&line[10..]);
                to.clear();
                "250 2.1.0 ok".to_owned()
            } else {
                "530 5.7.0 authentication required".to_owned()
            }
        } else if upper.starts_with("RCPT TO:") {
            to.push(address(&line[8..]));
            "250 2.1.5 ok".to_owned()
        } else if upper == "DATA" {
            if reply("354 end with <CRLF>.<CRLF>").await.is_err() {
                return;
            }
            let mut data = String::new();
            while let Ok(Some(line)) = lines.next_line().await {
                if line == "." {
                    break;
                }
                data.push_str(
                    line.strip_prefix('.')
                        .filter(|_| line.starts_with(".."))
                        .unwrap_or(&line),
                );
                data.push('\n');
            }
            let recipient = to.first().cloned().unwrap_or_default();
            match state.script.next(&recipient) {
                Some(scripted) => {
                    let text = format!("{} {}", scripted.code, scripted.text);
                    let _ = reply(&text).await;
                    if scripted.code == 421 {
                        return;
                    }
                    continue;
                }
                None => {
                    state.sent.push(Mail {
                        from: from.clone(),
                        to: to.clone(),
                        data,
                    });
                    "250 2.0.0 queued".to_owned()
                }
            }
        } else if upper == "RSET" || upper == "NOOP" {
            "250 2.0.0 ok".to_owned()
        } else if upper == "QUIT" {
            let _ = reply("221 2.0.0 bye").await;
            return;
        } else {
            "502 5.5.2 command not recognized".to_owned()
        };
        if reply(&answer).await.is_err() {
            return;
        }
    }
}
