//! The outbound target policy at the front door: an `UpsertCustomer` whose webhook URL, provider
//! base URL, OAuth token URI or SMTP host is an address the policy refuses is INVALID_ARGUMENT,
//! naming the field and the address class. Host names pass here: what they resolve to can change,
//! so the sinks check it at every connection.

use std::net::IpAddr;

use crate::error::Error;
use crate::model::Customer;
use crate::sink::target_policy::{Refused, TargetPolicy};

/// Checks every target `customer` names.
pub(super) fn check(policy: &TargetPolicy, customer: &Customer) -> Result<(), Error> {
    let channels = &customer.channels;
    let urls = [
        ("customer.webhook_url", Some(customer.webhook_url.as_str())),
        (
            "customer.fcm.base_url",
            channels.fcm.as_ref().map(|s| s.base_url.as_str()),
        ),
        (
            "customer.fcm.service_account_json",
            channels
                .fcm
                .as_ref()
                .map(|s| s.service_account.token_uri.as_str()),
        ),
        (
            "customer.apns.base_url",
            channels.apns.as_ref().map(|s| s.base_url.as_str()),
        ),
        (
            "customer.sms.base_url",
            channels.sms.as_ref().map(|s| s.base_url.as_str()),
        ),
    ];
    for (field, url) in urls {
        let Some(url) = url.filter(|u| !u.is_empty()) else {
            continue;
        };
        // The URLs were checked to parse before; one that does not has nothing to resolve.
        if let Ok(url) = reqwest::Url::parse(url) {
            policy.check_url(&url).map_err(|r| refused(field, &r))?;
        }
    }
    if let Some(email) = &channels.email {
        let host = email
            .smtp_host
            .trim_start_matches('[')
            .trim_end_matches(']');
        if let Ok(ip) = host.parse::<IpAddr>() {
            policy
                .check(host, ip)
                .map_err(|r| refused("customer.email.smtp_host", &r))?;
        }
    }
    Ok(())
}

fn refused(field: &'static str, refused: &Refused) -> Error {
    Error::invalid(
        field,
        format!(
            "{} is a {} address, which deliveries may not reach (the operator can open it with --allow-target-cidr)",
            refused.ip, refused.class
        ),
    )
}
