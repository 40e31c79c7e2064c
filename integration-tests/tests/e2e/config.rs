use crate::common::*;

#[test]
fn check_config_accepts_the_shipped_file_and_explains_a_broken_one() {
    let shipped = shipped_config();
    let out = sagaflow_ok(&["check-config", shipped.to_str().unwrap()]);
    assert!(out.contains(": ok"), "{out}");
    assert!(out.contains("reserve_stock -> authorize_payment -> create_order -> capture_payment (pivot) -> commit_stock"), "{out}");

    let dir = data_dir("config");
    let broken = config_with(
        &dir,
        &[("action = \"stock.commit\"", "action = \"stock.comit\"")],
    );
    let out = sagaflow(&["check-config", broken.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("sagas.toml:"), "{err}");
    assert!(
        err.contains("saga checkout, step commit_stock: action stock.comit is not a registered activity; did you mean stock.commit?"),
        "{err}"
    );

    // Commands that load the config refuse to start on a broken one.
    let out = sagaflow(&[
        "run",
        "--until-idle",
        "--config",
        broken.to_str().unwrap(),
        "--data",
        dir.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("stock.comit"));
}
