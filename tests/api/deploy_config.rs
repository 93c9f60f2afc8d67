//! `vercel.json` and `template.yaml` against the route table: one function per route, named
//! by its binary, with the table's time limit, reachable at the table's path; and the
//! settings of each platform that the code relies on (log format, body limit, keys, bucket).

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
        let setting = |key| function_setting(&template, function, key);
        assert_eq!(setting("Runtime"), "provided.al2023", "{name}");
        assert_eq!(setting("Handler"), "bootstrap", "{name}");
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

/// A function's setting: its own, else the one in `Globals.Function`.
fn function_setting(template: &Value, function: &Value, key: &str) -> Value {
    function["Properties"]
        .get(key)
        .unwrap_or(&template["Globals"]["Function"][key])
        .clone()
}

/// The environment every function gets: `Globals` merged with its own variables.
fn function_environment(template: &Value, function: &Value) -> serde_json::Map<String, Value> {
    let mut variables = template["Globals"]["Function"]["Environment"]["Variables"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    if let Some(own) = function["Properties"]["Environment"]["Variables"].as_object() {
        variables.extend(own.clone());
    }
    variables
}

fn parameter<'a>(template: &'a Value, name: &str) -> &'a Value {
    template["Parameters"]
        .get(name)
        .unwrap_or_else(|| panic!("no parameter {name}"))
}

/// The parameter `name`, once it is seen to default to `default` and to allow exactly
/// `allowed`.
fn choice<'a>(template: &'a Value, name: &str, default: &str, allowed: &[&str]) -> &'a Value {
    let parameter = parameter(template, name);
    assert_eq!(parameter["Default"], default, "{name}");
    let values: BTreeSet<&str> = parameter["AllowedValues"]
        .as_array()
        .expect("AllowedValues")
        .iter()
        .map(|v| v.as_str().expect("a string"))
        .collect();
    assert_eq!(
        values,
        BTreeSet::from_iter(allowed.iter().copied()),
        "{name}"
    );
    parameter
}

#[test]
fn vercel_sets_no_memory_on_fluid_compute() {
    // The Rust runtime runs on Fluid compute, where `memory` in vercel.json has no effect:
    // it is set in the dashboard, so the file names only what it controls.
    let config = vercel();
    for (path, function) in config["functions"].as_object().expect("functions") {
        let keys: BTreeSet<&str> = function
            .as_object()
            .expect("a function")
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(keys, BTreeSet::from(["maxDuration"]), "{path}");
    }
}

#[test]
fn every_lambda_logs_json_at_levels_the_parameters_choose() {
    let template = template();
    choice(
        &template,
        "ApplicationLogLevel",
        "INFO",
        &["TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL"],
    );
    choice(
        &template,
        "SystemLogLevel",
        "WARN",
        &["DEBUG", "INFO", "WARN"],
    );
    for (bin, (name, function)) in template_functions(&template) {
        let logging = function_setting(&template, &function, "LoggingConfig");
        assert_eq!(logging["LogFormat"], "JSON", "{bin}");
        assert_eq!(
            logging["ApplicationLogLevel"],
            json!({ "Ref": "ApplicationLogLevel" }),
            "{bin}"
        );
        assert_eq!(
            logging["SystemLogLevel"],
            json!({ "Ref": "SystemLogLevel" }),
            "{bin}"
        );
        // The default group, /aws/lambda/<function>, is the one the template creates with a
        // retention (template_gives_every_route_a_public_url_logs_and_an_output): naming
        // another here would leave that one unused.
        assert!(logging.get("LogGroup").is_none(), "{name}: {logging}");
    }
}

#[test]
fn the_architecture_is_a_parameter_of_x86_64_or_arm64() {
    let template = template();
    let architecture = choice(&template, "Architecture", "x86_64", &["x86_64", "arm64"]);
    assert_eq!(architecture["Type"], "String");
    for (bin, (_, function)) in template_functions(&template) {
        assert_eq!(
            function_setting(&template, &function, "Architectures"),
            json!([{ "Ref": "Architecture" }]),
            "{bin}"
        );
    }
}

#[test]
fn lambda_takes_bodies_up_to_the_max_body_bytes_parameter() {
    let template = template();
    let max = parameter(&template, "MaxBodyBytes");
    assert_eq!(max["Type"], "Number");
    // A Function URL accepts 6 MB request payloads; Vercel keeps the code's default, under
    // its 4.5 MB cap.
    assert_eq!(max["Default"], json!(6 * 1024 * 1024));
    assert_eq!(max["MaxValue"], json!(6 * 1024 * 1024), "{max}");
    assert!(
        max["Default"].as_u64().expect("a number")
            > u64::try_from(shared::config::DEFAULT_MAX_BODY_BYTES).expect("fits")
    );
    for (bin, (_, function)) in template_functions(&template) {
        assert_eq!(
            function_environment(&template, &function).get("MAX_BODY_BYTES"),
            Some(&json!({ "Ref": "MaxBodyBytes" })),
            "{bin}"
        );
    }
    assert!(!repo_file("vercel.json").contains("MAX_BODY_BYTES"));
}

#[test]
fn lambda_reads_its_deadline_itself_so_no_function_timeout_is_configured() {
    let template = template();
    for (bin, (_, function)) in template_functions(&template) {
        assert!(
            !function_environment(&template, &function).contains_key("FUNCTION_TIMEOUT_SECONDS"),
            "{bin}"
        );
    }
}

#[test]
fn the_optional_bucket_aborts_incomplete_uploads_and_is_private() {
    let template = template();
    choice(&template, "CreateBucket", "false", &["true", "false"]);

    let buckets: Vec<(&String, &Value)> = template["Resources"]
        .as_object()
        .expect("Resources")
        .iter()
        .filter(|(_, r)| r["Type"] == "AWS::S3::Bucket")
        .collect();
    assert_eq!(buckets.len(), 1, "one optional bucket");
    let (name, bucket) = buckets[0];
    let condition = bucket["Condition"].as_str().expect("a Condition");
    assert_eq!(
        template["Conditions"][condition],
        json!({ "Fn::Equals": [{ "Ref": "CreateBucket" }, "true"] }),
        "{name}"
    );
    assert_eq!(
        bucket["DeletionPolicy"], "Retain",
        "{name}: it holds the files"
    );
    let props = &bucket["Properties"];
    // The same name the functions' S3_BUCKET and IAM statements use.
    assert_eq!(props["BucketName"], json!({ "Ref": "BucketName" }));
    let block = &props["PublicAccessBlockConfiguration"];
    for key in [
        "BlockPublicAcls",
        "BlockPublicPolicy",
        "IgnorePublicAcls",
        "RestrictPublicBuckets",
    ] {
        assert_eq!(block[key], true, "{name}: {key}");
    }
    let rules = props["LifecycleConfiguration"]["Rules"]
        .as_array()
        .expect("lifecycle rules");
    assert!(
        rules.iter().any(|r| r["Status"] == "Enabled"
            && r["AbortIncompleteMultipartUpload"]["DaysAfterInitiation"] == 1
            && r.get("Prefix").is_none()
            && r.get("Filter").is_none()),
        "{rules:?}"
    );
}

#[test]
fn the_functions_write_to_the_bucket_by_its_name_whether_created_or_not() {
    let template = template();
    for (bin, (_, function)) in template_functions(&template) {
        assert_eq!(
            function_environment(&template, &function).get("S3_BUCKET"),
            Some(&json!({ "Ref": "BucketName" })),
            "{bin}"
        );
        let policies = function["Properties"]["Policies"].to_string();
        assert!(policies.contains("${BucketName}"), "{bin}: {policies}");
    }
}

#[test]
fn supabase_keys_the_secret_key_first_both_no_echo() {
    let template = template();
    let secret = parameter(&template, "SupabaseSecretKey");
    let legacy = parameter(&template, "SupabaseServiceRoleKey");
    for (name, p) in [
        ("SupabaseSecretKey", secret),
        ("SupabaseServiceRoleKey", legacy),
    ] {
        assert_eq!(p["NoEcho"], true, "{name}");
        // Either may be the one set; the Rules require one of them.
        assert_eq!(p["Default"], "", "{name}");
    }
    // sam deploy --guided asks in the template's order: the preferred key first.
    let text = repo_file("template.yaml");
    let at = |needle: &str| text.find(needle).unwrap_or_else(|| panic!("{needle}"));
    assert!(at("\n  SupabaseSecretKey:\n") < at("\n  SupabaseServiceRoleKey:\n"));
    let rules = template["Rules"].to_string();
    assert!(
        rules.contains(r#"{"Ref":"SupabaseSecretKey"}"#)
            && rules.contains(r#"{"Ref":"SupabaseServiceRoleKey"}"#),
        "{rules}"
    );
    for (bin, (_, function)) in template_functions(&template) {
        let env = function_environment(&template, &function);
        assert_eq!(
            env.get("SUPABASE_SECRET_KEY"),
            Some(&json!({ "Ref": "SupabaseSecretKey" })),
            "{bin}"
        );
        assert_eq!(
            env.get("SUPABASE_SERVICE_ROLE_KEY"),
            Some(&json!({ "Ref": "SupabaseServiceRoleKey" })),
            "{bin}"
        );
    }
}

#[test]
fn every_secret_parameter_is_no_echo() {
    let template = template();
    for name in [
        "ReplicateWebhookSecret",
        "SupabaseSecretKey",
        "SupabaseServiceRoleKey",
        "ResendApiKey",
        "ReplicateApiToken",
        "CronSecret",
    ] {
        assert_eq!(parameter(&template, name)["NoEcho"], true, "{name}");
    }
}
