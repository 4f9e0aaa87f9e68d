//! The SARIF log of `SarifSink`, validated against the official SARIF
//! 2.1.0 JSON schema (`tests/data/sarif-schema-2.1.0.json`, the
//! `sarif-2.1.0-rtm.5` schema that code-scanning services validate with;
//! copied from the `@microsoft/jest-sarif` npm package, MIT). One change:
//! the schema's two `language` patterns have an unbalanced `]`
//! (`^[a-zA-Z]{2}|^[a-zA-Z]{2}-[a-zA-Z]{2}]?$`, fixed in later revisions
//! as below), which the validator refuses to compile; our copy has
//! `^[a-zA-Z]{2}(-[a-zA-Z]{2})?$`. trawl's logs set no `language`.

use std::sync::Arc;

use trawl_scheduler::{EventSink, Finding, SARIF_FINGERPRINT_KEY, SarifRule, SarifSink, hex};

fn finding(rule: &str, path: &[u8], line: u64, secret: &[u8]) -> Finding {
    Finding {
        rule_id: rule.into(),
        path: Arc::from(path),
        line,
        column: 7,
        start: 100,
        end: 100 + secret.len() as u64,
        secret: secret.to_vec(),
        fingerprint: [line as u8; 32],
        context: Default::default(),
    }
}

fn rules() -> Vec<SarifRule> {
    ["aws-access-token", "private-key"]
        .map(|id| SarifRule {
            id: id.into(),
            description: format!("Detected {id}."),
        })
        .into()
}

fn log(findings: &[Finding]) -> serde_json::Value {
    let mut sink = SarifSink::new(Vec::new(), "0.1.0", rules());
    for f in findings {
        sink.finding(f).unwrap();
    }
    sink.finish().unwrap();
    let text = String::from_utf8(sink.into_inner()).unwrap();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// What the schema finds wrong with `log`.
fn schema_errors(log: &serde_json::Value) -> Vec<String> {
    let schema: serde_json::Value =
        serde_json::from_str(include_str!("data/sarif-schema-2.1.0.json")).unwrap();
    let validator = jsonschema::validator_for(&schema).expect("the schema compiles");
    validator
        .iter_errors(log)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect()
}

fn assert_valid(log: &serde_json::Value) {
    let errors = schema_errors(log);
    assert!(errors.is_empty(), "{errors:#?}\n{log:#}");
}

#[test]
fn the_schema_refuses_what_is_not_sarif() {
    let mut broken = log(&[finding("private-key", b"a", 1, b"k")]);
    broken["runs"][0]["results"][0]["locations"][0]["physicalLocation"]["region"]["startLine"] =
        0.into();
    broken["version"] = "2.0.0".into();
    let errors = schema_errors(&broken);
    assert_eq!(errors.len(), 2, "{errors:#?}");
}

#[test]
fn a_log_of_findings_is_valid_sarif_and_holds_no_whole_secret() {
    let secret = b"AKIAQWERTYUIOPASDFGH";
    let key = b"-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA\n-----END RSA PRIVATE KEY-----";
    let findings = [
        finding("aws-access-token", b"src/app config.py", 3, secret),
        finding("private-key", b"keys/id_\xffrsa", 1, key),
        finding(
            "not-in-the-rule-list",
            b"s3://bucket/logs/a.log",
            9,
            b"tok_123456",
        ),
    ];
    let log = log(&findings);
    assert_valid(&log);

    let run = &log["runs"][0];
    assert_eq!(run["tool"]["driver"]["name"], "trawl");
    assert_eq!(run["tool"]["driver"]["rules"][1]["id"], "private-key");
    let results = run["results"].as_array().unwrap();
    assert_eq!(results.len(), 3);
    let aws = &results[0];
    assert_eq!(aws["ruleIndex"], 0);
    assert_eq!(
        aws["partialFingerprints"][SARIF_FINGERPRINT_KEY],
        hex(&findings[0].fingerprint)
    );
    let location = &aws["locations"][0]["physicalLocation"];
    assert_eq!(location["artifactLocation"]["uri"], "src/app%20config.py");
    let region = &location["region"];
    assert_eq!(
        [
            &region["startLine"],
            &region["startColumn"],
            &region["endLine"],
            &region["endColumn"]
        ],
        [3, 7, 3, 27]
    );
    let key_region = &results[1]["locations"][0]["physicalLocation"]["region"];
    assert_eq!(
        (&key_region["endLine"], &key_region["endColumn"]),
        (&3.into(), &30.into())
    );
    assert_eq!(
        results[1]["locations"][0]["physicalLocation"]["artifactLocation"]["uri"],
        "keys/id_%FFrsa"
    );
    assert!(results[2].get("ruleIndex").is_none(), "no rule to point at");

    let text = log.to_string();
    assert!(!text.contains("AKIAQWERTYUIOPASDFGH") && !text.contains("MIIEpA"));
    assert!(text.contains("AKIA…"));
}

#[test]
fn a_log_without_findings_is_valid_sarif() {
    let log = log(&[]);
    assert_valid(&log);
    assert_eq!(log["runs"][0]["results"], serde_json::json!([]));
}
