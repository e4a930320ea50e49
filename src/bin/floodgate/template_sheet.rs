//! The `floodgate template` subcommands: the operations team's spreadsheet workflow. Export a
//! customer's templates to a CSV sheet, edit it, import it back as new versions.

use std::path::PathBuf;

use anyhow::{Context as _, Result};
use clap::{Args, Subcommand};

use crate::client::{Connection, rpc_error};
use floodgate_client::proto;

#[derive(Debug, Subcommand)]
pub(crate) enum TemplateCommand {
    /// Write the latest version of every template of a customer as CSV
    /// (template_id,channel,subject,body).
    Export(SheetArgs),
    /// Read such a CSV and save a new version of every template in it (all rows or none).
    Import(SheetArgs),
    /// List a customer's templates with their latest version.
    List(ListTemplatesArgs),
}

#[derive(Debug, Args)]
pub(crate) struct SheetArgs {
    /// Customer id.
    customer: String,
    /// The CSV file [default: standard output for export, standard input for import].
    file: Option<PathBuf>,
    #[command(flatten)]
    connection: Connection,
}

#[derive(Debug, Args)]
pub(crate) struct ListTemplatesArgs {
    /// Customer id.
    customer: String,
    #[command(flatten)]
    connection: Connection,
}

/// Runs one template subcommand.
pub(crate) async fn run(command: TemplateCommand) -> Result<()> {
    match command {
        TemplateCommand::Export(args) => export(args).await,
        TemplateCommand::Import(args) => import(args).await,
        TemplateCommand::List(args) => list(args).await,
    }
}

async fn export(args: SheetArgs) -> Result<()> {
    let mut client = args.connection.client().await?.templates();
    let sheet = client
        .export_templates(proto::ExportTemplatesRequest {
            customer_id: args.customer,
        })
        .await
        .map_err(|status| rpc_error("ExportTemplates", &status))?
        .into_inner()
        .csv;
    match args.file {
        Some(path) => std::fs::write(&path, sheet)
            .with_context(|| format!("cannot write {}", path.display()))?,
        None => std::io::Write::write_all(&mut std::io::stdout(), &sheet)
            .context("cannot write to standard output")?,
    }
    Ok(())
}

async fn import(args: SheetArgs) -> Result<()> {
    let sheet = match &args.file {
        Some(path) => {
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?
        }
        None => {
            let mut sheet = Vec::new();
            std::io::Read::read_to_end(&mut std::io::stdin(), &mut sheet)
                .context("cannot read standard input")?;
            sheet
        }
    };
    let mut client = args.connection.client().await?.templates();
    let saved = client
        .import_templates(proto::ImportTemplatesRequest {
            customer_id: args.customer,
            csv: sheet,
        })
        .await
        .map_err(|status| rpc_error("ImportTemplates", &status))?
        .into_inner()
        .templates;
    for template in saved {
        println!("{} -> version {}", template.template_id, template.version);
    }
    Ok(())
}

async fn list(args: ListTemplatesArgs) -> Result<()> {
    let mut client = args.connection.client().await?.templates();
    let templates = client
        .list_templates(proto::ListTemplatesRequest {
            customer_id: args.customer,
        })
        .await
        .map_err(|status| rpc_error("ListTemplates", &status))?
        .into_inner()
        .templates;
    println!("{:<32} {:>7}  CHANNELS", "TEMPLATE", "VERSION");
    for t in templates {
        let channels: Vec<&str> = t
            .contents
            .iter()
            .map(|c| {
                floodgate::api::convert::channel("channel", c.channel)
                    .map_or("?", floodgate::model::Channel::as_str)
            })
            .collect();
        println!(
            "{:<32} {:>7}  {}",
            t.template_id,
            t.version,
            channels.join(",")
        );
    }
    Ok(())
}
