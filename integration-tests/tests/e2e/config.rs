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

/// Runs `sagaflow ARGS` with `env` set (and the real variables removed),
/// expects failure, returns stderr.
fn fails_with(args: &[&str], env: &[(&str, &str)]) -> String {
    let mut c = std::process::Command::new(bin());
    c.args(args)
        .env_remove("SAGAFLOW_CONFIG")
        .env_remove("SAGAFLOW_DATA")
        .env_remove("SAGAFLOW_REDIS_URL")
        .env_remove("SAGAFLOW_SERVICEBUS_CONNECTION")
        .env_remove("SAGAFLOW_COSMOS_ENDPOINT")
        .env_remove("SAGAFLOW_COSMOS_KEY");
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c.output().unwrap();
    assert!(!out.status.success(), "sagaflow {args:?} should fail");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_profile_whose_service_is_missing_or_unreachable_fails_at_start_up() {
    let dir = data_dir("profiles");
    let d = dir.to_str().unwrap();

    // Redis: no variable, then a server that does not answer.
    let redis = config_with(&dir, &[("stock = \"embedded\"", "stock = \"redis\"")]);
    let r = redis.to_str().unwrap();
    let err = fails_with(&["run", "--until-idle", "--config", r, "--data", d], &[]);
    assert!(
        err.contains("SAGAFLOW_REDIS_URL ([redis] url_env) is not set"),
        "{err}"
    );
    let err = fails_with(
        &["run", "--until-idle", "--config", r, "--data", d],
        &[("SAGAFLOW_REDIS_URL", "redis://:secret@127.0.0.1:1")],
    );
    assert!(err.contains("cannot reach Redis at redis://"), "{err}");
    assert!(
        !err.contains("secret"),
        "the password is never printed: {err}"
    );

    // Cosmos: the region is required at load; then the key's variable.
    let dir2 = data_dir("profiles-cosmos");
    let cosmos = config_with(&dir2, &[("orders = \"embedded\"", "orders = \"cosmos\"")]);
    let err = fails_with(&["check-config", cosmos.to_str().unwrap()], &[]);
    assert!(err.contains("cosmos.region is empty"), "{err}");
    let cosmos = config_with(
        &dir2,
        &[
            ("orders = \"embedded\"", "orders = \"cosmos\""),
            ("region = \"\"", "region = \"East US\""),
        ],
    );
    let err = fails_with(
        &[
            "run",
            "--until-idle",
            "--config",
            cosmos.to_str().unwrap(),
            "--data",
            d,
        ],
        &[("SAGAFLOW_COSMOS_ENDPOINT", "https://nowhere.invalid:443/")],
    );
    assert!(
        err.contains("SAGAFLOW_COSMOS_KEY ([cosmos] key_env) is not set"),
        "{err}"
    );

    // Service Bus: no variable, a malformed string, a broker that is not there.
    let dir3 = data_dir("profiles-sb");
    let sb = config_with(
        &dir3,
        &[("trigger = \"embedded\"", "trigger = \"servicebus\"")],
    );
    let s = sb.to_str().unwrap();
    let run = ["run", "--until-idle", "--config", s, "--data", d];
    let err = fails_with(&run, &[]);
    assert!(
        err.contains("SAGAFLOW_SERVICEBUS_CONNECTION ([servicebus] connection_env) is not set"),
        "{err}"
    );
    let err = fails_with(
        &run,
        &[(
            "SAGAFLOW_SERVICEBUS_CONNECTION",
            "Endpoint=sb://x.servicebus.windows.net/;SharedAccessKeyName=k",
        )],
    );
    assert!(err.contains("SharedAccessKey is missing"), "{err}");
    let err = fails_with(
        &run,
        &[(
            "SAGAFLOW_SERVICEBUS_CONNECTION",
            "amqp://guest:hunter2@127.0.0.1:1",
        )],
    );
    assert!(
        err.contains("cannot connect to amqp://127.0.0.1:1"),
        "{err}"
    );
    assert!(
        !err.contains("hunter2"),
        "the password is never printed: {err}"
    );
}

/// `sagaflow help` gives an example of every command, and `help COMMAND`
/// one of its own.
#[test]
fn help_has_an_example_of_every_command() {
    let help = crate::common::sagaflow_ok(&["help"]);
    let commands: Vec<&str> = help
        .split("Commands:")
        .nth(1)
        .unwrap()
        .split("Options:")
        .next()
        .unwrap()
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .collect();
    assert!(commands.len() > 15, "{help}");
    let examples = help.split("Examples:").nth(1).expect("an Examples section");
    for c in commands {
        assert!(
            examples.contains(&format!("sagaflow {c} "))
                || examples.contains(&format!("sagaflow {c}\n")),
            "no example of {c} in `sagaflow help`"
        );
        let own = crate::common::sagaflow_ok(&["help", c]);
        assert!(
            own.contains(&format!("Example: sagaflow {c}")),
            "`sagaflow help {c}` has no example:\n{own}"
        );
    }
}
