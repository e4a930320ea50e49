//! The command line: every subcommand and its arguments. `serve` takes the library's
//! [`ServeConfig`]; the client subcommands' arguments live with the code that runs them.

use clap::{Parser, Subcommand};
use floodgate::ServeConfig;

/// floodgate: a durable notification dispatcher that paces every customer system at the speed it
/// can take.
#[derive(Debug, Parser)]
#[command(name = "floodgate", version, about)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// What `floodgate` can do: serve, or one client command against a server.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run the dispatcher server.
    Serve(Box<ServeConfig>),
    /// Register, list, show, pause and resume customer systems, and set their channels (admin token).
    #[command(subcommand)]
    Customer(crate::client::customer::CustomerCommand),
    /// Create, list and revoke scoped tokens, which see only some customer systems (admin token).
    #[command(subcommand)]
    Token(crate::client::tokens::TokenCommand),
    /// Show the nodes of a cluster (several nodes on one PostgreSQL database) and which
    /// customer systems each owns (admin token).
    #[command(subcommand)]
    Cluster(crate::client::cluster::ClusterCommand),
    /// Export and import a customer's templates as CSV, or list them (admin token).
    #[command(subcommand)]
    Template(crate::template_sheet::TemplateCommand),
    /// Submit one notification.
    #[command(after_help = "Examples:
  floodgate send --customer acme --recipient user-42 --payload '{\"text\":\"Your bill is ready\"}'
  floodgate send --customer acme --recipient user-42 --bulk --send-in 30s --key spring-sale-user-42")]
    Send(crate::client::SendArgs),
    /// Show one notification's state.
    #[command(after_help = "Example:
  floodgate status ntf_1xJ4mW9qZbT0rYc7LkP2sA")]
    Status(crate::client::StatusArgs),
    /// Cancel a notification that is not in flight yet.
    Cancel(crate::client::notifications::CancelArgs),
    /// A recipient's notifications, newest first (within the inbox retention).
    Inbox(crate::client::notifications::ListArgs),
    /// A recipient's archived notifications, past the inbox retention (admin token).
    Archive(crate::client::notifications::ListArgs),
    /// Set or show a recipient's opt-outs per channel and lane.
    #[command(subcommand)]
    Pref(crate::client::preferences::PrefCommand),
    /// A live table of every customer system: tier, limit, rate, RTT, errors, backlog.
    #[command(after_help = "Examples:
  floodgate top
  floodgate top --once --server 10.0.0.7:50051")]
    Top(crate::client::top::TopArgs),
    /// Print a shell completion script: `floodgate completions bash > /etc/bash_completion.d/floodgate`.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff), generated from this program's own help: `floodgate man > floodgate.1`.
    #[command(alias = "manpage")]
    Man,
    /// Run a small webhook receiver that prints and verifies what arrives (for trying floodgate).
    #[command(after_help = "Examples:
  floodgate receive --secret whsec_kU8ViI2tef1rl+lHrZAG6e9kEDxR+IS/+Sje3MeFtqc=
  floodgate receive --listen 127.0.0.1:9001 --status 503")]
    Receive(crate::receiver::ReceiveArgs),
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory as _, Parser as _};

    use super::Cli;

    /// The example invocations at the end of a `--help`: its lines that start with `  floodgate `.
    fn help_examples(help: &str) -> Vec<&str> {
        help.lines()
            .filter(|line| line.starts_with("  floodgate "))
            .map(str::trim)
            .collect()
    }

    /// An example split into words as a shell would, with '…' quoting (all the examples use).
    fn shell_words(line: &str) -> Vec<String> {
        let (mut words, mut word, mut quoted) = (Vec::new(), String::new(), false);
        for c in line.chars() {
            match c {
                '\'' => quoted = !quoted,
                c if c.is_whitespace() && !quoted => {
                    words.extend((!word.is_empty()).then(|| std::mem::take(&mut word)))
                }
                c => word.push(c),
            }
        }
        words.extend((!word.is_empty()).then_some(word));
        words
    }

    /// `floodgate send --help` (and the other main subcommands') ends with an example invocation
    /// of that subcommand, and every example there is one the program accepts.
    #[test]
    fn the_main_subcommands_show_examples_that_parse() {
        let main: [&[&str]; 7] = [
            &["send"],
            &["status"],
            &["top"],
            &["customer", "add"],
            &["token", "create"],
            &["cluster", "status"],
            &["receive"],
        ];
        let mut cli = Cli::command();
        cli.build();
        for path in main {
            let mut command = &mut cli;
            for name in path {
                command = command
                    .find_subcommand_mut(name)
                    .unwrap_or_else(|| panic!("no subcommand {name} in {path:?}"));
            }
            let help = command.render_long_help().to_string();
            let examples = help_examples(&help);
            let invocation = format!("floodgate {} ", path.join(" "));
            assert!(
                examples.iter().any(|e| e.starts_with(&invocation)),
                "`{invocation}--help` shows no example:\n{help}"
            );
            for example in examples {
                if let Err(err) = Cli::try_parse_from(shell_words(example)) {
                    panic!("the example `{example}` in `{invocation}--help` is refused: {err}");
                }
            }
        }
        assert_eq!(
            shell_words("floodgate send --payload '{\"a\": 1}'  --bulk"),
            ["floodgate", "send", "--payload", "{\"a\": 1}", "--bulk"]
        );
    }
}
