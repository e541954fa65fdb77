//! Table tests: a query, the devices, the expected result as text (see `Table`'s `Display`:
//! the column names, then one line per row with the values as JSON).

use cloudattach_model::Device;
use cloudattach_query::{Entity, MAX_ROWS, QueryError, parse};
use serde_json::json;

fn device(v: serde_json::Value) -> Device {
    serde_json::from_value(v).expect("a valid device")
}

/// Five devices with a bit of everything: two workstations with Defender detections and
/// analytics, a server without analytics, a Mac without a client, and a lower-case name.
fn devices() -> Vec<Device> {
    vec![
        device(json!({
            "resource_id": 1, "name": "PC-1", "client": true, "client_version": "5.00.9106.1000",
            "client_active": true, "os": "Microsoft Windows NT Workstation 10.0",
            "os_build": "10.0.22631", "join_type": "hybrid", "mdm_enrolled": true,
            "primary_user": "alice@contoso.com", "manufacturer": "Dell Inc.", "model": "Latitude 7440",
            "domain": "corp.contoso.com",
            "defender": {
                "product_status": 0, "defender_enabled": true, "rtp_enabled": true,
                "engine_version": "1.1.24090.11", "mde_onboarding_state": "onboarded",
                "detections": [{
                    "threat_id": 100, "threat_name": "Trojan:Win32/Wacatac.B!ml", "category": "Trojan",
                    "severity": "severe", "current_status": "active",
                    "initial_detection_time": "2024-10-01T08:00:00Z", "number_of_detections": 2
                }]
            },
            "analytics": {
                "core_boot_ms": 20000, "total_boot_ms": 40000, "gp_logon_ms": 5000, "desktop_usable_ms": 8000,
                "apps": [
                    { "name": "Microsoft Teams", "usage_minutes": 300, "daily_crashes": [1, 0, 2] },
                    { "name": "Outlook", "usage_minutes": 500 }
                ]
            }
        })),
        device(json!({
            "resource_id": 2, "name": "PC-2", "client": true, "client_version": "5.00.9106.1000",
            "client_active": false, "os": "Microsoft Windows NT Workstation 10.0",
            "os_build": "10.0.19045", "join_type": "hybrid", "mdm_enrolled": false,
            "primary_user": "bob@contoso.com", "manufacturer": "HP",
            "defender": {
                "product_status": 524288, "defender_enabled": true, "rtp_enabled": false,
                "detections": [
                    { "threat_id": 101, "threat_name": "PUA:Win32/Presenoker", "category": "Adware",
                      "severity": "low", "current_status": "quarantined",
                      "initial_detection_time": "2024-10-02T09:00:00Z", "number_of_detections": 1 },
                    { "threat_id": 102, "threat_name": "Trojan:Win32/Emotet", "category": "Trojan",
                      "severity": "high", "current_status": "removed",
                      "initial_detection_time": "2024-10-03T10:00:00Z", "number_of_detections": 3 }
                ]
            },
            "analytics": {
                "core_boot_ms": 10000, "total_boot_ms": 30000, "gp_logon_ms": 2000, "desktop_usable_ms": 6000,
                "apps": [{ "name": "Microsoft Teams", "usage_minutes": 100, "daily_crashes": [0] }]
            }
        })),
        device(json!({
            "resource_id": 3, "name": "SRV-1", "client": true, "client_version": "5.00.9088.1000",
            "client_active": true, "os": "Microsoft Windows NT Server 10.0",
            "os_build": "10.0.20348", "join_type": "domain", "mdm_enrolled": false,
            "manufacturer": "VMware, Inc.", "domain": "corp.contoso.com",
            "defender": { "defender_enabled": true, "rtp_enabled": true, "is_virtual_machine": true }
        })),
        device(json!({
            "resource_id": 4, "name": "MAC-1", "client": false, "client_active": false,
            "os": "macOS", "os_build": "14.5", "join_type": "workgroup", "mdm_enrolled": true,
            "primary_user": "Émile@contoso.com", "manufacturer": "", "serial_number": "C02XYZ"
        })),
        device(json!({
            "resource_id": 5, "name": "pc-5", "client": true, "client_version": "5.00.9106.1000",
            "client_active": true, "os": "Microsoft Windows NT Workstation 10.0",
            "os_build": "10.0.26100", "join_type": "entra", "mdm_enrolled": true,
            "primary_user": "alice@contoso.com", "manufacturer": "Dell Inc.",
            "analytics": { "core_boot_ms": 15000, "total_boot_ms": 35000, "gp_logon_ms": 0, "desktop_usable_ms": 7000 }
        })),
    ]
}

/// Trims the indentation of the expected table.
fn table_text(expected: &str) -> String {
    expected
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("\n")
}

fn check_on(query: &str, devices: &[Device], expected: &str) {
    let q = parse(query).unwrap_or_else(|e| panic!("{query}\n{}", e.render()));
    let table = q.run(devices);
    assert_eq!(
        q.columns(),
        table.columns,
        "columns() announces the result's columns"
    );
    assert_eq!(
        table.to_string().trim_end(),
        table_text(expected),
        "\nquery: {query}"
    );
}

fn check(query: &str, expected: &str) {
    check_on(query, &devices(), expected);
}

fn error(query: &str) -> QueryError {
    match parse(query) {
        Ok(_) => panic!("{query:?} parsed"),
        Err(e) => e,
    }
}

/// The error's byte offset, 1-based line and column, and message.
fn check_err(query: &str, offset: usize, line: usize, column: usize, message: &str) {
    let e = error(query);
    assert_eq!(
        (e.offset, e.line, e.column, e.message.as_str()),
        (offset, line, column, message),
        "\n{}",
        e.render()
    );
    assert_eq!(e.to_string(), format!("query:{line}:{column}: {message}"));
}

// ---- Entities ----

#[test]
fn device_rows_carry_every_column_and_null_for_absent_fields() {
    check(
        "Device | where resource_id == 4",
        r#"
        resource_id | name | client | client_version | client_active | os | os_build | join_type | mdm_enrolled | entra_device_id | primary_user | model | manufacturer | serial_number | domain | sku | last_active
        4 | "MAC-1" | false | null | false | "macOS" | "14.5" | "workgroup" | true | null | "Émile@contoso.com" | null | "" | "C02XYZ" | null | null | null
        "#,
    );
}

#[test]
fn entity_names_ignore_case() {
    check(
        "device | project name | take 2",
        r#"
        name
        "PC-1"
        "PC-2"
        "#,
    );
    check("DEFENDERSTATE | count", "Count\n3");
}

#[test]
fn defender_state_has_one_row_per_device_with_a_defender_block() {
    check(
        "DefenderState | project resource_id, device, product_status, rtp_enabled, engine_version, is_virtual_machine",
        r#"
        resource_id | device | product_status | rtp_enabled | engine_version | is_virtual_machine
        1 | "PC-1" | 0 | true | "1.1.24090.11" | false
        2 | "PC-2" | 524288 | false | null | false
        3 | "SRV-1" | 0 | true | null | true
        "#,
    );
    let q = parse("DefenderState").unwrap();
    assert_eq!(q.columns().len(), 22);
    assert!(q.needs_defender() && !q.needs_analytics());
    assert_eq!(q.entity(), Entity::DefenderState);
}

#[test]
fn defender_detection_has_one_row_per_detection() {
    check(
        "DefenderDetection",
        r#"
        resource_id | device | threat_id | threat_name | category | severity | current_status | initial_detection_time | number_of_detections
        1 | "PC-1" | 100 | "Trojan:Win32/Wacatac.B!ml" | "Trojan" | "severe" | "active" | "2024-10-01T08:00:00Z" | 2
        2 | "PC-2" | 101 | "PUA:Win32/Presenoker" | "Adware" | "low" | "quarantined" | "2024-10-02T09:00:00Z" | 1
        2 | "PC-2" | 102 | "Trojan:Win32/Emotet" | "Trojan" | "high" | "removed" | "2024-10-03T10:00:00Z" | 3
        "#,
    );
    assert!(parse("DefenderDetection").unwrap().needs_defender());
}

#[test]
fn analytics_has_one_row_per_device_with_telemetry() {
    check(
        "Analytics",
        r#"
        resource_id | device | core_boot_ms | total_boot_ms | gp_logon_ms | desktop_usable_ms | app_count
        1 | "PC-1" | 20000 | 40000 | 5000 | 8000 | 2
        2 | "PC-2" | 10000 | 30000 | 2000 | 6000 | 1
        5 | "pc-5" | 15000 | 35000 | 0 | 7000 | 0
        "#,
    );
    let q = parse("Analytics").unwrap();
    assert!(q.needs_analytics() && !q.needs_defender());
    assert!(!parse("Device").unwrap().needs_analytics());
}

#[test]
fn analytics_app_has_one_row_per_app_with_crashes_summed() {
    check(
        "AnalyticsApp",
        r#"
        resource_id | device | app | usage_minutes | crashes
        1 | "PC-1" | "Microsoft Teams" | 300 | 3
        1 | "PC-1" | "Outlook" | 500 | 0
        2 | "PC-2" | "Microsoft Teams" | 100 | 0
        "#,
    );
    check(
        "AnalyticsApp | summarize count() by app",
        r#"
        app | count_
        "Microsoft Teams" | 2
        "Outlook" | 1
        "#,
    );
}

// ---- where ----

#[test]
fn string_equality_is_exact_and_tilde_ignores_case() {
    check(
        "Device | where name == 'pc-5' | project name",
        "name\n\"pc-5\"",
    );
    check("Device | where name == 'PC-5' | project name", "name");
    check(
        "Device | where name =~ 'PC-5' | project name",
        "name\n\"pc-5\"",
    );
    check(
        "Device | where name !~ 'pc-1' and name != 'PC-2' | project name",
        r#"
        name
        "SRV-1"
        "MAC-1"
        "pc-5"
        "#,
    );
    // Non-ASCII letters fold too.
    check(
        "Device | where primary_user =~ 'émile@CONTOSO.com' | project name",
        "name\n\"MAC-1\"",
    );
}

#[test]
fn contains_startswith_endswith_ignore_case() {
    check(
        "Device | where os contains 'SERVER' | project name",
        "name\n\"SRV-1\"",
    );
    check(
        "Device | where os !contains 'server' and name startswith 'pc' | project name",
        r#"
        name
        "PC-1"
        "PC-2"
        "pc-5"
        "#,
    );
    check(
        "Device | where name !startswith 'PC' | project name",
        r#"
        name
        "SRV-1"
        "MAC-1"
        "#,
    );
    check(
        "Device | where primary_user endswith '@Contoso.COM' and primary_user !endswith 'ALICE@contoso.com' | project name",
        r#"
        name
        "PC-2"
        "MAC-1"
        "#,
    );
    check(
        "Device | where primary_user contains 'ÉMILE' | project name",
        "name\n\"MAC-1\"",
    );
}

#[test]
fn numbers_compare_numerically_including_decimals() {
    check(
        "Device | where resource_id >= 2 and resource_id < 4 | project resource_id",
        "resource_id\n2\n3",
    );
    check(
        "Device | where resource_id > 2.5 and resource_id <= 4.0 | project resource_id",
        "resource_id\n3\n4",
    );
    check(
        "Device | where resource_id != -1 and resource_id == 5 | project resource_id",
        "resource_id\n5",
    );
}

#[test]
fn bool_columns_are_conditions() {
    check(
        "Device | where client_active | project name",
        r#"
        name
        "PC-1"
        "SRV-1"
        "pc-5"
        "#,
    );
    check(
        "Device | where client == false or mdm_enrolled == true and client_active == false | project name",
        "name\n\"MAC-1\"",
    );
    check("Device | where true and not(false) | count", "Count\n5");
}

#[test]
fn in_and_not_in() {
    check(
        "Device | where join_type in ('entra', 'workgroup') | project name",
        r#"
        name
        "MAC-1"
        "pc-5"
        "#,
    );
    check(
        "Device | where join_type !in ('hybrid', 'entra', 'workgroup') | project name",
        "name\n\"SRV-1\"",
    );
    check(
        "Device | where join_type in ('HYBRID') | project name",
        "name",
    );
    check(
        "Device | where join_type in~ ('HYBRID') | project name",
        "name\n\"PC-1\"\n\"PC-2\"",
    );
    check(
        "Device | where resource_id in (1, 3, 5) and join_type !in~ ('Domain') | project resource_id",
        "resource_id\n1\n5",
    );
}

#[test]
fn not_is_a_function() {
    check(
        "Device | where not(client) | project name",
        "name\n\"MAC-1\"",
    );
    check(
        "Device | where not (os contains 'Workstation' or client == false) | project name",
        "name\n\"SRV-1\"",
    );
}

#[test]
fn and_binds_tighter_than_or() {
    // MAC-1 or (client and client_active)
    check(
        "Device | where name == 'MAC-1' or client and client_active | project name",
        r#"
        name
        "PC-1"
        "SRV-1"
        "MAC-1"
        "pc-5"
        "#,
    );
    check(
        "Device | where client and client_active or name == 'MAC-1' | project name",
        r#"
        name
        "PC-1"
        "SRV-1"
        "MAC-1"
        "pc-5"
        "#,
    );
    check(
        "Device | where (name == 'MAC-1' or client) and client_active | project name",
        r#"
        name
        "PC-1"
        "SRV-1"
        "pc-5"
        "#,
    );
}

#[test]
fn a_comparison_with_null_is_false() {
    // SRV-1 has no primary user: neither == nor != keeps it, nor not() of them.
    check(
        "Device | where primary_user != 'bob@contoso.com' | project name",
        r#"
        name
        "PC-1"
        "MAC-1"
        "pc-5"
        "#,
    );
    check(
        "Device | where not(primary_user == 'bob@contoso.com') | project name",
        r#"
        name
        "PC-1"
        "MAC-1"
        "pc-5"
        "#,
    );
    check(
        "Device | where primary_user !contains 'alice' | project name",
        "name\n\"PC-2\"\n\"MAC-1\"",
    );
    check("Device | where primary_user !in ('x') | count", "Count\n4");
    // null or true is true; null and false is false.
    check(
        "Device | where primary_user == 'x' or resource_id == 3 | project name",
        "name\n\"SRV-1\"",
    );
    check(
        "Device | where not(primary_user == 'x' and resource_id == 3) | project name",
        r#"
        name
        "PC-1"
        "PC-2"
        "MAC-1"
        "pc-5"
        "#,
    );
}

#[test]
fn isnull_isnotnull_isempty() {
    check(
        "Device | where isnull(primary_user) | project name",
        "name\n\"SRV-1\"",
    );
    check(
        "Device | where isnotnull(client_version) | count",
        "Count\n4",
    );
    check(
        "Device | where isempty(manufacturer) or isnull(domain) and isnotempty(serial_number) | project name",
        "name\n\"MAC-1\"",
    );
    check(
        "Device | where isnotempty(domain) | project name",
        "name\n\"PC-1\"\n\"SRV-1\"",
    );
}

#[test]
fn strings_take_both_quotes_and_escapes() {
    let mut d = devices();
    d[0].name = "it's \"quoted\"\\".into();
    check_on(
        r#"Device | where name == 'it\'s "quoted"\\' or name == "it's \"quoted\"\\" | project resource_id"#,
        &d,
        "resource_id\n1",
    );
    d[1].name = r"C:\temp\x".into();
    check_on(
        r#"Device | where name == @'C:\temp\x' | project resource_id"#,
        &d,
        "resource_id\n2",
    );
    check_on(
        r#"Device | where name startswith @"it's" | project resource_id"#,
        &d,
        "resource_id\n1",
    );
}

#[test]
fn columns_compare_with_columns() {
    check(
        "Analytics | where total_boot_ms > core_boot_ms and gp_logon_ms >= 2000 | project device",
        "device\n\"PC-1\"\n\"PC-2\"",
    );
}

// ---- project ----

#[test]
fn project_picks_orders_and_renames() {
    check(
        "Device | project os_build, Name = name, resource_id | where Name startswith 'pc' and resource_id > 1",
        r#"
        os_build | Name | resource_id
        "10.0.19045" | "PC-2" | 2
        "10.0.26100" | "pc-5" | 5
        "#,
    );
    check(
        "Device | take 1 | project id = resource_id, name",
        "id | name\n1 | \"PC-1\"",
    );
}

// ---- summarize ----

#[test]
fn summarize_count_by_keeps_first_appearance_order_and_a_null_group() {
    check(
        "Device | summarize count() by domain",
        r#"
        domain | count_
        "corp.contoso.com" | 2
        null | 3
        "#,
    );
    check(
        "Device | summarize devices = count() by client, join_type",
        r#"
        client | join_type | devices
        true | "hybrid" | 2
        true | "domain" | 1
        false | "workgroup" | 1
        true | "entra" | 1
        "#,
    );
}

#[test]
fn summarize_without_by_gives_one_row_even_over_nothing() {
    check("Device | summarize count()", "count_\n5");
    check(
        "Device | where resource_id > 100 | summarize count()",
        "count_\n0",
    );
    check("Device | where resource_id > 100 | count", "Count\n0");
    check(
        "Device | where resource_id > 100 | summarize count() by os",
        "os | count_",
    );
}

#[test]
fn summarize_other_aggregates() {
    check(
        "Device | summarize count(), active = countif(client_active), dcount(manufacturer), sum(resource_id), min(os_build), max(client_version) by os",
        r#"
        os | count_ | active | dcount_manufacturer | sum_resource_id | min_os_build | max_client_version
        "Microsoft Windows NT Workstation 10.0" | 3 | 2 | 2 | 8 | "10.0.19045" | "5.00.9106.1000"
        "Microsoft Windows NT Server 10.0" | 1 | 1 | 1 | 3 | "10.0.20348" | "5.00.9088.1000"
        "macOS" | 1 | 0 | 1 | 4 | "14.5" | null
        "#,
    );
    check(
        "Device | summarize by join_type",
        r#"
        join_type
        "hybrid"
        "domain"
        "workgroup"
        "entra"
        "#,
    );
}

#[test]
fn operators_after_summarize_see_its_columns() {
    check(
        "Device | summarize n = count() by manufacturer | where n > 1 | project manufacturer",
        "manufacturer\n\"Dell Inc.\"",
    );
}

// ---- order by, take, top ----

#[test]
fn order_by_is_descending_by_default_and_stable() {
    check(
        "Device | order by client | project name, client",
        r#"
        name | client
        "PC-1" | true
        "PC-2" | true
        "SRV-1" | true
        "pc-5" | true
        "MAC-1" | false
        "#,
    );
    check(
        "Device | sort by client asc | project name, client",
        r#"
        name | client
        "MAC-1" | false
        "PC-1" | true
        "PC-2" | true
        "SRV-1" | true
        "pc-5" | true
        "#,
    );
}

#[test]
fn order_by_several_keys_and_nulls() {
    check(
        "Device | order by join_type asc, resource_id desc | project join_type, resource_id",
        r#"
        join_type | resource_id
        "domain" | 3
        "entra" | 5
        "hybrid" | 2
        "hybrid" | 1
        "workgroup" | 4
        "#,
    );
    // Nulls first ascending, last descending (KQL's defaults); ties stay in input order.
    check(
        "Device | order by primary_user asc | project name",
        r#"
        name
        "SRV-1"
        "PC-1"
        "pc-5"
        "PC-2"
        "MAC-1"
        "#,
    );
    check(
        "Device | order by primary_user | project name",
        r#"
        name
        "MAC-1"
        "PC-2"
        "PC-1"
        "pc-5"
        "SRV-1"
        "#,
    );
}

#[test]
fn take_after_order_keeps_the_best_rows() {
    check(
        "Device | order by client desc, resource_id asc | take 3 | project resource_id",
        "resource_id\n1\n2\n3",
    );
    check(
        "Device | order by client asc | limit 2 | project name",
        "name\n\"MAC-1\"\n\"PC-1\"",
    );
    check(
        "Analytics | top 2 by total_boot_ms asc | project device, total_boot_ms",
        r#"
        device | total_boot_ms
        "PC-2" | 30000
        "pc-5" | 35000
        "#,
    );
    check(
        "Analytics | top 1 by total_boot_ms | project device",
        "device\n\"PC-1\"",
    );
    check(
        "Device | order by resource_id | take 0",
        "resource_id | name | client | client_version | client_active | os | os_build | join_type | mdm_enrolled | entra_device_id | primary_user | model | manufacturer | serial_number | domain | sku | last_active",
    );
}

#[test]
fn take_stops_the_evaluation() {
    let q = parse("Device | where client | take 2 | project name").unwrap();
    let mut eval = q.evaluator();
    let devices = devices();
    let mut pushed = 0;
    for d in &devices {
        if eval.is_done() {
            break;
        }
        eval.push(d);
        pushed += 1;
    }
    assert_eq!(pushed, 2);
    assert!(eval.is_done());
    // Pushing more changes nothing.
    eval.push(&devices[4]);
    assert_eq!(eval.finish().to_string(), "name\n\"PC-1\"\n\"PC-2\"\n");

    // A take after a sort or a summarize waits for every device.
    let mut eval = parse("Device | order by name | take 1")
        .unwrap()
        .evaluator();
    for d in &devices {
        eval.push(d);
        assert!(!eval.is_done());
    }
    assert!(parse("Device | take 0").unwrap().evaluator().is_done());
}

// ---- distinct ----

#[test]
fn distinct_keeps_first_appearance_order() {
    check(
        "Device | distinct manufacturer, mdm_enrolled",
        r#"
        manufacturer | mdm_enrolled
        "Dell Inc." | true
        "HP" | false
        "VMware, Inc." | false
        "" | true
        "#,
    );
    check(
        "DefenderDetection | distinct category | order by category asc",
        "category\n\"Adware\"\n\"Trojan\"",
    );
}

// ---- limits, syntax ----

#[test]
fn results_are_capped_at_max_rows() {
    let many: Vec<Device> = (1..=(MAX_ROWS as i64 + 5))
        .map(|i| {
            let mut d = devices()[0].clone();
            d.resource_id = i;
            d
        })
        .collect();
    for query in [
        "Device | project resource_id",
        "Device | order by resource_id asc | project resource_id",
        "Device | summarize count() by resource_id",
    ] {
        let table = parse(query).unwrap().run(&many);
        assert_eq!(table.rows.len(), MAX_ROWS, "{query}");
        assert!(table.truncated, "{query}");
        assert_eq!(table.rows[0][0], json!(1), "{query}");
        assert_eq!(table.rows[MAX_ROWS - 1][0], json!(MAX_ROWS), "{query}");
    }
    let table = parse("Device | take 10000").unwrap().run(&many);
    assert!(!table.truncated);
    let top = parse("Device | order by resource_id | take 3 | project resource_id")
        .unwrap()
        .run(&many);
    assert!(!top.truncated);
    assert_eq!(top.to_string(), "resource_id\n10005\n10004\n10003\n");
    let all = parse("Device | project resource_id").unwrap().run(&many);
    assert!(all.to_string().ends_with("\n10000\n(truncated)\n"));
}

#[test]
fn whitespace_newlines_and_comments() {
    check(
        "// devices without a user\nDevice\n| where isnull(primary_user) // the servers\n\t| project name\n",
        "name\n\"SRV-1\"",
    );
}

// ---- errors ----

#[test]
fn unknown_entity_at_offset_0() {
    check_err(
        "Devices | take 1",
        0,
        1,
        1,
        "unknown entity \"Devices\" (entities: Device, DefenderState, DefenderDetection, Analytics, AnalyticsApp)",
    );
    check_err(
        "",
        0,
        1,
        1,
        "expected an entity name, found the end of the query",
    );
    check_err("| take 1", 0, 1, 1, "expected an entity name, found \"|\"");
}

#[test]
fn unknown_operator() {
    check_err(
        "Device | extend x = 1",
        9,
        1,
        10,
        "unknown operator \"extend\" (supported: where, project, summarize, order by, sort by, take, limit, top, distinct, count)",
    );
    check_err(
        "Device\n| project-away name",
        9,
        2,
        3,
        "unknown operator \"project-away\" (supported: where, project, summarize, order by, sort by, take, limit, top, distinct, count)",
    );
    check_err(
        "Device | ",
        9,
        1,
        10,
        "expected an operator, found the end of the query",
    );
    check_err(
        "Device | where",
        14,
        1,
        15,
        "expected a column, a literal or a function call, found the end of the query",
    );
}

#[test]
fn unknown_column() {
    let e = error("Device | where nmae == 'x'");
    assert_eq!((e.offset, e.line, e.column), (15, 1, 16));
    assert!(
        e.message.starts_with(
            "unknown column \"nmae\" in Device (columns: resource_id, name, client, client_version,"
        ),
        "{}",
        e.message
    );
    assert!(e.expected.contains(&"name".to_string()));
    check_err(
        "Device | project name | where os == 'x'",
        30,
        1,
        31,
        "unknown column \"os\" after project (columns: name)",
    );
    check_err(
        "Device | summarize count() by os | order by count",
        44,
        1,
        45,
        "unknown column \"count\" after summarize (columns: os, count_)",
    );
    check_err(
        "DefenderDetection | where name == 'x'",
        26,
        1,
        27,
        "unknown column \"name\" in DefenderDetection (columns: resource_id, device, threat_id, threat_name, category, severity, current_status, initial_detection_time, number_of_detections)",
    );
    // Column names are case-sensitive.
    assert!(
        error("Device | project Name")
            .message
            .starts_with("unknown column \"Name\"")
    );
}

#[test]
fn unterminated_string() {
    check_err(
        "Device | where name == \"PC",
        23,
        1,
        24,
        "unterminated string",
    );
    check_err(
        "Device\n| where name in ('a', 'b)",
        29,
        2,
        23,
        "unterminated string",
    );
}

#[test]
fn type_mismatches() {
    check_err(
        "Device | where name > 5",
        20,
        1,
        21,
        "type mismatch: cannot compare name (string) with 5 (long) using \">\"",
    );
    check_err(
        "Device | where name < 'b'",
        20,
        1,
        21,
        "type mismatch: \"<\" compares numbers, but name is a string",
    );
    check_err(
        "Device | where resource_id contains '1'",
        27,
        1,
        28,
        "type mismatch: \"contains\" needs strings, but resource_id is a long",
    );
    check_err(
        "Device | where client == 'true'",
        22,
        1,
        23,
        "type mismatch: cannot compare client (bool) with 'true' (string) using \"==\"",
    );
    check_err(
        "Device | where resource_id in (1, '2')",
        34,
        1,
        35,
        "type mismatch: resource_id is a long, but '2' in the list of \"in\" is a string",
    );
    check_err(
        "Device | where name",
        15,
        1,
        16,
        "expected a condition (a bool), but name is a string",
    );
    check_err(
        "Device | where not(resource_id)",
        19,
        1,
        20,
        "expected a condition (a bool), but resource_id is a long",
    );
    check_err(
        "Device | summarize sum(name)",
        23,
        1,
        24,
        "sum() needs a long column, but name is a string",
    );
}

#[test]
fn unknown_functions() {
    check_err(
        "Device | where tolower(name) == 'x'",
        15,
        1,
        16,
        "unknown function \"tolower\" (supported in conditions: not(), isnull(), isnotnull(), isempty(), isnotempty())",
    );
    check_err(
        "Device | summarize avg(resource_id)",
        19,
        1,
        20,
        "unknown aggregation function \"avg\" (supported: count(), countif(), dcount(), sum(), min(), max())",
    );
    check_err(
        "Device | summarize count(name)",
        19,
        1,
        20,
        "count() takes 0 arguments, not 1",
    );
}

#[test]
fn trailing_garbage() {
    check_err(
        "Device | take 5 rows",
        16,
        1,
        17,
        "expected \"|\" or the end of the query, found \"rows\"",
    );
    check_err(
        "Device | where name == 'a' 'b'",
        27,
        1,
        28,
        "expected \"|\" or the end of the query, found a string",
    );
    check_err(
        "Device | project name, | take 1",
        23,
        1,
        24,
        "expected a column name, found \"|\"",
    );
    check_err(
        "Device | where (client",
        22,
        1,
        23,
        "expected \")\", found the end of the query",
    );
}

#[test]
fn other_syntax_errors() {
    check_err(
        "Device | order name",
        15,
        1,
        16,
        "expected \"by\", found \"name\"",
    );
    check_err(
        "Device | take many",
        14,
        1,
        15,
        "expected a number of rows, found \"many\"",
    );
    check_err(
        "Device | where resource_id > 5d",
        29,
        1,
        30,
        "invalid number \"5d\" (timespans, datetimes and other typed literals are not supported)",
    );
    check_err(
        "Device | where name == 'a\\qb'",
        26,
        1,
        27,
        "unknown escape sequence in string (known: \\\\ \\\" \\' \\n \\t \\r \\0)",
    );
    check_err(
        "Device | project a = name, a = os",
        9,
        1,
        10,
        "project makes two columns named \"a\"",
    );
    check_err(
        "Device | where name has 'x'",
        20,
        1,
        21,
        "unknown comparison operator \"has\" (supported: ==, !=, <, <=, >, >=, =~, !~, contains, !contains, startswith, !startswith, endswith, !endswith, in, !in, in~, !in~)",
    );
    check_err(
        "Device | where name = 'x'",
        20,
        1,
        21,
        "expected \"|\" or the end of the query, found \"=\"",
    );
}

#[test]
fn render_shows_the_line_and_a_caret() {
    let e = error("Device\n| where name > 5\n| take 1");
    assert_eq!(
        e.render(),
        "query:2:14: type mismatch: cannot compare name (string) with 5 (long) using \">\"\n| where name > 5\n             ^"
    );
}

#[test]
fn stages_after_the_first_sort_or_group_see_the_right_columns() {
    check(
        "Device | take 4 | project a = name, b = name, resource_id | where resource_id > 1 | order by resource_id asc | project b, resource_id | distinct b | take 2",
        "b\n\"PC-2\"\n\"SRV-1\"",
    );
    check(
        "DefenderDetection | where severity != 'low' | summarize n = count(), threats = dcount(threat_id) by device | top 1 by threats",
        "device | n | threats\n\"PC-1\" | 1 | 1",
    );
}

#[test]
fn queries_and_evaluators_can_move_between_threads() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<cloudattach_query::Query>();
    send_sync::<cloudattach_query::Evaluator>();
    send_sync::<cloudattach_query::Table>();
    send_sync::<QueryError>();
}
