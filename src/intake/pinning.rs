//! Template pinning at intake: a templated notification is rendered once with its own
//! variables, so a missing variable or a channel the template lacks is refused now rather than
//! failing at send time, and it is pinned to the version it was checked against (a template
//! saved later does not change what an accepted notification says).

use std::collections::HashMap;
use std::sync::Arc;

use crate::model::{CustomerId, NewNotification};
use crate::templates::{self, Template, Templates};

/// Why a templated notification could not be pinned. Each names what the caller got wrong, so
/// the API can point at the request field.
#[derive(Debug, thiserror::Error)]
pub enum PinError {
    /// The customer has no template with that id (the request's `template_id`).
    #[error("{0}")]
    UnknownTemplate(String),
    /// The variables do not render the template (a missing variable, a failing expression).
    #[error("{0}")]
    Variables(String),
    /// The template has no content for the notification's channel.
    #[error("{0}")]
    Channel(String),
    /// The variables were not a JSON object; they were converted from the request just before,
    /// so this is a fault of ours.
    #[error("template variables are not JSON")]
    NotJson,
    /// The registry failed otherwise (the store).
    #[error(transparent)]
    Templates(templates::Error),
}

/// The pinning of one call: the latest versions it has looked up, by customer and template id,
/// so a batch naming one template many times reads it once (and pins every item to the same
/// version).
#[derive(Debug)]
pub struct Pins<'a> {
    templates: &'a Templates,
    seen: HashMap<(CustomerId, String), Arc<Template>>,
}

impl<'a> Pins<'a> {
    pub(super) fn new(templates: &'a Templates) -> Self {
        Self {
            templates,
            seen: HashMap::new(),
        }
    }

    /// Renders a templated `notification` with its variables (its payload) and pins it to the
    /// template's latest version. Returns what it rendered, which is what the channel will
    /// carry (`None`: not templated, the payload is sent as it is).
    pub async fn pin(
        &mut self,
        notification: &mut NewNotification,
    ) -> Result<Option<Vec<u8>>, PinError> {
        let Some(reference) = notification.template.as_mut() else {
            return Ok(None);
        };
        let key = (notification.customer_id.clone(), reference.id.clone());
        let template = match self.seen.get(&key) {
            Some(template) => template.clone(),
            None => {
                let latest = self
                    .templates
                    .latest(&notification.customer_id, &reference.id)
                    .await
                    .map_err(|err| match err {
                        templates::Error::NotFound(problem) => PinError::UnknownTemplate(problem),
                        other => PinError::Templates(other),
                    })?;
                self.seen.entry(key).or_insert(Arc::new(latest)).clone()
            }
        };
        let variables: serde_json::Value =
            serde_json::from_slice(&notification.payload).map_err(|_| PinError::NotJson)?;
        let rendered = self
            .templates
            .render(template.clone(), notification.channel, variables)
            .await
            .map_err(|err| match err {
                templates::Error::Render(problem) => PinError::Variables(problem),
                templates::Error::Invalid(problem) => PinError::Channel(problem),
                other => PinError::Templates(other),
            })?;
        reference.version = template.version;
        Ok(Some(rendered))
    }
}
