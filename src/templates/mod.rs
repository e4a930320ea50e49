//! Versioned message templates: saved per customer, checked when saved and again at intake with
//! the notification's own variables, and rendered at send time into the payload that the
//! channel's sink expects.
//!
//! Versions never change once saved. Intake pins each notification to the latest version it
//! saw, so every attempt renders the same text even if the template is edited meanwhile, and
//! compiled versions can be cached forever (bounded only by size).

pub mod csv;

use std::sync::Arc;
use std::time::Duration;

use minijinja::{Environment, UndefinedBehavior};

use crate::bounded_cache::BoundedCache;
use crate::model::{Channel, TemplateRef, now_millis};
pub use crate::model::{Content, Template};
use crate::store::{self, Store};

/// Template versions kept in memory before the cache starts over (they are small, and
/// re-reading one costs a single indexed query).
const CACHE_CAPACITY: usize = 10_000;

/// What one render may cost. A template is code its author runs on our threads: a loop of
/// 100,000 × 300 renders 30 MB in seconds, so every render is bounded in work (fuel: minijinja
/// instructions), in output (the payload limit, checked while writing, so memory stays bounded
/// too) and in time (it runs on a blocking thread, never an async worker, under a timeout).
#[derive(Debug, Clone, Copy)]
pub struct RenderLimits {
    /// Largest rendered payload, in bytes (the same limit as a payload submitted as is).
    pub max_bytes: usize,
    /// minijinja instructions one render may execute.
    pub fuel: u64,
    /// Longest one render may take.
    pub timeout: Duration,
}

impl Default for RenderLimits {
    fn default() -> Self {
        Self {
            max_bytes: 256 * 1024,
            fuel: DEFAULT_FUEL,
            timeout: Duration::from_secs(1),
        }
    }
}

/// Instructions one render may execute: ample for a message (a loop over a 1,000-line bill
/// uses a few tens of thousands), and a few milliseconds of CPU.
pub const DEFAULT_FUEL: u64 = 1_000_000;

/// Why a template could not be saved or used.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Store(#[from] store::Error),
    /// The template (or the version asked for) does not exist.
    #[error("{0}")]
    NotFound(String),
    /// A subject or body does not compile, or a channel appears twice.
    #[error("{0}")]
    Invalid(String),
    /// Rendering failed: a variable is missing, or an expression fails on the values given.
    #[error("{0}")]
    Render(String),
}

/// The template registry: the store behind a cache of saved versions.
#[derive(Debug)]
pub struct Templates {
    store: Store,
    versions: BoundedCache<(String, TemplateRef), Arc<Template>>,
    limits: RenderLimits,
}

impl Templates {
    pub fn new(store: Store) -> Self {
        Self {
            store,
            versions: BoundedCache::new(CACHE_CAPACITY),
            limits: RenderLimits::default(),
        }
    }

    /// The same registry, rendering under `limits`.
    pub fn with_limits(self, limits: RenderLimits) -> Self {
        Self { limits, ..self }
    }

    /// Renders like [`render`], under this registry's limits, on a blocking thread (a render is
    /// CPU work and must not stall the async workers that answer callers and probes).
    pub async fn render(
        &self,
        template: Arc<Template>,
        channel: Channel,
        variables: serde_json::Value,
    ) -> Result<Vec<u8>, Error> {
        let limits = self.limits;
        let task =
            tokio::task::spawn_blocking(move || render(&template, channel, &variables, &limits));
        match tokio::time::timeout(limits.timeout, task).await {
            Ok(Ok(result)) => result,
            Ok(Err(err)) => Err(Error::Render(format!(
                "the template cannot be rendered: {err}"
            ))),
            Err(_) => Err(Error::Render(format!(
                "rendering took longer than {:?}",
                limits.timeout
            ))),
        }
    }

    /// Checks and saves a new version of `id`; returns it.
    pub async fn save(
        &self,
        customer_id: &str,
        id: &str,
        contents: Vec<Content>,
    ) -> Result<Template, Error> {
        check(&contents)?;
        Ok(self
            .store
            .save_templates(customer_id, &[(id.to_owned(), contents)], now_millis())
            .await?
            .remove(0))
    }

    /// Checks every template first, then saves a new version of each in one transaction: a
    /// bad row in an imported sheet saves nothing.
    pub async fn save_all(
        &self,
        customer_id: &str,
        templates: &[(String, Vec<Content>)],
    ) -> Result<Vec<Template>, Error> {
        for (id, contents) in templates {
            check(contents).map_err(|err| Error::Invalid(format!("template {id:?}: {err}")))?;
        }
        Ok(self
            .store
            .save_templates(customer_id, templates, now_millis())
            .await?)
    }

    /// The latest version of `id`.
    pub async fn latest(&self, customer_id: &str, id: &str) -> Result<Template, Error> {
        self.store
            .latest_template(customer_id, id)
            .await?
            .ok_or_else(|| Error::NotFound(format!("template {id:?} not found")))
    }

    /// The latest version of every template of a customer, ordered by id.
    pub async fn list(&self, customer_id: &str) -> Result<Vec<Template>, Error> {
        Ok(self.store.latest_templates(customer_id).await?)
    }

    /// One saved version, from the cache when it has been read before.
    pub async fn version(
        &self,
        customer_id: &str,
        reference: &TemplateRef,
    ) -> Result<Arc<Template>, Error> {
        let key = (customer_id.to_owned(), reference.clone());
        if let Some(found) = self.versions.get(&key) {
            return Ok(found);
        }
        let template = self
            .store
            .template_version(customer_id, &reference.id, reference.version)
            .await?
            .ok_or_else(|| {
                Error::NotFound(format!(
                    "template {:?} version {} not found",
                    reference.id, reference.version
                ))
            })?;
        let template = Arc::new(template);
        self.versions.insert(key, template.clone());
        Ok(template)
    }
}

/// Every subject and body compiles, and each channel appears at most once.
pub fn check(contents: &[Content]) -> Result<(), Error> {
    if contents.is_empty() {
        return Err(Error::Invalid("has no content for any channel".into()));
    }
    let env = environment();
    for (i, content) in contents.iter().enumerate() {
        if contents[..i].iter().any(|c| c.channel == content.channel) {
            return Err(Error::Invalid(format!(
                "the {} channel appears twice",
                content.channel.as_str()
            )));
        }
        if content.body.is_empty() {
            return Err(Error::Invalid(format!(
                "the {} body is empty",
                content.channel.as_str()
            )));
        }
        for (part, source) in [("subject", &content.subject), ("body", &content.body)] {
            env.template_from_str(source).map_err(|err| {
                Error::Invalid(format!(
                    "the {} {part} does not compile: {err}",
                    content.channel.as_str()
                ))
            })?;
        }
    }
    Ok(())
}

/// Renders `template` for `channel` (`Invalid` if it has no content for it) with `variables` (a JSON object) into the payload that
/// channel's sink takes: the body itself for a webhook; `{"title", "body"}` for push;
/// `{"subject", "body"}` for e-mail; `{"body"}` for SMS.
pub fn render(
    template: &Template,
    channel: Channel,
    variables: &serde_json::Value,
    limits: &RenderLimits,
) -> Result<Vec<u8>, Error> {
    let content = template.content(channel).ok_or_else(|| {
        Error::Invalid(format!(
            "template {:?} version {} has no content for the {} channel",
            template.id,
            template.version,
            channel.as_str()
        ))
    })?;
    let mut env = environment();
    env.set_fuel(Some(limits.fuel));
    let context = minijinja::Value::from_serialize(variables);
    let render = |part: &str, source: &str| {
        render_part(&env, part, source, &context, variables, limits.max_bytes)
    };
    let body = render("body", &content.body)?;
    let subject = match channel {
        Channel::Webhook | Channel::Sms => String::new(),
        _ => render("subject", &content.subject)?,
    };
    let payload = match channel {
        Channel::Webhook => body.into_bytes(),
        Channel::Sms => serde_json::json!({ "body": body }).to_string().into_bytes(),
        Channel::Email => serde_json::json!({ "subject": subject, "body": body })
            .to_string()
            .into_bytes(),
        Channel::Fcm | Channel::Apns => serde_json::json!({ "title": subject, "body": body })
            .to_string()
            .into_bytes(),
    };
    if payload.len() > limits.max_bytes {
        return Err(too_large("payload", limits.max_bytes));
    }
    Ok(payload)
}

/// Renders one part (subject or body), writing into a buffer that refuses to grow past
/// `max_bytes`, so an oversized render stops as soon as it is too big.
fn render_part(
    env: &Environment<'_>,
    part: &str,
    source: &str,
    context: &minijinja::Value,
    variables: &serde_json::Value,
    max_bytes: usize,
) -> Result<String, Error> {
    let failed = |err: minijinja::Error| {
        let missing = match err.kind() {
            minijinja::ErrorKind::UndefinedError => missing_variables(env, source, variables),
            _ => Vec::new(),
        };
        Error::Render(match missing.is_empty() {
            true => format!("the {part} cannot be rendered: {err}"),
            false => format!(
                "the {part} uses variables not given: {}",
                missing.join(", ")
            ),
        })
    };
    let template = env.template_from_str(source).map_err(failed)?;
    let mut out = CappedBuffer {
        bytes: Vec::new(),
        max_bytes,
        overflowed: false,
    };
    match template.render_captured_to(context, &mut out) {
        Ok(_) => String::from_utf8(out.bytes)
            .map_err(|err| Error::Render(format!("the {part} is not UTF-8: {err}"))),
        Err(_) if out.overflowed => Err(too_large(part, max_bytes)),
        Err(err) => Err(failed(err)),
    }
}

fn too_large(part: &str, max_bytes: usize) -> Error {
    Error::Render(format!(
        "the rendered {part} is larger than {max_bytes} bytes (the payload limit)"
    ))
}

/// Output that fails once it would exceed `max_bytes`.
struct CappedBuffer {
    bytes: Vec<u8>,
    max_bytes: usize,
    overflowed: bool,
}

impl std::io::Write for CappedBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.bytes.len() + buf.len() > self.max_bytes {
            self.overflowed = true;
            return Err(std::io::Error::other("rendered output over the limit"));
        }
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The top-level variables `source` uses that `variables` lacks, sorted (what a caller most
/// often gets wrong, named rather than left to minijinja's "undefined value").
fn missing_variables(
    env: &Environment<'_>,
    source: &str,
    variables: &serde_json::Value,
) -> Vec<String> {
    let Ok(template) = env.template_from_str(source) else {
        return Vec::new();
    };
    let mut missing: Vec<String> = template
        .undeclared_variables(false)
        .into_iter()
        .filter(|name| variables.get(name).is_none() && env.globals().all(|(g, _)| g != name))
        .collect();
    missing.sort();
    missing
}

/// Strict: a variable the template uses but the caller did not give is an error, never an
/// empty string in a message to a person.
fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template(contents: Vec<Content>) -> Template {
        Template {
            customer_id: "shop".into(),
            id: "bill".into(),
            version: 3,
            contents,
            created_at: 0,
        }
    }

    fn content(channel: Channel, subject: &str, body: &str) -> Content {
        Content {
            channel,
            subject: subject.into(),
            body: body.into(),
        }
    }

    #[test]
    fn a_runaway_loop_runs_out_of_fuel() {
        let t = template(vec![content(
            Channel::Webhook,
            "",
            "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}",
        )]);
        let limits = RenderLimits {
            max_bytes: usize::MAX,
            ..RenderLimits::default()
        };
        let started = std::time::Instant::now();
        let err = render(&t, Channel::Webhook, &serde_json::json!({}), &limits).unwrap_err();
        assert!(err.to_string().contains("fuel"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(5), "bounded");
    }

    #[test]
    fn output_over_the_payload_limit_is_refused_while_rendering() {
        let t = template(vec![content(
            Channel::Sms,
            "",
            "{% for i in range(2000) %}0123456789{% endfor %}",
        )]);
        let limits = RenderLimits {
            max_bytes: 10_000,
            ..RenderLimits::default()
        };
        let err = render(&t, Channel::Sms, &serde_json::json!({}), &limits).unwrap_err();
        assert!(err.to_string().contains("larger than 10000 bytes"), "{err}");
        // Just under the limit for the body, but over it once wrapped in the SMS payload.
        let t = template(vec![content(
            Channel::Sms,
            "",
            "{% for i in range(1000) %}0123456789{% endfor %}",
        )]);
        let err = render(&t, Channel::Sms, &serde_json::json!({}), &limits).unwrap_err();
        assert!(err.to_string().contains("payload"), "{err}");
    }

    #[test]
    fn renders_each_channel_into_its_payload_shape() {
        let t = template(vec![
            content(
                Channel::Email,
                "Bill {{ month }}",
                "Hello {{ name }}, you owe {{ amount }}.",
            ),
            content(Channel::Sms, "", "{{ name }}: {{ amount }} due"),
            content(Channel::Webhook, "", r#"{"name": {{ name|tojson }}}"#),
            content(
                Channel::Fcm,
                "{{ month }}",
                "{% for i in items %}{{ i }} {% endfor %}",
            ),
        ]);
        let vars =
            serde_json::json!({"name": "Ann", "amount": 12, "month": "May", "items": [1, 2]});
        let email: serde_json::Value = serde_json::from_slice(
            &render(&t, Channel::Email, &vars, &RenderLimits::default()).unwrap(),
        )
        .unwrap();
        assert_eq!(
            email,
            serde_json::json!({"subject": "Bill May", "body": "Hello Ann, you owe 12."})
        );
        let sms: serde_json::Value = serde_json::from_slice(
            &render(&t, Channel::Sms, &vars, &RenderLimits::default()).unwrap(),
        )
        .unwrap();
        assert_eq!(sms, serde_json::json!({"body": "Ann: 12 due"}));
        assert_eq!(
            render(&t, Channel::Webhook, &vars, &RenderLimits::default()).unwrap(),
            br#"{"name": "Ann"}"#
        );
        let push: serde_json::Value = serde_json::from_slice(
            &render(&t, Channel::Fcm, &vars, &RenderLimits::default()).unwrap(),
        )
        .unwrap();
        assert_eq!(push, serde_json::json!({"title": "May", "body": "1 2 "}));
    }

    #[test]
    fn a_missing_variable_or_channel_is_an_error() {
        let t = template(vec![content(Channel::Sms, "", "Hi {{ name }}")]);
        let err = render(
            &t,
            Channel::Sms,
            &serde_json::json!({}),
            &RenderLimits::default(),
        )
        .unwrap_err();
        assert!(matches!(err, Error::Render(_)), "{err}");
        assert!(
            err.to_string().ends_with("variables not given: name"),
            "{err}"
        );
        let err = render(
            &t,
            Channel::Email,
            &serde_json::json!({"name": "x"}),
            &RenderLimits::default(),
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("no content for the email channel"),
            "{err}"
        );
    }

    #[test]
    fn bad_templates_are_refused_when_saved() {
        assert!(check(&[content(Channel::Sms, "", "Hi {{ name")]).is_err());
        assert!(check(&[content(Channel::Sms, "", "")]).is_err());
        assert!(check(&[]).is_err());
        let twice = [
            content(Channel::Sms, "", "a"),
            content(Channel::Sms, "", "b"),
        ];
        assert!(check(&twice).unwrap_err().to_string().contains("twice"));
        assert!(check(&[content(Channel::Email, "{% if %}", "ok")]).is_err());
        check(&[content(Channel::Email, "{{ s }}", "{{ b }}")]).unwrap();
    }
}
