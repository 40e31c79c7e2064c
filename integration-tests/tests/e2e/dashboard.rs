//! The dashboard (`/ui`) in a real headless chromium, on both engines: a
//! sale paced over more than 20 s shows live progress without a reload and
//! ends with the counters `stats --json` gives; the list filtered to
//! `compensated` shows exactly the declined orders; a parked saga is
//! retried from its page (dry run, reason) and completes with the command
//! on its timeline, another in bulk from a filtered list; a sale refunded
//! from its page links to its refund saga and back; the books and the
//! audit are read from the stores. Off loopback the API refuses a request
//! without the token and the page asks for it. Screenshots of the views
//! are left in `target/test-artifacts/dashboard/`.

use crate::browser::{artifacts, Browser};
use crate::bulk_scale::COMMIT_GIVES_UP;
use crate::common::http_get_with;
use crate::scenarios::{on_both_engines, Env};
use serde_json::Value;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

const TOKEN: &str = "e2e-dashboard-token-3b9f0c7d2a61";
const BATCHES: usize = 10;
const PER_BATCH: usize = 6;
const PACE: Duration = Duration::from_millis(2_300);

/// The sagas whose commit the stock store refuses: they park past the
/// pivot until the fault is gone and an operator retries them.
fn refuse_commit_of(env: &Env, ids: &[&str], on: bool) {
    let stock = rusqlite::Connection::open(env.dir.join("stock.db")).unwrap();
    stock
        .execute_batch(&if on {
            format!(
                "CREATE TRIGGER fault_commit BEFORE UPDATE OF state ON reservations
                 WHEN NEW.state = 'committed' AND NEW.id IN ('{}')
                 BEGIN SELECT RAISE(ABORT, 'injected fault: the stock store refuses this commit'); END;",
                ids.join("', '")
            )
        } else {
            "DROP TRIGGER fault_commit;".to_owned()
        })
        .unwrap();
}

fn order(id: &str, card: &str) -> String {
    format!(
        "{{\"order_id\":\"{id}\",\"customer\":\"c1\",\"items\":[{{\"sku\":\"SKU-1\",\"qty\":1}}],\"amount\":1999,\"currency\":\"usd\",\"payment_method\":\"{card}\"}}\n"
    )
}

fn stats(env: &Env) -> Value {
    serde_json::from_str(&env.sagaflow(&["stats", "--json"])).unwrap()
}

/// The sale view's tile `k` as a number (`None` while it shows "–").
fn tile(browser: &Browser, k: &str) -> Option<u64> {
    browser
        .eval(&format!(
            "const el = document.querySelector('[data-k=\"{k}\"]'); return el ? el.textContent : null"
        ))
        .as_str()
        .and_then(|t| t.replace(',', "").parse().ok())
}

const COUNTS: [&str; 6] = [
    "total",
    "running",
    "compensating",
    "completed",
    "compensated",
    "parked",
];

fn dashboard_sale(engine: &str) {
    let env = Env::new("dashboard", engine, &COMMIT_GIVES_UP);
    env.sagaflow(&["stock", "set", "SKU-1=1000"]);
    // One retried from its page, one in bulk from a filtered list.
    let parked = env.id("b2-o0");
    let parked_too = env.id("b6-o0");
    refuse_commit_of(&env, &[&parked, &parked_too], true);
    let worker = env.worker();
    let url = worker.admin_url();
    let browser = Browser::start();
    let shots = artifacts("dashboard");

    browser.goto(&format!("{url}/ui"));
    browser.wait_for(
        "the sale view's first poll",
        30,
        "return document.querySelector('main').dataset.polls",
    );
    // Set once; a reload would lose it.
    browser.eval("window.__sameLoad = 'yes'; return true");

    // The sale: orders arrive in batches for more than 20 s, every third a
    // declined card; the page is read between batches.
    let began = Instant::now();
    let mut declined = BTreeSet::new();
    let mut visa = 0usize;
    let mut seen_ended = Vec::new();
    for b in 0..BATCHES {
        let mut lines = String::new();
        for o in 0..PER_BATCH {
            let id = env.id(&format!("b{b}-o{o}"));
            let card = if o % 3 == 2 {
                declined.insert(id.clone());
                "pm_card_chargeDeclined"
            } else {
                visa += 1;
                "pm_card_visa"
            };
            lines.push_str(&order(&id, card));
        }
        // One malformed message in the sale: dead-lettered, not lost.
        if b == 4 {
            lines.push_str("this is not an order\n");
        }
        let file = env.dir.join(format!("batch-{b}.jsonl"));
        std::fs::write(&file, lines).unwrap();
        env.sagaflow(&["submit", file.to_str().unwrap(), "--raw"]);
        std::thread::sleep(PACE);
        let ended =
            tile(&browser, "completed").unwrap_or(0) + tile(&browser, "compensated").unwrap_or(0);
        seen_ended.push(ended);
    }
    assert!(began.elapsed() >= Duration::from_secs(20));
    let distinct: BTreeSet<u64> = seen_ended.iter().copied().collect();
    assert!(
        distinct.len() >= 4 && seen_ended.windows(2).all(|w| w[0] <= w[1]),
        "the view should have counted up as the sale went on: {seen_ended:?}"
    );
    assert_eq!(
        browser.eval("return window.__sameLoad || null"),
        "yes",
        "the page reloaded"
    );
    assert!(
        browser
            .eval("return document.querySelectorAll('[data-series]').length")
            .as_u64()
            > Some(0),
        "the chart draws the counts"
    );

    // Once every saga has ended (or parked), the view's counters are the
    // ones `stats --json` gives.
    let n = (BATCHES * PER_BATCH) as u64;
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let s = stats(&env);
        let settled = s["completed"].as_u64().unwrap()
            + s["compensated"].as_u64().unwrap()
            + s["parked"].as_u64().unwrap();
        let shown: Vec<Option<u64>> = COUNTS.iter().map(|k| tile(&browser, k)).collect();
        let wanted: Vec<Option<u64>> = COUNTS.iter().map(|k| s[*k].as_u64()).collect();
        if settled == n && shown == wanted {
            assert_eq!(
                (s["parked"].as_u64(), s["compensated"].as_u64()),
                (Some(2), Some(declined.len() as u64)),
                "{s}"
            );
            assert_eq!(tile(&browser, "p50_ms"), s["p50_ms"].as_u64());
            let dead = env.sagaflow(&["dlq", "list", "--json"]).lines().count() as u64;
            assert_eq!((dead, tile(&browser, "dead_lettered")), (1, Some(1)));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the view shows {shown:?}, stats --json {wanted:?} ({s})"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let sku: Value = browser.eval(
        "const r = document.querySelector('[data-sku=\"SKU-1\"] [data-k=available]'); return r && r.textContent",
    );
    // The books, from the store: the parked sagas still hold their units.
    let stock = env.stock();
    assert_eq!(
        (stock["sold"].as_i64(), stock["reserved"].as_i64()),
        (Some(visa as i64 - 2), Some(2)),
        "{stock}"
    );
    assert_eq!(
        sku.as_str().map(|t| t.replace(',', "")),
        stock["available"].as_i64().map(|a| a.to_string()),
        "stock left per SKU"
    );
    // Why they were compensated, as the view says it.
    browser.wait_for(
        "the compensated sagas' reason",
        20,
        "return [...document.querySelectorAll('[data-why]')].some(td => td.textContent.includes('authorize_payment: card_declined'))",
    );
    browser.screenshot(&shots.join(format!("{engine}-sale.png")));

    // The list, filtered to compensated through the form: exactly the
    // declined orders.
    browser.goto(&format!("{url}/ui#/sagas"));
    browser.wait_for(
        "the list",
        20,
        "return document.querySelector('main').dataset.loaded",
    );
    browser.select("select[data-filter=status]", "compensated");
    browser.click("[data-test=apply]");
    let listed = browser.wait_for(
        "the compensated sagas",
        20,
        &format!(
            "if (!location.hash.includes('status=compensated') || !document.querySelector('main').dataset.loaded) return null;
             const ids = [...document.querySelectorAll('[data-row]')].map(r => r.dataset.row);
             return ids.length === {} ? ids : null",
            declined.len()
        ),
    );
    let listed: BTreeSet<String> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(listed, declined);
    browser.screenshot(&shots.join(format!("{engine}-list.png")));

    // The parked saga, retried from its page once the fault is gone.
    refuse_commit_of(&env, &[], false);
    browser.goto(&format!("{url}/ui#/saga/{parked}"));
    browser.wait_for(
        "the parked saga's page",
        20,
        "return document.querySelector('main').dataset.status === 'parked'",
    );
    assert!(
        browser
            .eval("return document.querySelectorAll('[data-span=parked]').length")
            .as_u64()
            == Some(1),
        "the timeline shows the park"
    );
    browser.type_into("#operator", "dana");
    browser.click("[data-command=retry]");
    browser.wait_for(
        "the dry run",
        20,
        &format!(
            "return !!document.querySelector('#confirm-dialog[open] [data-target=\"{parked}\"]')"
        ),
    );
    // Without a reason nothing is sent.
    browser.click("#confirm-ok");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        browser.eval("return document.querySelector('#confirm-result').textContent"),
        "",
        "sent without a reason"
    );
    browser.type_into("#confirm-reason", "stock store fixed, INC-77");
    browser.click("#confirm-ok");
    let outcome = browser.wait_for(
        "the command's answer",
        30,
        "return document.querySelector('#confirm-result').dataset.outcome",
    );
    assert_eq!(outcome, "applied");
    browser.click("#confirm-cancel");
    browser.wait_for(
        "the saga completed, with the command on its timeline",
        60,
        "const m = document.querySelector('main');
         return m.dataset.status === 'completed' && !!document.querySelector('[data-marker=retry]')",
    );
    browser.screenshot(&shots.join(format!("{engine}-saga.png")));

    // In the stores and the journal, not only on the page.
    let show = env.show(&parked);
    assert_eq!(show["saga"]["status"], "completed", "{show}");
    assert_eq!(
        (
            show["commands"][0]["command"].as_str(),
            show["commands"][0]["operator"].as_str(),
            show["commands"][0]["reason"].as_str()
        ),
        (
            Some("retry"),
            Some("dana"),
            Some("stock store fixed, INC-77")
        ),
        "{show}"
    );
    // In bulk, from the list filtered to what is still parked on the
    // commit: the dry run lists exactly that saga.
    browser.goto(&format!("{url}/ui#/sagas?status=parked&step=commit_stock"));
    let rows = browser.wait_for(
        "the filtered list",
        20,
        "return document.querySelector('main').dataset.loaded && [...document.querySelectorAll('[data-row]')].map(r => r.dataset.row)",
    );
    assert_eq!(rows, serde_json::json!([parked_too]));
    browser.click("[data-bulk=retry]");
    let targets = browser.wait_for(
        "the bulk dry run",
        20,
        "const d = document.querySelector('#confirm-dialog[open]');
         return d && [...d.querySelectorAll('[data-target]')].map(r => r.dataset.target)",
    );
    assert_eq!(targets, serde_json::json!([parked_too]));
    browser.type_into("#confirm-reason", "bulk: stock store fixed, INC-77");
    browser.click("#confirm-ok");
    let summary = bulk_summary(&browser, "the bulk run's summary", 30);
    assert_eq!(
        (summary["planned"].as_u64(), summary["sent"].as_u64()),
        (Some(1), Some(1)),
        "{summary}"
    );
    browser.click("#confirm-cancel");
    env.wait_status(&parked_too, "completed");

    // A refund from a completed sale's page; the two pages link each other.
    let sale = env.id("b0-o0");
    browser.goto(&format!("{url}/ui#/saga/{sale}"));
    browser.wait_for(
        "a completed sale's page",
        20,
        "return document.querySelector('main').dataset.status === 'completed'",
    );
    browser.click("[data-command=refund]");
    browser.wait_for(
        "the refund's dry run",
        20,
        &format!(
            "return !!document.querySelector('#confirm-dialog[open] [data-target=\"{sale}\"]')"
        ),
    );
    browser.type_into("#confirm-reason", "customer returned the parcel");
    browser.click("#confirm-ok");
    let outcome = browser.wait_for(
        "the refund's answer",
        30,
        "return document.querySelector('#confirm-result').dataset.outcome",
    );
    assert!(outcome == "applied" || outcome == "queued", "{outcome}");
    browser.click("#confirm-cancel");
    browser.wait_for(
        "the link to the refund saga",
        30,
        "return !!document.querySelector('[data-test=refunded-by] a')",
    );
    browser.click("[data-test=refunded-by] a");
    browser.wait_for(
        "the refund saga completed, linking back to the sale",
        60,
        &format!(
            "const back = document.querySelector('[data-test=refund-of] a');
             return document.querySelector('main').dataset.status === 'completed' && back && back.dataset.saga === '{sale}'"
        ),
    );

    let stock = env.stock();
    assert_eq!(
        (stock["sold"].as_i64(), stock["reserved"].as_i64()),
        (Some(visa as i64 - 1), Some(0)),
        "every visa order sold, one returned by its refund: {stock}"
    );
    // Each saga's own audit: on Temporal the audit is the cluster's, where
    // other tests' commands can outnumber one listing's limit.
    for (id, reason) in [
        (&parked, "stock store fixed, INC-77"),
        (&parked_too, "bulk: stock store fixed, INC-77"),
        (&sale, "customer returned the parcel"),
    ] {
        let audit = env.sagaflow(&["audit", "--saga", id, "--json"]);
        assert!(
            audit
                .lines()
                .any(|l| l.contains(id.as_str()) && l.contains(reason)),
            "{id} {reason}: {audit}"
        );
    }

    // A bulk command from the dashboard acts on exactly the rows of its
    // dry run, while the sale goes on during the dialog (issue 30): a
    // checkout that completes after the dry run is not refunded.
    browser.goto(&format!("{url}/ui#/sagas?status=completed&saga=checkout"));
    browser.wait_for(
        "the completed checkouts",
        20,
        "return document.querySelector('main').dataset.loaded",
    );
    browser.click("[data-bulk=refund]");
    let targets = browser.wait_for(
        "the bulk refund's dry run",
        20,
        "const d = document.querySelector('#confirm-dialog[open]');
         return d && d.querySelectorAll('[data-target]').length && [...d.querySelectorAll('[data-target]')].map(r => r.dataset.target)",
    );
    let shown = targets.as_array().unwrap().len() as u64;
    let late = env.submit("late", "pm_card_visa");
    env.wait_status(&late, "completed");
    browser.type_into("#confirm-reason", "recall, exactly the rows shown");
    browser.click("#confirm-ok");
    let summary = bulk_summary(&browser, "the bulk refund's summary", 60);
    assert_eq!(summary["planned"].as_u64(), Some(shown), "{summary}");
    assert!(!targets.to_string().contains(&late), "{targets}");
    let refund_of_late = env.sagaflow_fails(&["show", &format!("{late}#refund")]);
    assert!(refund_of_late.contains("no saga"), "{refund_of_late}");
    drop(worker);
}

/// The summary a bulk run from the confirmation dialog answered, once it
/// shows (within `secs`).
fn bulk_summary(browser: &Browser, what: &str, secs: u64) -> Value {
    browser.wait_for(
        what,
        secs,
        "return document.querySelector('#confirm-result').dataset.outcome",
    );
    serde_json::from_str(
        browser
            .eval("return document.querySelector('#confirm-result').textContent")
            .as_str()
            .unwrap(),
    )
    .unwrap()
}

fn dashboard_token(engine: &str) {
    let env = Env::new("dashboard-token", engine, &[]);
    let worker = env.worker_with(
        &["--admin-bind", "0.0.0.0:0"],
        &[("SAGAFLOW_ADMIN_TOKEN", TOKEN)],
    );
    let url = worker.admin_url().replace("0.0.0.0", "127.0.0.1");
    let addr = url.trim_start_matches("http://");
    let (status, _, body) = http_get_with(addr, "/api/sale", &[]);
    assert_eq!(status, 401, "{body}");
    let (status, _, _) = http_get_with(
        addr,
        "/api/sale",
        &[("Authorization", &format!("Bearer {TOKEN}"))],
    );
    assert_eq!(status, 200);
    let (status, head, page) = http_get_with(addr, "/ui", &[]);
    assert_eq!(status, 200, "the page itself holds no saga data");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-security-policy"),
        "{head}"
    );
    assert!(!page.contains(TOKEN));

    let browser = Browser::start();
    browser.goto(&format!("{url}/ui"));
    browser.wait_for(
        "the token prompt",
        20,
        "return !!document.querySelector('#token-dialog[open]')",
    );
    browser.type_into("#token-input", "e2e-dashboard-token-wrong-guess");
    browser.click("#token-submit");
    browser.wait_for(
        "the wrong token refused",
        20,
        "const d = document.querySelector('#token-dialog[open]');
         return d && document.querySelector('#token-error').textContent.includes('refused')",
    );
    browser.type_into("#token-input", TOKEN);
    browser.click("#token-submit");
    browser.wait_for(
        "the sale view with the token",
        30,
        "return document.querySelector('main').dataset.polls",
    );
    assert_eq!(
        browser.eval(
            "return [localStorage.getItem('sagaflow.token'), sessionStorage.getItem('sagaflow.token')]"
        ),
        serde_json::json!([null, TOKEN]),
        "kept for the session only"
    );
    browser.screenshot(&artifacts("dashboard").join(format!("{engine}-token.png")));
    drop(worker);
}

on_both_engines!(dashboard_sale, dashboard_token);
