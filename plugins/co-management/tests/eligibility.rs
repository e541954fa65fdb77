//! Table tests of the eligibility rule: every class and every boundary.

use cloudattach_plugin_co_management::{EligibilityClass, classify};
use cloudattach_sdk::{Device, JoinType};
use cloudattach_testkit::{device, with};

const SERVER: &str = "Microsoft Windows NT Server 10.0";
const WORKSTATION: &str = "Microsoft Windows NT Workstation 10.0";

fn with_build(build: &str) -> Device {
    with(device(1), |d| d.os_build = build.into())
}

fn with_client(version: Option<&str>) -> Device {
    with(device(1), |d| d.client_version = version.map(String::from))
}

fn joined(join_type: JoinType) -> Device {
    with(device(1), |d| d.join_type = join_type)
}

#[test]
fn every_case_lands_in_its_class() {
    use EligibilityClass::*;
    let cases: Vec<(&str, Device, EligibilityClass)> = vec![
        ("the testkit device", device(1), Eligible),
        ("entra joined", joined(JoinType::Entra), Eligible),
        ("hybrid joined", joined(JoinType::Hybrid), Eligible),
        (
            "domain joined only",
            joined(JoinType::Domain),
            EligibleButNotAzureAdJoined,
        ),
        ("registered only", joined(JoinType::Registered), Ineligible),
        ("workgroup", joined(JoinType::Workgroup), Ineligible),
        // OS build boundary: 1709 is build 16299.
        (
            "build 10.0.16299 exactly",
            with_build("10.0.16299"),
            Eligible,
        ),
        ("build 10.0.16298", with_build("10.0.16298"), NeedsOsUpdate),
        (
            "build 10.0.10240 (1507)",
            with_build("10.0.10240"),
            NeedsOsUpdate,
        ),
        ("4-part build", with_build("10.0.19045.3693"), Eligible),
        (
            "4-part build below 1709",
            with_build("10.0.16298.9999"),
            NeedsOsUpdate,
        ),
        (
            "4-part build 10.0.16299.0",
            with_build("10.0.16299.0"),
            Eligible,
        ),
        ("Windows 11 22000", with_build("10.0.22000"), Eligible),
        ("Windows 11 23H2", with_build("10.0.22631.2861"), Eligible),
        (
            "domain joined old build",
            with(with_build("10.0.15063"), |d| d.join_type = JoinType::Domain),
            NeedsOsUpdate,
        ),
        ("unparseable build", with_build("10.0.x"), Ineligible),
        ("Windows 8.1 build", with_build("6.3.9600"), Ineligible),
        // Client boundary: 1710 is 5.00.8577.
        (
            "client 5.00.8577 exactly",
            with_client(Some("5.00.8577")),
            Eligible,
        ),
        (
            "client 5.00.8577.1000",
            with_client(Some("5.00.8577.1000")),
            Eligible,
        ),
        (
            "client 5.00.8576",
            with_client(Some("5.00.8576")),
            Ineligible,
        ),
        (
            "client 5.00.8576.1008",
            with_client(Some("5.00.8576.1008")),
            Ineligible,
        ),
        (
            "client 5.00.10000 (numeric, not lexical)",
            with_client(Some("5.00.10000.1000")),
            Eligible,
        ),
        (
            "client version unparseable",
            with_client(Some("five")),
            Ineligible,
        ),
        ("client without version", with_client(None), Ineligible),
        (
            "no client",
            with(device(1), |d| {
                d.client = false;
                d.client_version = None;
            }),
            Ineligible,
        ),
        // OS captions.
        (
            "server OS",
            with(device(1), |d| d.os = SERVER.into()),
            Ineligible,
        ),
        (
            "server OS, entra joined",
            with(device(1), |d| {
                d.os = SERVER.into();
                d.join_type = JoinType::Entra;
            }),
            Ineligible,
        ),
        (
            "macOS",
            with(device(1), |d| {
                d.os = "Mac OS X".into();
                d.os_build = "14.2".into();
            }),
            Ineligible,
        ),
        (
            "Windows 7",
            with(device(1), |d| {
                d.os = "Microsoft Windows NT Workstation 6.1".into();
                d.os_build = "6.1.7601".into();
            }),
            Ineligible,
        ),
        (
            "workstation caption with a non-10 build",
            with(device(1), |d| {
                d.os = WORKSTATION.into();
                d.os_build = "6.3.9600".into();
            }),
            Ineligible,
        ),
        // MDM enrolment: co-managed needs the client too.
        (
            "mdm enrolled with client",
            with(device(1), |d| d.mdm_enrolled = true),
            Comanaged,
        ),
        (
            "mdm enrolled server with client (first rule wins)",
            with(device(1), |d| {
                d.mdm_enrolled = true;
                d.os = SERVER.into();
            }),
            Comanaged,
        ),
        (
            "mdm enrolled old client (first rule wins)",
            with(with_client(Some("5.00.8000")), |d| d.mdm_enrolled = true),
            Comanaged,
        ),
        (
            "mdm enrolled without client",
            with(device(1), |d| {
                d.mdm_enrolled = true;
                d.client = false;
                d.client_version = None;
            }),
            Ineligible,
        ),
        (
            "mdm enrolled domain joined",
            with(device(1), |d| {
                d.mdm_enrolled = true;
                d.join_type = JoinType::Domain;
            }),
            Comanaged,
        ),
    ];
    let mut failures = vec![];
    for (name, d, expected) in &cases {
        let got = classify(d);
        if got != *expected {
            failures.push(format!("{name}: expected {expected}, got {got}"));
        }
    }
    assert!(
        failures.is_empty(),
        "misclassified:\n{}",
        failures.join("\n")
    );
}

#[test]
fn class_names_are_intunes() {
    let names: Vec<&str> = EligibilityClass::ALL.iter().map(|c| c.as_str()).collect();
    assert_eq!(
        names,
        [
            "comanaged",
            "ineligible",
            "needsOsUpdate",
            "eligibleButNotAzureAdJoined",
            "eligible"
        ]
    );
}
