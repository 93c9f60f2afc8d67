//! `vercel.json` and `template.yaml` against the route table: one function per route, named
//! by its binary, with the table's time limit, reachable at the table's path.

use crate::helpers::*;
use serde_json::{Value, json};
use shared::routes::{ROUTES, table};
use std::collections::{BTreeMap, BTreeSet};

fn vercel() -> Value {
    serde_json::from_str(&repo_file("vercel.json")).expect("vercel.json is JSON")
}

#[test]
fn every_route_is_a_file_in_api() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("api");
    let files: BTreeSet<String> = std::fs::read_dir(&dir)
        .expect("api/")
        .map(|e| {
            e.expect("an entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    let expected: BTreeSet<String> = ROUTES.iter().map(|r| format!("{}.rs", r.bin)).collect();
    assert_eq!(files, expected);
}

#[test]
fn vercel_has_one_function_per_route_with_its_max_duration() {
    let config = vercel();
    let functions: BTreeMap<String, Value> = config["functions"]
        .as_object()
        .expect("functions")
        .iter()
        .map(|(k, v)| (k.clone(), v["maxDuration"].clone()))
        .collect();
    let expected: BTreeMap<String, Value> = ROUTES
        .iter()
        .map(|r| (format!("api/{}.rs", r.bin), json!(r.max_duration_seconds)))
        .collect();
    assert_eq!(functions, expected);
}

#[test]
fn vercel_rewrites_every_contract_path_to_its_function() {
    let config = vercel();
    let rewrites: BTreeSet<(String, String)> = config["rewrites"]
        .as_array()
        .expect("rewrites")
        .iter()
        .map(|r| {
            let text = |k: &str| r[k].as_str().expect("a path").to_owned();
            (text("source"), text("destination"))
        })
        .collect();
    // A route whose path is its file's (health) needs none.
    let expected: BTreeSet<(String, String)> = ROUTES
        .iter()
        .filter(|r| r.path != r.file_path())
        .map(|r| (r.path.to_owned(), r.file_path()))
        .collect();
    assert_eq!(rewrites, expected);

    // Vercel's cron calls its path with GET.
    let crons = config["crons"].as_array().expect("crons");
    assert!(!crons.is_empty());
    for cron in crons {
        let path = cron["path"].as_str().expect("a path");
        let route = table::by_path(path).unwrap_or_else(|| panic!("cron {path}: no route"));
        assert_eq!(route.bin, "reconcile");
        assert!(route.methods.contains(&"GET"), "{path}");
    }
}

/// The template's functions by their binary: (logical name, resource).
fn template_functions(template: &Value) -> BTreeMap<String, (String, Value)> {
    let mut functions = BTreeMap::new();
    for (name, resource) in template["Resources"].as_object().expect("Resources") {
        if resource["Type"] != "AWS::Serverless::Function" {
            continue;
        }
        let binary = resource["Metadata"]["BuildProperties"]["Binary"]
            .as_str()
            .unwrap_or_else(|| panic!("{name}: no BuildProperties.Binary"))
            .to_owned();
        let earlier = functions.insert(binary.clone(), (name.clone(), resource.clone()));
        assert!(earlier.is_none(), "two functions build {binary}");
    }
    functions
}

#[test]
fn template_has_one_lambda_per_route_with_its_timeout() {
    let template = template();
    let functions = template_functions(&template);
    let binaries: BTreeSet<&str> = functions.keys().map(String::as_str).collect();
    let routes: BTreeSet<&str> = ROUTES.iter().map(|r| r.bin).collect();
    assert_eq!(binaries, routes);

    let globals = &template["Globals"]["Function"];
    let setting =
        |props: &Value, key: &str| -> Value { props.get(key).unwrap_or(&globals[key]).clone() };
    assert!(
        globals["Environment"]["Variables"]
            .get("AWS_REGION")
            .is_none(),
        "AWS_REGION is reserved"
    );
    for route in &ROUTES {
        let (name, function) = &functions[route.bin];
        let props = &function["Properties"];
        assert_eq!(
            props["Timeout"],
            json!(route.max_duration_seconds),
            "{name}"
        );
        assert_eq!(function["Metadata"]["BuildMethod"], "rust-cargolambda");
        assert_eq!(setting(props, "Runtime"), "provided.al2023", "{name}");
        assert_eq!(setting(props, "Handler"), "bootstrap", "{name}");
        assert!(
            props["Environment"]["Variables"]
                .get("AWS_REGION")
                .is_none(),
            "{name}: AWS_REGION is reserved"
        );
    }
}

#[test]
fn template_gives_every_route_a_public_url_logs_and_an_output() {
    let template = template();
    let resources = template["Resources"].as_object().expect("Resources");
    let outputs: Vec<String> = template["Outputs"]
        .as_object()
        .expect("Outputs")
        .values()
        .map(|o| o["Value"].to_string())
        .collect();
    for (bin, (name, function)) in template_functions(&template) {
        assert_eq!(
            function["Properties"]["FunctionUrlConfig"]["AuthType"], "NONE",
            "{bin}: a public Function URL"
        );
        let log_group = json!({ "Fn::Sub": format!("/aws/lambda/${{{name}}}") });
        let logs: Vec<&Value> = resources
            .values()
            .filter(|r| {
                r["Type"] == "AWS::Logs::LogGroup" && r["Properties"]["LogGroupName"] == log_group
            })
            .collect();
        assert_eq!(logs.len(), 1, "{bin}: one log group");
        assert!(
            logs[0]["Properties"].get("RetentionInDays").is_some(),
            "{bin}: logs kept for a bounded time"
        );
        // SAM names a function's URL resource `<function>Url`.
        let url = format!("{name}Url.FunctionUrl");
        assert_eq!(
            outputs.iter().filter(|o| o.contains(&url)).count(),
            1,
            "{bin}: its URL in the Outputs"
        );
    }
}

#[test]
fn the_schedule_invokes_reconcile_directly_and_carries_no_secret() {
    let schedule = reconcile_schedule();
    assert!(
        schedule["Schedule"]
            .as_str()
            .is_some_and(|s| s.starts_with("rate(")),
        "{schedule}"
    );
    // EventBridge's own event reaches the function; nothing the rule's readers could see
    // authenticates anything.
    assert!(schedule.get("Input").is_none(), "{schedule}");
    assert!(!schedule.to_string().contains("CronSecret"), "{schedule}");
}
