//! `floodgate token create|list|revoke`: scoped tokens, which let a service submit and read for
//! its own customer systems only (admin token).

use anyhow::Result;
use clap::{Args, Subcommand};

use super::Connection;
use super::notifications::time;

#[derive(Debug, Subcommand)]
pub(crate) enum TokenCommand {
    /// Create a scoped token for some customer systems; prints the token, once.
    #[command(after_help = "Example:
  floodgate token create billing-svc --customer acme --customer globex")]
    Create(CreateArgs),
    /// List the scoped tokens: name, customers, created, last used (never their values).
    List(Connection),
    /// Revoke a scoped token: calls with it fail within 5 seconds on every node.
    Revoke(RevokeArgs),
}

#[derive(Debug, Args)]
pub(crate) struct CreateArgs {
    /// The token's name (letters, digits, '-', '_', '.'), e.g. the service that will use it.
    name: String,
    /// A customer system the token may submit for and read; repeat, or separate with commas.
    #[arg(long = "customer", value_delimiter = ',', required = true)]
    customers: Vec<String>,
    #[command(flatten)]
    connection: Connection,
}

#[derive(Debug, Args)]
pub(crate) struct RevokeArgs {
    /// The token's name.
    name: String,
    #[command(flatten)]
    connection: Connection,
}

/// Runs one `token` subcommand.
pub(crate) async fn run(command: TokenCommand) -> Result<()> {
    match command {
        TokenCommand::Create(args) => {
            let client = args.connection.client().await?;
            let created = client
                .create_token(&args.name, args.customers)
                .await
                .map_err(|err| args.connection.cli_error(err))?;
            let customers = created
                .scoped_token
                .map(|t| t.customer_ids.join(","))
                .unwrap_or_default();
            println!("token {} for {customers}:", args.name);
            println!("{}", created.token);
            println!(
                "This is the only time it is shown (floodgate keeps only its hash): store it now."
            );
        }
        TokenCommand::List(connection) => {
            let client = connection.client().await?;
            let tokens = client
                .list_tokens()
                .await
                .map_err(|err| connection.cli_error(err))?;
            println!(
                "{:<24} {:<24} {:<24}  CUSTOMERS",
                "NAME", "CREATED", "LAST USED"
            );
            for t in tokens {
                let last_used = match t.last_used_at {
                    Some(at) => time(Some(at)),
                    None => "never".to_owned(),
                };
                println!(
                    "{:<24} {:<24} {:<24}  {}",
                    t.name,
                    time(t.created_at),
                    last_used,
                    t.customer_ids.join(",")
                );
            }
        }
        TokenCommand::Revoke(args) => {
            let client = args.connection.client().await?;
            let revoked = client
                .revoke_token(&args.name)
                .await
                .map_err(|err| args.connection.cli_error(err))?;
            println!(
                "token {} revoked: refused at once by this server, within 5 seconds by every other",
                revoked.name
            );
        }
    }
    Ok(())
}
