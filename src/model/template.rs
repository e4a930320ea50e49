//! Templates: what each channel of a customer's template sends, one saved version at a time.

use serde::{Deserialize, Serialize};

use super::{Channel, EpochMillis, TemplateRef};

/// What one channel of a template sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Content {
    pub channel: Channel,
    /// Push title or e-mail subject; ignored for SMS and webhooks.
    pub subject: String,
    /// Push or SMS text, e-mail body, or the webhook payload.
    pub body: String,
}

/// One saved version of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    pub customer_id: String,
    pub id: String,
    pub version: i64,
    pub contents: Vec<Content>,
    pub created_at: EpochMillis,
}

impl Template {
    /// The version as notifications refer to it.
    pub fn reference(&self) -> TemplateRef {
        TemplateRef {
            id: self.id.clone(),
            version: self.version,
        }
    }

    /// What the template sends on `channel`, if it has content for it.
    pub(crate) fn content(&self, channel: Channel) -> Option<&Content> {
        self.contents.iter().find(|c| c.channel == channel)
    }
}
