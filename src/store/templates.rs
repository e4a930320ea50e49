//! Template rows: every saved version, and each template's latest version number.

use sqlx::Acquire as _;
use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Durability, Error, Store};
use crate::model::{Content, EpochMillis, Template};

const COLUMNS: &str = "t.customer_id, t.template_id, t.version, t.contents, t.created_at";

impl Store {
    /// Saves a new version of each template in one transaction and returns them.
    pub async fn save_templates(
        &self,
        customer_id: &str,
        templates: &[(String, Vec<Content>)],
        now: EpochMillis,
    ) -> Result<Vec<Template>, Error> {
        let mut conn = self.writer(Durability::Durable).await?;
        let mut tx = conn.begin().await?;
        let mut saved = Vec::with_capacity(templates.len());
        for (id, contents) in templates {
            let version: i64 = sqlx::query(
                "INSERT INTO template_heads (customer_id, template_id, version) VALUES ($1, $2, 1) \
                 ON CONFLICT (customer_id, template_id) DO UPDATE SET \
                   version = template_heads.version + 1 \
                 RETURNING version",
            )
            .bind(customer_id)
            .bind(id.as_str())
            .fetch_one(&mut *tx)
            .await?
            .try_get(0)?;
            let json = serde_json::to_string(contents)
                .map_err(|err| Error::Corrupt(format!("cannot encode a template: {err}")))?;
            sqlx::query(
                "INSERT INTO templates (customer_id, template_id, version, contents, created_at) \
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(customer_id)
            .bind(id.as_str())
            .bind(version)
            .bind(json)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            saved.push(Template {
                customer_id: customer_id.to_owned(),
                id: id.clone(),
                version,
                contents: contents.clone(),
                created_at: now,
            });
        }
        tx.commit().await?;
        Ok(saved)
    }

    /// The latest version of one template.
    pub async fn latest_template(
        &self,
        customer_id: &str,
        id: &str,
    ) -> Result<Option<Template>, Error> {
        let sql = format!(
            "SELECT {COLUMNS} FROM template_heads h JOIN templates t \
               ON t.customer_id = h.customer_id AND t.template_id = h.template_id \
              AND t.version = h.version \
             WHERE h.customer_id = $1 AND h.template_id = $2"
        );
        let row = sqlx::query(&sql)
            .bind(customer_id)
            .bind(id)
            .fetch_optional(&self.read)
            .await?;
        row.as_ref().map(template_from_row).transpose()
    }

    /// The latest version of every template of a customer, ordered by id.
    pub async fn latest_templates(&self, customer_id: &str) -> Result<Vec<Template>, Error> {
        let sql = format!(
            "SELECT {COLUMNS} FROM template_heads h JOIN templates t \
               ON t.customer_id = h.customer_id AND t.template_id = h.template_id \
              AND t.version = h.version \
             WHERE h.customer_id = $1 ORDER BY h.template_id"
        );
        let rows = sqlx::query(&sql)
            .bind(customer_id)
            .fetch_all(&self.read)
            .await?;
        rows.iter().map(template_from_row).collect()
    }

    /// One saved version.
    pub async fn template_version(
        &self,
        customer_id: &str,
        id: &str,
        version: i64,
    ) -> Result<Option<Template>, Error> {
        let sql = format!(
            "SELECT {COLUMNS} FROM templates t \
             WHERE t.customer_id = $1 AND t.template_id = $2 AND t.version = $3"
        );
        let row = sqlx::query(&sql)
            .bind(customer_id)
            .bind(id)
            .bind(version)
            .fetch_optional(&self.read)
            .await?;
        row.as_ref().map(template_from_row).transpose()
    }
}

fn template_from_row(row: &AnyRow) -> Result<Template, Error> {
    let contents: String = row.try_get(3)?;
    Ok(Template {
        customer_id: row.try_get(0)?,
        id: row.try_get(1)?,
        version: row.try_get(2)?,
        contents: serde_json::from_str(&contents)
            .map_err(|err| Error::Corrupt(format!("unreadable template contents: {err}")))?,
        created_at: row.try_get(4)?,
    })
}
