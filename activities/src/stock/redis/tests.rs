//! Unit tests of the key layout and the URL masking.

use super::*;

#[test]
fn every_key_of_a_sku_shares_its_hash_tag() {
    // Redis Cluster hashes only what is between the first `{` and the
    // next `}`: the three keys must agree on it, whatever the prefix.
    let tag = |key: &str| {
        let open = key.find('{').unwrap();
        let close = open + key[open..].find('}').unwrap();
        key[open + 1..close].to_owned()
    };
    for (prefix, sku) in [("sagaflow:", "SKU-1"), ("a:b:", "x}y"), ("p", "{z")] {
        let SkuKeys(keys) = sku_keys(prefix, sku);
        let tags: Vec<String> = keys.iter().map(|k| tag(k)).collect();
        assert!(tags.iter().all(|t| *t == tags[0]), "{keys:?}");
    }
}

#[test]
fn passwords_are_masked() {
    assert_eq!(
        mask_password("redis://:s3cret@h:6379/0"),
        "redis://:***@h:6379/0"
    );
    assert_eq!(mask_password("redis://h:6379"), "redis://h:6379");
}
