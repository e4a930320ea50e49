//! The `Templates` service: versioned templates per customer, one at a time or as a CSV sheet.
//! Template messages are converted here rather than in `convert`, as they concern this service
//! alone.

use tonic::{Request, Response, Status};

use super::proto::templates_server::Templates;
use super::state::Read;
use super::{ApiState, answer, convert, proto};
use crate::error::Error;
use crate::templates::{self, Content, Template};

pub(super) struct TemplateService {
    state: ApiState,
}

impl TemplateService {
    pub(super) fn new(state: ApiState) -> Self {
        Self { state }
    }

    /// The latest version of every template of a registered customer.
    async fn latest_of(&self, customer_id: &str) -> Result<Vec<Template>, Error> {
        self.state.customer(customer_id, Read::Cached).await?;
        Ok(self.state.templates().list(customer_id).await?)
    }

    async fn upsert(
        &self,
        request: proto::UpsertTemplateRequest,
    ) -> Result<proto::Template, Error> {
        let template = request
            .template
            .ok_or_else(|| Error::invalid("template", "is required"))?;
        self.state
            .customer(&template.customer_id, Read::Cached)
            .await?;
        convert::customer_id("template.template_id", &template.template_id)?;
        let contents = contents(template.contents)?;
        let saved = self
            .state
            .templates()
            .save(&template.customer_id, &template.template_id, contents)
            .await?;
        tracing::info!(
            customer_id = %saved.customer_id,
            template_id = %saved.id,
            version = saved.version,
            "template saved"
        );
        Ok(proto_template(&saved))
    }

    async fn get(&self, request: proto::GetTemplateRequest) -> Result<proto::Template, Error> {
        self.state
            .customer(&request.customer_id, Read::Cached)
            .await?;
        convert::customer_id("template_id", &request.template_id)?;
        let registry = self.state.templates();
        let template = match request.version {
            0 => {
                registry
                    .latest(&request.customer_id, &request.template_id)
                    .await?
            }
            version => {
                let reference = crate::model::TemplateRef {
                    id: request.template_id,
                    version: i64::from(version),
                };
                (*registry.version(&request.customer_id, &reference).await?).clone()
            }
        };
        Ok(proto_template(&template))
    }

    async fn export(&self, customer_id: &str) -> Result<proto::ExportTemplatesResponse, Error> {
        let templates = self.latest_of(customer_id).await?;
        let csv = templates::csv::export(&templates).map_err(|_| Error::Internal)?;
        Ok(proto::ExportTemplatesResponse { csv })
    }

    async fn import(
        &self,
        request: proto::ImportTemplatesRequest,
    ) -> Result<proto::ImportTemplatesResponse, Error> {
        self.state
            .customer(&request.customer_id, Read::Cached)
            .await?;
        let sheet = templates::csv::import(&request.csv).map_err(csv_error)?;
        for (id, _) in &sheet {
            convert::customer_id("csv", id)
                .map_err(|err| Error::invalid("csv", format!("template_id {id:?}: {err}")))?;
        }
        let saved = self
            .state
            .templates()
            .save_all(&request.customer_id, &sheet)
            .await
            .map_err(csv_error)?;
        tracing::info!(
            customer_id = %request.customer_id,
            templates = saved.len(),
            "templates imported"
        );
        Ok(proto::ImportTemplatesResponse {
            templates: saved.iter().map(proto_template).collect(),
        })
    }
}

#[tonic::async_trait]
impl Templates for TemplateService {
    #[tracing::instrument(skip_all)]
    async fn upsert_template(
        &self,
        request: Request<proto::UpsertTemplateRequest>,
    ) -> Result<Response<proto::Template>, Status> {
        answer(self.upsert(request.into_inner()).await)
    }

    async fn get_template(
        &self,
        request: Request<proto::GetTemplateRequest>,
    ) -> Result<Response<proto::Template>, Status> {
        answer(self.get(request.into_inner()).await)
    }

    async fn list_templates(
        &self,
        request: Request<proto::ListTemplatesRequest>,
    ) -> Result<Response<proto::ListTemplatesResponse>, Status> {
        let templates = self.latest_of(&request.into_inner().customer_id).await;
        answer(templates.map(|templates| proto::ListTemplatesResponse {
            templates: templates.iter().map(proto_template).collect(),
        }))
    }

    async fn export_templates(
        &self,
        request: Request<proto::ExportTemplatesRequest>,
    ) -> Result<Response<proto::ExportTemplatesResponse>, Status> {
        answer(self.export(&request.into_inner().customer_id).await)
    }

    #[tracing::instrument(skip_all)]
    async fn import_templates(
        &self,
        request: Request<proto::ImportTemplatesRequest>,
    ) -> Result<Response<proto::ImportTemplatesResponse>, Status> {
        answer(self.import(request.into_inner()).await)
    }
}

/// A sheet's problems are the `csv` field's.
fn csv_error(err: templates::Error) -> Error {
    match err {
        templates::Error::Invalid(problem) | templates::Error::Render(problem) => {
            Error::invalid("csv", problem)
        }
        other => other.into(),
    }
}

fn contents(contents: Vec<proto::TemplateContent>) -> Result<Vec<Content>, Error> {
    contents
        .into_iter()
        .map(|c| {
            Ok(Content {
                channel: convert::channel("template.contents.channel", c.channel)?,
                subject: c.subject,
                body: c.body,
            })
        })
        .collect()
}

fn proto_template(template: &Template) -> proto::Template {
    proto::Template {
        customer_id: template.customer_id.clone(),
        template_id: template.id.clone(),
        version: u32::try_from(template.version).unwrap_or(u32::MAX),
        contents: template
            .contents
            .iter()
            .map(|c| proto::TemplateContent {
                channel: convert::proto_channel(c.channel) as i32,
                subject: c.subject.clone(),
                body: c.body.clone(),
            })
            .collect(),
        created_at: Some(convert::timestamp(template.created_at)),
    }
}
