//! Table tests of the eligibility rule (SPEC.md §2): every class and every boundary.

use cloudattach_plugin_co_management::{EligibilityClass, classify};
use cloudattach_sdk::testkit::device;
use cloudattach_sdk::{Device, JoinType};

const SERVER: &str = "Microsoft Windows NT Server 10.0";
const WORKSTATION: &str = "Microsoft Windows NT Workstation 10.0";

fn with_build(build: &str) -> Device {
    Device {
        os_build: build.into(),
        ..device(1)
    }
}

fn with_client(version: Option<&str>) -> Device {
    Device {
        client_version: version.map(String::from),
        ..device(1)
    }
}

fn joined(join_type: JoinType) -> Device {
    Device {
        join_type,
        ..device(1)
    }
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
            Device {
                join_type: JoinType::Domain,
                ..with_build("10.0.15063")
            },
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
            Device {
                client: false,
                client_version: None,
                ..device(1)
            },
            Ineligible,
        ),
        // OS captions.
        (
            "server OS",
            Device {
                os: SERVER.into(),
                ..device(1)
            },
            Ineligible,
        ),
        (
            "server OS, entra joined",
            Device {
                os: SERVER.into(),
                join_type: JoinType::Entra,
                ..device(1)
            },
            Ineligible,
        ),
        (
            "macOS",
            Device {
                os: "Mac OS X".into(),
                os_build: "14.2".into(),
                ..device(1)
            },
            Ineligible,
        ),
        (
            "Windows 7",
            Device {
                os: "Microsoft Windows NT Workstation 6.1".into(),
                os_build: "6.1.7601".into(),
                ..device(1)
            },
            Ineligible,
        ),
        (
            "workstation caption with a non-10 build",
            Device {
                os: WORKSTATION.into(),
                os_build: "6.3.9600".into(),
                ..device(1)
            },
            Ineligible,
        ),
        // MDM enrolment: co-managed needs the client too.
        (
            "mdm enrolled with client",
            Device {
                mdm_enrolled: true,
                ..device(1)
            },
            Comanaged,
        ),
        (
            "mdm enrolled server with client (first rule wins)",
            Device {
                mdm_enrolled: true,
                os: SERVER.into(),
                ..device(1)
            },
            Comanaged,
        ),
        (
            "mdm enrolled old client (first rule wins)",
            Device {
                mdm_enrolled: true,
                ..with_client(Some("5.00.8000"))
            },
            Comanaged,
        ),
        (
            "mdm enrolled without client",
            Device {
                mdm_enrolled: true,
                client: false,
                client_version: None,
                ..device(1)
            },
            Ineligible,
        ),
        (
            "mdm enrolled domain joined",
            Device {
                mdm_enrolled: true,
                join_type: JoinType::Domain,
                ..device(1)
            },
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
