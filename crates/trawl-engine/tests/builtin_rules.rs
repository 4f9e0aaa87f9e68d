//! The built-in rule set: every example found exactly once by its rule,
//! every near miss not found, ids stable and well-formed, every rule
//! bounded.

use trawl_engine::{Engine, RuleSet, ScanEngine};

fn is_kebab_case(id: &str) -> bool {
    !id.is_empty()
        && !id.starts_with('-')
        && !id.ends_with('-')
        && !id.contains("--")
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

#[test]
fn builtin_loads_without_warnings() {
    let rules = RuleSet::builtin();
    assert!(rules.warnings().is_empty(), "{:?}", rules.warnings());
    assert!(rules.len() >= 200, "only {} rules", rules.len());
}

#[test]
fn rule_ids_are_unique_and_kebab_case() {
    let rules = RuleSet::builtin();
    let mut seen = std::collections::HashSet::new();
    for rule in &rules {
        assert!(
            is_kebab_case(rule.id()),
            "rule id {:?} is not kebab-case",
            rule.id()
        );
        assert!(seen.insert(rule.id()), "duplicate rule id {}", rule.id());
        assert!(
            !rule.description().is_empty(),
            "{} has no description",
            rule.id()
        );
    }
}

#[test]
fn every_builtin_rule_is_bounded_and_has_keywords() {
    let engine = Engine::builtin();
    for rule in engine.rules() {
        assert!(rule.is_bounded(), "{} is unbounded", rule.id());
        assert!(!rule.keywords().is_empty(), "{} has no keyword", rule.id());
    }
    let longest = engine.rules().iter().map(|r| r.max_len()).max().unwrap();
    assert!(engine.max_match_len() >= longest);
    assert!(
        engine.max_match_len() <= 16 * 1024,
        "{}",
        engine.max_match_len()
    );
}

#[test]
fn the_required_rules_exist() {
    let rules = RuleSet::builtin();
    for id in [
        "aws-access-token",
        "aws-secret-access-key",
        "github-pat",
        "github-fine-grained-pat",
        "github-oauth",
        "github-app-token",
        "gitlab-pat",
        "slack-bot-token",
        "slack-user-token",
        "slack-webhook-url",
        "stripe-access-token",
        "gcp-api-key",
        "twilio-api-key",
        "sendgrid-api-token",
        "npm-access-token",
        "pypi-upload-token",
        "heroku-api-key",
        "shopify-access-token",
        "shopify-shared-secret",
        "azure-storage-connection-string",
        "private-key",
        "jwt",
        "generic-api-key",
        // cloud
        "aws-session-token",
        "aws-mws-key",
        "gcp-service-account-key-id",
        "gcp-service-account-private-key",
        "gcp-oauth-client-secret",
        "azure-sas-token",
        "azure-devops-pat",
        "azure-cosmosdb-key",
        "alibaba-access-key-id",
        "alibaba-secret-key",
        "digitalocean-pat",
        "linode-api-token",
        "scaleway-secret-key",
        "cloudflare-api-key",
        "cloudflare-global-api-key",
        "cloudflare-origin-ca-key",
        "heroku-api-key-v2",
        "flyio-access-token",
        "vercel-api-token",
        "netlify-access-token",
        // source hosting
        "github-refresh-token",
        "gitlab-ptt",
        "gitlab-rrt",
        "gitlab-cicd-job-token",
        "gitlab-deploy-token",
        "gitlab-feature-flag-client-token",
        "gitlab-feed-token",
        "gitlab-incoming-mail-token",
        "gitlab-kubernetes-agent-token",
        "gitlab-oauth-app-secret",
        "gitlab-runner-authentication-token",
        "gitlab-scim-token",
        "gitlab-session-cookie",
        "bitbucket-client-id",
        "bitbucket-client-secret",
        "gitea-access-token",
        // CI
        "circleci-personal-token",
        "travisci-access-token",
        "buildkite-api-token",
        "jenkins-api-token",
        "droneci-access-token",
        "teamcity-access-token",
        // chat
        "slack-app-token",
        "slack-config-access-token",
        "slack-legacy-token",
        "discord-api-token",
        "discord-webhook-url",
        "discord-client-secret",
        "telegram-bot-api-token",
        "microsoft-teams-webhook",
        "mattermost-access-token",
        "zulip-api-key",
        // payments
        "stripe-webhook-secret",
        "square-access-token",
        "braintree-access-token",
        "paypal-client-secret",
        "adyen-api-key",
        "plaid-api-token",
        "coinbase-access-token",
        "flutterwave-secret-key",
        "gocardless-api-token",
        // messaging
        "mailgun-private-api-token",
        "mailchimp-api-key",
        "mandrill-api-key",
        "postmark-server-token",
        "sparkpost-api-token",
        "twilio-auth-token",
        "vonage-api-secret",
        "messagebird-api-token",
        "sendinblue-api-token",
        // registries
        "rubygems-api-token",
        "nuget-api-key",
        "crates-io-api-token",
        "docker-hub-pat",
        "jfrog-api-key",
        "artifactory-api-key",
        "clojars-api-token",
        // databases
        "mysql-uri",
        "mongodb-uri",
        "redis-uri",
        "amqp-uri",
        "mssql-uri",
        "planetscale-password",
        "supabase-access-token",
        "databricks-api-token",
        "snowflake-uri",
        "neon-api-key",
        // observability
        "datadog-access-token",
        "new-relic-user-api-key",
        "new-relic-browser-api-token",
        "new-relic-insert-key",
        "sentry-access-token",
        "grafana-service-account-token",
        "honeycomb-api-key",
        "dynatrace-api-token",
        "splunk-hec-token",
        "sumologic-access-token",
        "rollbar-access-token",
        "bugsnag-api-key",
        "pagerduty-api-key",
        "opsgenie-api-key",
        // AI
        "openai-api-key",
        "anthropic-api-key",
        "huggingface-access-token",
        "cohere-api-token",
        "replicate-api-token",
        "groq-api-key",
        "perplexity-api-key",
        // keys
        "putty-private-key",
        "age-secret-key",
        "jwe",
        // SaaS
        "atlassian-api-token",
        "asana-pat",
        "linear-api-key",
        "notion-api-token",
        "airtable-api-key",
        "shopify-custom-access-token",
        "shopify-private-app-access-token",
        "hubspot-private-app-token",
        "zendesk-secret-key",
        "intercom-api-key",
        "okta-access-token",
        "auth0-client-secret",
        "contentful-delivery-api-token",
        "doppler-api-token",
        "vault-service-token",
        "hashicorp-tf-api-token",
        "1password-secret-key",
        "pulumi-api-token",
        "postman-api-token",
        "figma-pat",
        "dropbox-api-token",
        "box-api-token",
        "algolia-api-key",
        "mapbox-api-token",
        "twitch-api-token",
        "twitter-bearer-token",
        "facebook-access-token",
        "linkedin-client-secret",
    ] {
        assert!(rules.get(id).is_some(), "missing rule {id}");
    }
    assert_eq!(
        rules.iter().last().map(|r| r.id()),
        Some("generic-api-key"),
        "the generic rule must come last"
    );
}

#[test]
fn every_rule_has_examples_and_near_misses() {
    for rule in &RuleSet::builtin() {
        assert!(!rule.examples().is_empty(), "{} has no example", rule.id());
        assert!(
            !rule.near_misses().is_empty(),
            "{} has no near miss",
            rule.id()
        );
    }
}

#[test]
fn examples_are_found_exactly_once_and_near_misses_not_at_all() {
    let engine = Engine::builtin();
    let mut failures = Vec::new();
    for rule in engine.rules() {
        for example in rule.examples() {
            let found: Vec<_> = engine
                .scan_whole(example.as_bytes(), b"example.txt")
                .into_iter()
                .filter(|m| engine.rule_id(m.rule) == rule.id())
                .collect();
            if found.len() != 1 {
                failures.push(format!(
                    "{}: {} findings in example {example:?}",
                    rule.id(),
                    found.len()
                ));
                continue;
            }
            let m = &found[0];
            let matched = &example.as_bytes()[m.span.clone()];
            let secret = &example.as_bytes()[m.secret.clone()];
            // The secret group is resolved, and the keyword that made the rule
            // a candidate lies inside the match (which is what makes the
            // prefilter independent of chunking).
            if !(m.span.start <= m.secret.start && m.secret.end <= m.span.end) {
                failures.push(format!(
                    "{}: secret outside the match in {example:?}",
                    rule.id()
                ));
            }
            let lower = String::from_utf8_lossy(matched).to_lowercase();
            if !rule.keywords().iter().any(|k| lower.contains(k.as_str())) {
                failures.push(format!(
                    "{}: no keyword inside the match in {example:?}",
                    rule.id()
                ));
            }
            if let Some(floor) = rule.entropy() {
                assert!(trawl_engine::shannon_entropy(secret) >= floor);
            }
        }
        for near in rule.near_misses() {
            let found = engine
                .scan_whole(near.as_bytes(), b"example.txt")
                .into_iter()
                .filter(|m| engine.rule_id(m.rule) == rule.id())
                .count();
            if found != 0 {
                failures.push(format!("{}: near miss found: {near:?}", rule.id()));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn examples_have_the_expected_secret_for_key_rules() {
    let engine = Engine::builtin();
    let text = b"x = \"AKIAZ7Q3W5E6R2T4Y6U7\"\n";
    let found = engine.scan_whole(text, b"a.py");
    assert_eq!(found.len(), 1);
    assert_eq!(engine.rule_id(found[0].rule), "aws-access-token");
    assert_eq!(&text[found[0].secret.clone()], b"AKIAZ7Q3W5E6R2T4Y6U7");

    let uri = b"DATABASE_URL=postgres://app:Zk29xLq81vPw@db:5432/app\n";
    let found = engine.scan_whole(uri, b".env");
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(engine.rule_id(found[0].rule), "postgres-uri");
    assert_eq!(&uri[found[0].secret.clone()], b"Zk29xLq81vPw");
}

#[test]
fn specific_rules_win_over_the_generic_one() {
    let engine = Engine::builtin();
    let text = b"api_key = \"ghp_Zx8Kq2Lm9Np4Rt7Vw1Yb3Cd6Fg0Hj5Ks8QeT\"\n";
    let found = engine.scan_whole(text, b"a.py");
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(engine.rule_id(found[0].rule), "github-pat");
}
