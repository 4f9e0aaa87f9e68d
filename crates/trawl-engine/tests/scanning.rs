//! Scanning behaviour: inline markers, bytes that are not text, entropy
//! floors, fingerprints.

use trawl_engine::{Engine, ScanEngine, fingerprint, fingerprint_hex};

const PAT: &str = "ghp_Zx8Kq2Lm9Np4Rt7Vw1Yb3Cd6Fg0Hj5Ks8QeT";

#[test]
fn trawl_allow_on_the_line_suppresses_the_match() {
    let engine = Engine::builtin();
    let text = format!("token = {PAT} # trawl:allow\nother = {PAT}\n");
    let found = engine.scan_whole(text.as_bytes(), b"f");
    assert_eq!(found.len(), 1);
    assert!(found[0].span.start > text.find('\n').unwrap());
    // gitleaks' marker works too, before or after the secret.
    let text = format!("// gitleaks:allow\n// gitleaks:allow {PAT}\n");
    assert!(engine.scan_whole(text.as_bytes(), b"f").is_empty());
    // A marker on the next line does not count.
    let text = format!("{PAT}\n# trawl:allow\n");
    assert_eq!(engine.scan_whole(text.as_bytes(), b"f").len(), 1);
}

#[test]
fn a_marker_far_away_on_a_huge_line_does_not_count() {
    let engine = Engine::builtin();
    let pad = "x ".repeat(2000);
    let text = format!("{PAT} {pad} trawl:allow");
    assert_eq!(engine.scan_whole(text.as_bytes(), b"f").len(), 1);
    let text = format!("trawl:allow {pad} {PAT}");
    assert_eq!(engine.scan_whole(text.as_bytes(), b"f").len(), 1);
}

#[test]
fn nul_bytes_and_invalid_utf8_around_a_secret() {
    let engine = Engine::builtin();
    let mut data = vec![0u8, 0xff, 0xfe, 0x00, b'\n', 0xc3, 0x28, 0];
    data.extend_from_slice(PAT.as_bytes());
    data.extend_from_slice(&[0, 0x80, 0xff, 0, 0]);
    let found = engine.scan_whole(&data, b"blob.bin");
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(&data[found[0].secret.clone()], PAT.as_bytes());

    let mut data = b"\xff\xfeaws_access_key_id=\x00AKIAZ7Q3W5E6R2T4Y6U7\x00\xc0".to_vec();
    data.extend_from_slice(&[0x80; 10]);
    let found = engine.scan_whole(&data, b"\xffbad-path");
    assert_eq!(found.len(), 1);
    assert_eq!(engine.rule_id(found[0].rule), "aws-access-token");
}

#[test]
fn entropy_floor_applies_to_the_secret() {
    let engine = Engine::builtin();
    let low = b"api_key = \"abababababababababab\"\n";
    assert!(engine.scan_whole(low, b"f").is_empty());
    let high = b"api_key = \"q8Wm3Zr7Tx2Lp9Kd4Vn6Hs1\"\n";
    let found = engine.scan_whole(high, b"f");
    assert_eq!(found.len(), 1);
    assert_eq!(engine.rule_id(found[0].rule), "generic-api-key");
}

#[test]
fn generic_placeholders_are_not_reported() {
    let engine = Engine::builtin();
    for text in [
        "password = \"${DB_PASSWORD}\"",
        "api_key: <your-api-key>",
        "secret = xxxxxxxxxxxxxxxxxxxxxx",
        "password = \"changeme-Q8w7E6r5\"",
        "api_key = \"example-Q8w7E6r5T4y3\"",
    ] {
        assert!(
            engine.scan_whole(text.as_bytes(), b"f").is_empty(),
            "{text}"
        );
    }
}

#[test]
fn keywords_are_listed_once_each() {
    let engine = Engine::builtin();
    let keywords: Vec<&str> = engine.keywords().collect();
    let mut sorted = keywords.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted.len(), keywords.len());
    assert!(keywords.contains(&"ghp_"));
    assert!(keywords.iter().all(|k| *k == k.to_lowercase()));
}

#[test]
fn scratch_is_reusable_and_output_independent_of_history() {
    let engine = Engine::builtin();
    let mut scratch = engine.new_scratch();
    let text = format!("a {PAT} b");
    let chunk = trawl_engine::Chunk::whole(text.as_bytes(), b"f");
    let mut first = Vec::new();
    engine.scan_chunk_into(&chunk, &mut scratch, &mut first);
    let mut other = Vec::new();
    let noise = trawl_engine::Chunk::whole(b"password=Q8w7E6r5T4y3U2i1", b"g");
    engine.scan_chunk_into(&noise, &mut scratch, &mut other);
    let mut second = Vec::new();
    engine.scan_chunk_into(&chunk, &mut scratch, &mut second);
    assert_eq!(first, second);
}

#[test]
fn fingerprints() {
    assert_eq!(
        fingerprint_hex("a", b"b"),
        "59b271ae1bbcb1d31d41929817f4b16fb439eb4f31520b5ad1d5ce98920a7138"
    );
    assert_eq!(
        fingerprint("github-pat", PAT.as_bytes()),
        fingerprint("github-pat", PAT.as_bytes())
    );
    assert_ne!(
        fingerprint("jwt", PAT.as_bytes()),
        fingerprint("github-pat", PAT.as_bytes())
    );
}
