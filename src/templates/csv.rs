//! Templates as CSV, for the operations team's spreadsheet workflow: export the latest versions,
//! edit them in a spreadsheet, import the sheet back as new versions.
//!
//! Columns: `template_id,channel,subject,body`, one row per template and channel, with a header
//! row. `channel` is a channel name (`webhook`, `fcm`, `apns`, `email`, `sms`).

use std::collections::BTreeMap;

use super::{Content, Error, Template};
use crate::model::Channel;

/// The header row, in order.
const HEADER: [&str; 4] = ["template_id", "channel", "subject", "body"];

/// Writes the contents of `templates` as CSV.
pub fn export(templates: &[Template]) -> Result<Vec<u8>, Error> {
    let mut writer = ::csv::Writer::from_writer(Vec::new());
    writer.write_record(HEADER).map_err(csv_error)?;
    for template in templates {
        for content in &template.contents {
            writer
                .write_record([
                    template.id.as_str(),
                    content.channel.as_str(),
                    &content.subject,
                    &content.body,
                ])
                .map_err(csv_error)?;
        }
    }
    writer
        .into_inner()
        .map_err(|err| Error::Invalid(format!("cannot write CSV: {err}")))
}

/// Reads a sheet into templates (ordered by id), each with its contents in row order. Errors
/// name the row (the header is row 1), as a spreadsheet user counts them.
pub fn import(sheet: &[u8]) -> Result<Vec<(String, Vec<Content>)>, Error> {
    let mut reader = ::csv::ReaderBuilder::new()
        .has_headers(true)
        .from_reader(sheet);
    let header = reader.headers().map_err(csv_error)?.clone();
    if header.iter().map(str::trim).ne(HEADER) {
        return Err(Error::Invalid(format!(
            "the header row must be {}; found {}",
            HEADER.join(","),
            header.iter().collect::<Vec<_>>().join(",")
        )));
    }
    let mut templates: BTreeMap<String, Vec<Content>> = BTreeMap::new();
    for (i, record) in reader.records().enumerate() {
        let row = i + 2;
        let record = record.map_err(|err| Error::Invalid(format!("row {row}: {err}")))?;
        let field = |n: usize| record.get(n).unwrap_or_default();
        let id = field(0).trim();
        if id.is_empty() {
            return Err(Error::Invalid(format!("row {row}: template_id is empty")));
        }
        let channel = Channel::from_name(field(1).trim()).ok_or_else(|| {
            Error::Invalid(format!(
                "row {row}: unknown channel {:?} (webhook, fcm, apns, email or sms)",
                field(1)
            ))
        })?;
        templates.entry(id.to_owned()).or_default().push(Content {
            channel,
            subject: field(2).to_owned(),
            body: field(3).to_owned(),
        });
    }
    if templates.is_empty() {
        return Err(Error::Invalid("the sheet has no template rows".into()));
    }
    Ok(templates.into_iter().collect())
}

fn csv_error(err: ::csv::Error) -> Error {
    Error::Invalid(format!("not a valid CSV sheet: {err}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_export_imports_back_unchanged() {
        let template = Template {
            customer_id: "shop".into(),
            id: "bill".into(),
            version: 2,
            contents: vec![
                Content {
                    channel: Channel::Email,
                    subject: "Your bill, {{ name }}".into(),
                    body: "Line one\nline \"two\", with a comma".into(),
                },
                Content {
                    channel: Channel::Sms,
                    subject: String::new(),
                    body: "{{ amount }} due".into(),
                },
            ],
            created_at: 0,
        };
        let sheet = export(std::slice::from_ref(&template)).unwrap();
        assert!(sheet.starts_with(b"template_id,channel,subject,body\n"));
        let back = import(&sheet).unwrap();
        assert_eq!(back, vec![("bill".to_owned(), template.contents)]);
    }

    #[test]
    fn bad_sheets_name_the_row() {
        let err =
            import(b"template_id,channel,subject,body\nbill,sms,,hi\nbill,fax,,x\n").unwrap_err();
        assert!(
            err.to_string().starts_with("row 3: unknown channel"),
            "{err}"
        );
        let err = import(b"id,channel,subject,body\n").unwrap_err();
        assert!(err.to_string().contains("header row"), "{err}");
        let err = import(b"template_id,channel,subject,body\n,sms,,x\n").unwrap_err();
        assert!(err.to_string().contains("row 2"), "{err}");
        assert!(import(b"template_id,channel,subject,body\n").is_err());
    }
}
