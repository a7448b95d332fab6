//! Property tests of the SCRAM parser: any client-first and client-final, at
//! the message layer and through a session over memory, end in exactly one
//! `__scram_final__:e=<word of the spec's table>`, never a panic (checks in
//! `fuzz_support/scram.rs`, shared with `fuzz/fuzz_targets/scram.rs`).
//!
//! Cases: `DCCN_FUZZ_CASES=N` (default 1000) per property.

#[path = "fuzz_support/scram.rs"]
mod scram_support;

use dccn_auth::scram::message;
use dccn_auth::session::Services;
use dccn_auth::store::UserStore;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use scram_support::*;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

fn cases() -> u32 {
    std::env::var("DCCN_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000)
}

fn runner(cases: u32) -> TestRunner {
    TestRunner::new(Config {
        cases: cases.max(1),
        failure_persistence: None,
        ..Config::default()
    })
}

/// One field: often `usual[0]` (a valid value), else another of `usual`
/// (near-valid values), else any text.
fn field(usual: &'static [&'static str]) -> BoxedStrategy<String> {
    prop_oneof![
        4 => Just(usual[0].to_string()),
        4 => prop::sample::select(usual).prop_map(str::to_string),
        1 => "[ -~]{0,20}",
        1 => any::<String>(),
    ]
    .boxed()
}

fn joined(fields: Vec<BoxedStrategy<String>>) -> impl Strategy<Value = String> {
    (
        fields,
        prop::collection::vec(field(&["x=1", "Z=ext", "1=x", "x=", "=", ""]), 0..3),
    )
        .prop_map(|(mut parts, exts)| {
            parts.extend(exts);
            parts.join(",")
        })
}

/// Client-first-messages: field by field, so that generated messages get past
/// the first checks often, and any text.
fn client_first() -> impl Strategy<Value = String> {
    let structured = joined(vec![
        field(&["n", "y", "p=tls-unique", "N", " n", ""]),
        field(&["", "a=admin", "b"]),
        field(&[
            "n=demo",
            "n=nobody",
            "n=",
            "n=de=2Cmo",
            "n=a=3D",
            "n=x=",
            "m=ext",
            "N=demo",
        ]),
        prop_oneof![
            3 => "r=[!-+\\--~]{1,255}",
            1 => "r=[!-~]{0,300}",
            1 => field(&["r=", "r=abc", "x=abc"]),
        ]
        .boxed(),
    ]);
    prop_oneof![4 => structured, 1 => any::<String>()]
}

/// Client-final-messages, the same way.
fn client_final() -> impl Strategy<Value = String> {
    let structured = joined(vec![
        field(&["c=biws", "c=eSws", "c=", "c=bi", "c=biws=", "r=x"]),
        field(&[
            "r=abcc2VydmVyLW5vbmNlLWRlbW8x",
            "r=abc",
            "r=",
            "r=a b",
            "c=biws",
        ]),
    ])
    .prop_flat_map(|head| {
        field(&[
            "p=IxadUB227scOGPbbTpWdV3bUWUR5Q1rScifc/+Acm5o=",
            "p=IxadUB227scOGPbbTpWdV3bUWUR5Q1rScifc/+Acm5p=",
            "p=AAAA",
            "p=",
            "",
        ])
        .prop_map(move |p| format!("{head},{p}"))
    });
    prop_oneof![4 => structured, 1 => any::<String>()]
}

#[test]
fn any_messages_get_an_error_value_at_the_message_layer() {
    // How many generated messages got past the client-first checks, and how
    // many client-finals past row 11: the generators must reach the later rows.
    let accepted_first = AtomicUsize::new(0);
    let well_formed_final = AtomicUsize::new(0);
    runner(cases() * 4)
        .run(&(client_first(), client_final()), |(first, last)| {
            if let Ok(f) = message::parse_client_first(&first) {
                accepted_first.fetch_add(1, Ordering::Relaxed);
                let nonce = format!("{}x", f.nonce);
                if !matches!(
                    message::parse_client_final(&last, f.gs2_header, &nonce),
                    Err(message::ScramError::InvalidEncoding)
                ) {
                    well_formed_final.fetch_add(1, Ordering::Relaxed);
                }
            }
            check_messages(&first, &last).map_err(TestCaseError::fail)
        })
        .unwrap();
    let (firsts, finals) = (accepted_first.into_inner(), well_formed_final.into_inner());
    let total = cases() as usize * 4;
    assert!(
        firsts * 100 >= total,
        "only {firsts} of {total} client-firsts accepted"
    );
    assert!(finals > 0, "no client-final got past row 11");
}

#[test]
fn any_messages_through_a_session_end_in_one_e_reply() {
    let dir = tempfile::tempdir().unwrap();
    let store = UserStore::open(&dir.path().join("fuzz.db")).unwrap();
    let services = Services::new(store, Duration::from_secs(30), Duration::from_secs(600));
    let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
    runner(cases())
        .run(&(client_first(), client_final()), |(first, last)| {
            let (first, last) = (as_line(&first), as_line(&last));
            let out = run_session(&services, &session_input(&first, &last), ip);
            check_session_output(&first, &out).map_err(|e| {
                TestCaseError::fail(format!(
                    "{e}\n--- output ---\n{}",
                    String::from_utf8_lossy(&out)
                ))
            })
        })
        .unwrap();
}

#[test]
fn every_row_of_the_table_through_a_session() {
    let dir = tempfile::tempdir().unwrap();
    let store = UserStore::open(&dir.path().join("fuzz.db")).unwrap();
    let services = Services::new(store, Duration::from_secs(30), Duration::from_secs(600));
    let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let nonce = message::new_nonce();
    for (first, last) in [
        ("", ""),
        ("p=x,,n=demo,r=abc", ""),
        ("n,,n=demo,r=abc", ""),
        ("n,,n=demo,r=abc", "c=biws,r=abc,p=AAAA"),
        (
            &format!("n,,n=demo,r={nonce}") as &str,
            "c=eSws,r=x,p=IxadUB227scOGPbbTpWdV3bUWUR5Q1rScifc/+Acm5o=",
        ),
    ] {
        let out = run_session(&services, &session_input(first, last), ip);
        check_session_output(first, &out)
            .unwrap_or_else(|e| panic!("{e}\n{}", String::from_utf8_lossy(&out)));
    }
}
