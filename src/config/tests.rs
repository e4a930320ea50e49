use super::*;

#[test]
fn defaults_are_valid_and_sqlite() {
    let config = ServeConfig::defaults();
    config.validate().unwrap();
    assert_eq!(
        config.database_url(),
        "sqlite://floodgate-data/floodgate.db"
    );
    assert_eq!(config.dispatch_settings().retry.max_attempts, 12);
    assert!(config.allow_target_cidr.is_empty());
}

#[test]
fn allow_target_cidrs_repeat() {
    let config = ServeConfig::parse_from_args(
        [
            "--allow-target-cidr",
            "127.0.0.0/8",
            "--allow-target-cidr",
            "fd00::/8",
        ]
        .map(String::from),
    );
    let shown: Vec<String> = config
        .allow_target_cidr
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(shown, ["127.0.0.0/8", "fd00::/8"]);
}

#[test]
fn a_cluster_lease_must_outlast_an_attempt_on_postgres_only() {
    let args = |url: &str| {
        ServeConfig::parse_from_args(
            [
                "--database-url",
                url,
                "--webhook-timeout",
                "30s",
                "--lease",
                "60s",
            ]
            .map(String::from),
        )
    };
    assert!(matches!(
        args("postgres://db/floodgate").validate(),
        Err(ConfigError::LeaseTtlTooShort { .. })
    ));
    args("sqlite://x.db").validate().unwrap();
    let mut longer = args("postgres://db/floodgate");
    longer.cluster_lease_ttl = Duration::from_secs(40);
    longer.validate().unwrap();
}

#[test]
fn contradictions_are_rejected() {
    let config = ServeConfig::parse_from_args(["--lease".into(), "5s".into()]);
    assert!(matches!(
        config.validate(),
        Err(ConfigError::LeaseTooShort { .. })
    ));
    let config = ServeConfig::parse_from_args(["--admin-token".into(), " ".into()]);
    assert!(matches!(
        config.validate(),
        Err(ConfigError::EmptyToken("admin-token"))
    ));
    let mut config = ServeConfig::defaults();
    config.tls_cert = Some("cert.pem".into());
    assert!(matches!(config.validate(), Err(ConfigError::TlsIncomplete)));
    config.tls_key = Some("key.pem".into());
    config.validate().unwrap();
    assert!(config.tls_files().is_some());
}

#[test]
fn delivery_threads_default_to_half_the_cores_and_can_be_set() {
    let defaults = ServeConfig::defaults();
    assert_eq!(defaults.delivery_threads(1), 1);
    assert_eq!(defaults.delivery_threads(2), 1);
    assert_eq!(defaults.delivery_threads(3), 1);
    assert_eq!(defaults.delivery_threads(8), 4);
    let set = ServeConfig::parse_from_args(["--delivery-threads", "3"].map(String::from));
    assert_eq!(set.delivery_threads(2), 3);
}
